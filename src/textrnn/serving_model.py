"""The model a server holds: a bundle loaded whole (Predictor + what /v1/model reports), and its swap.

A swap loads the new bundle completely beside the old one, checks that its parts belong together, and only
then replaces one reference: a batch reads that reference once, so every request is answered by one model,
old or new, never a mix.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from textrnn.predict import ONNX_FILE, Predictor

log = logging.getLogger(__name__)
BUNDLE_FILES = (ONNX_FILE, "vocab.json", "labels.json", "config.json")


class BundleError(ValueError):
    """A bundle that cannot be served (missing or inconsistent files)."""


@dataclass(frozen=True)
class LoadedModel:
    predictor: Predictor
    info: dict  # what GET /v1/model answers
    stamp: tuple  # the files' identities when loaded (see `bundle_stamp`)
    tag: dict = field(default_factory=dict)  # the short identity each prediction response carries


def bundle_stamp(bundle: Path) -> tuple:
    """Identities (inode, size, mtime) of the bundle folder and its files: a new export, written beside
    and renamed into place or over a symlink, changes them. Raises OSError while the bundle is missing."""
    folder = bundle.resolve(strict=True)
    return tuple((name, s.st_ino, s.st_size, s.st_mtime_ns)
                 for name, s in ((name, os.stat(folder / name)) for name in ("", *BUNDLE_FILES)))


def load_model(bundle: Path, threads: int = 0, attempts: int = 3) -> LoadedModel:
    """The bundle loaded whole. A bundle replaced while it was being read is read again (up to
    `attempts` times), so the parts always come from one export."""
    for _ in range(attempts):
        before = bundle_stamp(bundle)
        model = _load_once(bundle.resolve(strict=True), threads, before)
        if bundle_stamp(bundle) == before:
            return model
        log.info("serving: %s changed while it was loaded; loading it again", bundle)
    raise BundleError(f"{bundle}: the bundle kept changing while it was loaded ({attempts} attempts)")


def _load_once(folder: Path, threads: int, stamp: tuple) -> LoadedModel:
    try:
        predictor = Predictor(folder, threads=threads)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        metrics_path = folder / "metrics.json"
        metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.exists() else {}
        model_sha256 = hashlib.sha256((folder / ONNX_FILE).read_bytes()).hexdigest()
    except Exception as err:  # missing files, corrupt JSON, and onnxruntime's own errors for a corrupt model
        raise BundleError(f"{folder}: cannot load the bundle ({err})") from err
    if config.get("vocab_digest") != predictor.vocab.digest:
        raise BundleError(f"{folder}: vocab.json does not belong to this model (config.json names vocabulary "
                          f"{config.get('vocab_digest')}, vocab.json is {predictor.vocab.digest}); export it again")
    if len(predictor.labels) != predictor.session.get_outputs()[0].shape[-1]:
        raise BundleError(f"{folder}: labels.json names {len(predictor.labels)} classes, the model has "
                          f"{predictor.session.get_outputs()[0].shape[-1]}")
    tag = {"model_sha256": model_sha256, "vocab_digest": predictor.vocab.digest}
    info = {"bundle": str(folder), "labels": predictor.labels, "metrics": metrics, **tag,
            "vocab_size": len(predictor.vocab), "exported_at": _iso(os.stat(folder / ONNX_FILE).st_mtime),
            "loaded_at": _iso(datetime.now(UTC).timestamp()),
            "model": config.get("model"), "tokeniser": config.get("tokeniser"), "opset": config.get("opset"),
            "exporter": config.get("exporter")}
    return LoadedModel(predictor=predictor, info=info, stamp=stamp, tag=tag)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


class ModelHolder:
    """The model in service and its swaps. `current` is replaced in one assignment, after the new model
    has loaded; a failed load leaves the old model serving and is reported by /healthz."""

    def __init__(self, bundle: Path, threads: int = 0):
        self.bundle, self.threads = bundle, threads
        self.current = load_model(bundle, threads)
        self.last_error: str | None = None
        self.swaps = 0
        self._reloading = threading.Lock()

    async def reload(self, only_if_changed: bool = False) -> bool:
        """Load the bundle again (in a thread: requests go on being served meanwhile) and swap it in.
        Returns whether a new model is now in service."""
        if not self._reloading.acquire(blocking=False):
            return False  # a reload is under way; it reads the newest files anyway
        try:
            return await asyncio.to_thread(self._reload, only_if_changed)
        finally:
            self._reloading.release()

    def _reload(self, only_if_changed: bool) -> bool:
        if only_if_changed:
            try:
                if bundle_stamp(self.bundle) == self.current.stamp:
                    return False
            except OSError:  # between the two renames of a swap, or not there yet: look again later
                return False
        try:
            model = load_model(self.bundle, self.threads)
        except (OSError, BundleError) as err:
            self.last_error = str(err)
            log.error("serving: reload failed, the previous model stays in service: %s", err)
            return False
        self.current, self.last_error = model, None
        self.swaps += 1
        log.info("serving: now serving %s (model %s)", self.bundle, model.tag["model_sha256"][:12])
        return True

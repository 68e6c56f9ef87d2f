"""train: fit the RNN classifier on the encoded train split, early-stopped on validation macro-F1."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from textrnn.config import ModelParams, TrainParams
from textrnn.data import EncodedSplit
from textrnn.io import atomic_dir, content_hash, read_json, write_json_into
from textrnn.model import ModelConfig
from textrnn.pretrained import embedding_for
from textrnn.teacher import soft_targets
from textrnn.training import LOG_COLUMNS, fit, load_checkpoint, save_checkpoint, world
from textrnn.vocab import Vocabulary

log = logging.getLogger(__name__)


def run(vocab_dir: Path, checkpoint: Path, train_log: Path, state: Path, model_p: ModelParams,
        train_p: TrainParams) -> dict:
    """Write the best model to `checkpoint` and the log (one row per validation) to `train_log`; `state`
    keeps the resumable training state, saved at each validation (a killed run continues from it)."""
    if train_p.nproc > 1 and world()[1] == 1:
        return launch_distributed(vocab_dir, checkpoint, train_log, state, model_p, train_p)
    vocab_dir = Path(vocab_dir)
    vocab = Vocabulary.load(vocab_dir / "vocab.json")
    labels = read_json(vocab_dir / "labels.json")
    train, val = EncodedSplit.load(vocab_dir / "train"), EncodedSplit.load(vocab_dir / "val")
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{vocab_dir}: the train and val splits must not be empty "
                         f"(train {len(train)} rows, val {len(val)} rows)")
    cfg = ModelConfig.from_params(model_p, vocab_size=len(vocab), num_classes=len(labels))
    params = {"model": asdict(model_p), "train": asdict(train_p)}
    inputs = _input_hashes(vocab_dir)  # hashed once: the resumable state and the teacher's cache both key on them
    model, fit_state = fit(cfg, train, val, train_p, Path(state), _fingerprint(inputs, params),
                           embedding_for(vocab.tokens, model_p.pretrained, model_p.embedding_dim, train_p.seed),
                           soft_targets(train, len(labels), train_p, Path(state).with_suffix(".teacher.npz"),
                                        inputs["train"]),
                           on_validation=lambda history: write_live_log(Path(train_log), history))
    last = fit_state.history[-1] if fit_state.history else {"epoch": 0, "tokens": 0}
    best = {"epoch": fit_state.best_row.get("epoch", 0), "step": fit_state.best_step,
            "tokens": fit_state.best_row.get("tokens", 0), "val_macro_f1": fit_state.best_f1,
            "epochs_run": last["epoch"], "tokens_run": last["tokens"]}
    if world()[0] != 0:
        return best  # one process (rank 0) writes the outputs
    save_checkpoint(Path(checkpoint), model.cpu(), vocab.digest, labels, params, best)
    write_live_log(Path(train_log), fit_state.history)
    log.info("train: best at epoch %s of %s (%d of %d tokens), val macro-F1 %.4f", best["epoch"],
             best["epochs_run"], best["tokens"], best["tokens_run"], best["val_macro_f1"])
    return best


def launch_distributed(vocab_dir: Path, checkpoint: Path, train_log: Path, state: Path, model_p: ModelParams,
                       train_p: TrainParams) -> dict:
    """Run this stage as `train_p.nproc` DistributedDataParallel processes (gloo) through torchrun."""
    spec = {"vocab_dir": str(vocab_dir), "checkpoint": str(checkpoint), "train_log": str(train_log),
            "state": str(state), "model": asdict(model_p), "train": asdict(train_p)}
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={train_p.nproc}", "-m", "textrnn.ddp_train", "--spec", str(spec_path)]
        log.info("train: %d processes: %s", train_p.nproc, " ".join(command))
        subprocess.run(command, check=True)
    return load_checkpoint(Path(checkpoint))[1]["best"]


def _input_hashes(vocab_dir: Path) -> dict[str, str]:
    return {name: content_hash(vocab_dir / name) for name in ("vocab.json", "labels.json", "train", "val")}


def _fingerprint(inputs: dict[str, str], params: dict) -> str:
    """What the resumable state must match: the encoded data and vocabulary (`inputs`), and the params."""
    payload = json.dumps({"inputs": inputs, "params": params}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def write_live_log(folder: Path, history: list[dict]) -> None:
    """The metrics of each validation in dvclive's layout — `metrics.json` (the last one, with its `step`)
    and `plots/metrics/<name>.tsv` (`step<TAB>name`, one row per validation) — which `dvc exp show`, `dvc plots` and
    DVC's editor integrations read through dvc.yaml. Written here rather than by dvclive's `Live`, which
    opens the surrounding git repository as a DVC project on start: it fails in a repository without a
    commit and runs `dvc init` in a git repository that has no DVC. Rewritten whole after each validation into a
    temporary folder that replaces the old one, so a reader never sees half of it."""
    with atomic_dir(folder) as tmp:
        series = tmp / "plots" / "metrics"
        series.mkdir(parents=True)
        for name in LOG_COLUMNS[1:]:
            lines = [f"step\t{name}"] + [f"{row['step']}\t{_rounded(row[name])}" for row in history]
            (series / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        last = {name: _rounded(history[-1][name]) for name in LOG_COLUMNS[1:]} if history else {}
        write_json_into(tmp, "metrics.json", {**last, "step": history[-1]["step"] if history else 0})


def _rounded(value) -> float:
    return round(float(value), 6)


def read_live_log(folder: Path) -> list[dict]:
    """The rows `write_live_log` wrote, one per validation: {"step": n, metric: value, ...}."""
    rows: dict[int, dict] = {}
    for name in LOG_COLUMNS[1:]:
        with open(Path(folder) / "plots" / "metrics" / f"{name}.tsv", encoding="utf-8") as handle:
            for record in csv.DictReader(handle, delimiter="\t"):
                step = int(record["step"])
                rows.setdefault(step, {"step": step})[name] = float(record[name])
    return [rows[step] for step in sorted(rows)]

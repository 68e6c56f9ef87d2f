"""Content-addressed stage keys and output manifests (Prefect-free; the tasks build their caching on it).

A stage's key hashes the *content* of its inputs, its params sections and its code — never a path
string. After a stage runs, a manifest records its key and the content hash of each output. A cached
result may be reused only while the manifest still holds the same key and every output still has the
recorded hash: a deleted or altered output, or outputs left by a run with other params, force a rerun.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from textrnn.config import Params
from textrnn.io import content_hash, file_md5, read_json, write_json
from textrnn.pipeline import STAGE_SPECS, code_files, run_stage, stage_paths

MANIFEST_DIR = Path(".textrnn/manifests")  # in the project folder
log = logging.getLogger(__name__)

# Every function takes the project folder `root`: relative params paths are resolved against it (never
# against the working directory, which is the whole process's), so stages of two projects, or two stages,
# can be checked and run at once.


def stage_key(name: str, params: Params, root: Path = Path(".")) -> str:
    spec = STAGE_SPECS[name]
    paths = params.paths.resolved(root)
    payload = {
        "stage": name,
        # Named by role (paths.<key>), hashed by content: moving the data elsewhere changes nothing, and
        # outputs at a new location are simply missing there, which outputs_fresh catches.
        # ingest's input is paths.source, the record of its files' hashes (textrnn.source_record.record_source).
        "inputs": {key: content_hash(getattr(paths, key)) for key in spec.deps},
        "params": {s: dataclasses.asdict(getattr(params, s)) for s in spec.sections},
        "code": {f.name: file_md5(f) for f in code_files(name)},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def output_hashes(name: str, params: Params, root: Path = Path(".")) -> dict[str, str]:
    """Each output's content hash, named by its path as params.yaml writes it (relative to the project),
    so that a manifest reads the same wherever the project lives."""
    written = stage_paths(name, params, "outs")
    resolved = stage_paths(name, params.resolved(root), "outs")
    return {str(as_written): content_hash(path) for as_written, path in zip(written, resolved)}


def manifest_path(name: str, root: Path = Path(".")) -> Path:
    return Path(root) / MANIFEST_DIR / f"{name}.json"


def record_outputs(name: str, params: Params, key: str, result: Any = None, root: Path = Path(".")) -> dict[str, str]:
    outputs = output_hashes(name, params, root)
    write_json(manifest_path(name, root), {"key": key, "outputs": outputs, "result": result})
    return outputs


def run_recorded(name: str, params: Params, reuse_fresh: bool, root: Path = Path(".")) -> dict:
    """Run a stage of the project at `root` and record its manifest. With `reuse_fresh`, outputs that a run
    with the same key left intact (a flow run, or `textrnn stage` under `dvc repro`) are reused instead of
    recomputed."""
    key = stage_key(name, params, root)
    if reuse_fresh and outputs_fresh(name, params, key, root):
        manifest = read_json(manifest_path(name, root))
        log.info("%s: outputs of this exact key are intact; reused without running", name)
        return {"stage": name, "key": key, "outputs": manifest["outputs"], "result": manifest.get("result"),
                "reused": True}
    result = json.loads(json.dumps(run_stage(name, params, root), default=str))  # plain JSON values only
    outputs = record_outputs(name, params, key, result, root)
    return {"stage": name, "key": key, "outputs": outputs, "result": result, "reused": False}


def outputs_fresh(name: str, params: Params, key: str, root: Path = Path(".")) -> bool:
    """True when the outputs on disk are exactly what the run with this key produced."""
    path = manifest_path(name, root)
    if not path.exists():
        return False
    try:
        manifest = read_json(path)
    except ValueError:
        return False
    if manifest.get("key") != key:
        return False
    return manifest.get("outputs") == output_hashes(name, params, root)

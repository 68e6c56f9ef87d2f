"""The six stages as data: what each reads, writes and which params sections it takes.

The CLI (`textrnn stage NAME`, used by dvc.yaml), the Prefect tasks and the contract tests all read this
table, so a stage's inputs and outputs are written down once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textrnn.codedeps import PACKAGE_ROOT, stage_code
from textrnn.config import Params


@dataclass(frozen=True)
class StageSpec:
    name: str
    deps: tuple[str, ...]  # keys of params.paths this stage reads
    outs: tuple[str, ...]  # keys of params.paths this stage writes
    sections: tuple[str, ...]  # params sections it reads
    call: Callable[[Params, Path], Any]  # (params with absolute paths, the project folder)


def _ingest(p: Params, root: Path):
    from textrnn.stages import ingest

    return ingest.run(Path(p.paths.raw), p.ingest, root)  # a relative ingest.source is the project's


def _clean(p: Params, root: Path):
    from textrnn.parallel import make_executor
    from textrnn.stages import clean

    with make_executor(p.clean.executor, p.clean.workers, p.runner.dask_address) as executor:
        return clean.run(Path(p.paths.raw), Path(p.paths.clean), Path(p.paths.rejects), p.clean, executor)


def _vocab(p: Params, root: Path):
    from textrnn.stages import vocab

    return vocab.run(Path(p.paths.clean), Path(p.paths.vocab), p.vocab)


def _train(p: Params, root: Path):
    from textrnn.stages import train

    return train.run(Path(p.paths.vocab), Path(p.paths.checkpoint), Path(p.paths.train_log),
                     Path(p.paths.train_state), p.model, p.train)


def _evaluate(p: Params, root: Path):
    from textrnn.stages import evaluate

    return evaluate.run(Path(p.paths.clean), Path(p.paths.vocab), Path(p.paths.checkpoint),
                        Path(p.paths.metrics), Path(p.paths.evaluation), p.evaluate)


def _export(p: Params, root: Path):
    from textrnn.stages import export

    return export.run(Path(p.paths.vocab), Path(p.paths.checkpoint), Path(p.paths.metrics),
                      Path(p.paths.export), p.export)


STAGE_SPECS: dict[str, StageSpec] = {spec.name: spec for spec in (
    # `source` (textrnn.source_record.record_source, run first by the flow and by dvc.yaml) lists ingest's input.
    StageSpec("ingest", ("source",), ("raw",), ("ingest",), _ingest),
    StageSpec("clean", ("raw",), ("clean", "rejects"), ("clean",), _clean),
    StageSpec("vocab", ("clean",), ("vocab",), ("vocab",), _vocab),
    StageSpec("train", ("vocab",), ("checkpoint", "train_log"), ("model", "train"), _train),
    StageSpec("evaluate", ("clean", "vocab", "checkpoint"), ("metrics", "evaluation"), ("evaluate",), _evaluate),
    StageSpec("export", ("vocab", "checkpoint", "metrics"), ("export",), ("export",), _export),
)}


def code_files(name: str) -> list[Path]:
    """The source files whose change must rerun this stage: its import closure (textrnn.codedeps)."""
    return [PACKAGE_ROOT / rel for rel in stage_code(name)]


def run_stage(name: str, params: Params, root: Path = Path(".")) -> Any:
    """Run one stage with the paths and sections of `params`; relative paths are those of the project
    folder `root`, resolved here once, so the stage never depends on the process's working directory."""
    if name not in STAGE_SPECS:
        raise ValueError(f"unknown stage {name!r}; stages: {list(STAGE_SPECS)}")
    return STAGE_SPECS[name].call(params.resolved(root), Path(root).absolute())


def stage_paths(name: str, params: Params, kind: str) -> list[Path]:
    spec = STAGE_SPECS[name]
    keys = spec.deps if kind == "deps" else spec.outs
    return [Path(getattr(params.paths, key)) for key in keys]

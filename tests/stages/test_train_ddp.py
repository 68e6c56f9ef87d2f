"""train.nproc = 2: DistributedDataParallel over gloo through torchrun, on the tiny profile, reaches the
same validation accuracy as one process (within 1 point)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from textrnn.stages import train


def _best_val_accuracy(train_log: Path) -> float:
    rows = train.read_live_log(train_log)
    best = max(rows, key=lambda r: float(r["val_macro_f1"]))
    return float(best["val_accuracy"])


def _train(built, tmp_path: Path, nproc: int) -> Path:
    folder = tmp_path / f"nproc{nproc}"
    train_p = dataclasses.replace(built.train, nproc=nproc, epochs=2, patience=2, threads=2)
    train.run(Path(built.paths.vocab), folder / "checkpoint.pt", folder / "train_log", folder / "state.pt",
              built.model, train_p)
    return folder


def test_two_ddp_processes_match_one_process_within_one_point(built, tmp_path):
    one = _train(built, tmp_path, 1)
    two = _train(built, tmp_path, 2)
    assert (two / "checkpoint.pt").is_file() and (two / "state.pt").is_file()
    assert abs(_best_val_accuracy(one / "train_log") - _best_val_accuracy(two / "train_log")) <= 0.01

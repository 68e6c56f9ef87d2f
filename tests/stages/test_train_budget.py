"""The train stage with a token budget and validation every N tokens on the tiny profile: a real
`textrnn stage train` process killed (SIGKILL) after a mid-epoch save resumes at that batch and ends with
the checkpoint of an uninterrupted run, byte for byte."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from textrnn.config import params_mapping
from textrnn.data import EncodedSplit
from textrnn.stages import train

REPO = Path(__file__).resolve().parents[2]
TEXTRNN = Path(sys.executable).parent / "textrnn"


def budget_params(built) -> dict:
    """Three epochs' worth of budget cut at 2.5 epochs, validating about three times per epoch."""
    epoch_tokens = int(EncodedSplit.load(Path(built.paths.vocab) / "train").lengths.sum())
    return {"epochs": 3, "patience": 50, "max_tokens": int(epoch_tokens * 2.5),
            "eval_every_tokens": epoch_tokens // 3}


def write_project(built, root: Path, **train_overrides) -> Path:
    """A project whose params are the tiny profile's plus the budget, reading the built vocabulary."""
    params = params_mapping(REPO / "params.yaml", REPO / "tests" / "profiles" / "tiny.yaml")
    params["paths"]["vocab"] = str(built.paths.vocab)
    params["train"].update(budget_params(built), **train_overrides)
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_budgeted_stage_stops_at_the_budget_and_logs_each_validation(built, tmp_path):
    p = dataclasses.replace(built.train, **budget_params(built))
    best = train.run(Path(built.paths.vocab), tmp_path / "checkpoint.pt", tmp_path / "log", tmp_path / "state.pt",
                     built.model, p)
    rows = train.read_live_log(tmp_path / "log")
    assert p.max_tokens <= best["tokens_run"] == rows[-1]["tokens"]
    assert 2 < best["epochs_run"] < 3 and rows[-1]["epoch"] == best["epochs_run"]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 5  # not once per epoch
    assert all(b["tokens"] - a["tokens"] >= p.eval_every_tokens for a, b in zip(rows, rows[1:-1]))
    assert best["step"] >= 1 and rows[best["step"] - 1]["val_macro_f1"] == max(r["val_macro_f1"] for r in rows)


def _saved_position(state: Path) -> dict | None:
    try:
        return torch.load(state, weights_only=True)["position"]
    except Exception:  # not there yet
        return None


def kill_after_a_save_in_epoch_2(project: Path) -> dict:
    """Start `textrnn stage train` in `project`, SIGKILL its process group (torchrun's workers too) as soon
    as a state saved in the middle of the second epoch is on disk; return that state's position."""
    state = project / "models" / "train_state.pt"
    process = subprocess.Popen([str(TEXTRNN), "stage", "train"], cwd=project, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        position = _saved_position(state) if state.exists() else None
        if position is not None and position["epoch"] == 1 and position["batch"] > 0:
            break
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (project / "models" / "checkpoint.pt").exists(), "the run ended before it could be killed"
    position = _saved_position(state)
    assert position["epoch"] == 1 and position["batch"] > 0  # killed in the middle of the second epoch
    return position


def resume(project: Path, position: dict) -> bytes:
    rerun = subprocess.run([str(TEXTRNN), "stage", "train"], cwd=project, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming after epoch 1, batch {position['batch']}" in rerun.stderr
    return (project / "models" / "checkpoint.pt").read_bytes()


def test_stage_killed_mid_epoch_resumes_to_the_checkpoint_of_an_uninterrupted_run(built, tmp_path):
    straight = tmp_path / "straight"  # uninterrupted, in this process, same params and thread count
    train.run(Path(built.paths.vocab), straight / "checkpoint.pt", straight / "log", straight / "state.pt",
              built.model, dataclasses.replace(built.train, **budget_params(built)))
    killed = write_project(built, tmp_path / "killed")
    position = kill_after_a_save_in_epoch_2(killed)
    assert resume(killed, position) == (straight / "checkpoint.pt").read_bytes()


DDP = {"nproc": 2, "threads": 2}


def ddp_straight_run(built, folder: Path) -> dict:
    return train.run(Path(built.paths.vocab), folder / "checkpoint.pt", folder / "log", folder / "state.pt",
                     built.model, dataclasses.replace(built.train, **budget_params(built), **DDP))


def test_two_ddp_processes_stop_at_the_budget_and_save_each_process_rng(built, tmp_path):
    best = ddp_straight_run(built, tmp_path)
    assert budget_params(built)["max_tokens"] <= best["tokens_run"] and 2 < best["epochs_run"] < 3
    rng = torch.load(tmp_path / "state.pt", weights_only=True)["rng"]["torch"]
    assert rng.shape[0] == 2 and not torch.equal(rng[0], rng[1])  # each process's own dropout stream


def test_two_ddp_processes_killed_mid_epoch_resume_to_the_checkpoint_of_an_uninterrupted_run(built, tmp_path):
    ddp_straight_run(built, tmp_path / "straight")
    killed = write_project(built, tmp_path / "killed", **DDP)
    position = kill_after_a_save_in_epoch_2(killed)  # the workers die with their launcher, mid-epoch
    assert resume(killed, position) == (tmp_path / "straight" / "checkpoint.pt").read_bytes()

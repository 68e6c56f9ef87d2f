"""Worker entry of distributed training: `torchrun ... -m textrnn.ddp_train (--spec FILE | --params FILE)`.

The train stage starts it itself when `train.nproc > 1` (one machine, `--standalone`). Across machines,
start it on each node with torchrun, e.g. on node 0 of 2:

    torchrun --nnodes=2 --node_rank=0 --master_addr=node0 --master_port=29500 --nproc_per_node=2 \\
        -m textrnn.ddp_train --params params.yaml
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import logging
import os
import signal
from pathlib import Path

import torch.distributed as dist

from textrnn.config import ModelParams, TrainParams, load_params
from textrnn.stages import train


def _spec_from_params(path: str) -> dict:
    p = load_params(path)
    return {"vocab_dir": p.paths.vocab, "checkpoint": p.paths.checkpoint, "train_log": p.paths.train_log,
            "state": p.paths.train_state, "model": dataclasses.asdict(p.model), "train": dataclasses.asdict(p.train)}


def _die_with_the_launcher() -> None:
    """torchrun starts each worker in a session of its own, so killing the train stage's process group
    (a kill of the stage, a timeout) would leave the workers training on, writing the state a rerun
    resumes from. On Linux the kernel kills a worker when its launcher dies (PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers outlive a killed launcher
        pass


def _rank_zero_logs_to_stderr() -> None:
    """Rank 0's progress and validation lines on stderr, where the parent process's logs go (the other
    ranks would only repeat them)."""
    if os.environ.get("RANK", "0") != "0":
        return
    logger = logging.getLogger("textrnn")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [rank 0]: %(message)s"))
        logger.addHandler(handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help="JSON written by the train stage")
    source.add_argument("--params", help="a params.yaml (multi-node runs started by hand)")
    args = parser.parse_args()
    spec = json.loads(Path(args.spec).read_text()) if args.spec else _spec_from_params(args.params)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    train_p = TrainParams(**spec["train"])
    # Share the cores: each process gets its part of train.threads (0 = all cores).
    threads = max(1, (train_p.threads or os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
    train_p = dataclasses.replace(train_p, threads=threads)
    _die_with_the_launcher()
    _rank_zero_logs_to_stderr()
    dist.init_process_group(backend="gloo")
    try:
        train.run(Path(spec["vocab_dir"]), Path(spec["checkpoint"]), Path(spec["train_log"]), Path(spec["state"]),
                  ModelParams(**spec["model"]), train_p)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Worker entry of distributed training: `torchrun ... -m textrnn.ddp_train (--spec FILE | --params FILE)`.

The train stage starts it itself when `train.nproc > 1` (one machine, `--standalone`). Across machines,
start it on each node with torchrun, e.g. on node 0 of 2:

    torchrun --nnodes=2 --node_rank=0 --master_addr=node0 --master_port=29500 --nproc_per_node=2 \\
        -m textrnn.ddp_train --params params.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import torch.distributed as dist

from textrnn.config import ModelParams, TrainParams, load_params
from textrnn.stages import train


def _spec_from_params(path: str) -> dict:
    p = load_params(path)
    return {"vocab_dir": p.paths.vocab, "checkpoint": p.paths.checkpoint, "train_log": p.paths.train_log,
            "state": p.paths.train_state, "model": dataclasses.asdict(p.model), "train": dataclasses.asdict(p.train)}


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
    dist.init_process_group(backend="gloo")
    try:
        train.run(Path(spec["vocab_dir"]), Path(spec["checkpoint"]), Path(spec["train_log"]), Path(spec["state"]),
                  ModelParams(**spec["model"]), train_p)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

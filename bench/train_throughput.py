"""Training throughput: this project's training loop vs a bare PyTorch loop, same model, same batches.

Run after the vocab stage (`textrnn stage vocab` or `make run`):

    .venv/bin/python bench/train_throughput.py [--params params.yaml] [--batches 120]

The bare loop gets the very same padded batches pre-built as tensors (no data pipeline at all); the
project's loop builds them from the memory-mapped split as training does. Also reports the padding
fraction with length bucketing and with plain random batches. Ratios are printed last.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from textrnn.config import load_params
from textrnn.data import EncodedSplit, bucketed_batches, padding_fraction
from textrnn.model import ModelConfig, RNNClassifier
from textrnn.training import configure_torch, distillation_loss, to_tensors, train_epoch, warmup_decay
from textrnn.vocab import Vocabulary


def _fresh(cfg: ModelConfig, lr: float, steps: int, seed: int):
    torch.manual_seed(seed)
    model = RNNClassifier(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(steps, 0.1))
    return model, optimizer, scheduler


def bare_loop(model, optimizer, scheduler, tensors) -> float:
    """tokens/s of the plainest loop: pre-built tensors, forward, backward, clip, step."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    tokens, start = 0, time.perf_counter()
    for ids, lengths, labels in tensors:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(ids, lengths), labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        tokens += int(lengths.sum())
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--batches", type=int, default=120, help="batches timed per loop")
    args = parser.parse_args()
    p = load_params(args.params)
    configure_torch(p.train.seed, p.train.threads)
    vocab_dir = Path(p.paths.vocab)
    train = EncodedSplit.load(vocab_dir / "train")
    cfg = ModelConfig.from_params(p.model, len(Vocabulary.load(vocab_dir / "vocab.json")),
                                  int(np.max(train.labels)) + 1)
    rng = np.random.default_rng(p.train.seed)
    lengths = train.lengths
    bucketed = bucketed_batches(lengths, p.train.batch_size, rng, p.train.bucket_size)
    order = np.random.default_rng(p.train.seed).permutation(len(lengths))
    random_batches = [order[i:i + p.train.batch_size] for i in range(0, len(order), p.train.batch_size)]
    timed = bucketed[: args.batches]
    device = torch.device("cpu")
    tensors = [to_tensors(train, rows, device) for rows in timed]

    bare_loop(*_fresh(cfg, p.train.lr, len(timed), 0), tensors[:5])  # warm-up (allocator, kernels)
    bare = bare_loop(*_fresh(cfg, p.train.lr, len(timed), 0), tensors)
    model, optimizer, scheduler = _fresh(cfg, p.train.lr, len(timed), 0)
    _, project = train_epoch(model, train, timed, optimizer, scheduler, distillation_loss(None, None, 0.0, device),
                             1.0, device)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"threads: {torch.get_num_threads()}, model: {cfg.cell} h{cfg.hidden_size} "
          f"{'bi' if cfg.bidirectional else 'uni'} {cfg.pooling}, batches timed: {len(timed)}")
    print(f"bare PyTorch loop tokens/s: {bare:,.0f}")
    print(f"textrnn training loop tokens/s: {project:,.0f}")
    print(f"padding with bucketing: {padding_fraction(lengths, bucketed):.4f}")
    print(f"padding with random batches: {padding_fraction(lengths, random_batches):.4f}")
    print(f"peak RSS MiB: {peak_mib:,.0f}")
    print(f"ratio textrnn/bare tokens/s: {project / bare:.3f} (target >= 0.9)")
    ratio = padding_fraction(lengths, bucketed) / padding_fraction(lengths, random_batches)
    print(f"ratio padding bucketed/random: {ratio:.3f}")


if __name__ == "__main__":
    main()

"""fit / train_epoch / evaluate_loss and checkpoints. No Prefect, no params.yaml: plain arguments in."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from tqdm import tqdm

from textrnn.config import TrainParams
from textrnn.data import EncodedSplit, bucketed_batches, padding_fraction, sequential_batches
from textrnn.io import atomic_file
from textrnn.model import ModelConfig, RNNClassifier

log = logging.getLogger(__name__)

LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "tokens_per_s",
               "padding_fraction", "seconds")


def configure_torch(seed: int, threads: int) -> None:
    """Seeds and thread count fixed from params, deterministic kernels where torch has them."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device = 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def warmup_decay(total_steps: int, warmup_fraction: float):
    """Linear warm-up to the peak learning rate, then cosine decay to zero."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def to_tensors(split: EncodedSplit, rows: np.ndarray, device: torch.device):
    ids, lengths, labels = split.padded(rows)
    return (torch.from_numpy(ids).to(device), torch.from_numpy(lengths).to(device),
            torch.from_numpy(labels).to(device))


def train_epoch(model: nn.Module, split: EncodedSplit, batches: list[np.ndarray], optimizer, scheduler,
                loss_fn, grad_clip: float, device: torch.device, desc: str = "train") -> tuple[float, float]:
    """One pass over `batches`; returns (mean loss, tokens per second)."""
    model.train()
    total_loss = torch.zeros((), device=device)  # summed on the device: no sync per step
    tokens, start = 0, time.perf_counter()
    bar = tqdm(batches, desc=desc, unit="batch", disable=None, leave=False, mininterval=1.0)
    for step, rows in enumerate(bar, 1):
        ids, lengths, labels = to_tensors(split, rows, device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(ids, lengths), labels, rows)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        total_loss += loss.detach() * len(rows)
        tokens += int(split.offsets[rows + 1].sum() - split.offsets[rows].sum())
        if step % 25 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens / (time.perf_counter() - start):.0f}")
    seconds = time.perf_counter() - start
    return total_loss.item() / max(1, sum(len(b) for b in batches)), tokens / max(seconds, 1e-9)


@torch.no_grad()
def predict_logits(model: nn.Module, split: EncodedSplit, batch_size: int, device: torch.device) -> np.ndarray:
    """Logits for every row of a split, in row order (batched by length for speed)."""
    model.eval()
    out = np.zeros((len(split), model.cfg.num_classes), dtype=np.float32)
    for rows in sequential_batches(split.lengths, batch_size):
        ids, lengths, _ = to_tensors(split, rows, device)
        out[rows] = model(ids, lengths).float().cpu().numpy()
    return out


def evaluate_loss(model: nn.Module, split: EncodedSplit, batch_size: int, device: torch.device) -> dict:
    logits = predict_logits(model, split, batch_size, device)
    labels = np.array(split.labels)
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    predicted = logits.argmax(1)
    return {"loss": loss, "accuracy": float(accuracy_score(labels, predicted)),
            "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0))}


@dataclass
class FitState:
    """Everything needed to continue training after a kill, saved after every epoch."""

    epoch: int = 0
    best_f1: float = -1.0
    best_epoch: int = 0
    stale_epochs: int = 0
    best_state: dict = field(default_factory=dict)
    history: list = field(default_factory=list)


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def fit(cfg: ModelConfig, train: EncodedSplit, val: EncodedSplit, p: TrainParams, state_path: Path,
        fingerprint: str, embedding_init: np.ndarray | None = None, teacher_log_probs: np.ndarray | None = None,
        on_epoch: Callable[[list[dict]], None] | None = None) -> tuple[RNNClassifier, FitState]:
    """Train with early stopping on validation macro-F1; resumes from `state_path` if it matches
    `fingerprint` (a digest of the inputs and params). `embedding_init` [vocab, embedding_dim] replaces the
    random embedding (pre-trained vectors); `teacher_log_probs` [train rows, classes] are soft targets.
    `on_epoch(history)` runs on rank 0 after each epoch's state is saved (the live log)."""
    configure_torch(p.seed, p.threads)
    device = pick_device(p.device)
    rank, size = world()
    model = RNNClassifier(cfg)
    if embedding_init is not None:
        model.embedding.weight.data.copy_(torch.from_numpy(embedding_init))
    model = model.to(device)
    train_model = nn.parallel.DistributedDataParallel(model) if size > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    steps_per_epoch = math.ceil(len(train) / p.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(steps_per_epoch * p.epochs,
                                                                          p.warmup_fraction))
    weight = class_weights(np.asarray(train.labels), cfg.num_classes).to(device) if p.class_weights else None
    loss_fn = distillation_loss(weight, teacher_log_probs, p.teacher_weight, device)
    # The saved state is only valid for the same data, model and training params.
    fingerprint = hashlib.sha256(json.dumps([fingerprint, cfg.to_dict(), asdict(p)], sort_keys=True).encode()
                                 ).hexdigest()
    state = load_fit_state(state_path, fingerprint, model, optimizer, scheduler)
    lengths = train.lengths
    while state.epoch < p.epochs and state.stale_epochs < p.patience:
        epoch = state.epoch + 1
        # The data order of an epoch depends on (seed, epoch) alone, so a resumed run sees the same order.
        batches = bucketed_batches(lengths, p.batch_size, np.random.default_rng([p.seed, epoch]), p.bucket_size)
        start = time.perf_counter()
        train_loss, tokens_per_s = train_epoch(train_model, train, shard_batches(batches, rank, size), optimizer,
                                               scheduler, loss_fn, p.grad_clip, device,
                                               desc=f"epoch {epoch}/{p.epochs}")
        scores = evaluate_loss(model, val, p.batch_size * 4, device)
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": scores["loss"],
               "val_accuracy": scores["accuracy"], "val_macro_f1": scores["macro_f1"],
               "lr": scheduler.get_last_lr()[0], "tokens_per_s": tokens_per_s,
               "padding_fraction": padding_fraction(lengths, batches), "seconds": time.perf_counter() - start}
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in row.items() if k != "epoch"})
        _advance(state, model, row)  # every process evaluated the same weights: same decision everywhere
        if rank == 0:
            save_fit_state(state_path, fingerprint, state, model, optimizer, scheduler)
            if on_epoch is not None:
                on_epoch(state.history)
    model.load_state_dict(state.best_state)
    return model, state


def distillation_loss(weight: torch.Tensor | None, teacher_log_probs: np.ndarray | None, teacher_weight: float,
                      device: torch.device):
    """loss(logits, labels, rows): cross-entropy on the labels, mixed with the KL divergence from the
    teacher's distribution over the same rows (Hinton et al.; Tang et al., 2019) when there is a teacher."""
    hard = nn.CrossEntropyLoss(weight=weight)
    if teacher_log_probs is None or teacher_weight == 0:
        return lambda logits, labels, rows: hard(logits, labels)
    teacher = torch.from_numpy(np.asarray(teacher_log_probs, dtype=np.float32)).to(device)  # [N, C]

    def loss(logits: torch.Tensor, labels: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        soft = nn.functional.kl_div(torch.log_softmax(logits, dim=1), teacher[torch.from_numpy(rows).to(device)],
                                    reduction="batchmean", log_target=True)
        return (1 - teacher_weight) * hard(logits, labels) + teacher_weight * soft

    return loss


def world() -> tuple[int, int]:
    """(rank, number of processes): (0, 1) unless running under torch.distributed (torchrun)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard_batches(batches: list[np.ndarray], rank: int, size: int) -> list[np.ndarray]:
    """Each process takes its share of every batch (rows rank, rank + size, ...). DDP averages the
    gradients, so each step matches the single-process step on the whole batch. A batch smaller than the
    number of processes is skipped by all of them (every process must take part in every step)."""
    if size == 1:
        return batches
    return [rows[rank::size] for rows in batches if len(rows) >= size]


def _advance(state: FitState, model: nn.Module, row: dict) -> None:
    state.epoch = row["epoch"]
    state.history.append(row)
    if row["val_macro_f1"] > state.best_f1:
        state.best_f1, state.best_epoch, state.stale_epochs = row["val_macro_f1"], row["epoch"], 0
        state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state.stale_epochs += 1


def load_verified(path: Path) -> dict:
    """torch.load (weights only) after checking every member's CRC: torch itself does not, so flipped
    bytes inside tensor data would otherwise load silently as wrong weights."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path}: not a valid torch archive ({err})") from err
    if broken is not None:
        raise ValueError(f"{path}: checksum mismatch in {broken!r} (corrupted file)")
    return torch.load(path, map_location="cpu", weights_only=True)


def save_fit_state(path: Path, fingerprint: str, state: FitState, model, optimizer, scheduler) -> None:
    payload = {
        "fingerprint": fingerprint, "epoch": state.epoch, "best_f1": state.best_f1,
        "best_epoch": state.best_epoch, "stale_epochs": state.stale_epochs, "best_state": state.best_state,
        "history": state.history, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
    }
    _save_atomic(payload, path)


def _save_atomic(payload: dict, path: Path) -> None:
    """torch.save into memory, then an ordinary atomic write: a full disk raises OSError(ENOSPC) naming the
    path (torch's own file writer reports only 'iostream error')."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_file(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_fit_state(path: Path, fingerprint: str, model, optimizer, scheduler) -> FitState:
    """The saved state if it belongs to this exact run (same inputs and params), else a fresh start."""
    if not path.exists():
        return FitState()
    try:
        payload = load_verified(path)
    except Exception as err:
        log.warning("%s: unreadable training state (%s); starting from scratch", path, err)
        return FitState()
    if payload.get("fingerprint") != fingerprint:
        log.info("%s: saved state is for other inputs or params; starting from scratch", path)
        return FitState()
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["torch_rng"])
    log.info("resuming after epoch %d from %s", payload["epoch"], path)
    return FitState(epoch=payload["epoch"], best_f1=payload["best_f1"], best_epoch=payload["best_epoch"],
                    stale_epochs=payload["stale_epochs"], best_state=payload["best_state"],
                    history=payload["history"])


def save_checkpoint(path: Path, model: RNNClassifier, vocab_digest: str, labels: list[str], params: dict,
                    best: dict) -> None:
    """The model that ships: weights, config, vocabulary hash, labels, params. No pickled objects."""
    payload = {"state_dict": model.state_dict(), "config": model.cfg.to_dict(), "vocab_digest": vocab_digest,
               "labels": labels, "params": params, "best": best}
    _save_atomic(payload, path)


def load_checkpoint(path: str | Path, expected_vocab_digest: str | None = None) -> tuple[RNNClassifier, dict]:
    path = Path(path)
    try:
        payload = load_verified(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint missing (run the train stage)") from None
    except Exception as err:
        raise ValueError(f"{path}: corrupt checkpoint ({err}); rerun the train stage") from err
    if expected_vocab_digest and payload["vocab_digest"] != expected_vocab_digest:
        raise ValueError(f"{path}: trained on another vocabulary than the current one; rerun the train stage")
    model = RNNClassifier(ModelConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload

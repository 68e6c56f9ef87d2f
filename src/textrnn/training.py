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
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from tqdm import tqdm

from textrnn.config import TrainParams
from textrnn.data import EncodedSplit, padding_fraction, sequential_batches
from textrnn.io import atomic_file
from textrnn.model import ModelConfig, RNNClassifier
from textrnn.training_plan import Position, TrainingPlan, validation_sample

if TYPE_CHECKING:  # teacher imports training (world); only the type is needed here
    from textrnn.teacher import SoftTargets

log = logging.getLogger(__name__)

# One row per validation: `step` counts them (1, 2, ...), `epoch` is how far training had come (2.25: a
# quarter into the third epoch; whole numbers when validating once per epoch), `tokens` the real training
# tokens consumed by then.
LOG_COLUMNS = ("step", "epoch", "tokens", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr",
               "tokens_per_s", "padding_fraction", "seconds")


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
    loss_sum, rows, tokens, seconds = train_steps(model, split, batches, optimizer, scheduler, loss_fn, grad_clip,
                                                  device, desc)
    return loss_sum / max(1, rows), tokens / max(seconds, 1e-9)


def train_steps(model: nn.Module, split: EncodedSplit, batches: list[np.ndarray], optimizer, scheduler,
                loss_fn, grad_clip: float, device: torch.device, desc: str = "train",
                first: int = 0, total: int | None = None) -> tuple[float, int, int, float]:
    """One optimizer step per batch; returns (summed loss over rows, rows, tokens, seconds). `first` and
    `total` place the batches within their epoch for the progress bar."""
    model.train()
    total_loss = torch.zeros((), device=device)  # summed on the device: no sync per step
    tokens, start = 0, time.perf_counter()
    bar = tqdm(batches, desc=desc, unit="batch", disable=None, leave=False, mininterval=1.0, initial=first,
               total=total if total is not None else len(batches))
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
    return total_loss.item(), sum(len(b) for b in batches), tokens, time.perf_counter() - start


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
    """Everything needed to continue training after a kill, saved after every validation."""

    position: Position = field(default_factory=Position)
    best_f1: float = -1.0
    best_step: int = 0  # the validation (log step) with the best val macro-F1
    stale: int = 0  # validations since the best one (early stopping counts these)
    best_state: dict = field(default_factory=dict)
    history: list = field(default_factory=list)

    @property
    def epoch(self) -> int:
        """Whole epochs done."""
        return self.position.epoch

    @property
    def best_row(self) -> dict:
        return self.history[self.best_step - 1] if self.best_step else {}


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def fit(cfg: ModelConfig, train: EncodedSplit, val: EncodedSplit, p: TrainParams, state_path: Path,
        fingerprint: str, embedding_init: np.ndarray | None = None, teacher: SoftTargets | None = None,
        on_validation: Callable[[list[dict]], None] | None = None) -> tuple[RNNClassifier, FitState]:
    """Train with early stopping on validation macro-F1 until the epochs or a budget (`p.max_tokens`,
    `p.max_steps`) run out, validating once per epoch or every `p.eval_every_tokens` tokens; resumes from
    `state_path` if it matches `fingerprint` (a digest of the inputs and params), at the very batch it was
    saved after. `embedding_init` [vocab, embedding_dim] replaces the random embedding (pre-trained
    vectors); `teacher` holds the soft targets of the train rows the plan reaches. `on_validation(history)` runs on
    rank 0 after each validation's state is saved (the live log)."""
    configure_torch(p.seed, p.threads)
    device = pick_device(p.device)
    rank, size = world()
    model = RNNClassifier(cfg)
    if embedding_init is not None:
        model.embedding.weight.data.copy_(torch.from_numpy(embedding_init))
    model = model.to(device)
    train_model = nn.parallel.DistributedDataParallel(model) if size > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    plan = TrainingPlan(train.lengths, p, size)
    total_steps = plan.total_steps()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(total_steps, p.warmup_fraction))
    weight = class_weights(np.asarray(train.labels), cfg.num_classes).to(device) if p.class_weights else None
    loss_fn = distillation_loss(weight, teacher, p.teacher_weight, device)
    # The saved state is only valid for the same data, model and training params.
    fingerprint = hashlib.sha256(json.dumps([fingerprint, cfg.to_dict(), asdict(p)], sort_keys=True).encode()
                                 ).hexdigest()
    state = load_fit_state(state_path, fingerprint, model, optimizer, scheduler, device)
    val = validation_sample(val, p.val_max_rows, p.seed)
    log.info("train: %d steps planned, validation on %d rows %s", total_steps, len(val),
             f"every {p.eval_every_tokens:,} tokens" if p.eval_every_tokens else "after each epoch")
    since = _Interval(plan.lengths)  # training since the last validation
    while not plan.finished(state.position) and state.stale < p.patience:
        segment = plan.next_segment(state.position)
        batches = plan.batches(segment.epoch)[segment.start:segment.end]
        since.add(train_steps(train_model, train, shard_batches(batches, rank, size), optimizer, scheduler, loss_fn,
                              p.grad_clip, device, f"epoch {segment.epoch}/{p.epochs}", segment.start,
                              len(plan.batches(segment.epoch))), batches, plan.tokens_of(segment))
        state.position = plan.advance(state.position, segment, validated=segment.validate)
        if not segment.validate:
            continue
        row = since.row(len(state.history) + 1, plan.epochs_done(state.position), state.position.tokens,
                        evaluate_loss(model, val, p.batch_size * 4, device), scheduler.get_last_lr()[0])
        log.info("step %d (epoch %s, %d tokens): %s", row["step"], row["epoch"], row["tokens"],
                 {k: round(v, 4) for k, v in row.items() if k not in ("step", "epoch", "tokens")})
        _advance(state, model, row)  # every process evaluated the same weights: same decision everywhere
        rng = _gathered_rng_states(device, size)  # every process takes part, rank 0 saves
        if rank == 0:
            save_fit_state(state_path, fingerprint, state, model, optimizer, scheduler, rng)
            if on_validation is not None:
                on_validation(state.history)
        since = _Interval(plan.lengths)
    model.load_state_dict(state.best_state)
    return model, state


class _Interval:
    """Training between two validations (one process's share): its loss, rows, the tokens of the global
    batches, the time since it began, and the padding of its batches."""

    def __init__(self, lengths: np.ndarray):
        self.lengths, self.batches = lengths, []
        self.loss_sum, self.rows, self.tokens, self.seconds = 0.0, 0, 0, 0.0
        self.started = time.perf_counter()

    def add(self, trained: tuple[float, int, int, float], batches: list[np.ndarray], tokens: int) -> None:
        loss_sum, rows, _, seconds = trained
        self.loss_sum, self.rows, self.seconds = self.loss_sum + loss_sum, self.rows + rows, self.seconds + seconds
        self.tokens += tokens
        self.batches.extend(batches)

    def row(self, step: int, epoch: float, tokens: int, scores: dict, lr: float) -> dict:
        return {"step": step, "epoch": int(epoch) if float(epoch).is_integer() else round(epoch, 4),
                "tokens": tokens, "train_loss": self.loss_sum / max(1, self.rows), "val_loss": scores["loss"],
                "val_accuracy": scores["accuracy"], "val_macro_f1": scores["macro_f1"], "lr": lr,
                "tokens_per_s": self.tokens / max(self.seconds, 1e-9),
                "padding_fraction": padding_fraction(self.lengths, self.batches),
                "seconds": time.perf_counter() - self.started}


def distillation_loss(weight: torch.Tensor | None, teacher: SoftTargets | None, teacher_weight: float,
                      device: torch.device):
    """loss(logits, labels, rows): cross-entropy on the labels, mixed with the KL divergence from the
    teacher's distribution over the same rows (Hinton et al.; Tang et al., 2019) when there is a teacher."""
    hard = nn.CrossEntropyLoss(weight=weight)
    if teacher is None or teacher_weight == 0:
        return lambda logits, labels, rows: hard(logits, labels)
    soft_targets = torch.from_numpy(np.asarray(teacher.log_probs, dtype=np.float32)).to(device)  # [rows, C]

    def loss(logits: torch.Tensor, labels: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        targets = soft_targets[torch.from_numpy(teacher.positions(rows)).to(device)]
        soft = nn.functional.kl_div(torch.log_softmax(logits, dim=1), targets, reduction="batchmean",
                                    log_target=True)
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
    state.history.append(row)
    if row["val_macro_f1"] > state.best_f1:
        state.best_f1, state.best_step, state.stale = row["val_macro_f1"], row["step"], 0
        state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state.stale += 1


def _gathered_rng_states(device: torch.device, size: int) -> dict:
    """Every process's random-number state (dropout draws from it), [processes, state bytes] per
    generator, so that each process continues its own stream after a resume."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    if size == 1:
        return {name: state[None] for name, state in states.items()}
    gathered = {}
    for name, state in states.items():
        parts = [torch.empty_like(state) for _ in range(size)]
        torch.distributed.all_gather(parts, state)
        gathered[name] = torch.stack(parts)
    return gathered


def _restore_rng_states(states: dict, device: torch.device) -> None:
    rank = world()[0]
    # A row of the stacked states is a view into it: torch's setters read it from its storage's start (and
    # crash on a view with an offset), so each gets a copy of its own.
    torch.set_rng_state(states["torch"][rank].clone())
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"][rank].clone(), device)


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


def save_fit_state(path: Path, fingerprint: str, state: FitState, model, optimizer, scheduler, rng: dict) -> None:
    payload = {
        "fingerprint": fingerprint, "epoch": state.epoch, "position": asdict(state.position),
        "best_f1": state.best_f1, "best_step": state.best_step, "stale": state.stale,
        "best_state": state.best_state, "history": state.history, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
    }
    _save_atomic(payload, path)


def _save_atomic(payload: dict, path: Path) -> None:
    """torch.save into memory, then an ordinary atomic write: a full disk raises OSError(ENOSPC) naming the
    path (torch's own file writer reports only 'iostream error')."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_file(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_fit_state(path: Path, fingerprint: str, model, optimizer, scheduler, device: torch.device) -> FitState:
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
    saved_by, size = len(payload["rng"]["torch"]), world()[1]
    if saved_by != size:  # train.nproc is in the fingerprint: only a torchrun started by hand gets here
        raise ValueError(f"{path}: training state saved by {saved_by} processes, this run has {size}; run with "
                         f"{saved_by} processes to resume it, or delete it to start over")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    _restore_rng_states(payload["rng"], device)
    position = Position(**payload["position"])
    log.info("resuming after epoch %d, batch %d (%d steps, %d tokens) from %s", position.epoch, position.batch,
             position.steps, position.tokens, path)
    return FitState(position=position, best_f1=payload["best_f1"], best_step=payload["best_step"],
                    stale=payload["stale"], best_state=payload["best_state"], history=payload["history"])


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

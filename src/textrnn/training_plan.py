"""Where a training run is and where it stops: the seeded batch order of each epoch, the token and step
budgets, the points at which it validates (and saves its resumable state), and the bounded validation
sample. Pure numpy; `training.fit` runs the plan.

A run is a sequence of optimizer steps, one per global batch: epoch e's batches come from
`bucketed_batches` seeded by (seed, e) alone, so a position (epochs done, batches done of the next) is enough
to find the next batch again after a restart. Tokens are real tokens (row lengths, no padding) of the whole
global batch, whatever the number of processes it is spread over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from textrnn.config import TrainParams
from textrnn.data import EncodedSplit, bucketed_batches


@dataclass(frozen=True)
class Position:
    """How far a run has come: epochs done, batches done of the next epoch, steps and tokens so far, and the
    token count at the last validation (the next one is `eval_every_tokens` after it)."""

    epoch: int = 0
    batch: int = 0
    steps: int = 0
    tokens: int = 0
    evaluated_at_tokens: int = 0


@dataclass(frozen=True)
class Segment:
    """Batches [start, end) of `epoch` (1-based) to train next, and whether a validation follows them."""

    epoch: int
    start: int
    end: int
    validate: bool


class TrainingPlan:
    """The batch order of every epoch and the budgets of one run (`p`) over `lengths` (the train split's
    row lengths), for `processes` data-parallel processes."""

    def __init__(self, lengths: np.ndarray, p: TrainParams, processes: int = 1):
        self.lengths, self.p, self.processes = np.asarray(lengths, dtype=np.int64), p, processes
        self._cached: tuple[int, list[np.ndarray], np.ndarray] | None = None

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches epoch `epoch` (1-based) trains on, in order."""
        return self._epoch(epoch)[1]

    def batch_tokens(self, epoch: int) -> np.ndarray:
        """Real tokens of each of `batches(epoch)` [batches] int64."""
        return self._epoch(epoch)[2]

    def _epoch(self, epoch: int) -> tuple[int, list[np.ndarray], np.ndarray]:
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng([self.p.seed, epoch])
            batches = bucketed_batches(self.lengths, self.p.batch_size, rng, self.p.bucket_size)
            # Every process must take part in every step: a batch with fewer rows than processes is skipped.
            batches = [rows for rows in batches if len(rows) >= self.processes]
            self._cached = (epoch, batches, _tokens_per_batch(self.lengths, batches))
        return self._cached

    def total_steps(self) -> int:
        """Steps the run takes unless it stops early: the learning-rate schedule's length. With a token
        budget it is the exact step at which the budget is reached, so the schedule ends with the run."""
        p = self.p
        steps = math.ceil(len(self.lengths) / p.batch_size) * p.epochs
        if p.max_tokens:
            steps = self._steps_to_reach(p.max_tokens)
        if p.max_steps:
            steps = min(steps, p.max_steps)
        return max(1, steps)

    def _steps_to_reach(self, budget: int) -> int:
        steps = 0
        for epoch in range(1, self.p.epochs + 1):
            cumulative = np.cumsum(self.batch_tokens(epoch))
            if len(cumulative) and cumulative[-1] >= budget:
                return steps + int(np.searchsorted(cumulative, budget)) + 1
            steps += len(cumulative)
            budget -= int(cumulative[-1]) if len(cumulative) else 0
        return steps

    def rows_reached(self) -> np.ndarray:
        """Sorted indices of the train rows the run trains on if it does not stop early: every row unless
        a budget ends it within the first epoch (then the rows of the batches before that point)."""
        steps, first = self.total_steps(), self.batches(1)
        if steps >= len(first) or not first:
            return np.arange(len(self.lengths), dtype=np.int64)
        return np.unique(np.concatenate(first[:steps])).astype(np.int64)

    def finished(self, at: Position) -> bool:
        """True when the epochs or a budget are used up (early stopping is decided by the caller)."""
        p = self.p
        return (at.epoch >= p.epochs or (p.max_tokens > 0 and at.tokens >= p.max_tokens)
                or (p.max_steps > 0 and at.steps >= p.max_steps))

    def next_segment(self, at: Position) -> Segment:
        """The batches to train from `at` up to the next validation, the end of the run or the epoch's end,
        whichever comes first. Validation comes after every `eval_every_tokens` tokens (0: at each epoch's
        end) and always at the end of the run."""
        p, epoch = self.p, at.epoch + 1
        tokens = at.tokens + np.cumsum(self.batch_tokens(epoch)[at.batch:])  # total after each batch
        steps = at.steps + np.arange(1, len(tokens) + 1)
        stop = np.zeros(len(tokens), dtype=bool)
        if p.max_tokens:
            stop |= tokens >= p.max_tokens
        if p.max_steps:
            stop |= steps >= p.max_steps
        if p.eval_every_tokens:
            stop |= tokens - at.evaluated_at_tokens >= p.eval_every_tokens
        if stop.any():
            return Segment(epoch, at.batch, at.batch + int(stop.argmax()) + 1, validate=True)
        last_epoch = epoch >= p.epochs
        return Segment(epoch, at.batch, at.batch + len(tokens), validate=last_epoch or not p.eval_every_tokens)

    def tokens_of(self, segment: Segment) -> int:
        return int(self.batch_tokens(segment.epoch)[segment.start:segment.end].sum())

    def advance(self, at: Position, segment: Segment, validated: bool) -> Position:
        """The position after training `segment` (and validating, if `validated`)."""
        tokens = at.tokens + self.tokens_of(segment)
        epoch, batch = at.epoch, segment.end
        if batch >= len(self.batches(segment.epoch)):
            epoch, batch = epoch + 1, 0
        return Position(epoch, batch, at.steps + segment.end - segment.start, tokens,
                        tokens if validated else at.evaluated_at_tokens)

    def epochs_done(self, at: Position) -> float:
        """Completed epochs as a fraction (2.25: a quarter into the third epoch)."""
        if at.batch == 0:
            return float(at.epoch)
        return at.epoch + at.batch / len(self.batches(at.epoch + 1))


def _tokens_per_batch(lengths: np.ndarray, batches: list[np.ndarray]) -> np.ndarray:
    if not batches:
        return np.zeros(0, np.int64)
    starts = np.cumsum([0] + [len(rows) for rows in batches[:-1]])
    return np.add.reduceat(lengths[np.concatenate(batches)], starts)


def validation_sample(val: EncodedSplit, max_rows: int, seed: int) -> EncodedSplit:
    """`val` itself when it has at most `max_rows` rows (or `max_rows` is 0), else a fixed seeded sample of
    `max_rows` of its rows, in their order, held in memory: validation then costs the same whatever the
    size of the split, and every validation of a run (and of a resumed run) scores the same rows."""
    if not max_rows or len(val) <= max_rows:
        return val
    # Seeded apart from the epochs' batch orders, which use (seed, epoch >= 1).
    rows = np.sort(np.random.default_rng([seed, 0]).choice(len(val), max_rows, replace=False))
    return subset(val, rows)


def subset(split: EncodedSplit, rows: np.ndarray) -> EncodedSplit:
    """The given rows of a split as an in-memory split."""
    starts, lengths = split.offsets[rows], split.offsets[rows + 1] - split.offsets[rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # Position k of the new ids reads old position starts[row] + (k - offsets[row]).
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    ids = np.asarray(split.ids[np.repeat(starts, lengths) + within])
    return EncodedSplit(ids=ids, offsets=offsets, labels=np.asarray(split.labels[rows], dtype=np.int64))

"""Which tokens decided a prediction: occlusion attributions from the model's outputs alone (no gradients,
no torch), for `Predictor.explain`, `textrnn predict --explain` and the model server.

The contribution of a unit (a token, or a span of tokens in a long text) to class c is

    p(c | text) - p(c | text with the unit removed)

exactly: removing the unit from the text and predicting again changes p(c) by that amount. Positive
means the unit pushed towards c. A text of L tokens costs L + 1 rows through the model, so a text is cut
into at most `budget` units (contiguous spans of ceil(L / budget) tokens when it is longer). The rows of
all texts are predicted in batches of `batch_rows`, texts ordered by length: with budget + 1 <=
batch_rows, that is at most one model call per text.

Removing the only unit of a one-unit text would leave nothing to predict: that text is compared with a
text of one <unk> token instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from textrnn.vocab import PAD_ID, UNK_ID

LogitsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (ids [B, T] int64, lengths [B] int64) -> [B, C]


@dataclass(frozen=True)
class Attribution:
    """One text's occlusion: the probabilities of the whole text, and per unit its token positions and
    its contribution to each class."""

    probabilities: np.ndarray  # [C] float64
    spans: np.ndarray  # [U, 2] int64: unit u covers tokens spans[u, 0] to spans[u, 1] (exclusive)
    contributions: np.ndarray  # [U, C] float64


def unit_spans(length: int, budget: int) -> np.ndarray:
    """Contiguous units covering `length` tokens, at most `budget` of them, all as long (the last shorter)."""
    size = -(-length // budget)
    starts = np.arange(0, length, size)
    return np.stack([starts, np.minimum(starts + size, length)], axis=1).astype(np.int64)


def _variants(row: np.ndarray, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The row and, for each unit, the row without it: ids [U + 1, L] (right-padded) and lengths [U + 1]."""
    length = len(row)
    position = np.arange(length)
    kept = np.ones((len(spans) + 1, length), bool)
    kept[1:] = ~((position >= spans[:, :1]) & (position < spans[:, 1:]))  # [U, L]: outside unit u
    lengths = kept.sum(axis=1)
    # Kept positions first, in order (a stable sort of "removed" puts them there), then padding.
    order = np.argsort(~kept, axis=1, kind="stable")
    ids = np.where(position[None, :] < lengths[:, None], row[order], PAD_ID)
    empty = lengths == 0
    ids[empty, 0], lengths[empty] = UNK_ID, 1
    return ids.astype(np.int64), lengths.astype(np.int64)


def occlusion(ids: np.ndarray, offsets: np.ndarray, logits_fn: LogitsFn, budget: int = 64,
              batch_rows: int = 256) -> list[Attribution | None]:
    """Attributions of every encoded row (ids/offsets as `vocab.encode` gives them); None for an empty row."""
    if budget < 1 or batch_rows < 1:
        raise ValueError(f"occlusion: budget and batch_rows must be at least 1, got {budget} and {batch_rows}")
    lengths = np.diff(offsets)
    order = [int(i) for i in np.argsort(lengths, kind="stable") if lengths[i] > 0]
    spans = {i: unit_spans(int(lengths[i]), budget) for i in order}
    pieces = [_variants(ids[offsets[i]:offsets[i + 1]], spans[i]) for i in order]
    probabilities = _probabilities(pieces, logits_fn, batch_rows)
    out: list[Attribution | None] = [None] * len(lengths)
    start = 0
    for i, (variant_ids, _) in zip(order, pieces):
        rows = probabilities[start:start + len(variant_ids)]
        start += len(variant_ids)
        out[i] = Attribution(probabilities=rows[0], spans=spans[i], contributions=rows[0][None, :] - rows[1:])
    return out


def _probabilities(pieces: list[tuple[np.ndarray, np.ndarray]], logits_fn: LogitsFn, batch_rows: int) -> np.ndarray:
    """Softmax of the model over all variant rows, in order, `batch_rows` rows per call."""
    if not pieces:
        return np.zeros((0, 0))
    lengths = np.concatenate([piece_lengths for _, piece_lengths in pieces])
    widths = np.repeat([piece.shape[1] for piece, _ in pieces], [len(piece) for piece, _ in pieces])
    rows = [row for piece, _ in pieces for row in piece]  # views, not copies
    results = []
    for start in range(0, len(rows), batch_rows):
        width = int(widths[start:start + batch_rows].max())
        batch = np.full((len(rows[start:start + batch_rows]), width), PAD_ID, np.int64)
        for k, row in enumerate(rows[start:start + batch_rows]):
            batch[k, :len(row)] = row
        logits = np.asarray(logits_fn(batch, lengths[start:start + batch_rows]), np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        results.append(shifted / shifted.sum(axis=1, keepdims=True))
    return np.concatenate(results)


def top_units(names: list[str], contributions: np.ndarray, labels: list[str], k: int) -> dict[str, list]:
    """Per class, the k units with the largest |contribution|, as [unit, signed contribution] pairs."""
    out = {}
    for c, label in enumerate(labels):
        ranked = np.argsort(-np.abs(contributions[:, c]), kind="stable")[:k]
        out[label] = [[names[u], round(float(contributions[u, c]), 6)] for u in ranked]
    return out

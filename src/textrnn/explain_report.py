"""The evaluation report's attributions (occlusion, see textrnn.explain): per class, the tokens with the
largest mean contribution on the test split, and for the most confident mistakes the tokens that pushed
the model towards its wrong answer.

Every token is its own unit here (no spans), so a token's contributions can be averaged over the split.
A text of L tokens costs L + 1 rows through the model: the report explains the first `rows` test rows
(the split is ordered by a hash of the text, so these are a fair sample) and the mistakes it lists.
"""

from __future__ import annotations

import json

import numpy as np

from textrnn.data import EncodedSplit
from textrnn.explain import LogitsFn, occlusion
from textrnn.vocab import UNK_ID, Vocabulary

REPORT_ROWS = 200  # test rows whose tokens are averaged: each costs L + 1 rows through the model
MIN_COUNT = 3  # a token's mean is shown once it occurs this often among them
TOP_TOKENS = 10
MISLEADING_TOKENS = 3


def torch_logits(model) -> LogitsFn:
    """The torch model as occlusion's logits function (evaluate runs before the ONNX export)."""
    import torch

    model.eval()

    @torch.no_grad()
    def logits(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(ids), torch.from_numpy(lengths)).float().numpy()

    return logits


def token_contributions(split: EncodedSplit, rows: np.ndarray, logits_fn: LogitsFn,
                        max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the tokens of `rows`, back to back: their ids, their contributions [tokens, classes], and the
    offsets of each row's tokens."""
    starts, ends = split.offsets[rows], split.offsets[rows + 1]
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    ids = np.concatenate([np.asarray(split.ids[a:b], np.int64) for a, b in zip(starts, ends)]) if len(rows) else \
        np.zeros(0, np.int64)
    attributions = occlusion(ids, offsets, logits_fn, budget=max(max_len, 1))
    classes = next((a.contributions.shape[1] for a in attributions if a is not None), 0)
    contributions = np.concatenate([a.contributions if a is not None else np.zeros((0, classes))
                                    for a in attributions]) if attributions else np.zeros((0, 0))
    return ids, contributions, offsets


def top_tokens(ids: np.ndarray, contributions: np.ndarray, vocab: Vocabulary, names: list[str],
               min_count: int = MIN_COUNT, k: int = TOP_TOKENS) -> list[dict]:
    """Per class, the k tokens with the largest mean contribution (<unk> aside; seen min_count times)."""
    counts = np.bincount(ids, minlength=len(vocab))
    eligible = counts >= min_count
    eligible[UNK_ID] = False
    rows = []
    for c, name in enumerate(names):
        sums = np.bincount(ids, weights=contributions[:, c], minlength=len(vocab))
        means = np.where(eligible, sums / np.maximum(counts, 1), -np.inf)
        for rank, token in enumerate(np.argsort(-means, kind="stable")[:k], start=1):
            if not np.isfinite(means[token]):
                break
            rows.append({"class": name, "rank": rank, "token": vocab.tokens[token],
                         "mean_contribution": round(float(means[token]), 6), "count": int(counts[token])})
    return rows


def misleading_tokens(ids: np.ndarray, contributions: np.ndarray, predicted: int, vocab: Vocabulary,
                      k: int = MISLEADING_TOKENS) -> str:
    """The k tokens of one text that pushed most towards the (wrong) predicted class: '"token" +0.12, ...'.
    Each token is JSON-quoted, so a token that is itself a comma or a space stays readable and parseable."""
    order = np.argsort(-contributions[:, predicted], kind="stable")[:k]
    return ", ".join(f"{json.dumps(vocab.tokens[ids[i]], ensure_ascii=False)} {contributions[i, predicted]:+.3f}"
                     for i in order if contributions[i, predicted] > 0)


def report_attributions(split: EncodedSplit, probs: np.ndarray, mistakes: np.ndarray, logits_fn: LogitsFn,
                        vocab: Vocabulary, names: list[str], rows: int = REPORT_ROWS) -> tuple[list[dict], list[str]]:
    """(top tokens per class over the first `rows` rows, the misleading tokens of each row of `mistakes`)."""
    sample = np.arange(min(rows, len(split)))
    ids, contributions, _ = token_contributions(split, sample, logits_fn, vocab.max_len)
    wrong_ids, wrong_contributions, offsets = token_contributions(split, mistakes, logits_fn, vocab.max_len)
    misled = [misleading_tokens(wrong_ids[a:b], wrong_contributions[a:b], int(probs[row].argmax()), vocab)
              for row, a, b in zip(mistakes, offsets[:-1], offsets[1:])]
    return top_tokens(ids, contributions, vocab, names), misled

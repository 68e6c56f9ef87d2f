"""A cheap, strong teacher for distillation (Tang et al., 2019): TF-IDF n-grams + logistic regression on
the train split, with cross-fitted (out-of-fold) predictions so the soft targets of the train rows are
never the teacher's memory of their own labels.

The teacher reads exactly what the RNN reads: the encoded token ids (one character per token id), so its
n-grams are character n-grams for Chinese and word n-grams for space-separated languages. It is a
training-time input only; the shipped model is the RNN alone.

Its cost is bounded on any corpus: the folds are fitted on a sample of at most `train.teacher_tokens`
tokens, and soft targets are computed, a chunk of rows at a time, only for the rows the run's plan reaches
(with a token or step budget far below an epoch, a small share of the split).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from textrnn.config import TrainParams
from textrnn.data import EncodedSplit
from textrnn.io import atomic_file
from textrnn.metrics import full_proba, logistic_regression, tfidf_features
from textrnn.training import world
from textrnn.training_plan import TrainingPlan, subset

log = logging.getLogger(__name__)

_FIRST_CHAR = 0x10000  # token id i is written as chr(0x10000 + i): no surrogates, no whitespace
PREDICT_CHUNK_ROWS = 50_000  # rows turned into strings and predicted at a time: bounds the teacher's memory


@dataclass(frozen=True)
class SoftTargets:
    """The teacher's log-probabilities [len(rows), classes] for the train rows `rows` (sorted)."""

    rows: np.ndarray
    log_probs: np.ndarray

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Where each of `rows` sits in `log_probs` (every row must have a soft target)."""
        at = np.searchsorted(self.rows, rows)
        if np.any(at >= len(self.rows)) or np.any(self.rows[np.minimum(at, len(self.rows) - 1)] != rows):
            raise ValueError("teacher: a batch holds train rows without a soft target (the plan changed?)")
        return at


def id_strings(split: EncodedSplit, rows: np.ndarray | None = None) -> list[str]:
    """Each row's token ids (of `rows`, default all) as a string of one character per token (for a
    character n-gram analyser)."""
    if rows is not None:
        split = subset(split, np.asarray(rows, dtype=np.int64))
    points = (np.asarray(split.ids, dtype=np.uint32) + _FIRST_CHAR).astype("<u4")
    text = points.tobytes().decode("utf-32-le")
    offsets = np.asarray(split.offsets)
    return [text[offsets[i]:offsets[i + 1]] for i in range(len(split))]


def within_budget(lengths: np.ndarray, token_budget: int, minimum: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded sample whose tokens add up to at most `token_budget` (all rows when
    they fit; never fewer than `minimum` rows)."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    kept = max(int(np.searchsorted(np.cumsum(lengths[order]), token_budget, side="right")), minimum)
    return np.sort(order[:kept])


def cross_fitted_log_probs(split: EncodedSplit, rows: np.ndarray, num_classes: int, folds: int,
                           token_budget: int, seed: int, ngram_max: int = 4, c: float = 10.0) -> np.ndarray:
    """Out-of-fold log-probabilities [len(rows), C] for the train rows `rows` (sorted) of `split`.

    A seeded sample of `rows` holding at most `token_budget` tokens is cut into `folds` folds; each fold's
    rows are predicted by the logistic regression fitted on the other folds' labels. The other rows are
    predicted by the mean of the fold models, which never saw them either, `PREDICT_CHUNK_ROWS` at a time:
    the fitting cost and the memory are bounded on any corpus size. The TF-IDF features are fitted once,
    on the whole sample (no labels: the folds differ only in the labels they learn from), so every row is
    turned into n-grams once whatever the number of folds."""
    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(split.labels)
    sample = rows[within_budget(np.asarray(split.lengths)[rows], token_budget, min(len(rows), 2 * folds), seed)]
    start = time.perf_counter()
    features = tfidf_features(ngram_max)
    sample_x, sample_labels = features.fit_transform(id_strings(split, sample)), labels[sample]
    probs = np.zeros((len(rows), num_classes), dtype=np.float64)
    models = []
    # Stratification needs every class in every fold; with fewer rows than folds per class fall back to KFold.
    fold_labels = sample_labels if np.bincount(sample_labels).min(initial=folds) >= folds else \
        np.zeros(len(sample), dtype=np.int64)
    for fit_at, predict_at in StratifiedKFold(folds, shuffle=True, random_state=seed).split(sample, fold_labels):
        models.append(logistic_regression(c, seed).fit(sample_x[fit_at], sample_labels[fit_at]))
        probs[np.searchsorted(rows, sample[predict_at])] = full_proba(models[-1], sample_x[predict_at], num_classes)
    outside = np.setdiff1d(rows, sample)
    for first in range(0, len(outside), PREDICT_CHUNK_ROWS):
        chunk = outside[first:first + PREDICT_CHUNK_ROWS]
        chunk_x = features.transform(id_strings(split, chunk))
        probs[np.searchsorted(rows, chunk)] = sum(full_proba(m, chunk_x, num_classes) for m in models) / folds
    log.info("teacher: %d folds over %d rows, soft targets for %d of %d train rows in %.1f s", folds,
             len(sample), len(rows), len(split), time.perf_counter() - start)
    return np.log(np.clip(probs, 1e-7, 1.0)).astype(np.float32)


def soft_targets(train: EncodedSplit, num_classes: int, p: TrainParams, cache: Path, key: str) -> SoftTargets | None:
    """The teacher's cross-fitted log-probabilities for the train rows this run's plan reaches (None when
    train.teacher is 'none'), read from `cache` when it holds the ones for `key` (a digest of the data),
    else computed and saved there: a resumed or repeated run does not fit the teacher again."""
    if p.teacher == "none":
        return None
    rows = TrainingPlan(train.lengths, p, world()[1]).rows_reached()
    key = hashlib.sha256(json.dumps([key, p.teacher, p.teacher_folds, p.teacher_tokens, p.seed,
                                     hashlib.sha256(rows.tobytes()).hexdigest()]).encode()).hexdigest()
    if cache.exists():
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved["key"]) == key and saved["log_probs"].shape == (len(rows), num_classes):
                log.info("teacher: soft targets from %s", cache)
                return SoftTargets(saved["rows"], saved["log_probs"])
    log_probs = cross_fitted_log_probs(train, rows, num_classes, p.teacher_folds, p.teacher_tokens, p.seed)
    if world()[0] == 0:  # under DDP every process fits the same teacher; one writes the cache
        with atomic_file(cache) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, key=np.array(key), rows=rows, log_probs=log_probs)
    return SoftTargets(rows, log_probs)

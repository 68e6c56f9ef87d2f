"""A cheap, strong teacher for distillation (Tang et al., 2019): TF-IDF n-grams + logistic regression on
the train split, with cross-fitted (out-of-fold) predictions so the soft targets of the train rows are
never the teacher's memory of their own labels.

The teacher reads exactly what the RNN reads: the encoded token ids (one character per token id), so its
n-grams are character n-grams for Chinese and word n-grams for space-separated languages. It is a
training-time input only; the shipped model is the RNN alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from textrnn.config import TrainParams
from textrnn.data import EncodedSplit
from textrnn.io import atomic_file
from textrnn.metrics import baseline_pipeline, full_proba
from textrnn.training import world

log = logging.getLogger(__name__)

_FIRST_CHAR = 0x10000  # token id i is written as chr(0x10000 + i): no surrogates, no whitespace


def id_strings(split: EncodedSplit) -> list[str]:
    """Each row's token ids as a string of one character per token (for a character n-gram analyser)."""
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


def cross_fitted_log_probs(texts: list[str], labels: np.ndarray, num_classes: int, folds: int, token_budget: int,
                           seed: int, ngram_max: int = 4, c: float = 10.0) -> tuple[np.ndarray, list]:
    """Out-of-fold log-probabilities [n, C] for every train row, and the fold models.

    A seeded sample of rows holding at most `token_budget` tokens is cut into `folds` folds; each fold's rows
    are predicted by the model fitted on the other folds. Rows outside the sample are predicted by the mean
    of the fold models, which never saw them either: the fitting cost is bounded on any corpus size."""
    labels = np.asarray(labels)
    n = len(texts)
    budget = within_budget(np.array([len(t) for t in texts]), token_budget, min(n, 2 * folds), seed)
    outside = np.setdiff1d(np.arange(n), budget)
    probs = np.zeros((n, num_classes), dtype=np.float64)
    models = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    start = time.perf_counter()
    # Stratification needs every class in every fold; with fewer rows than folds per class fall back to KFold.
    fold_labels = labels[budget] if np.bincount(labels[budget]).min(initial=folds) >= folds else \
        np.zeros(len(budget), dtype=np.int64)
    for fit_at, predict_at in splitter.split(budget, fold_labels):
        model = baseline_pipeline(ngram_max, c, seed).fit([texts[i] for i in budget[fit_at]], labels[budget[fit_at]])
        models.append(model)
        probs[budget[predict_at]] = full_proba(model, [texts[i] for i in budget[predict_at]], num_classes)
        if len(outside):
            probs[outside] += full_proba(model, [texts[i] for i in outside], num_classes) / folds
    log.info("teacher: %d folds over %d of %d train rows in %.1f s", folds, len(budget), n,
             time.perf_counter() - start)
    return np.log(np.clip(probs, 1e-7, 1.0)).astype(np.float32), models


def ensemble_proba(models: list, texts: list[str], num_classes: int) -> np.ndarray:
    """The fold models' mean probabilities (the teacher's prediction for rows none of them saw)."""
    return sum(full_proba(m, texts, num_classes) for m in models) / len(models)


def soft_targets(train: EncodedSplit, num_classes: int, p: TrainParams, cache: Path, key: str) -> np.ndarray | None:
    """The teacher's cross-fitted log-probabilities for the train rows (None when train.teacher is 'none'),
    read from `cache` when it holds the ones for `key` (a digest of the data), else computed and saved
    there: a resumed or repeated run does not fit the teacher again."""
    if p.teacher == "none":
        return None
    key = hashlib.sha256(json.dumps([key, p.teacher, p.teacher_folds, p.teacher_tokens, p.seed]).encode()).hexdigest()
    if cache.exists():
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved["key"]) == key and saved["log_probs"].shape == (len(train), num_classes):
                log.info("teacher: soft targets from %s", cache)
                return saved["log_probs"]
    log_probs, _ = cross_fitted_log_probs(id_strings(train), np.asarray(train.labels), num_classes,
                                          p.teacher_folds, p.teacher_tokens, p.seed)
    if world()[0] == 0:  # under DDP every process fits the same teacher; one writes the cache
        with atomic_file(cache) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, key=np.array(key), log_probs=log_probs)
    return log_probs

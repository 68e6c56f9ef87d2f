"""textrnn.teacher: token-id strings, cross-fitted soft targets, their cache; distillation in fit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from textrnn.config import TrainParams
from textrnn.data import EncodedSplit, write_encoded_split
from textrnn.model import ModelConfig
from textrnn.teacher import SoftTargets, cross_fitted_log_probs, id_strings, soft_targets, within_budget
from textrnn.training import fit, predict_logits
from textrnn.training_plan import TrainingPlan


def split_of(folder: Path, rows: list[list[int]], labels: list[int]) -> EncodedSplit:
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    write_encoded_split(folder, [(np.concatenate(rows).astype(np.int64), offsets, np.array(labels), 0)])
    return EncodedSplit.load(folder)


def separable(rows: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Class 0 draws tokens 2..9, class 1 tokens 10..17; every row also holds a token of its own."""
    rng = np.random.default_rng(seed)
    labels = [i % 2 for i in range(rows)]
    texts = [list(rng.integers(2, 10, 6) + 8 * label) + [100 + i] for i, label in enumerate(labels)]
    return texts, labels


def test_id_strings_hold_one_character_per_token(tmp_path):
    split = split_of(tmp_path / "s", [[2, 3, 4], [40000], [5, 5]], [0, 1, 0])
    strings = id_strings(split)
    assert [[ord(c) - 0x10000 for c in s] for s in strings] == [[2, 3, 4], [40000], [5, 5]]


def test_soft_targets_are_out_of_fold(tmp_path):
    texts, labels = separable(60, seed=0)
    labels[0] = 1  # a wrong label, on a row with a token no other row has: in-fold it would be memorised
    split = split_of(tmp_path / "s", texts, labels)
    log_probs = cross_fitted_log_probs(split, np.arange(60), 2, folds=3, token_budget=10_000, seed=1, ngram_max=1)
    assert log_probs.shape == (60, 2)
    np.testing.assert_allclose(np.exp(log_probs).sum(1), 1.0, atol=1e-5)
    assert log_probs[0].argmax() == 0  # the teacher that left row 0 out sees a class-0 row
    assert (log_probs[1:].argmax(1) == np.array(labels[1:])).mean() > 0.95


def test_rows_beyond_the_budget_get_the_folds_mean_and_results_repeat(tmp_path):
    texts, labels = separable(50, seed=2)
    split = split_of(tmp_path / "s", texts, labels)
    first = cross_fitted_log_probs(split, np.arange(50), 2, folds=2, token_budget=140, seed=3, ngram_max=1)
    again = cross_fitted_log_probs(split, np.arange(50), 2, folds=2, token_budget=140, seed=3, ngram_max=1)
    np.testing.assert_array_equal(first, again)
    assert (first.argmax(1) == np.array(labels)).mean() > 0.9  # all 50 rows predicted, 20 (of 7 tokens each) fitted on


def test_soft_targets_are_cached_for_the_same_data_and_params(tmp_path):
    texts, labels = separable(30, seed=4)
    split = split_of(tmp_path / "s", texts, labels)
    cache = tmp_path / "teacher.npz"
    params = TrainParams(teacher="tfidf", teacher_folds=2)
    assert soft_targets(split, 2, dataclasses.replace(params, teacher="none"), cache, "data") is None
    first = soft_targets(split, 2, params, cache, "data")
    stamp = cache.stat().st_mtime_ns
    again = soft_targets(split, 2, params, cache, "data")
    np.testing.assert_array_equal(again.log_probs, first.log_probs)
    np.testing.assert_array_equal(again.rows, np.arange(30))  # no budget: every train row
    assert cache.stat().st_mtime_ns == stamp  # read back, not refitted
    soft_targets(split, 2, dataclasses.replace(params, teacher_folds=3), cache, "data")
    assert cache.stat().st_mtime_ns != stamp  # other params: fitted again


def test_fit_follows_the_teacher_when_the_loss_is_all_teacher(tmp_path):
    texts, labels = separable(32, seed=5)
    split = split_of(tmp_path / "s", texts, labels)
    val = split_of(tmp_path / "v", texts, [1 - y for y in labels])  # early stopping scores the teacher's labels
    flipped = np.log(np.where(np.eye(2)[1 - np.array(labels)] > 0, 0.99, 0.01)).astype(np.float32)
    cfg = ModelConfig(vocab_size=140, num_classes=2, embedding_dim=8, hidden_size=8)
    params = TrainParams(epochs=15, batch_size=8, lr=0.02, patience=100, threads=1, seed=7,
                         teacher="tfidf", teacher_weight=1.0)
    model, _ = fit(cfg, split, val, params, tmp_path / "state.pt", "t", teacher=SoftTargets(np.arange(32), flipped))
    predicted = predict_logits(model, split, 64, torch.device("cpu")).argmax(1)
    assert (predicted == 1 - np.array(labels)).mean() > 0.9  # it learnt the teacher's (flipped) labels


def test_the_budget_sample_holds_at_most_the_token_budget():
    lengths = np.arange(1, 101)
    rows = within_budget(lengths, 500, minimum=4, seed=0)
    assert lengths[rows].sum() <= 500 and np.all(np.diff(rows) > 0)
    assert len(within_budget(lengths, 10**9, minimum=4, seed=0)) == 100
    assert len(within_budget(lengths, 0, minimum=4, seed=0)) == 4


def test_the_id_strings_of_chosen_rows_are_those_rows(tmp_path):
    split = split_of(tmp_path / "s", [[2, 3, 4], [40000], [5, 5], [7]], [0, 1, 0, 1])
    assert id_strings(split, np.array([1, 3])) == [id_strings(split)[1], id_strings(split)[3]]


def test_with_a_budget_below_an_epoch_only_the_rows_the_plan_reaches_get_soft_targets(tmp_path, monkeypatch):
    """The teacher's prediction cost follows the token budget, not the size of the split; and chunked
    prediction gives the same targets as one pass."""
    texts, labels = separable(400, seed=6)
    split = split_of(tmp_path / "s", texts, labels)
    params = TrainParams(teacher="tfidf", teacher_folds=2, teacher_tokens=700, batch_size=8, bucket_size=2,
                         max_tokens=7 * 8 * 10)  # 10 steps of 8 rows of 7 tokens
    plan = TrainingPlan(split.lengths, params)
    reached = plan.rows_reached()
    assert len(reached) == 80 and set(np.concatenate(plan.batches(1)[:10])) == set(reached)
    targets = soft_targets(split, 2, params, tmp_path / "teacher.npz", "data")
    np.testing.assert_array_equal(targets.rows, reached)
    assert targets.log_probs.shape == (80, 2)
    assert (targets.log_probs.argmax(1) == np.array(labels)[reached]).mean() > 0.9
    np.testing.assert_array_equal(targets.positions(reached[[5, 0, 79]]), [5, 0, 79])
    with pytest.raises(ValueError, match="without a soft target"):
        targets.positions(np.setdiff1d(np.arange(400), reached)[:3])
    monkeypatch.setattr("textrnn.teacher.PREDICT_CHUNK_ROWS", 7)
    chunked = cross_fitted_log_probs(split, reached, 2, folds=2, token_budget=700, seed=13)
    np.testing.assert_allclose(chunked, targets.log_probs, atol=1e-6)

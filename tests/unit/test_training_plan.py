"""textrnn.training_plan: epoch orders, budgets, validation points, the bounded validation sample."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from textrnn.config import ParamsError, TrainParams, load_params
from textrnn.data import EncodedSplit, bucketed_batches, write_encoded_split
from textrnn.training_plan import Position, TrainingPlan, subset, validation_sample

REPO = Path(__file__).resolve().parents[2]
LENGTHS = np.random.default_rng(3).integers(0, 40, 1000)  # 1,000 rows, some empty
P = TrainParams(epochs=3, batch_size=16, bucket_size=4, seed=5)


def run_through(plan: TrainingPlan) -> tuple[list[Position], Position]:
    """Every validation point of the plan, and where it ends."""
    at, validations = Position(), []
    while not plan.finished(at):
        segment = plan.next_segment(at)
        at = plan.advance(at, segment, validated=segment.validate)
        if segment.validate:
            validations.append(at)
    return validations, at


def test_each_epoch_has_the_seeded_order_of_bucketed_batches():
    plan = TrainingPlan(LENGTHS, P)
    for epoch in (1, 2):
        expected = bucketed_batches(LENGTHS, P.batch_size, np.random.default_rng([P.seed, epoch]), P.bucket_size)
        assert all(np.array_equal(a, b) for a, b in zip(plan.batches(epoch), expected, strict=True))
        assert plan.batch_tokens(epoch).tolist() == [int(LENGTHS[b].sum()) for b in expected]


def test_without_a_budget_it_validates_after_each_epoch_and_runs_every_epoch():
    plan = TrainingPlan(LENGTHS, P)
    assert plan.total_steps() == math.ceil(1000 / 16) * 3
    validations, end = run_through(plan)
    assert [(v.epoch, v.batch) for v in validations] == [(1, 0), (2, 0), (3, 0)]
    assert end.steps == plan.total_steps() and end.tokens == 3 * int(LENGTHS.sum())
    assert [plan.epochs_done(v) for v in validations] == [1.0, 2.0, 3.0]


def test_a_token_budget_stops_at_the_first_batch_that_reaches_it_mid_epoch():
    budget = int(LENGTHS.sum() * 1.4)
    plan = TrainingPlan(LENGTHS, dataclasses.replace(P, max_tokens=budget))
    validations, end = run_through(plan)
    assert end.tokens >= budget
    assert end.tokens - plan.batch_tokens(2)[end.batch - 1] < budget  # one batch fewer would not reach it
    assert (end.epoch, 0 < end.batch < len(plan.batches(2))) == (1, True)
    assert end.steps == plan.total_steps()  # the schedule's length is the budget's exact step count
    assert [v.epoch for v in validations] == [1, 1]  # after epoch 1, then at the budget
    assert 1.0 < plan.epochs_done(end) < 2.0


def test_a_budget_beyond_the_epochs_ends_with_the_epochs():
    plan = TrainingPlan(LENGTHS, dataclasses.replace(P, max_tokens=10 * int(LENGTHS.sum())))
    assert plan.total_steps() == TrainingPlan(LENGTHS, P).total_steps()
    assert run_through(plan)[1].epoch == 3


def test_a_step_budget_caps_the_run_and_the_schedule():
    plan = TrainingPlan(LENGTHS, dataclasses.replace(P, max_steps=100, max_tokens=10 ** 9))
    validations, end = run_through(plan)
    assert plan.total_steps() == end.steps == 100
    assert (end.epoch, end.batch) == (1, 100 - len(plan.batches(1)))


def test_validation_every_n_tokens_crosses_epochs_and_ends_the_run_with_one():
    every = int(LENGTHS.sum() * 0.3)
    plan = TrainingPlan(LENGTHS, dataclasses.replace(P, eval_every_tokens=every))
    validations, end = run_through(plan)
    gaps = np.diff([0] + [v.tokens for v in validations])
    assert (gaps[:-1] >= every).all()
    assert (gaps[:-1] < every + LENGTHS.max() * P.batch_size).all()  # at the first batch that gets there
    assert validations[-1] == end and end.epoch == 3  # the run's end is validated too
    assert len(validations) > 3  # more often than once per epoch
    assert any(v.batch > 0 for v in validations)  # mid-epoch points
    assert all(v.evaluated_at_tokens == v.tokens for v in validations)


def test_a_resumed_plan_continues_at_the_same_points():
    p = dataclasses.replace(P, eval_every_tokens=int(LENGTHS.sum() * 0.45), max_tokens=int(LENGTHS.sum() * 2.2))
    straight, _ = run_through(TrainingPlan(LENGTHS, p))
    halfway = straight[2]
    assert halfway.batch > 0
    fresh, at, rest = TrainingPlan(LENGTHS, p), halfway, []  # a new process: nothing cached
    while not fresh.finished(at):
        segment = fresh.next_segment(at)
        at = fresh.advance(at, segment, validated=segment.validate)
        rest += [at] if segment.validate else []
    assert straight[3:] == rest


def test_several_processes_skip_batches_smaller_than_the_process_count():
    lengths = np.ones(33, np.int64)  # one bucket of 33 rows in batches of 16: the last batch has one row
    assert sorted(len(b) for b in TrainingPlan(lengths, P, 1).batches(1)) == [1, 16, 16]
    assert sorted(len(b) for b in TrainingPlan(lengths, P, 2).batches(1)) == [16, 16]


def split_of(folder: Path, rows: int) -> EncodedSplit:
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 9, rows)
    ids = rng.integers(1, 50, int(lengths.sum()))
    write_encoded_split(folder, [(ids, np.concatenate([[0], np.cumsum(lengths)]), np.arange(rows) % 3, 0)])
    return EncodedSplit.load(folder)


def rows_of(split: EncodedSplit) -> list[tuple[list[int], int]]:
    return [(split.ids[split.offsets[i]:split.offsets[i + 1]].tolist(), int(split.labels[i]))
            for i in range(len(split))]


def test_a_small_val_split_is_used_whole(tmp_path):
    val = split_of(tmp_path / "val", 50)
    assert validation_sample(val, 50, seed=1) is val
    assert validation_sample(val, 0, seed=1) is val


def test_a_large_val_split_is_sampled_the_same_way_every_time_and_by_seed(tmp_path):
    val = split_of(tmp_path / "val", 500)
    first, again, other = (validation_sample(val, 120, seed) for seed in (7, 7, 8))
    assert len(first) == 120 and rows_of(first) == rows_of(again)
    assert rows_of(first) != rows_of(other)
    every = rows_of(val)
    assert all(row in every for row in rows_of(first))  # real rows, ids and labels intact
    assert sum(len(ids) for ids, _ in rows_of(first)) == len(first.ids)


def test_subset_keeps_rows_in_the_given_order_including_empty_rows(tmp_path):
    val = split_of(tmp_path / "val", 40)
    rows = np.array([5, 0, 39, 12])
    assert rows_of(subset(val, rows)) == [rows_of(val)[i] for i in rows]


def test_budget_params_are_validated():
    with pytest.raises(ParamsError, match="train.max_tokens"):
        load_params(REPO / "params.yaml", {"train.max_tokens": -1})
    with pytest.raises(ParamsError, match="train.eval_every_tokens"):
        load_params(REPO / "params.yaml", {"train.eval_every_tokens": -5})

"""evaluate and export in bounded memory: the baseline on a seeded character-budget sample of train (and the
report says so), metrics from batched predictions equal to one whole-split computation, ONNX parity on a
bounded seeded sample of test."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from textrnn.baseline import sample_within_chars, text_lengths
from textrnn.data import EncodedSplit
from textrnn.io import read_folder
from textrnn.metrics import full_proba, headline_metrics, softmax, train_baseline
from textrnn.onnx_export import parity_rows
from textrnn.stages import evaluate, export
from textrnn.training import load_checkpoint


@pytest.fixture(scope="module")
def bounded(built, tmp_path_factory):
    """evaluate with a baseline budget of a third of the train split's characters."""
    out = tmp_path_factory.mktemp("bounded")
    budget = int(text_lengths(Path(built.paths.clean) / "train").sum()) // 3
    p = dataclasses.replace(built.evaluate, baseline_max_chars=budget)
    metrics = evaluate.run(Path(built.paths.clean), Path(built.paths.vocab), Path(built.paths.checkpoint),
                           out / "metrics.json", out / "evaluation", p)
    return metrics, out, p


def test_the_baseline_sees_a_sample_and_the_report_says_how_many_rows(built, bounded):
    metrics, out, _ = bounded
    train_rows = len(EncodedSplit.load(Path(built.paths.vocab) / "train"))
    assert metrics["train_rows"] == train_rows
    assert 0 < metrics["baseline_train_rows"] < train_rows
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == metrics
    report = (out / "evaluation" / "report.md").read_text(encoding="utf-8")
    assert f"a seeded random sample of {metrics['baseline_train_rows']:,} of the {train_rows:,} train rows" in report


def test_the_full_default_budget_fits_every_train_row(built):
    metrics = json.loads(Path(built.paths.metrics).read_text(encoding="utf-8"))
    assert metrics["baseline_train_rows"] == metrics["train_rows"]
    assert "fitted on every train row" in (Path(built.paths.evaluation) / "report.md").read_text(encoding="utf-8")


def test_baseline_metrics_equal_a_whole_split_fit_on_the_same_sample(built, bounded):
    metrics, _, p = bounded
    clean = Path(built.paths.clean)
    sample = sample_within_chars(text_lengths(clean / "train"), p.baseline_max_chars, seed=0)
    train = read_folder(clean / "train", ["text", "label_id"])
    texts, labels = train.column("text").to_pylist(), train.column("label_id").to_numpy()
    model = train_baseline([texts[i] for i in sample.rows], labels[sample.rows], p.baseline_ngram_max,
                           p.baseline_c, seed=0)
    test = read_folder(clean / "test", ["text", "label_id"])
    probs = full_proba(model, test.column("text").to_pylist(), len(np.unique(labels)))
    expected = headline_metrics(probs, test.column("label_id").to_numpy(), prefix="baseline_test_")
    assert {k: metrics[k] for k in expected} == expected


def test_rnn_metrics_from_batches_equal_one_whole_split_forward_pass(built, bounded):
    metrics, _, _ = bounded
    test = EncodedSplit.load(Path(built.paths.vocab) / "test")
    model, _ = load_checkpoint(Path(built.paths.checkpoint))
    ids, lengths, labels = test.padded(np.arange(len(test)))  # one batch, padded to the longest row
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()
    expected = headline_metrics(softmax(logits), labels, prefix="test_")
    assert {k: metrics[k] for k in expected} == pytest.approx(expected, abs=2e-6)
    assert metrics["test_accuracy"] == expected["test_accuracy"]


def test_mistakes_hold_the_texts_of_their_own_rows(built, bounded):
    _, out, _ = bounded
    test = read_folder(Path(built.paths.clean) / "test", ["text", "label"])
    label_of = dict(zip(test.column("text").to_pylist(), test.column("label").to_pylist()))
    with open(out / "evaluation" / "mistakes.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    assert all(label_of[r["text"]] == r["true"] != r["predicted"] for r in rows)


def test_parity_rows_are_a_bounded_seeded_sample_with_the_shortest_and_longest(built):
    test = EncodedSplit.load(Path(built.paths.vocab) / "test")
    assert len(test) > 20
    rows = parity_rows(test, 10)
    assert 10 <= len(rows) <= 12 and np.all(np.diff(rows) > 0)
    lengths = test.lengths
    assert lengths[rows].min() == lengths.min() and lengths[rows].max() == lengths.max()
    assert np.array_equal(rows, parity_rows(test, 10))
    assert not np.array_equal(rows, parity_rows(test, 10, seed=1))
    assert np.array_equal(parity_rows(test, len(test)), np.arange(len(test)))


def test_export_checks_parity_and_int8_on_the_sample_only(built, tmp_path):
    test = EncodedSplit.load(Path(built.paths.vocab) / "test")
    p = dataclasses.replace(built.export, parity_max_rows=10, quantize=True)
    out = tmp_path / "export"
    parity = export.run(Path(built.paths.vocab), Path(built.paths.checkpoint), Path(built.paths.metrics), out, p)
    checked = len(parity_rows(test, 10))
    assert (parity["rows"], parity["test_rows"]) == (checked, len(test))
    assert parity["max_abs_logit_diff"] <= p.parity_atol
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["parity"] == parity
    assert config["int8"]["rows"] == checked and 0.0 <= config["int8"]["int8_accuracy"] <= 1.0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"{checked} of {len(test)} test rows" in card

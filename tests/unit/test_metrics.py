"""textrnn.metrics: headline numbers against scikit-learn, calibration, tables, figures, the baseline."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from textrnn.metrics import (
    calibration_rows,
    confusion_rows,
    curve_rows,
    expected_calibration_error,
    headline_metrics,
    per_class_rows,
    plot_figures,
    softmax,
    train_baseline,
)

# Six rows, two classes; predictions: 0 0 1 1 1 0 against labels 0 0 0 1 1 1 (two mistakes).
BINARY_PROBS = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
BINARY_LABELS = np.array([0, 0, 0, 1, 1, 1])
# Three classes: predictions 0 1 2 2 1, labels 0 1 2 1 2.
MULTI_PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3]])
MULTI_LABELS = np.array([0, 1, 2, 1, 2])
NAMES3 = ["a", "b", "c"]


def test_headline_metrics_match_sklearn_on_a_binary_example():
    out = headline_metrics(BINARY_PROBS, BINARY_LABELS, prefix="test_")
    predicted = BINARY_PROBS.argmax(1)
    assert set(out) == {"test_accuracy", "test_macro_f1", "test_micro_f1", "test_weighted_f1", "test_ece",
                        "test_roc_auc", "test_pr_auc"}
    assert out["test_accuracy"] == pytest.approx(4 / 6, abs=1e-6)  # by hand: two of six wrong
    assert out["test_accuracy"] == pytest.approx(accuracy_score(BINARY_LABELS, predicted), abs=1e-6)
    assert out["test_macro_f1"] == pytest.approx(f1_score(BINARY_LABELS, predicted, average="macro"), abs=1e-6)
    assert out["test_micro_f1"] == pytest.approx(f1_score(BINARY_LABELS, predicted, average="micro"), abs=1e-6)
    assert out["test_weighted_f1"] == pytest.approx(f1_score(BINARY_LABELS, predicted, average="weighted"),
                                                    abs=1e-6)
    assert out["test_roc_auc"] == pytest.approx(roc_auc_score(BINARY_LABELS, BINARY_PROBS[:, 1]), abs=1e-6)
    assert out["test_pr_auc"] == pytest.approx(average_precision_score(BINARY_LABELS, BINARY_PROBS[:, 1]),
                                               abs=1e-6)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out.values())


def test_headline_metrics_have_no_roc_or_pr_for_three_classes():
    out = headline_metrics(MULTI_PROBS, MULTI_LABELS, prefix="val_")
    assert set(out) == {"val_accuracy", "val_macro_f1", "val_micro_f1", "val_weighted_f1", "val_ece"}
    assert out["val_accuracy"] == pytest.approx(0.6, abs=1e-6)
    assert out["val_macro_f1"] == pytest.approx(f1_score(MULTI_LABELS, MULTI_PROBS.argmax(1), average="macro"),
                                                abs=1e-6)


def test_headline_metrics_have_no_roc_when_only_one_class_is_present():
    out = headline_metrics(BINARY_PROBS[:3], BINARY_LABELS[:3], prefix="")
    assert "roc_auc" not in out and "pr_auc" not in out
    assert out["accuracy"] == pytest.approx(2 / 3, abs=1e-6)


def test_ece_is_zero_for_confident_correct_predictions():
    labels = np.array([0, 1, 2, 1, 0])
    probs = np.eye(3)[labels]
    assert expected_calibration_error(probs, labels) == 0.0


def test_ece_of_a_hand_checked_example():
    # Every row at confidence 0.8; 3 of 4 correct → |0.75 - 0.8| = 0.05.
    probs = np.array([[0.8, 0.2], [0.2, 0.8], [0.8, 0.2], [0.8, 0.2]])
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.05)
    # Confident and always wrong: the gap is the full confidence.
    assert expected_calibration_error(np.eye(2)[[1, 0]], np.array([0, 1])) == pytest.approx(1.0)


def test_confusion_rows_are_long_format():
    rows = confusion_rows(MULTI_PROBS, MULTI_LABELS, NAMES3)
    assert len(rows) == 9
    assert all(set(r) == {"actual", "predicted", "count"} for r in rows)
    counts = {(r["actual"], r["predicted"]): r["count"] for r in rows}
    assert counts[("a", "a")] == 1 and counts[("b", "b")] == 1 and counts[("c", "c")] == 1
    assert counts[("b", "c")] == 1 and counts[("c", "b")] == 1
    assert sum(counts.values()) == len(MULTI_LABELS)


def test_per_class_rows_support_sums_to_n():
    rows = per_class_rows(MULTI_PROBS, MULTI_LABELS, NAMES3)
    assert [r["label"] for r in rows] == NAMES3
    assert sum(r["support"] for r in rows) == len(MULTI_LABELS)
    assert [r["support"] for r in rows] == [1, 2, 2]
    first = rows[0]
    assert (first["precision"], first["recall"], first["f1"]) == (1.0, 1.0, 1.0)
    assert rows[1]["precision"] == pytest.approx(0.5) and rows[1]["recall"] == pytest.approx(0.5)


def test_per_class_rows_include_a_class_never_seen():
    rows = per_class_rows(BINARY_PROBS, BINARY_LABELS, ["neg", "pos", "other"])
    assert rows[2] == {"label": "other", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_curve_rows_roc_and_pr_only_for_two_classes():
    binary = curve_rows(BINARY_PROBS, BINARY_LABELS)
    assert set(binary) == {"roc", "pr", "calibration"}
    assert binary["roc"][0] == {"fpr": 0.0, "tpr": 0.0} and binary["roc"][-1] == {"fpr": 1.0, "tpr": 1.0}
    assert set(curve_rows(MULTI_PROBS, MULTI_LABELS)) == {"calibration"}


def test_calibration_rows_count_every_row():
    rows = calibration_rows(MULTI_PROBS, MULTI_LABELS)
    assert sum(r["count"] for r in rows) == len(MULTI_LABELS)
    assert all(0.0 <= r["confidence"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0 for r in rows)


def test_softmax_rows_sum_to_one():
    probs = softmax(np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, 0.0]]))
    np.testing.assert_allclose(probs.sum(1), 1.0)
    np.testing.assert_allclose(probs[1], [0.5, 0.5, 0.0], atol=1e-12)


def test_plot_figures_writes_pngs_byte_identical_on_rerun(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    written = plot_figures(first, BINARY_PROBS, BINARY_LABELS, ["neg", "pos"])
    assert written == ["confusion.png", "curves.png"]
    plot_figures(second, BINARY_PROBS, BINARY_LABELS, ["neg", "pos"])
    for name in written:
        data = (first / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert data == (second / name).read_bytes()


def test_plot_figures_draws_no_curves_for_three_classes(tmp_path):
    assert plot_figures(tmp_path, MULTI_PROBS, MULTI_LABELS, NAMES3) == ["confusion.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png"]


def test_train_baseline_learns_an_easy_separable_problem():
    rng = np.random.default_rng(0)
    good = ["".join(rng.choice(list("好棒赞爱"), 6)) for _ in range(40)]
    bad = ["".join(rng.choice(list("差烂坏糟"), 6)) for _ in range(40)]
    texts, labels = good + bad, np.array([1] * 40 + [0] * 40)
    model = train_baseline(texts, labels, ngram_max=2, c=10.0, seed=0)
    assert list(model.predict(["好棒好爱", "差烂糟坏", "赞赞爱好"])) == [1, 0, 1]
    assert accuracy_score(labels, model.predict(texts)) == 1.0
    assert model.predict_proba(["好棒"]).shape == (1, 2)

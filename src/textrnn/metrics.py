"""Metrics from arrays (scikit-learn), the TF-IDF baseline, and the report files and figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import Pipeline


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Weighted gap between confidence and accuracy over equal-width confidence bins (scikit-learn has
    calibration_curve but no ECE)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def headline_metrics(probs: np.ndarray, labels: np.ndarray, prefix: str) -> dict[str, float]:
    """Flat metrics (so `dvc metrics diff` reads well) for one split and one model."""
    predicted = probs.argmax(axis=1)
    out = {
        f"{prefix}accuracy": accuracy_score(labels, predicted),
        f"{prefix}macro_f1": f1_score(labels, predicted, average="macro", zero_division=0),
        f"{prefix}micro_f1": f1_score(labels, predicted, average="micro", zero_division=0),
        f"{prefix}weighted_f1": f1_score(labels, predicted, average="weighted", zero_division=0),
        f"{prefix}ece": expected_calibration_error(probs, labels),
    }
    if probs.shape[1] == 2 and len(np.unique(labels)) == 2:
        out[f"{prefix}roc_auc"] = roc_auc_score(labels, probs[:, 1])
        out[f"{prefix}pr_auc"] = average_precision_score(labels, probs[:, 1])
    return {k: round(float(v), 6) for k, v in out.items()}


def per_class_rows(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> list[dict]:
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, probs.argmax(axis=1), labels=list(range(len(names))), zero_division=0)
    return [{"label": name, "precision": round(float(p), 6), "recall": round(float(r), 6),
             "f1": round(float(f), 6), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support)]


def confusion_rows(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> list[dict]:
    """Long format (actual, predicted, count): what DVC's confusion template expects."""
    matrix = confusion_matrix(labels, probs.argmax(axis=1), labels=list(range(len(names))))
    return [{"actual": names[i], "predicted": names[j], "count": int(matrix[i, j])}
            for i in range(len(names)) for j in range(len(names))]


CURVE_MAX_POINTS = 5000  # a curve has up to one point per test row: beyond this it is thinned evenly


def curve_rows(probs: np.ndarray, labels: np.ndarray, max_points: int = CURVE_MAX_POINTS) -> dict[str, list[dict]]:
    """ROC, precision-recall and reliability curves (binary tasks; positive class = index 1); ROC and PR
    keep at most `max_points` points (their ends included), so their files and memory do not grow with the
    test split."""
    out: dict[str, list[dict]] = {}
    if probs.shape[1] == 2 and len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, probs[:, 1])
        keep = _evenly_spaced(len(fpr), max_points)
        out["roc"] = [{"fpr": round(float(a), 6), "tpr": round(float(b), 6)} for a, b in zip(fpr[keep], tpr[keep])]
        precision, recall, _ = precision_recall_curve(labels, probs[:, 1])
        keep = _evenly_spaced(len(recall), max_points)
        out["pr"] = [{"recall": round(float(r), 6), "precision": round(float(p), 6)}
                     for r, p in zip(recall[keep], precision[keep])]
    out["calibration"] = calibration_rows(probs, labels)
    return out


def _evenly_spaced(n: int, max_points: int) -> np.ndarray:
    """Indices of at most `max_points` of n points, evenly spaced, the first and last included."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def calibration_rows(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            rows.append({"confidence": round(float(confidence[in_bin].mean()), 6),
                         "accuracy": round(float(correct[in_bin].mean()), 6), "count": int(in_bin.sum())})
    return rows


def baseline_pipeline(ngram_max: int, c: float, seed: int) -> Pipeline:
    """TF-IDF character 1..n-grams + logistic regression (unfitted): the classical reference for the RNN;
    the distillation teacher (textrnn.teacher) uses the same two parts."""
    return Pipeline([("tfidf", tfidf_features(ngram_max)), ("lr", logistic_regression(c, seed))])


def tfidf_features(ngram_max: int) -> TfidfVectorizer:
    return TfidfVectorizer(analyzer="char", ngram_range=(1, ngram_max), sublinear_tf=True, min_df=2,
                           dtype=np.float32)


def logistic_regression(c: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=2000, random_state=seed)


def train_baseline(texts: list[str], labels: np.ndarray, ngram_max: int, c: float, seed: int) -> Pipeline:
    return baseline_pipeline(ngram_max, c, seed).fit(texts, labels)


def full_proba(model, inputs, num_classes: int) -> np.ndarray:
    """predict_proba padded to every class (a class absent from the model's fit gets probability 0);
    `inputs` are texts for a pipeline or a feature matrix for a bare classifier."""
    found = model.predict_proba(inputs)
    probs = np.zeros((len(found), num_classes))
    probs[:, model.classes_] = found
    return probs


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or (list(rows[0]) if rows else [])
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_figures(folder: Path, probs: np.ndarray, labels: np.ndarray, names: list[str]) -> list[str]:
    """Confusion matrix and (binary) ROC / PR curves as PNG, drawn headless."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    matrix = confusion_matrix(labels, probs.argmax(axis=1), labels=list(range(len(names))))
    fig, ax = plt.subplots(figsize=(4 + 0.4 * len(names), 3.5 + 0.4 * len(names)))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="actual", title="Confusion matrix (test)")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center")
    written.append(_save(fig, folder / "confusion.png"))
    curves = curve_rows(probs, labels)
    if "roc" in curves:
        fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(9, 4))
        roc_ax.plot([r["fpr"] for r in curves["roc"]], [r["tpr"] for r in curves["roc"]])
        roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
        pr_ax.plot([r["recall"] for r in curves["pr"]], [r["precision"] for r in curves["pr"]])
        pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
        written.append(_save(fig, folder / "curves.png"))
    plt.close("all")
    return written


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: same data, same bytes
    return path.name

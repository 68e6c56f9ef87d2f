"""evaluate: the RNN and a TF-IDF baseline on the val and test splits, side by side.

Outputs: `metrics_path` (flat DVC metrics) and `out/` with per_class.csv, confusion.csv, roc.csv, pr.csv,
calibration.csv (DVC plots), mistakes.csv (the most confident errors), top_tokens.csv and mistake_tokens.csv
(occlusion attributions: see textrnn.explain_report), report.md and PNG figures.

Memory is bounded whatever the corpus size: the RNN's predictions are made in batches from the
memory-mapped encoded splits, the metrics come from the prediction arrays, the only texts read are those
of the rows the report shows (its mistakes), and the baseline is fitted on at most
`evaluate.baseline_max_chars` characters of train text (textrnn.baseline), which metrics.json
(`baseline_train_rows` of `train_rows`) and report.md record.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch

from textrnn.baseline import fit_baseline, predict_folder, read_rows
from textrnn.config import EvaluateParams
from textrnn.data import EncodedSplit
from textrnn.explain_report import report_attributions, torch_logits
from textrnn.io import atomic_dir, read_json, write_json
from textrnn.metrics import (
    confusion_rows,
    curve_rows,
    headline_metrics,
    per_class_rows,
    plot_figures,
    softmax,
    write_csv,
)
from textrnn.training import load_checkpoint, predict_logits
from textrnn.vocab import Vocabulary

log = logging.getLogger(__name__)


def run(clean: Path, vocab_dir: Path, checkpoint: Path, metrics_path: Path, out: Path,
        p: EvaluateParams) -> dict:
    clean, vocab_dir = Path(clean), Path(vocab_dir)
    names = read_json(vocab_dir / "labels.json")
    vocab = Vocabulary.load(vocab_dir / "vocab.json")
    model, _ = load_checkpoint(checkpoint, expected_vocab_digest=vocab.digest)
    device = torch.device("cpu")
    metrics: dict[str, float] = {}
    probs, labels, encoded = {}, {}, {}
    for split in ("val", "test"):
        encoded[split] = EncodedSplit.load(vocab_dir / split)
        labels[split] = np.array(encoded[split].labels)
        probs[split] = softmax(predict_logits(model, encoded[split], p.batch_size, device))
        metrics.update(headline_metrics(probs[split], labels[split], prefix=f"{split}_"))
    if p.baseline:
        metrics.update(_baseline_metrics(clean, labels, len(names), p))
        for key in ("test_accuracy", "test_macro_f1"):
            metrics[f"rnn_minus_baseline_{key}"] = round(metrics[key] - metrics[f"baseline_{key}"], 6)
    mistakes = confident_mistake_rows(probs["test"], labels["test"], p.worst_mistakes)
    mistake_texts = read_rows(clean / "test", ["text"], mistakes).column("text").to_pylist()
    mistake_table = confident_mistakes(probs["test"], labels["test"], names, mistake_texts, mistakes)
    top_tokens, misled = report_attributions(encoded["test"], probs["test"], mistakes, torch_logits(model), vocab,
                                             names)
    with atomic_dir(out) as tmp:
        _write_tables(tmp, probs["test"], labels["test"], names, mistake_table)
        write_csv(tmp / "top_tokens.csv", top_tokens, ["class", "rank", "token", "mean_contribution", "count"])
        write_csv(tmp / "mistake_tokens.csv", [{**row, "misled_by": why} for row, why in zip(mistake_table, misled)],
                  ["text", "true", "predicted", "probability", "misled_by"])
        plot_figures(tmp, probs["test"], labels["test"], names)
        (tmp / "report.md").write_text(report_markdown(metrics, tmp, names), encoding="utf-8")
    write_json(metrics_path, metrics)
    log.info("evaluate: test accuracy %.4f (baseline %s)", metrics["test_accuracy"],
             metrics.get("baseline_test_accuracy"))
    return metrics


def _baseline_metrics(clean: Path, labels: dict, num_classes: int, p: EvaluateParams) -> dict:
    """The baseline's headline metrics on val and test, and how many train rows it was fitted on."""
    baseline, sample = fit_baseline(clean / "train", p.baseline_max_chars, p.baseline_ngram_max, p.baseline_c,
                                    seed=0)
    out = {"baseline_train_rows": len(sample.rows), "train_rows": sample.total_rows}
    for split in ("val", "test"):
        probs = predict_folder(baseline, clean / split, num_classes)
        out.update(headline_metrics(probs, labels[split], prefix=f"baseline_{split}_"))
    return out


def _write_tables(folder: Path, probs: np.ndarray, labels: np.ndarray, names: list[str],
                  mistakes: list[dict]) -> None:
    write_csv(folder / "per_class.csv", per_class_rows(probs, labels, names))
    write_csv(folder / "confusion.csv", confusion_rows(probs, labels, names))
    for name, rows in curve_rows(probs, labels).items():
        write_csv(folder / f"{name}.csv", rows)
    write_csv(folder / "mistakes.csv", mistakes, ["text", "true", "predicted", "probability"])


def confident_mistake_rows(probs: np.ndarray, labels: np.ndarray, limit: int) -> np.ndarray:
    """The rows predicted wrong, most confident first, at most `limit`."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:limit]


def confident_mistakes(probs: np.ndarray, labels: np.ndarray, names: list[str], texts: list[str],
                       order: np.ndarray) -> list[dict]:
    """The table of the mistakes at rows `order` (confident_mistake_rows); `texts` are those rows' texts."""
    predicted = probs.argmax(axis=1)
    return [{"text": text, "true": names[labels[i]], "predicted": names[predicted[i]],
             "probability": round(float(probs[i, predicted[i]]), 4)} for i, text in zip(order, texts)]


def report_markdown(metrics: dict, folder: Path, names: list[str]) -> str:
    """The evaluation report: headline metrics beside the baseline, confusion matrix, worst mistakes."""
    lines = ["# Evaluation report", "", "| metric (test) | RNN | baseline | RNN − baseline |", "|---|---|---|---|"]
    for key in ("accuracy", "macro_f1", "weighted_f1", "roc_auc", "pr_auc", "ece"):
        rnn, base = metrics.get(f"test_{key}"), metrics.get(f"baseline_test_{key}")
        if rnn is None:
            continue
        delta = f"{rnn - base:+.4f}" if base is not None else "–"
        lines.append(f"| {key} | {rnn:.4f} | {'–' if base is None else f'{base:.4f}'} | {delta} |")
    lines += _baseline_sample_lines(metrics)
    lines += ["", "## Confusion matrix (test; rows = actual)", "",
              "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    with open(folder / "confusion.csv", encoding="utf-8") as handle:
        cells = {(r["actual"], r["predicted"]): r["count"] for r in csv.DictReader(handle)}
    for actual in names:
        lines.append(f"| {actual} | " + " | ".join(cells[(actual, pred)] for pred in names) + " |")
    lines += ["", "## Most confident mistakes (test)", "", "| text | true | predicted | p |", "|---|---|---|---|"]
    with open(folder / "mistakes.csv", encoding="utf-8") as handle:
        for row in list(csv.DictReader(handle))[:10]:
            text = row["text"][:80].replace("|", "\\|")
            lines.append(f"| {text} | {row['true']} | {row['predicted']} | {row['probability']} |")
    return "\n".join(lines + _attribution_lines(folder, names)) + "\n"


def _baseline_sample_lines(metrics: dict) -> list[str]:
    """What the baseline was fitted on: every train row, or a seeded sample (evaluate.baseline_max_chars)."""
    if "baseline_train_rows" not in metrics:
        return []
    seen, total = metrics["baseline_train_rows"], metrics["train_rows"]
    how = "every train row" if seen == total else (
        f"a seeded random sample of {seen:,} of the {total:,} train rows (evaluate.baseline_max_chars); "
        "the RNN's metrics are on the same val and test rows")
    return ["", f"The baseline (TF-IDF character n-grams + logistic regression) was fitted on {how}."]


def _attribution_lines(folder: Path, names: list[str]) -> list[str]:
    """The report's occlusion sections, from top_tokens.csv and mistake_tokens.csv (when written)."""
    if not (folder / "top_tokens.csv").exists():
        return []
    with open(folder / "top_tokens.csv", encoding="utf-8") as handle:
        tokens = list(csv.DictReader(handle))
    lines = ["", "## Tokens that push towards each class (test, occlusion)", "",
             "Mean change in the class probability when the token is removed from a text, over the explained "
             "test rows (token, mean, occurrences).", "", "| class | tokens |", "|---|---|"]
    for name in names:
        cells = [f"{t['token']} {float(t['mean_contribution']):+.3f} ({t['count']})" for t in tokens
                 if t["class"] == name]
        lines.append(f"| {name} | {_cell(', '.join(cells)) or '–'} |")
    lines += ["", "## What misled the model (most confident mistakes)", "",
              "| text | true | predicted | tokens that pushed towards the prediction |", "|---|---|---|---|"]
    with open(folder / "mistake_tokens.csv", encoding="utf-8") as handle:
        for row in list(csv.DictReader(handle))[:10]:
            lines.append(f"| {_cell(row['text'][:80])} | {row['true']} | {row['predicted']} | "
                         f"{_cell(row['misled_by'])} |")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|")

"""export: a self-contained ONNX bundle in `out/`, checked against torch on the test split: every row when
it has at most `export.parity_max_rows`, else a seeded sample of that many plus the shortest and longest
rows (textrnn.onnx_export.parity_rows), so its time and memory do not grow with the corpus."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from textrnn.config import ExportParams
from textrnn.data import EncodedSplit
from textrnn.io import atomic_dir, read_json, write_json_into
from textrnn.onnx_export import check_parity, export_onnx, onnx_accuracy_and_speed, parity_rows, quantize_int8
from textrnn.predict import ONNX_FILE
from textrnn.training import load_checkpoint
from textrnn.vocab import Vocabulary

log = logging.getLogger(__name__)
INT8_FILE = "model.int8.onnx"


def run(vocab_dir: Path, checkpoint: Path, metrics_path: Path, out: Path, p: ExportParams) -> dict:
    vocab_dir = Path(vocab_dir)
    vocab = Vocabulary.load(vocab_dir / "vocab.json")
    model, payload = load_checkpoint(checkpoint, expected_vocab_digest=vocab.digest)
    metrics = read_json(metrics_path)
    with atomic_dir(out) as tmp:
        export_onnx(model, tmp / ONNX_FILE, p.opset, p.exporter)
        test = EncodedSplit.load(vocab_dir / "test")
        rows = parity_rows(test, p.parity_max_rows)
        parity = check_parity(model, tmp / ONNX_FILE, test, p.batch_size, p.parity_atol,
                              p.parity_min_argmax_agreement, rows)
        quantized = _quantize(tmp, test, rows, p) if p.quantize else None
        shutil.copyfile(vocab_dir / "vocab.json", tmp / "vocab.json")
        write_json_into(tmp, "labels.json", payload["labels"])
        config = {"model": payload["config"], "tokeniser": vocab.to_json()["tokeniser"],
                  "vocab_digest": vocab.digest, "opset": p.opset, "exporter": p.exporter,
                  "inputs": {"ids": "int64 [batch, seq], right-padded with 0", "lengths": "int64 [batch], >= 1"},
                  "outputs": {"logits": "float32 [batch, classes]"}, "parity": parity,
                  "int8": quantized}
        write_json_into(tmp, "config.json", config)
        write_json_into(tmp, "metrics.json", metrics)
        (tmp / "README.md").write_text(model_card(payload, metrics, parity, quantized), encoding="utf-8")
    log.info("export: %s written (parity %s)", out, parity)
    return parity


def _quantize(folder: Path, test: EncodedSplit, rows: np.ndarray, p: ExportParams) -> dict:
    """int8 beside fp32: its accuracy and speed change on `rows` of the test split (parity's), for the
    model card.

    The speed-up is measured, so with quantize on, config.json and the card differ slightly between
    runs (the models themselves do not)."""
    quantize_int8(folder / ONNX_FILE, folder / INT8_FILE)
    fp32 = onnx_accuracy_and_speed(folder / ONNX_FILE, test, p.batch_size, rows)
    int8 = onnx_accuracy_and_speed(folder / INT8_FILE, test, p.batch_size, rows)
    return {"file": INT8_FILE, "rows": len(rows), "fp32_accuracy": fp32["accuracy"],
            "int8_accuracy": int8["accuracy"], "accuracy_change": int8["accuracy"] - fp32["accuracy"],
            "speedup": int8["rows_per_s"] / fp32["rows_per_s"]}


def model_card(payload: dict, metrics: dict, parity: dict, quantized: dict | None = None) -> str:
    cfg, params = payload["config"], payload["params"]
    fmt = lambda key: f"{metrics[key]:.4f}" if key in metrics else "–"  # noqa: E731
    return "\n".join([
        "# textrnn model card", "",
        f"An RNN text classifier ({cfg['cell'].upper()}, {cfg['num_layers']} layer(s), hidden {cfg['hidden_size']}, "
        f"{'bidirectional' if cfg['bidirectional'] else 'unidirectional'}, {cfg['pooling']} pooling) over "
        f"{cfg['vocab_size']} tokens, predicting {', '.join(payload['labels'])}.", "",
        "## Metrics (test split)", "",
        "| metric | RNN | TF-IDF + LR baseline |", "|---|---|---|",
        f"| accuracy | {fmt('test_accuracy')} | {fmt('baseline_test_accuracy')} |",
        f"| macro-F1 | {fmt('test_macro_f1')} | {fmt('baseline_test_macro_f1')} |", "",
        f"ONNX parity with torch on {_rows_checked(parity)}: max |Δlogit| {parity['max_abs_logit_diff']:.2e}, "
        f"argmax agreement {parity['argmax_agreement']:.4f}.", "",
        *_quantized_lines(quantized),
        "## Training", "", "```json", json.dumps(params, indent=2, sort_keys=True), "```", "",
        "## Use", "", "`textrnn predict --model <this folder> TEXT ...` or",
        "`textrnn.Predictor(<this folder>).predict([...])` (onnxruntime only; no torch needed).", "",
        "## Intended use and limits", "",
        "Trained on the data named in params (by default short Chinese product and book reviews). Texts far "
        "from that domain, other languages or much longer texts (cut to the vocabulary's max_len tokens) "
        "will be classified less reliably; check the metrics on your own data before relying on it.", ""])


def _rows_checked(parity: dict) -> str:
    total = parity.get("test_rows", parity["rows"])
    if parity["rows"] >= total:
        return f"all {total} test rows"
    return f"{parity['rows']} of {total} test rows (a seeded sample, the shortest and longest rows included)"


def _quantized_lines(quantized: dict | None) -> list[str]:
    if not quantized:
        return []
    return ["## int8 (dynamic quantisation)", "",
            f"`{quantized['file']}`: accuracy on {quantized['rows']} test rows {quantized['int8_accuracy']:.4f} "
            f"vs fp32 "
            f"{quantized['fp32_accuracy']:.4f} (change {quantized['accuracy_change']:+.4f}); "
            f"speed ×{quantized['speedup']:.2f} at batch size 256 on this machine.", ""]

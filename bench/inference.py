"""Inference speed on the test split, tokenisation included: onnxruntime vs torch eager, int8 vs fp32,
explain (occlusion) beside plain prediction, and the whole split end to end through `textrnn predict --input`.

Run after `make run` (needs models/export, models/checkpoint.pt and data/clean/test):

    .venv/bin/python bench/inference.py [--params params.yaml] [--latency-rows 300]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import torch

from textrnn.config import load_params
from textrnn.io import read_folder
from textrnn.onnx_export import quantize_int8
from textrnn.predict import Predictor, pad_rows
from textrnn.training import load_checkpoint
from textrnn.vocab import encode_raw


class TorchPredictor:
    """The same tokeniser feeding the torch model (eager), for comparison."""

    def __init__(self, checkpoint: Path, vocab):
        self.model, _ = load_checkpoint(checkpoint)
        self.vocab = vocab

    @torch.no_grad()
    def logits(self, texts: list[str], batch_size: int) -> np.ndarray:
        ids, offsets = encode_raw(texts, self.vocab)
        lengths = np.diff(offsets)
        out = np.zeros((len(texts), self.model.cfg.num_classes), dtype=np.float32)
        order = np.argsort(lengths, kind="stable")
        order = order[lengths[order] > 0]
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch, batch_lengths = pad_rows(ids, offsets, rows)  # the same padding code as onnxruntime gets
            out[rows] = self.model(torch.from_numpy(batch), torch.from_numpy(np.maximum(batch_lengths, 1))).numpy()
        return out


def throughput(fn, texts: list[str], batch_size: int) -> float:
    fn(texts[:batch_size], batch_size)  # warm-up
    start = time.perf_counter()
    fn(texts, batch_size)
    return len(texts) / (time.perf_counter() - start)


def latency_ms(fn, texts: list[str]) -> tuple[float, float]:
    times = []
    for text in texts:
        start = time.perf_counter()
        fn([text], 1)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--latency-rows", type=int, default=300)
    args = parser.parse_args()
    p = load_params(args.params)
    torch.set_num_threads(2)
    texts = read_folder(Path(p.paths.clean) / "test", ["text"]).column("text").to_pylist()
    onnx = Predictor(p.paths.export)
    eager = TorchPredictor(Path(p.paths.checkpoint), onnx.vocab)
    with tempfile.TemporaryDirectory() as tmp:
        int8_dir = Path(tmp) / "int8"
        int8_dir.mkdir()
        for name in ("vocab.json", "labels.json"):
            (int8_dir / name).write_bytes((Path(p.paths.export) / name).read_bytes())
        quantize_int8(Path(p.paths.export) / "model.onnx", int8_dir / "model.onnx")
        int8 = Predictor(int8_dir)
        results = {
            "onnx_fp32": throughput(lambda t, b: onnx.logits(t, b), texts, 64),
            "onnx_int8": throughput(lambda t, b: int8.logits(t, b), texts, 64),
            "torch_eager": throughput(eager.logits, texts, 64),
            # occlusion: each text's L + 1 variants (budget 64 units) through onnxruntime, 256 rows a call
            "onnx_explain": throughput(lambda t, b: onnx.explain(t), texts[:300], 64),
        }
        agree = float((onnx.logits(texts)[0].argmax(1) == int8.logits(texts)[0].argmax(1)).mean())
    sample = texts[: args.latency_rows]
    lat = {"onnx_fp32": latency_ms(lambda t, b: onnx.logits(t, b), sample),
           "torch_eager": latency_ms(eager.logits, sample)}
    end_to_end = predict_cli_seconds(texts, p.paths.export)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"test rows: {len(texts)}, threads: 2")
    for name, value in results.items():
        print(f"{name} batch-64 throughput rows/s: {value:,.0f}")
    for name, (p50, p99) in lat.items():
        print(f"{name} batch-1 latency ms: p50 {p50:.2f}, p99 {p99:.2f}")
    print(f"int8 vs fp32 argmax agreement: {agree:.4f}")
    print(f"textrnn predict --input (whole test split, end to end) seconds: {end_to_end:.2f} (target < 2)")
    print(f"peak RSS MiB: {peak:,.0f}")
    print(f"ratio onnxruntime/torch batch-64 throughput: {results['onnx_fp32'] / results['torch_eager']:.2f} "
          "(target >= 2)")
    print(f"ratio int8/fp32 throughput: {results['onnx_int8'] / results['onnx_fp32']:.2f}")
    print(f"ratio explain/predict throughput (onnxruntime): {results['onnx_explain'] / results['onnx_fp32']:.3f}")
    print(f"ratio torch/onnxruntime batch-1 p50 latency: {lat['torch_eager'][0] / lat['onnx_fp32'][0]:.2f}")


def predict_cli_seconds(texts: list[str], bundle: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "test.csv", Path(tmp) / "out.csv"
        import pyarrow as pa

        pcsv.write_csv(pa.table({"text": texts}), source)
        cli = Path(sys.executable).parent / "textrnn"
        start = time.perf_counter()
        subprocess.run([str(cli), "predict", "--model", bundle, "--input", str(source), "--output", str(target)],
                       check=True, capture_output=True)
        return time.perf_counter() - start


if __name__ == "__main__":
    main()

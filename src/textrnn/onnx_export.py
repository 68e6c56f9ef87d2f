"""Export the classifier to ONNX and check onnxruntime against torch."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from textrnn.data import EncodedSplit, sequential_batches
from textrnn.model import RNNClassifier
from textrnn.training import to_tensors

log = logging.getLogger(__name__)


class ParityError(RuntimeError):
    """onnxruntime and torch disagree beyond the allowed tolerance."""


def export_onnx(model: RNNClassifier, path: Path, opset: int, exporter: str) -> None:
    """Write `model` to `path` with dynamic batch and sequence axes.

    Both exporters work for every cell and pooling here because the model masks instead of packing
    (`pack_padded_sequence` does not export with the dynamo exporter). "dynamo" is torch's supported
    exporter; "torchscript" is the deprecated one, much faster to run, kept as a fallback.
    """
    model = model.eval().cpu()
    example = (torch.randint(1, model.cfg.vocab_size, (2, 12)), torch.tensor([12, 5]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
            program = torch.onnx.export(model, example, dynamo=True, opset_version=opset,
                                        input_names=["ids", "lengths"], output_names=["logits"],
                                        dynamic_shapes={"ids": {0: batch, 1: seq}, "lengths": {0: batch}},
                                        verbose=False)
            _drop_source_locations(program.model)
            program.save(str(path))
        else:
            torch.onnx.export(model, example, str(path), dynamo=False, opset_version=opset,
                              input_names=["ids", "lengths"], output_names=["logits"],
                              dynamic_axes={"ids": {0: "batch", 1: "seq"}, "lengths": {0: "batch"},
                                            "logits": {0: "batch"}})


def _drop_source_locations(model) -> None:
    """The dynamo exporter records each node's Python stack trace, absolute file paths included, so the
    same model exported from two checkouts gave different bytes. Without them the export is reproducible."""
    for node in model.graph.all_nodes():
        node.metadata_props.pop("pkg.torch.onnx.stack_trace", None)


PARITY_SEED = 0  # the parity sample's: the same rows on every run of the same split


def parity_rows(split: EncodedSplit, max_rows: int, seed: int = PARITY_SEED) -> np.ndarray:
    """Sorted rows of `split` to check: all of them when there are at most `max_rows`, else a seeded random
    sample of `max_rows` plus the edge cases, the shortest and the longest rows (the pad-free batch and
    the widest, the length cut at vocab.max_len)."""
    n = len(split)
    if n <= max_rows:
        return np.arange(n)
    lengths = split.lengths
    sample = np.random.default_rng(seed).choice(n, size=max_rows, replace=False)
    return np.unique(np.concatenate([sample, [int(lengths.argmin()), int(lengths.argmax())]]))


def _batches_of(split: EncodedSplit, rows: np.ndarray, batch_size: int):
    """(positions in `rows`, ids, lengths) per batch of `rows`, batched by length; tensors built one batch
    at a time."""
    for at in sequential_batches(split.lengths[rows], batch_size):
        ids, lengths, _ = to_tensors(split, rows[at], torch.device("cpu"))
        yield at, ids, lengths


@torch.no_grad()
def check_parity(model: RNNClassifier, onnx_path: Path, split: EncodedSplit, batch_size: int, atol: float,
                 min_agreement: float, rows: np.ndarray | None = None) -> dict:
    """Compare logits of torch and onnxruntime on `rows` of `split` (default: every row, see parity_rows);
    raise ParityError if they differ."""
    import onnxruntime as ort

    rows = np.arange(len(split)) if rows is None else np.asarray(rows, np.int64)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model.eval()
    torch_logits = np.zeros((len(rows), model.cfg.num_classes), np.float32)
    onnx_logits = np.zeros_like(torch_logits)
    for at, ids, lengths in _batches_of(split, rows, batch_size):
        torch_logits[at] = model(ids, lengths).float().numpy()
        onnx_logits[at] = session.run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})[0]
    max_diff = float(np.abs(torch_logits - onnx_logits).max()) if len(rows) else 0.0
    agreement = float((torch_logits.argmax(1) == onnx_logits.argmax(1)).mean()) if len(rows) else 1.0
    result = {"rows": len(rows), "test_rows": len(split), "max_abs_logit_diff": max_diff,
              "argmax_agreement": agreement}
    log.info("export parity: %s", result)
    if max_diff > atol or agreement < min_agreement:
        raise ParityError(f"{onnx_path}: onnxruntime differs from torch on {len(rows)} rows of the test split: "
                          f"{result} (allowed: max diff ≤ {atol}, agreement ≥ {min_agreement})")
    return result


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of weights (LSTM/GRU and MatMul) with onnxruntime."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its pre-processing hint
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def onnx_accuracy_and_speed(path: Path, split: EncodedSplit, batch_size: int, rows: np.ndarray | None = None) -> dict:
    """Accuracy and rows/s of an ONNX model on `rows` of `split` (default: every row; tokenised already,
    batches sorted by length). Only onnxruntime's own time counts; the batches are built one at a time."""
    import time

    import onnxruntime as ort

    rows = np.arange(len(split)) if rows is None else np.asarray(rows, np.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    predicted = np.zeros(len(rows), dtype=np.int64)
    seconds = 0.0
    for at, ids, lengths in _batches_of(split, rows, batch_size):
        feed = {"ids": ids.numpy(), "lengths": lengths.numpy()}
        start = time.perf_counter()
        predicted[at] = session.run(None, feed)[0].argmax(1)
        seconds += time.perf_counter() - start
    accuracy = float((predicted == np.asarray(split.labels[rows])).mean()) if len(rows) else 0.0
    return {"accuracy": accuracy, "rows_per_s": len(rows) / max(seconds, 1e-9)}

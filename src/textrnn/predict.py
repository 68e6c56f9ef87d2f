"""Torch-free inference over an exported bundle (onnxruntime + the saved tokeniser).

    from textrnn import Predictor
    Predictor("models/export").predict(["这本书太好了", "质量太差"])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from textrnn.text import normalise, truncate
from textrnn.vocab import PAD_ID, Vocabulary, encode

ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class Prediction:
    label: str  # "" when the row could not be predicted
    probabilities: dict[str, float]
    reason: str = ""  # why there is no prediction ("empty"), else ""


class Predictor:
    def __init__(self, bundle: str | Path, threads: int = 0):
        import onnxruntime as ort

        self.bundle = Path(bundle)
        self.vocab = Vocabulary.load(self.bundle / "vocab.json")
        self.labels: list[str] = json.loads((self.bundle / "labels.json").read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.bundle / ONNX_FILE), options,
                                            providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """Exactly the training tokeniser: same normalisation, same vocabulary, same truncation."""
        normalised = truncate(normalise(pa.array(texts, pa.string()), self.vocab.normalisation),
                              self.vocab.normalisation.max_chars)
        return encode(pc.fill_null(normalised, ""), self.vocab)

    def logits(self, texts: list[str | None], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(logits [N, C], has_tokens [N]); rows with no tokens get zeros and has_tokens False."""
        ids, offsets = self.encode(texts)
        lengths = np.diff(offsets)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
        order = order[lengths[order] > 0]
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch_ids, batch_lengths = pad_rows(ids, offsets, rows)
            out[rows] = self.session.run(None, {"ids": batch_ids, "lengths": batch_lengths})[0]
        return out, lengths > 0

    def predict(self, texts: list[str | None], batch_size: int = 64) -> list[Prediction]:
        logits, has_tokens = self.logits(texts, batch_size)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        results = []
        for row, ok in zip(probs, has_tokens):
            if not ok:
                results.append(Prediction("", {}, "empty"))
                continue
            results.append(Prediction(self.labels[int(row.argmax())],
                                      {name: round(float(p), 6) for name, p in zip(self.labels, row)}))
        return results


def pad_rows(ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    position = np.arange(int(lengths.max()))[None, :]
    inside = position < lengths[:, None]
    batch = np.where(inside, ids[np.where(inside, starts[:, None] + position, 0)], PAD_ID)
    return batch.astype(np.int64), lengths.astype(np.int64)

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

from textrnn.explain import occlusion, top_units
from textrnn.normalisation import normalise, truncate
from textrnn.tokenisation import tokenise
from textrnn.vocab import PAD_ID, Vocabulary, encode

ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class Prediction:
    label: str  # "" when the row could not be predicted
    probabilities: dict[str, float]
    reason: str = ""  # why there is no prediction ("empty"), else ""


@dataclass(frozen=True)
class Explanation:
    """A prediction with the contribution of each unit of the text (a token, or a span of tokens in a
    long text): p(class | text) - p(class | text without the unit), for every class (see textrnn.explain)."""

    label: str  # "" when the row could not be predicted
    probabilities: dict[str, float]
    units: list[str]
    contributions: np.ndarray  # [units, classes]
    labels: list[str]
    reason: str = ""

    def top(self, k: int = 5) -> dict[str, list]:
        """Per class, the k units with the largest |contribution|: [[unit, signed contribution], ...]."""
        return top_units(self.units, self.contributions, self.labels, k) if self.units else {}


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
        self.model_calls = 0  # onnxruntime runs so far (explain's cost is held to a bound by tests)

    def normalised(self, texts: list[str | None]) -> pa.Array:
        normalised = truncate(normalise(pa.array(texts, pa.string()), self.vocab.normalisation),
                              self.vocab.normalisation.max_chars)
        return pc.fill_null(normalised, "")

    def encode(self, texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """Exactly the training tokeniser: same normalisation, same vocabulary, same truncation."""
        return encode(self.normalised(texts), self.vocab)

    def run(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Logits [B, C] of a padded batch (ids [B, T] int64, lengths [B] int64, each >= 1)."""
        self.model_calls += 1
        return self.session.run(None, {"ids": ids, "lengths": lengths})[0]

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
            out[rows] = self.run(batch_ids, batch_lengths)
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

    def explain(self, texts: list[str | None], budget: int = 64, batch_rows: int = 256) -> list[Explanation]:
        """Predictions with occlusion attributions (see textrnn.explain): each text is cut into at most
        `budget` units; all rows go through the model `batch_rows` at a time."""
        normalised = self.normalised(texts)
        ids, offsets = encode(normalised, self.vocab)
        tokens = tokenise(normalised, use_jieba=self.vocab.jieba).to_pylist()
        results = []
        for row, attribution in enumerate(occlusion(ids, offsets, self.run, budget, batch_rows)):
            if attribution is None:
                results.append(Explanation("", {}, [], np.zeros((0, len(self.labels))), self.labels, "empty"))
                continue
            kept = [t for t in tokens[row] if t][:offsets[row + 1] - offsets[row]]  # the ids' tokens
            units = [_joined(kept[a:b]) for a, b in attribution.spans]
            probs = attribution.probabilities
            results.append(Explanation(self.labels[int(probs.argmax())],
                                       {name: round(float(p), 6) for name, p in zip(self.labels, probs)},
                                       units, attribution.contributions, self.labels))
        return results


def _joined(tokens: list[str]) -> str:
    """A unit's tokens as text: characters side by side, words apart."""
    return "".join(tokens) if all(len(t) == 1 for t in tokens) else " ".join(tokens)


def pad_rows(ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    position = np.arange(int(lengths.max()))[None, :]
    inside = position < lengths[:, None]
    batch = np.where(inside, ids[np.where(inside, starts[:, None] + position, 0)], PAD_ID)
    return batch.astype(np.int64), lengths.astype(np.int64)

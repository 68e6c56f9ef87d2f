"""The train, evaluate and export stages: outputs, schema, identical bytes on rerun, ONNX parity."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import textrnn
from textrnn.config import ExportParams
from textrnn.data import EncodedSplit, write_encoded_split
from textrnn.model import ModelConfig, RNNClassifier
from textrnn.stages import evaluate, export, train
from textrnn.stages.train import read_live_log
from textrnn.training import LOG_COLUMNS
from textrnn.vocab import Vocabulary

EVALUATION_FILES = {"per_class.csv", "confusion.csv", "calibration.csv", "mistakes.csv", "report.md",
                    "confusion.png"}
BUNDLE_FILES = {"model.onnx", "vocab.json", "labels.json", "config.json", "metrics.json", "README.md"}
TIMING = {"tokens_per_s", "seconds"}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def load_payload(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture
def vocab_copy(built, tmp_path) -> Path:
    return Path(shutil.copytree(built.paths.vocab, tmp_path / "vocab"))


def test_checkpoint_holds_weights_config_vocab_labels_and_params(built):
    payload = load_payload(built.paths.checkpoint)
    assert {"state_dict", "config", "vocab_digest", "labels", "params"} <= set(payload)
    vocab = Vocabulary.load(Path(built.paths.vocab) / "vocab.json")
    labels = json.loads((Path(built.paths.vocab) / "labels.json").read_text(encoding="utf-8"))
    assert payload["vocab_digest"] == vocab.digest
    assert payload["labels"] == labels
    assert payload["config"] == ModelConfig.from_params(built.model, len(vocab), len(labels)).to_dict()
    assert payload["params"] == {"model": dataclasses.asdict(built.model), "train": dataclasses.asdict(built.train)}
    model = RNNClassifier(ModelConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])  # strict: every weight present, none extra
    assert all(isinstance(t, torch.Tensor) for t in payload["state_dict"].values())


def test_train_log_has_one_row_per_epoch(built):
    rows = read_live_log(Path(built.paths.train_log))
    best = load_payload(built.paths.checkpoint)["best"]
    assert len(rows) == best["epochs_run"] == built.train.epochs
    assert tuple(rows[0]) == LOG_COLUMNS
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(0.0 <= float(r["val_accuracy"]) <= 1.0 for r in rows)


def small_vocab_dir(built, folder: Path, rows: int = 40) -> Path:
    """The built vocabulary with only the first `rows` rows of train and val, for a fast multi-epoch run."""
    folder.mkdir()
    for name in ("vocab.json", "labels.json"):
        shutil.copyfile(Path(built.paths.vocab) / name, folder / name)
    for split in ("train", "val"):
        full = EncodedSplit.load(Path(built.paths.vocab) / split)
        n = min(rows, len(full))
        offsets = np.asarray(full.offsets[: n + 1])
        ids = np.asarray(full.ids[: offsets[-1]])
        write_encoded_split(folder / split, [(ids, offsets, np.asarray(full.labels[:n]), 0)])
    return folder


def test_train_writes_one_log_row_per_epoch_run(built, tmp_path):
    vocab_dir = small_vocab_dir(built, tmp_path / "vocab")
    p = dataclasses.replace(built.train, epochs=3, patience=10, batch_size=16)
    best = train.run(vocab_dir, tmp_path / "model.pt", tmp_path / "log", tmp_path / "state.pt", built.model, p)
    rows = read_live_log(tmp_path / "log")
    assert set(json.loads((tmp_path / "log" / "metrics.json").read_text())) >= {"val_macro_f1", "step"}
    assert best["epochs_run"] == 3
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert tuple(rows[0]) == LOG_COLUMNS
    for row in rows:
        assert all(float(row[c]) >= 0.0 for c in LOG_COLUMNS)
        assert 0.0 <= float(row["padding_fraction"]) < 1.0
    assert float(rows[-1]["lr"]) < float(rows[0]["lr"])  # cosine decay towards zero
    assert 1 <= best["epoch"] <= 3


def test_train_rerun_gives_a_byte_identical_checkpoint(built, vocab_copy, tmp_path):
    out = tmp_path / "out"
    checkpoint = out / Path(built.paths.checkpoint).name  # torch.save records the file's name inside
    train.run(vocab_copy, checkpoint, out / "log", out / "state.pt", built.model, built.train)
    assert checkpoint.read_bytes() == Path(built.paths.checkpoint).read_bytes()
    rerun, first = read_live_log(out / "log"), read_live_log(Path(built.paths.train_log))
    strip = [{k: v for k, v in row.items() if k not in TIMING} for row in rerun]
    assert strip == [{k: v for k, v in row.items() if k not in TIMING} for row in first]


def test_metrics_json_is_flat_with_scores_in_unit_range(built):
    metrics = json.loads(Path(built.paths.metrics).read_text(encoding="utf-8"))
    for key in ("test_accuracy", "test_macro_f1", "baseline_test_accuracy", "baseline_test_macro_f1",
                "val_accuracy", "val_macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())
    assert metrics["rnn_minus_baseline_test_accuracy"] == pytest.approx(
        metrics["test_accuracy"] - metrics["baseline_test_accuracy"], abs=1e-6)


def test_evaluation_folder_has_every_table_and_figure(built):
    folder = Path(built.paths.evaluation)
    assert {p.name for p in folder.iterdir()} >= EVALUATION_FILES
    labels = json.loads((Path(built.paths.vocab) / "labels.json").read_text(encoding="utf-8"))
    test_rows = len(EncodedSplit.load(Path(built.paths.vocab) / "test"))
    per_class = read_csv(folder / "per_class.csv")
    assert [r["label"] for r in per_class] == labels
    assert sum(int(r["support"]) for r in per_class) == test_rows
    confusion = read_csv(folder / "confusion.csv")
    assert len(confusion) == len(labels) ** 2
    assert sum(int(r["count"]) for r in confusion) == test_rows
    assert tuple(read_csv(folder / "mistakes.csv")[0]) == ("text", "true", "predicted", "probability")
    assert (folder / "report.md").read_text(encoding="utf-8").startswith("# Evaluation report")
    assert (folder / "confusion.png").read_bytes().startswith(b"\x89PNG")


def test_evaluate_rerun_gives_identical_outputs(built, tmp_path):
    metrics, out = tmp_path / "metrics.json", tmp_path / "evaluation"
    evaluate.run(Path(built.paths.clean), Path(built.paths.vocab), Path(built.paths.checkpoint), metrics, out,
                 built.evaluate)
    assert metrics.read_bytes() == Path(built.paths.metrics).read_bytes()
    first = Path(built.paths.evaluation)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in first.iterdir())
    for path in out.iterdir():
        assert path.read_bytes() == (first / path.name).read_bytes(), path.name


def test_export_bundle_is_self_contained(built):
    bundle = Path(built.paths.export)
    assert {p.name for p in bundle.iterdir()} >= BUNDLE_FILES
    assert (bundle / "vocab.json").read_bytes() == (Path(built.paths.vocab) / "vocab.json").read_bytes()
    assert json.loads((bundle / "labels.json").read_text()) == load_payload(built.paths.checkpoint)["labels"]
    assert json.loads((bundle / "metrics.json").read_text()) == json.loads(Path(built.paths.metrics).read_text())
    config = json.loads((bundle / "config.json").read_text())
    assert config["exporter"] == "torchscript"
    assert config["parity"]["max_abs_logit_diff"] <= built.export.parity_atol
    assert "textrnn predict" in (bundle / "README.md").read_text(encoding="utf-8")


def assert_onnx_padding_invariant(onnx_path: Path, vocab_size: int) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    short = rng.integers(2, vocab_size, 4)
    long = rng.integers(2, vocab_size, 150)
    batch = np.zeros((2, 150), np.int64)
    batch[0, :4], batch[1] = short, long
    alone = session.run(None, {"ids": short[None, :].astype(np.int64), "lengths": np.array([4])})[0]
    together = session.run(None, {"ids": batch, "lengths": np.array([4, 150])})[0]
    long_alone = session.run(None, {"ids": long[None, :].astype(np.int64), "lengths": np.array([150])})[0]
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(together[1], long_alone[0], atol=1e-5, rtol=0)


def test_onnx_logits_do_not_depend_on_padding(built):
    vocab_size = load_payload(built.paths.checkpoint)["config"]["vocab_size"]
    assert_onnx_padding_invariant(Path(built.paths.export) / "model.onnx", vocab_size)


def test_dynamo_export_passes_parity(built, tmp_path):
    p = dataclasses.replace(built.export, exporter="dynamo")
    out = tmp_path / "export"
    parity = export.run(Path(built.paths.vocab), Path(built.paths.checkpoint), Path(built.paths.metrics), out, p)
    assert parity["rows"] == len(EncodedSplit.load(Path(built.paths.vocab) / "test"))
    assert parity["max_abs_logit_diff"] <= p.parity_atol
    assert parity["argmax_agreement"] >= p.parity_min_argmax_agreement
    assert {f.name for f in out.iterdir()} >= BUNDLE_FILES
    assert json.loads((out / "config.json").read_text())["exporter"] == "dynamo"
    vocab_size = load_payload(built.paths.checkpoint)["config"]["vocab_size"]
    assert_onnx_padding_invariant(out / "model.onnx", vocab_size)
    # Reproducible across checkouts: no source location (absolute path) is recorded in the model.
    assert str(Path(textrnn.__file__).parent).encode() not in (out / "model.onnx").read_bytes()


def test_export_refuses_a_checkpoint_of_another_vocabulary(built, vocab_copy, tmp_path):
    payload = json.loads((vocab_copy / "vocab.json").read_text(encoding="utf-8"))
    payload["tokens"].append("一个新词")
    (vocab_copy / "vocab.json").write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match="another vocabulary"):
        export.run(vocab_copy, Path(built.paths.checkpoint), Path(built.paths.metrics), tmp_path / "export",
                   ExportParams(exporter="torchscript"))
    assert not (tmp_path / "export").exists()

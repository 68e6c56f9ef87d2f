"""textrnn.predict / textrnn.predict_io over the exported bundle of the tiny pipeline (no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from textrnn.data import EncodedSplit
from textrnn.io import read_folder
from textrnn.normalisation import normalise
from textrnn.predict import Prediction, Predictor
from textrnn.predict_io import read_texts, write_predictions

TEXTS = ["这本书太好了，非常喜欢", "质量太差，不推荐", "一般般"]
CLI = Path(sys.executable).with_name("textrnn")


@pytest.fixture(scope="module")
def bundle(built) -> Path:
    return Path(built.paths.export)


@pytest.fixture(scope="module")
def predictor(bundle) -> Predictor:
    return Predictor(bundle, threads=1)


@pytest.fixture(scope="module")
def labels(bundle) -> list[str]:
    return json.loads((bundle / "labels.json").read_text(encoding="utf-8"))


def test_predict_returns_one_prediction_per_text_in_order(predictor, labels):
    # Texts end in a letter, away from the trailing-space tokenising bug described in write_inputs.
    texts = ["很好" * 30 + "ok", "差bad", "还行吧so", "质量太差no"]
    predictions = predictor.predict(texts)
    assert len(predictions) == len(texts)
    assert all(isinstance(p, Prediction) for p in predictions)
    for text, prediction in zip(texts, predictions):
        assert prediction.label in labels
        assert list(prediction.probabilities) == labels
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
        assert prediction.reason == ""
        alone = predictor.predict([text])[0]  # order kept: each row's result is its own
        assert alone.label == prediction.label
        assert alone.probabilities == pytest.approx(prediction.probabilities, abs=1e-5)


def test_predict_is_independent_of_batch_size(predictor):
    texts = [t + "ok" for t in TEXTS * 3]
    np.testing.assert_allclose(predictor.logits(texts, batch_size=2)[0], predictor.logits(texts, batch_size=64)[0],
                               atol=1e-5)


def test_empty_and_none_give_no_label(predictor, labels):
    predictions = predictor.predict(["", None, "   ", TEXTS[0]])
    for empty in predictions[:3]:
        assert empty == Prediction("", {}, "empty")
    assert predictions[3].label in labels


def test_encode_matches_the_training_encoding_of_the_test_split(built, predictor):
    texts = read_folder(Path(built.paths.clean) / "test", ["text"]).column("text").to_pylist()
    split = EncodedSplit.load(Path(built.paths.vocab) / "test")
    assert len(texts) == len(split) > 0
    ids, offsets = predictor.encode(texts)
    np.testing.assert_array_equal(offsets, np.asarray(split.offsets))
    np.testing.assert_array_equal(ids, np.asarray(split.ids))
    # encode normalised the already clean texts once more: normalisation is idempotent on them.
    renormalised = normalise(pa.array(texts, pa.string()), predictor.vocab.normalisation).to_pylist()
    assert renormalised == texts


def test_prediction_in_a_fresh_process_never_imports_torch(bundle):
    code = (
        "import sys, json\n"
        "import textrnn.predict_io\n"
        "from textrnn.predict import Predictor\n"
        f"p = Predictor({str(bundle)!r}, threads=1).predict({TEXTS!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(json.dumps([x.label for x in p]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == len(TEXTS)


def with_read_reasons(predictions: list[Prediction], reasons: list[str]) -> list[Prediction]:
    """What `textrnn predict` does: a row that could not be read keeps that reason."""
    return [Prediction("", {}, r) if r else p for p, r in zip(predictions, reasons)]


def read_back(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas()
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(path, keep_default_na=False, dtype=str)


def write_inputs(folder: Path, fmt: str) -> Path:
    """Five rows. The last ends in a letter: pyarrow 26's utf8_split_whitespace can keep the trailing space
    of a buffer's last string ("吧 " → <unk>), which would make the last row's tokens vary between runs."""
    path = folder / f"in.{fmt}"
    if fmt == "csv":
        good = "id,text\n1,很好\n2,\"含,逗号\n和换行\"\n".encode()
        path.write_bytes(good + b"3,bad \xff\xfe bytes\n4,\n" + "5,差ok\n".encode())
    elif fmt == "jsonl":
        rows = [{"text": "很好"}, {"text": "含\n换行"}, {"text": None}, {"text": ""}, {"text": "差ok"}]
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    else:
        pq.write_table(pa.table({"text": ["很好", "含\n换行", None, "", "差ok"]}), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_read_and_write_keep_one_row_per_input_row(predictor, labels, tmp_path, fmt):
    texts, reasons = read_texts(write_inputs(tmp_path, fmt), "text")
    assert len(texts) == len(reasons) == 5
    assert texts[0] == "很好" and texts[4] == "差ok"
    if fmt == "csv":
        assert texts[1] == "含,逗号\n和换行"
        assert texts[2] is None and reasons == ["", "", "bad_utf8", "", ""]
    else:
        assert reasons == [""] * 5
    predictions = with_read_reasons(predictor.predict(texts), reasons)
    out = tmp_path / f"out.{fmt}"
    write_predictions(out, texts, predictions, labels)
    frame = read_back(out)
    assert len(frame) == 5
    assert list(frame.columns) == ["text", "label", *[f"p_{n}" for n in labels], "reason"]
    assert list(frame["label"].fillna("")) == [p.label for p in predictions]
    assert frame["label"][0] in labels and frame["label"][4] in labels
    expected_reasons = ["", "", "bad_utf8" if fmt == "csv" else "empty", "empty", ""]
    assert list(frame["reason"].fillna("")) == expected_reasons


def test_read_texts_names_a_missing_column(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("body\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'text'.*body"):
        read_texts(path, "text")


def test_unknown_output_format_is_refused(tmp_path, labels):
    with pytest.raises(ValueError, match="unknown output format"):
        write_predictions(tmp_path / "out.xlsx", ["x"], [Prediction("", {}, "empty")], labels)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(CLI), "predict", *args], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result


def test_cli_prints_a_header_and_one_line_per_text(bundle, labels):
    result = run_cli("--model", str(bundle), *TEXTS, "")
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["label", *[f"p_{n}" for n in labels], "reason", "text"]
    assert len(lines) == 1 + len(TEXTS) + 1
    for line, text in zip(lines[1:], TEXTS):
        fields = line.split("\t")
        assert fields[0] in labels and fields[-1] == text and fields[-2] == ""
        assert sum(float(f) for f in fields[1:1 + len(labels)]) == pytest.approx(1.0, abs=1e-3)
    assert lines[-1].split("\t")[0] == "" and lines[-1].split("\t")[-2] == "empty"


def test_cli_input_output_round_trip(bundle, labels, predictor, tmp_path):
    source = write_inputs(tmp_path, "csv")
    out = tmp_path / "predictions.jsonl"
    run_cli("--model", str(bundle), "--input", str(source), "--output", str(out))
    frame = read_back(out)
    texts, _ = read_texts(source, "text")
    assert len(frame) == len(texts) == 5
    assert list(frame["reason"]) == ["", "", "bad_utf8", "empty", ""]
    direct = predictor.predict(texts)
    assert list(frame["label"])[:2] == [direct[0].label, direct[1].label]
    assert frame["label"][4] == direct[4].label
    assert list(frame["text"])[:2] == texts[:2]

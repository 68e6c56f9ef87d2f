"""Files in and out for `textrnn predict`: one output row per input row, in order (no torch here)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from textrnn.predict import Prediction, Predictor
from textrnn.raw_batch import decode_utf8


def read_lines(stream) -> tuple[list[str | None], list[str]]:
    """One text per line of a binary stream (stdin); an undecodable line gets reason bad_utf8."""
    raw = pa.array([line.rstrip(b"\r\n") for line in stream], pa.binary())
    texts, errors = decode_utf8(raw)
    return texts.to_pylist(), ["" if e is None else e for e in errors.to_pylist()]


def read_texts(path: Path, text_column: str) -> tuple[list[str | None], list[str]]:
    """Texts of a CSV/TSV/JSONL/Parquet/TXT file and, per row, why it has no usable text ('' if it has)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        raw = pa.array([line.rstrip(b"\r\n") for line in path.read_bytes().splitlines()], pa.binary())
    else:
        table = _read_table(path, suffix, text_column)
        if text_column not in table.column_names:
            raise ValueError(f"{path}: text column {text_column!r} not found; columns found: {table.column_names}")
        raw = table.column(text_column).combine_chunks()
    if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
        texts, errors = raw.cast(pa.string()), pa.nulls(len(raw), pa.string())
    else:
        texts, errors = decode_utf8(raw)
    reasons = ["" if e is None else e for e in errors.to_pylist()]
    return texts.to_pylist(), reasons


def _read_table(path: Path, suffix: str, text_column: str) -> pa.Table:
    if suffix in (".csv", ".tsv"):
        parse = pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True)
        convert = pcsv.ConvertOptions(column_types={text_column: pa.binary()})
        return pcsv.read_csv(path, parse_options=parse, convert_options=convert)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return pjson.read_json(path)
    if suffix in (".parquet", ".pq"):
        return pq.read_table(path)
    raise ValueError(f"{path}: unknown input format {suffix!r}; use .csv, .tsv, .jsonl, .parquet or .txt")


def explain_column(predictor: Predictor, texts: list[str | None], predictions: list[Prediction],
                   k: int) -> list[str]:
    """Per row, its explanation as JSON: {class: [[token, signed contribution], ...]}, the k tokens per
    class that moved its probability most ("" for a row without a prediction)."""
    usable = [None if p.reason else t for t, p in zip(texts, predictions)]
    return [json.dumps(e.top(k), ensure_ascii=False) if e.units else "" for e in predictor.explain(usable)]


def predictions_table(texts: list[str | None], predictions: list[Prediction], labels: list[str],
                      explained: list[str] | None = None) -> pa.Table:
    columns = {"text": pa.array(texts, pa.string()),
               "label": pa.array([p.label for p in predictions], pa.string())}
    for name in labels:
        columns[f"p_{name}"] = pa.array([p.probabilities.get(name) for p in predictions], pa.float64())
    columns["reason"] = pa.array([p.reason for p in predictions], pa.string())
    if explained is not None:
        columns["explain"] = pa.array(explained, pa.string())
    return pa.table(columns)


def write_predictions(path: Path, texts: list[str | None], predictions: list[Prediction],
                      labels: list[str], explained: list[str] | None = None) -> None:
    table = predictions_table(texts, predictions, labels, explained)
    suffix = path.suffix.lower()
    # pyarrow writes every format here; pandas would add a third of a second of import to each call.
    if suffix == ".parquet":
        pq.write_table(table, path)
    elif suffix in (".jsonl", ".json"):
        with open(path, "w", encoding="utf-8") as handle:
            for row in table.to_pylist():
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif suffix in (".csv", ".tsv"):
        pcsv.write_csv(table, path, pcsv.WriteOptions(delimiter="\t" if suffix == ".tsv" else ","))
    else:
        raise ValueError(f"{path}: unknown output format {suffix!r}; use .csv, .tsv, .jsonl or .parquet")

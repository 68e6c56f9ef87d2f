"""Compressed sources (.csv.gz, .jsonl.gz, .tsv.bz2, .zst, ...) read as their plain formats, streamed."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pytest
import zstandard

from textrnn.config import IngestParams
from textrnn.sources import format_suffix, iter_source

ROWS = [("好的，很喜欢", "pos"), ('质量 "太差", 退货', "neg"), ("multi\nline text", "pos")] * 50
COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
            ".zst": lambda data: zstandard.ZstdCompressor().compress(data)}


def _csv(delimiter: str) -> bytes:
    def quote(value: str) -> str:
        return '"' + value.replace('"', '""') + '"'
    lines = [f"text{delimiter}label"] + [f"{quote(t)}{delimiter}{label}" for t, label in ROWS]
    return ("\n".join(lines) + "\n").encode()


def _jsonl() -> bytes:
    return "".join(json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n" for t, label in ROWS).encode()


def _read(path) -> list[tuple[str, str]]:
    batches = list(iter_source(IngestParams(source=str(path), chunk_rows=64)))
    return [row for b in batches for row in zip(b.column("text").to_pylist(), b.column("label").to_pylist())]


@pytest.mark.parametrize("suffix", list(COMPRESS))
@pytest.mark.parametrize(("name", "payload"), [("corpus.csv", _csv(",")), ("corpus.tsv", _csv("\t")),
                                               ("corpus.jsonl", _jsonl())])
def test_compressed_file_reads_like_the_plain_one(tmp_path, name, payload, suffix):
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(COMPRESS[suffix](payload))
    assert _read(path) == ROWS


def test_format_is_detected_through_the_compression_suffix():
    assert format_suffix("a/b.CSV.GZ") == ".csv"
    assert format_suffix("x.jsonl.zst") == ".jsonl"
    assert format_suffix("x.parquet") == ".parquet"
    assert format_suffix("noext") == ""


def test_a_folder_mixing_plain_and_compressed_files_reads_them_all(tmp_path):
    (tmp_path / "a.csv").write_bytes(_csv(","))
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(_csv(",")))
    assert _read(tmp_path) == ROWS + ROWS

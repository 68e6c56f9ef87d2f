"""`textrnn predict` on garbage input: one output row per input row, in input order, with a reason on every
row that could not be predicted (and a label plus probabilities on every other row).

The bundle is the session's tiny pipeline export (tests/conftest.py `built`); every run is a real CLI
subprocess with onnxruntime.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from textrnn.config import Params

BIN = Path(sys.executable).parent
csv.field_size_limit(1 << 30)  # the 1 MB row is one CSV field

MEGA = "好" * 350_000  # > 1 MB of UTF-8 on one line
# (raw CSV field, the text the output must hold (None: undecodable), the reason it must give)
GARBAGE = [
    (b'""', "", "empty"),
    (b'"\xff\xfe broken bytes"', None, "bad_utf8"),
    (b'"abc\x00def"', "abc\x00def", ""),
    (b'"\x00\x00\x00"', "\x00\x00\x00", "empty"),
    ('"😀👍🏽🎉"'.encode(), "😀👍🏽🎉", ""),
    (b'"!!!???...,,;;"', "!!!???...,,;;", ""),
    (b'"   "', "   ", "empty"),
    (b'"\t\r\n"', "\t\r\n", "empty"),
    (b'"line\nbreak inside, with ""quotes"""', 'line\nbreak inside, with "quotes"', ""),
    (f'"{MEGA}"'.encode(), MEGA, ""),
    (b'"<b></b>&nbsp;"', "<b></b>&nbsp;", "empty"),
    (b'"\xc3"', None, "bad_utf8"),
    ('"这本书太好了"'.encode(), "这本书太好了", ""),
    (b"plain", "plain", ""),
]


def _garbage_csv(path: Path) -> None:
    # mixed line endings between records, as files stitched from several systems have
    endings = [b"\n", b"\r\n", b"\r"]
    path.write_bytes(b"text\n" + b"".join(raw + endings[i % 3] for i, (raw, _, _) in enumerate(GARBAGE)))


def _predict(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "textrnn"), "predict", *args], input=stdin, capture_output=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    return result


def _check_rows(rows: list[dict], labels: list[str], csv_cells: bool = False) -> None:
    """csv_cells: values read back from CSV, where null and "" look alike and numbers are strings."""
    assert len(rows) == len(GARBAGE)
    for row, (_, text, reason) in zip(rows, GARBAGE):
        if csv_cells:
            row.update({f"p_{n}": float(row[f"p_{n}"]) if row[f"p_{n}"] else None for n in labels})
            assert (row["text"] or None) == (text or None)
        else:
            assert row["text"] == text
        assert row["reason"] == reason, (text if text is None else text[:40], row["reason"])
        probs = [row[f"p_{name}"] for name in labels]
        if reason:
            assert row["label"] == "" and all(p is None for p in probs)
        else:
            assert row["label"] in labels
            assert sum(probs) == pytest.approx(1.0, abs=1e-4)


@pytest.fixture(scope="module")
def bundle(built: Params) -> Path:
    return Path(built.paths.export)


@pytest.fixture(scope="module")
def labels(bundle: Path) -> list[str]:
    return json.loads((bundle / "labels.json").read_text(encoding="utf-8"))


def test_parquet_output_has_one_row_per_input_row_in_order(bundle, labels, tmp_path):
    _garbage_csv(tmp_path / "in.csv")
    _predict("--model", str(bundle), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.parquet"))
    _check_rows(pq.read_table(tmp_path / "out.parquet").to_pylist(), labels)


def test_jsonl_output_has_one_row_per_input_row_in_order(bundle, labels, tmp_path):
    _garbage_csv(tmp_path / "in.csv")
    _predict("--model", str(bundle), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.jsonl"))
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").split("\n")
    assert lines.pop() == ""  # the file ends with a newline; no record holds a raw one
    _check_rows([json.loads(line) for line in lines], labels)


def test_csv_output_has_one_row_per_input_row_in_order(bundle, labels, tmp_path):
    _garbage_csv(tmp_path / "in.csv")
    _predict("--model", str(bundle), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"))
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as handle:
        _check_rows(list(csv.DictReader(handle)), labels, csv_cells=True)


def test_stdout_table_has_one_row_per_input_row_in_order(bundle, labels, tmp_path):
    _garbage_csv(tmp_path / "in.csv")
    result = _predict("--model", str(bundle), "--input", str(tmp_path / "in.csv"))
    rows = list(csv.DictReader(io.StringIO(result.stdout.decode("utf-8"), newline=""), delimiter="\t"))
    assert len(rows) == len(GARBAGE)
    assert [row["reason"] for row in rows] == [reason for _, _, reason in GARBAGE]
    assert all((row["label"] == "") == bool(row["reason"]) for row in rows)


def test_txt_input_with_blank_lines_and_every_line_ending(bundle, labels, tmp_path):
    lines = [b"", b"ok then", b"\xff\xfe", b"\x00", "😀".encode(), b"", b"...", MEGA.encode()]
    (tmp_path / "in.txt").write_bytes(b"\n".join(lines[:3]) + b"\r\n" + b"\r".join(lines[3:]) + b"\n")
    _predict("--model", str(bundle), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.parquet"))
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [row["reason"] for row in rows] == ["empty", "", "bad_utf8", "empty", "", "empty", "", ""]
    assert rows[1]["text"] == "ok then" and rows[-1]["text"] == MEGA


def test_stdin_with_invalid_utf8_gives_one_row_per_line(bundle, labels):
    result = _predict("--model", str(bundle), stdin=b"ok\n\xff\xfe bad\n\nfine\r\n")
    rows = list(csv.DictReader(io.StringIO(result.stdout.decode("utf-8", "replace"), newline=""), delimiter="\t"))
    assert [row["reason"] for row in rows] == ["", "bad_utf8", "empty", ""]


def test_argument_with_invalid_utf8_gives_a_bad_utf8_row(bundle, labels):
    result = subprocess.run([str(BIN / "textrnn"), "predict", "--model", str(bundle), b"a\xffb", "fine"],
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    rows = list(csv.DictReader(io.StringIO(result.stdout.decode("utf-8", "replace"), newline=""), delimiter="\t"))
    assert [row["reason"] for row in rows] == ["bad_utf8", ""]

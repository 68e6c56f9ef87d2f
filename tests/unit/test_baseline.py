"""The bounded baseline's pieces: the seeded character-budget sample, rows read by index, batched predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from textrnn.baseline import predict_folder, read_rows, sample_within_chars, text_lengths
from textrnn.io import shard_name, write_table
from textrnn.metrics import full_proba, train_baseline

TEXTS = ["很好用", "质量太差了", "物流很快，好评", "不推荐", "非常满意", "退货了", "还不错", "差评，坏了", "喜欢",
         "失望"]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]


def shards(folder: Path, texts: list[str], labels: list[int], rows_per_shard: int) -> Path:
    folder.mkdir()
    for index, start in enumerate(range(0, len(texts), rows_per_shard)):
        table = pa.table({"text": texts[start:start + rows_per_shard],
                          "label_id": pa.array(labels[start:start + rows_per_shard], pa.int64())})
        write_table(folder / shard_name(index), table)
    return folder


def test_every_row_when_the_split_fits_the_budget():
    lengths = np.array([3, 5, 7, 2])
    sample = sample_within_chars(lengths, max_chars=17, seed=0)
    assert sample.rows.tolist() == [0, 1, 2, 3]
    assert (sample.total_rows, sample.chars, sample.total_chars) == (4, 17, 17)


def test_a_seeded_sample_within_the_budget_otherwise():
    lengths = np.random.default_rng(1).integers(1, 50, 1000)
    sample = sample_within_chars(lengths, max_chars=2000, seed=7)
    assert 0 < len(sample.rows) < 1000
    assert sample.chars == lengths[sample.rows].sum() <= 2000
    assert sample.chars > 2000 - lengths.max()  # filled up to the budget: the next row drawn did not fit
    assert np.all(np.diff(sample.rows) > 0)  # sorted, no repeats: the split's own order
    assert np.array_equal(sample.rows, sample_within_chars(lengths, 2000, seed=7).rows)
    assert not np.array_equal(sample.rows, sample_within_chars(lengths, 2000, seed=8).rows)


def test_read_rows_reads_any_rows_across_shards_in_the_order_asked(tmp_path):
    folder = shards(tmp_path / "split", TEXTS, LABELS, rows_per_shard=3)
    table = read_rows(folder, ["text", "label_id"], np.array([9, 0, 4, 4, 2]))
    assert table.column("text").to_pylist() == [TEXTS[9], TEXTS[0], TEXTS[4], TEXTS[4], TEXTS[2]]
    assert table.column("label_id").to_pylist() == [LABELS[9], LABELS[0], LABELS[4], LABELS[4], LABELS[2]]
    assert read_rows(folder, ["text"], np.array([], np.int64)).num_rows == 0
    with pytest.raises(IndexError, match="10 rows"):
        read_rows(folder, ["text"], np.array([3, 10]))


def test_text_lengths_are_characters_in_row_order(tmp_path):
    folder = shards(tmp_path / "split", TEXTS, LABELS, rows_per_shard=4)
    assert text_lengths(folder).tolist() == [len(t) for t in TEXTS]


def test_batched_predictions_equal_one_whole_call(tmp_path):
    folder = shards(tmp_path / "split", TEXTS, LABELS, rows_per_shard=4)
    model = train_baseline(TEXTS, np.array(LABELS), ngram_max=2, c=10.0, seed=0)
    batched = predict_folder(model, folder, num_classes=2, batch_rows=3)
    assert np.array_equal(batched, full_proba(model, TEXTS, 2))

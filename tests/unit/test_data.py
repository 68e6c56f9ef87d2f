"""textrnn.data: encoded splits on disk, padded batches, length bucketing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textrnn.data import (
    EncodedSplit,
    bucketed_batches,
    join_encoded_parts,
    padding_fraction,
    percentiles_of_counts,
    sequential_batches,
    write_encoded_part,
    write_encoded_split,
)


def chunk(row_ids: list[list[int]], labels: list[int], unknown: int = 0):
    ids = np.array([i for r in row_ids for i in r], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in row_ids])]).astype(np.int64)
    return ids, offsets, np.array(labels, dtype=np.int64), unknown


ROWS_A = [[5, 6, 7], [], [8]]
ROWS_B = [[9, 1], [2, 3, 4, 5]]


@pytest.fixture
def split_dir(tmp_path):
    folder = tmp_path / "train"
    chunks = [chunk(ROWS_A, [0, 1, 0], unknown=0), chunk(ROWS_B, [1, 1], unknown=1)]
    stats = write_encoded_split(folder, chunks)
    return folder, stats


def test_written_split_loads_back_row_for_row(split_dir):
    folder, stats = split_dir
    split = EncodedSplit.load(folder)
    assert len(split) == 5
    got = [split.ids[split.offsets[i]:split.offsets[i + 1]].tolist() for i in range(len(split))]
    assert got == ROWS_A + ROWS_B
    assert split.labels.tolist() == [0, 1, 0, 1, 1]
    assert split.lengths.tolist() == [3, 0, 1, 2, 4]
    assert stats["rows"] == 5 and stats["tokens"] == 10
    assert stats["oov_rate"] == pytest.approx(0.1)
    assert stats["length_max"] == 4


def test_written_split_files_have_the_documented_dtypes(split_dir):
    folder, _ = split_dir
    assert sorted(p.name for p in folder.iterdir()) == ["ids.bin", "labels.bin", "meta.json", "offsets.bin"]
    assert (folder / "ids.bin").stat().st_size == 10 * 4
    assert (folder / "offsets.bin").stat().st_size == 6 * 8
    assert (folder / "labels.bin").stat().st_size == 5 * 8


def test_ids_stored_as_uint16_take_two_bytes_each_and_load_back_as_uint16(split_dir, tmp_path):
    folder, stats = split_dir
    chunks = [chunk(ROWS_A, [0, 1, 0], unknown=0), chunk(ROWS_B, [1, 1], unknown=1)]
    assert write_encoded_split(tmp_path / "narrow", chunks, np.uint16) == stats
    assert (tmp_path / "narrow" / "ids.bin").stat().st_size == 10 * 2
    assert json.loads((tmp_path / "narrow" / "meta.json").read_text())["dtypes"]["ids"] == "uint16"
    narrow, wide = EncodedSplit.load(tmp_path / "narrow"), EncodedSplit.load(folder)
    assert narrow.ids.dtype == np.uint16 and narrow.ids.tolist() == wide.ids.tolist()
    rows = np.arange(len(wide))
    for got, expected in zip(narrow.padded(rows), wide.padded(rows), strict=True):
        assert got.dtype == expected.dtype and got.tolist() == expected.tolist()


def test_an_id_too_big_for_the_storage_dtype_is_an_error_not_wrapped(tmp_path):
    with pytest.raises(ValueError, match="65536"):
        write_encoded_split(tmp_path / "train", [chunk([[1, 65536]], [0])], np.uint16)
    with pytest.raises(ValueError, match="int64"):
        write_encoded_split(tmp_path / "val", [chunk([[1]], [0])], np.int64)


def test_parts_with_uint16_ids_join_like_the_split_written_from_memory(tmp_path):
    chunks = [chunk(ROWS_A, [0, 1, 0]), chunk(ROWS_B, [1, 1], unknown=1)]
    stats = write_encoded_split(tmp_path / "memory", chunks, np.uint16)
    parts = [write_encoded_part(str(tmp_path / f"part-{i}"), c[0].astype(np.uint16), *c[1:])
             for i, c in enumerate(chunks)]
    assert join_encoded_parts(tmp_path / "joined", parts, np.uint16) == stats
    for name in ("ids.bin", "offsets.bin", "labels.bin", "meta.json"):
        assert (tmp_path / "joined" / name).read_bytes() == (tmp_path / "memory" / name).read_bytes()
    with pytest.raises(ValueError, match="uint16"):
        join_encoded_parts(tmp_path / "mismatch", parts, np.int32)


def test_load_refuses_ids_stored_in_an_unknown_dtype(split_dir):
    folder, _ = split_dir
    meta = json.loads((folder / "meta.json").read_text())
    meta["dtypes"]["ids"] = "float32"
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="float32"):
        EncodedSplit.load(folder)


def test_a_split_joined_from_part_files_equals_the_split_written_from_memory(split_dir, tmp_path):
    # Workers write their chunk's encoding to files and the parent joins them file to file (an empty
    # part included): the bytes and stats must be those of writing the same chunks from memory.
    folder, stats = split_dir
    chunks = [chunk(ROWS_A, [0, 1, 0], unknown=0), chunk([], []), chunk(ROWS_B, [1, 1], unknown=1)]
    parts = [write_encoded_part(str(tmp_path / f"part-{i}"), *c) for i, c in enumerate(chunks)]
    assert join_encoded_parts(tmp_path / "joined", parts) == stats
    for name in ("ids.bin", "offsets.bin", "labels.bin", "meta.json"):
        assert (tmp_path / "joined" / name).read_bytes() == (folder / name).read_bytes()


def test_empty_split_round_trips(tmp_path):
    stats = write_encoded_split(tmp_path / "val", [])
    split = EncodedSplit.load(tmp_path / "val")
    assert len(split) == 0 and stats["rows"] == 0 and stats["oov_rate"] == 0.0
    assert split.offsets.tolist() == [0]


def test_padded_gives_right_padded_rows_with_pad_id_zero(split_dir):
    split = EncodedSplit.load(split_dir[0])
    ids, lengths, labels = split.padded(np.array([0, 4, 2]))
    assert ids.shape == (3, 4) and ids.dtype == np.int64
    assert ids.tolist() == [[5, 6, 7, 0], [2, 3, 4, 5], [8, 0, 0, 0]]
    assert lengths.tolist() == [3, 4, 1]
    assert labels.tolist() == [0, 1, 0]


def test_padded_gives_an_empty_row_length_one_of_padding(split_dir):
    split = EncodedSplit.load(split_dir[0])
    ids, lengths, _ = split.padded(np.array([1]))
    assert ids.tolist() == [[0]]
    assert lengths.tolist() == [1]
    ids, lengths, _ = split.padded(np.array([1, 3]))
    assert ids.tolist() == [[0, 0], [9, 1]] and lengths.tolist() == [1, 2]


def test_load_of_a_truncated_ids_file_raises_value_error_naming_it(split_dir):
    folder, _ = split_dir
    data = (folder / "ids.bin").read_bytes()
    (folder / "ids.bin").write_bytes(data[:-4])
    with pytest.raises(ValueError, match="ids.bin"):
        EncodedSplit.load(folder)


def test_load_of_a_missing_offsets_file_raises_value_error(split_dir):
    folder, _ = split_dir
    (folder / "offsets.bin").unlink()
    with pytest.raises(ValueError, match="offsets.bin"):
        EncodedSplit.load(folder)


def test_load_of_a_truncated_meta_json_raises_value_error(split_dir):
    folder, _ = split_dir
    meta = (folder / "meta.json").read_text()
    (folder / "meta.json").write_text(meta[:10])
    with pytest.raises(ValueError, match="meta.json"):
        EncodedSplit.load(folder)


def test_bucketed_batches_cover_every_row_exactly_once():
    lengths = np.random.default_rng(0).integers(0, 100, size=1003)
    batches = bucketed_batches(lengths, batch_size=32, rng=np.random.default_rng(5), bucket_size=4)
    assert all(0 < len(b) <= 32 for b in batches)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(1003))


def test_bucketed_batches_are_deterministic_for_a_seed():
    lengths = np.random.default_rng(0).integers(0, 100, size=500)
    one = bucketed_batches(lengths, 16, np.random.default_rng(7), bucket_size=5)
    two = bucketed_batches(lengths, 16, np.random.default_rng(7), bucket_size=5)
    other = bucketed_batches(lengths, 16, np.random.default_rng(8), bucket_size=5)
    assert [b.tolist() for b in one] == [b.tolist() for b in two]
    assert [b.tolist() for b in one] != [b.tolist() for b in other]


def test_bucketing_pads_less_than_plain_shuffled_batches():
    lengths = np.random.default_rng(1).integers(1, 200, size=4000)
    bucketed = bucketed_batches(lengths, 32, np.random.default_rng(0), bucket_size=20)
    order = np.random.default_rng(0).permutation(len(lengths))
    plain = [order[i:i + 32] for i in range(0, len(order), 32)]
    assert padding_fraction(lengths, bucketed) < padding_fraction(lengths, plain) / 2


def test_sequential_batches_cover_every_row_in_length_order():
    lengths = np.array([5, 1, 3, 0, 2])
    batches = sequential_batches(lengths, 2)
    assert [b.tolist() for b in batches] == [[3, 1], [4, 2], [0]]


def test_padding_fraction_counts_empty_rows_as_one_position():
    lengths = np.array([0, 2, 2])
    assert padding_fraction(lengths, [np.array([1, 2])]) == 0.0
    assert padding_fraction(lengths, [np.array([0, 1])]) == pytest.approx(0.25)
    assert padding_fraction(lengths, []) == 0.0


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(0, 300), min_size=1, max_size=400))
def test_length_percentiles_from_counts_equal_numpys_from_the_values(values):
    expected = np.percentile(values, [0, 33.3, 50, 90, 99, 100])
    got = percentiles_of_counts(np.bincount(values), [0, 33.3, 50, 90, 99, 100])
    np.testing.assert_allclose(got, expected)

"""textrnn.cleaning: row checks, text hashes, the hash-based split and the cross-chunk dedup index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textrnn.cleaning import (
    _HASH_KEY,
    MIXED,
    REASONS,
    DedupIndex,
    RowRules,
    _KeysInMemory,
    _SpilledKeys,
    assign_split,
    check_rows,
    distinct_keys,
    reason_names,
    rows_by_hash,
    save_keys,
    text_hashes,
)
from textrnn.normalisation import Normalisation
from textrnn.raw_batch import RAW_SCHEMA

LABELS = ("neg", "pos")


def raw_batch(*rows: tuple) -> pa.RecordBatch:
    """Rows of (text, label) or (text, label, error)."""
    records = [{"text": r[0], "label": r[1], "source": "test.csv", "row": i + 1,
                "error": r[2] if len(r) > 2 else None} for i, r in enumerate(rows)]
    return pa.RecordBatch.from_pylist(records, schema=RAW_SCHEMA)


def rules(max_chars: int = 20, min_chars: int = 1, too_long: str = "truncate") -> RowRules:
    return RowRules(normalisation=Normalisation(max_chars=max_chars), min_chars=min_chars, too_long=too_long,
                    labels=LABELS)


def test_good_row_is_normalised_and_gets_its_label_id():
    text, label_ids, reason = check_rows(raw_batch(("Good  PHONE", "pos"), ("bad", "neg")), rules())
    assert text.to_pylist() == ["good phone", "bad"]
    assert label_ids.tolist() == [1, 0]
    assert reason_names(reason).tolist() == [None, None]


def test_empty_and_whitespace_only_and_null_text_are_empty():
    batch = raw_batch(("", "pos"), ("  \t ", "pos"), (None, "pos"), ("<br>", "pos"))
    _, label_ids, reason = check_rows(batch, rules())
    assert reason_names(reason).tolist() == ["empty"] * 4
    assert label_ids.tolist() == [-1] * 4


def test_text_shorter_than_min_chars_is_too_short():
    _, _, reason = check_rows(raw_batch(("ab", "pos"), ("abc", "pos")), rules(min_chars=3))
    assert reason_names(reason).tolist() == ["too_short", None]


def test_too_long_with_drop_rejects_the_row():
    text, label_ids, reason = check_rows(raw_batch(("x" * 11, "pos"), ("x" * 10, "pos")),
                                         rules(max_chars=10, too_long="drop"))
    assert reason_names(reason).tolist() == ["too_long", None]
    assert label_ids.tolist() == [-1, 1]


def test_too_long_with_truncate_keeps_the_row_cut_to_max_chars():
    text, label_ids, reason = check_rows(raw_batch(("这个手机非常非常好用", "pos")), rules(max_chars=4))
    assert reason_names(reason).tolist() == [None]
    assert text.to_pylist() == ["这个手机"]
    assert label_ids.tolist() == [1]


def test_null_or_blank_label_is_missing_label():
    _, _, reason = check_rows(raw_batch(("fine", None), ("fine", ""), ("fine", "pos")), rules())
    assert reason_names(reason).tolist() == ["missing_label", "missing_label", None]


def test_label_outside_the_allowed_set_is_unknown_label():
    _, label_ids, reason = check_rows(raw_batch(("fine", "meh"), ("fine", "POS")), rules())
    assert reason_names(reason).tolist() == ["unknown_label", "unknown_label"]
    assert label_ids.tolist() == [-1, -1]


def test_an_unknown_reader_error_is_refused_with_its_text():
    with pytest.raises(ValueError, match="'disk on fire'"):
        check_rows(raw_batch(("fine", "pos", "disk on fire"),), rules())


def test_reader_error_is_carried_over_and_wins_over_other_reasons():
    batch = raw_batch((None, "pos", "bad_utf8"), ("lonely field", None, "bad_field_count"))
    _, label_ids, reason = check_rows(batch, rules())
    assert reason_names(reason).tolist() == ["bad_utf8", "bad_field_count"]
    assert label_ids.tolist() == [-1, -1]


def test_empty_wins_over_a_missing_label():
    _, _, reason = check_rows(raw_batch(("", None),), rules())
    assert reason_names(reason).tolist() == ["empty"]


def test_every_reason_is_a_known_reason_code():
    batch = raw_batch(("ok text", "pos"), ("", "pos"), ("a", "pos"), ("x" * 30, "pos"), ("fine", None),
                      ("fine", "meh"), (None, "pos", "bad_utf8"))
    _, _, reason = check_rows(batch, rules(min_chars=2, too_long="drop"))
    assert {r for r in reason_names(reason).tolist() if r is not None} <= set(REASONS)
    assert reason_names(reason).tolist()[0] is None


def test_text_hashes_are_deterministic_and_differ_between_texts():
    texts = pa.array(["a", "b", "a", "这个", None, ""])
    first = text_hashes(texts)
    assert first.dtype == np.uint64
    np.testing.assert_array_equal(text_hashes(texts), first)
    assert first[0] == first[2]
    assert first[0] != first[1] and first[0] != first[3]
    assert first[4] == first[5]  # null hashes like the empty string


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_categories=("Cs",)))),
                      max_size=8))
def test_text_hashes_equal_pandas_hashes_of_the_python_strings(texts):
    # The hashes decide the splits: hashing the UTF-8 bytes must give what hashing the strings gave.
    strings = np.array(["" if t is None else t for t in texts], dtype=object)
    np.testing.assert_array_equal(text_hashes(pa.array(texts, pa.string())),
                                  pd.util.hash_array(strings, hash_key=_HASH_KEY, categorize=False).astype(np.uint64))


def test_text_hashes_equal_pandas_hashes_for_every_length_of_the_last_block():
    # SipHash reads 8 bytes at a time and folds the rest into the last block: every remainder, and a
    # sliced array (its rows start inside the buffer), must hash as pandas does.
    texts = ["".join(chr(0x61 + (i * 7 + k) % 26) if k % 5 else "中" for k in range(i)) for i in range(70)]
    strings = np.array(texts, dtype=object)
    expected = pd.util.hash_array(strings, hash_key=_HASH_KEY, categorize=False).astype(np.uint64)
    np.testing.assert_array_equal(text_hashes(pa.array(texts, pa.string())), expected)
    np.testing.assert_array_equal(text_hashes(pa.array(texts, pa.string()).slice(3, 40)), expected[3:43])


def test_text_hash_of_a_text_does_not_depend_on_its_neighbours():
    alone = text_hashes(pa.array(["hello"]))[0]
    among = text_hashes(pa.array(["x", "y", "hello", "z"]))[2]
    assert alone == among


def random_hashes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + \
        np.uint64(1)


def test_assign_split_is_deterministic_for_a_seed():
    hashes = random_hashes(1000)
    first = assign_split(hashes, 13, 0.1, 0.1)
    np.testing.assert_array_equal(assign_split(hashes, 13, 0.1, 0.1), first)
    assert set(np.unique(first).tolist()) == {0, 1, 2}
    assert not np.array_equal(assign_split(hashes, 14, 0.1, 0.1), first)


def test_assign_split_roughly_respects_the_fractions():
    split = assign_split(random_hashes(20_000, seed=1), 13, 0.15, 0.05)
    shares = np.bincount(split, minlength=3) / len(split)
    np.testing.assert_allclose(shares, [0.80, 0.15, 0.05], atol=0.015)


def test_assign_split_with_zero_fractions_puts_everything_in_train():
    assert assign_split(random_hashes(500), 13, 0.0, 0.0).tolist() == [0] * 500


def test_assign_split_of_a_row_ignores_row_order_and_other_rows():
    hashes = random_hashes(2000, seed=2)
    split = assign_split(hashes, 7, 0.1, 0.1)
    order = np.random.default_rng(3).permutation(len(hashes))
    np.testing.assert_array_equal(assign_split(hashes[order], 7, 0.1, 0.1), split[order])
    np.testing.assert_array_equal(assign_split(hashes[:10], 7, 0.1, 0.1), split[:10])


def test_growing_val_fraction_only_moves_rows_out_of_train():
    hashes = random_hashes(5000, seed=4)
    small = assign_split(hashes, 13, 0.1, 0.1)
    large = assign_split(hashes, 13, 0.2, 0.1)
    assert np.all(large[small == 2] == 2)  # the test split is unchanged
    assert np.all(large[small == 1] == 1)


def keys_of(texts: list[str], label_ids: list[int]) -> tuple[np.ndarray, np.ndarray, tuple]:
    hashes = text_hashes(pa.array(texts))
    labels = np.array(label_ids, dtype=np.int32)
    return hashes, labels, distinct_keys(hashes, labels)


def test_distinct_keys_skip_unusable_rows_and_repeat_nothing():
    hashes, labels, (key_hashes, key_labels) = keys_of(["a", "a", "b", "c"], [1, 1, 0, -1])
    assert sorted(key_hashes.tolist()) == key_hashes.tolist()
    assert dict(zip(key_hashes.tolist(), key_labels.tolist())) == {int(hashes[0]): 1, int(hashes[2]): 0}


def test_distinct_keys_mark_a_text_under_two_labels_in_one_chunk():
    _, _, (key_hashes, key_labels) = keys_of(["same", "same", "other"], [0, 1, 1])
    assert len(key_hashes) == 2
    assert sorted(key_labels.tolist()) == [MIXED, 1]


def test_dedup_keeps_the_first_copy_across_chunks():
    h1, l1, k1 = keys_of(["a", "b", "a"], [1, 0, 1])
    h2, l2, k2 = keys_of(["b", "c", "a"], [0, 0, 1])
    index = DedupIndex.from_chunks([k1, k2])
    assert len(index) == 3
    assert reason_names(index.decide(0, h1, l1 >= 0)).tolist() == [None, None, "duplicate"]
    assert reason_names(index.decide(1, h2, l2 >= 0)).tolist() == ["duplicate", None, "duplicate"]


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=30),
       labels=st.lists(st.sampled_from([-1, 0, 0, 1]), min_size=30, max_size=30))
def test_dedup_keeps_exactly_the_first_usable_row_of_each_text_in_a_chunk(texts, labels):
    # The rows are looked up in hash order; which row of a text is kept must still follow row order.
    hashes, label_ids, keys = keys_of(texts, labels[: len(texts)])
    names = reason_names(DedupIndex.from_chunks([keys]).decide(0, hashes, label_ids >= 0)).tolist()
    label_of: dict[str, set] = {}
    for text, label in zip(texts, label_ids.tolist()):
        if label >= 0:
            label_of.setdefault(text, set()).add(label)
    seen: set[str] = set()
    for text, label, name in zip(texts, label_ids.tolist(), names):
        if label < 0:
            assert name is None
        elif len(label_of[text]) > 1:
            assert name == "label_conflict"
        else:
            assert name == (None if text not in seen else "duplicate")
            seen.add(text)


@settings(max_examples=50, deadline=None)
@given(texts=st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=30),
       labels=st.lists(st.sampled_from([-1, 0, 1]), min_size=30, max_size=30))
def test_dedup_from_the_rows_in_hash_order_the_map_step_saved_decides_the_same(texts, labels):
    # clean's map step sorts a chunk's usable rows by hash once, for its keys, and saves that order (as
    # int32) for the reduce step's decisions: both must equal what sorting again gives.
    hashes, label_ids, keys = keys_of(texts, labels[: len(texts)])
    by_hash = rows_by_hash(hashes, label_ids >= 0)
    assert [a.tolist() for a in distinct_keys(hashes, label_ids, by_hash)] == [a.tolist() for a in keys]
    index = DedupIndex.from_chunks([keys])
    assert (index.decide(0, hashes, label_ids >= 0, by_hash.astype(np.int32)).tolist()
            == index.decide(0, hashes, label_ids >= 0).tolist())



def test_dedup_decisions_do_not_depend_on_the_order_chunks_are_decided_in(tmp_path):
    # Chunks are decided in parallel: the last chunk first, or from a saved and memory-mapped index,
    # each text is still kept once, in the first chunk that holds it.
    chunks = [keys_of(texts, [1] * len(texts)) for texts in (["a", "b"], ["b", "c", "c"], ["c", "a", "d"])]
    index = DedupIndex.from_chunks([keys for _, _, keys in chunks])
    index.save(tmp_path / "index")
    mapped = DedupIndex.load(tmp_path / "index")
    expected = [[None, None], ["duplicate", None, "duplicate"], ["duplicate", "duplicate", None]]
    for i in reversed(range(3)):
        hashes, labels, _ = chunks[i]
        assert reason_names(index.decide(i, hashes, labels >= 0)).tolist() == expected[i]
        assert reason_names(mapped.decide(i, hashes, labels >= 0)).tolist() == expected[i]


def test_dedup_of_a_text_under_two_labels_keeps_neither_copy():
    h1, l1, k1 = keys_of(["same text", "other"], [1, 0])
    h2, l2, k2 = keys_of(["same text"], [0])
    index = DedupIndex.from_chunks([k1, k2])
    assert reason_names(index.decide(0, h1, l1 >= 0)).tolist() == ["label_conflict", None]
    assert reason_names(index.decide(1, h2, l2 >= 0)).tolist() == ["label_conflict"]


def test_dedup_leaves_unusable_rows_alone():
    hashes, labels, keys = keys_of(["a", "a"], [-1, 1])
    index = DedupIndex.from_chunks([keys])
    assert reason_names(index.decide(0, hashes, labels >= 0)).tolist() == [None, None]


def test_dedup_index_from_spilled_files_in_many_partitions_equals_the_in_memory_one(tmp_path):
    rng = np.random.default_rng(0)
    chunks, labels_of = [], {}
    for i in range(5):
        texts = [f"t{n}" for n in rng.integers(0, 3000, size=2000)]
        labels = (rng.random(2000) < 0.01).astype(np.int32)  # a few texts end up under both labels
        for text, label in zip(texts, labels.tolist()):
            labels_of.setdefault(text, set()).add(label)
        chunks.append(distinct_keys(text_hashes(pa.array(texts)), labels))
        save_keys(tmp_path / f"k{i}", chunks[-1])
    whole = DedupIndex.from_chunks(chunks)
    assert len(whole) == len(labels_of)
    assert whole.conflict.sum() == sum(len(v) > 1 for v in labels_of.values()) > 0
    partitioned = DedupIndex._merge([_KeysInMemory(*c) for c in chunks], keys_per_partition=500)
    in_parallel = DedupIndex._merge([_KeysInMemory(*c) for c in chunks], workers=2, keys_per_partition=500)
    spilled = DedupIndex.from_files([tmp_path / f"k{i}" for i in range(5)])
    spills = [_SpilledKeys(tmp_path / f"k{i}") for i in range(5)]
    spilled_in_parallel = DedupIndex._merge(spills, workers=3, keys_per_partition=500)
    for other in (partitioned, in_parallel, spilled, spilled_in_parallel):
        np.testing.assert_array_equal(other.hashes, whole.hashes)
        np.testing.assert_array_equal(other.conflict, whole.conflict)
        np.testing.assert_array_equal(other.first_chunk, whole.first_chunk)
    first_seen = {}
    for i, (hashes, _) in enumerate(chunks):
        for h in hashes.tolist():
            first_seen.setdefault(h, i)
    assert whole.first_chunk.tolist() == [first_seen[h] for h in whole.hashes.tolist()]


def test_dedup_index_of_no_chunks_is_empty():
    assert len(DedupIndex.from_chunks([])) == 0


def merged_by_dict(chunks: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list, list, list]:
    """The index the merge must build, spelt out with a dict: every hash, its first chunk, its conflict."""
    first, labels = {}, {}
    for i, (hashes, chunk_labels) in enumerate(chunks):
        for h, label in zip(hashes.tolist(), chunk_labels.tolist()):
            first.setdefault(h, i)
            labels.setdefault(h, set()).add(label)
    order = sorted(first)
    return order, [first[h] for h in order], [len(labels[h]) > 1 or MIXED in labels[h] for h in order]


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.dictionaries(st.integers(0, 40), st.sampled_from([MIXED, 0, 1, 2]), max_size=12),
                       max_size=300))
def test_dedup_index_merge_equals_a_dict_of_first_chunks_and_labels(chunks):
    # Up to 300 chunks: the first-chunk numbers outgrow one byte. Small hashes, so texts repeat across
    # chunks; each chunk's keys are sorted and distinct, as distinct_keys gives them.
    keys = [(np.array(sorted(c), np.uint64), np.array([c[h] for h in sorted(c)], np.int32)) for c in chunks]
    index = DedupIndex.from_chunks(keys)
    hashes, first_chunk, conflict = merged_by_dict(keys)
    assert index.hashes.tolist() == hashes
    assert index.first_chunk.tolist() == first_chunk
    assert index.conflict.tolist() == conflict
    assert index.first_chunk.dtype == np.min_scalar_type(max(len(chunks) - 1, 0))


def test_dedup_index_merge_of_more_chunks_than_one_byte_counts():
    rng = np.random.default_rng(3)
    keys = []
    for _ in range(300):
        hashes = np.unique(rng.integers(0, 2000, size=rng.integers(0, 30))).astype(np.uint64)
        keys.append((hashes, rng.choice(np.array([MIXED, 0, 1], np.int32), size=len(hashes))))
    index = DedupIndex.from_chunks(keys)
    hashes, first_chunk, conflict = merged_by_dict(keys)
    assert index.first_chunk.dtype == np.uint16 and max(first_chunk) > 255
    assert (index.hashes.tolist(), index.first_chunk.tolist(), index.conflict.tolist()) == (hashes, first_chunk,
                                                                                            conflict)

"""textrnn.io: atomic writes, deterministic Parquet, content hashes, JSON errors that name the file."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from textrnn.io import (
    TMP_MARK,
    atomic_dir,
    atomic_file,
    content_hash,
    list_shards,
    read_folder,
    read_json,
    read_shard,
    shard_name,
    start_writeback,
    start_writeback_of,
    wait_for_background_syncs,
    write_json,
    write_table,
)


class Boom(RuntimeError):
    pass


def temp_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TMP_MARK in p.name]


def test_atomic_file_replaces_the_target_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_file(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the body finishes
    assert target.read_text() == "new"
    assert temp_leftovers(tmp_path) == []


def test_atomic_file_creates_missing_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("x")
    assert target.read_text() == "x"


def test_atomic_file_leaves_target_untouched_when_the_body_raises(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(Boom), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise Boom
    assert target.read_text() == "old"
    assert temp_leftovers(tmp_path) == []


def test_atomic_file_creates_nothing_when_the_body_raises(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(Boom), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise Boom
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_the_whole_folder_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "fresh.txt").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "deep.txt").write_text("deep")
        assert (target / "stale.txt").exists()
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "fresh.txt", "sub", "sub/deep.txt"]
    assert temp_leftovers(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_leaves_target_untouched_when_the_body_raises(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(Boom), atomic_dir(target) as tmp:
        (tmp / "keep.txt").write_text("half")
        (tmp / "extra.txt").write_text("half")
        raise Boom
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "old"
    assert temp_leftovers(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_creates_nothing_when_the_body_raises(tmp_path):
    with pytest.raises(Boom), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "x").write_text("half")
        raise Boom
    assert list(tmp_path.iterdir()) == []


def test_content_hash_of_a_file_is_stable_and_changes_with_one_byte(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abcdef" * 1000)
    first = content_hash(path)
    assert content_hash(path) == first
    copy = tmp_path / "g.bin"
    copy.write_bytes(b"abcdef" * 1000)
    assert content_hash(copy) == first
    changed = bytearray(path.read_bytes())
    changed[1234] ^= 1
    copy.write_bytes(bytes(changed))
    assert content_hash(copy) != first


def make_tree(root: Path, payload: bytes = b"payload") -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha")
    (root / "sub" / "b.bin").write_bytes(payload)
    return root


def test_content_hash_of_a_folder_is_stable_and_location_independent(tmp_path):
    one = make_tree(tmp_path / "one")
    two = make_tree(tmp_path / "two")
    digest = content_hash(one)
    assert digest.endswith(".dir")
    assert content_hash(one) == digest
    assert content_hash(two) == digest


def test_content_hash_of_a_folder_changes_when_a_byte_changes(tmp_path):
    one = make_tree(tmp_path / "one", b"payload")
    two = make_tree(tmp_path / "two", b"paylOad")
    assert content_hash(one) != content_hash(two)


def test_content_hash_of_a_folder_changes_when_a_file_is_renamed(tmp_path):
    one = make_tree(tmp_path / "one")
    digest = content_hash(one)
    (one / "a.txt").rename(one / "c.txt")
    assert content_hash(one) != digest


def test_content_hash_of_a_folder_ignores_temp_files(tmp_path):
    one = make_tree(tmp_path / "one")
    digest = content_hash(one)
    (one / f"{TMP_MARK}junk.123").write_bytes(b"partial")
    assert content_hash(one) == digest


def test_content_hash_of_a_missing_path_says_missing(tmp_path):
    assert content_hash(tmp_path / "nothing") == "missing"


def sample_table() -> pa.Table:
    return pa.table({"text": ["好", "b", None], "row": pa.array([1, 2, 3], pa.int64())})


def test_write_table_gives_identical_bytes_twice(tmp_path):
    write_table(tmp_path / "a.parquet", sample_table())
    write_table(tmp_path / "b.parquet", sample_table())
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_write_table_encodes_text_plain_and_row_numbers_as_deltas_and_reads_back_equal(tmp_path):
    table = sample_table().append_column("label", pa.array(["pos", "neg", "pos"]))
    write_table(tmp_path / "a.parquet", table)
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: set(meta.column(i).encodings) for i in range(meta.num_columns)}
    assert "DELTA_BINARY_PACKED" in encodings["row"] and "RLE_DICTIONARY" not in encodings["row"]
    assert "RLE_DICTIONARY" in encodings["label"] and "RLE_DICTIONARY" not in encodings["text"]
    assert read_shard(tmp_path / "a.parquet").equals(table)


def test_a_shard_is_one_row_group_and_reads_back_as_one_chunk_per_column(tmp_path):
    # Past pyarrow's and Parquet's usual row-group sizes (64k rows here before): one piece to read.
    table = pa.table({"text": [f"row {i}" for i in range(70_000)], "row": pa.array(range(70_000), pa.int64())})
    write_table(tmp_path / "a.parquet", table)
    assert pq.ParquetFile(tmp_path / "a.parquet").metadata.num_row_groups == 1
    read = read_shard(tmp_path / "a.parquet")
    assert read.equals(table) and {read.column(c).num_chunks for c in read.column_names} == {1}


def test_a_read_shard_holds_its_own_copy_of_the_file_memory_mapped_to_read_it(tmp_path):
    # read_shard maps the file: the table must not point into the mapping, or a file cut short in place
    # afterwards would crash whoever reads the table (SIGBUS), so the check runs in a child process.
    code = textwrap.dedent(f"""
        import pyarrow as pa
        from textrnn.io import read_shard, write_table
        path = {str(tmp_path / "a.parquet")!r}
        table = pa.table({{"text": [f"row {{i}}" * 20 for i in range(20_000)], "label": ["pos", "neg"] * 10_000,
                          "row": pa.array(range(20_000), pa.int64())}})
        write_table(path, table)
        read = read_shard(path)
        with open(path, "wb") as handle:  # cut short and overwritten in place
            handle.write(b"x")
        assert read.equals(table)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])


def test_shards_are_listed_in_order_and_read_back(tmp_path):
    for i in (2, 0, 1):
        write_table(tmp_path / shard_name(i), pa.table({"x": [i, i]}))
    assert [p.name for p in list_shards(tmp_path)] == [shard_name(i) for i in range(3)]
    assert read_folder(tmp_path).column("x").to_pylist() == [0, 0, 1, 1, 2, 2]
    assert [read_shard(shard).column("x").to_pylist() for shard in list_shards(tmp_path)] == [[0, 0], [1, 1], [2, 2]]


def test_list_shards_of_a_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_shards(tmp_path / "nowhere")


def test_read_shard_on_a_corrupt_shard_names_it(tmp_path):
    (tmp_path / shard_name(0)).write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=shard_name(0)):
        read_shard(tmp_path / shard_name(0))


def test_write_json_round_trips_and_is_deterministic(tmp_path):
    payload = {"b": [1, 2], "a": "中文", "c": {"z": 1, "y": None}}
    write_json(tmp_path / "one.json", payload)
    write_json(tmp_path / "two.json", dict(reversed(payload.items())))
    assert read_json(tmp_path / "one.json") == payload
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    assert "中文" in (tmp_path / "one.json").read_text(encoding="utf-8")


def test_read_json_of_a_truncated_file_raises_value_error_naming_the_path(tmp_path):
    path = tmp_path / "stats.json"
    write_json(path, {"rows": 10, "labels": ["neg", "pos"]})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="stats.json"):
        read_json(path)


def test_read_json_of_a_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_json(tmp_path / "absent.json")


def test_temps_left_by_a_killed_run_are_removed_by_the_next_write(tmp_path):
    from textrnn.io import atomic_dir, atomic_file

    (tmp_path / ".tmp-out.deadbeef").mkdir()
    (tmp_path / ".tmp-out.deadbeef" / "half.parquet").write_bytes(b"partial")
    (tmp_path / ".tmp-file.json.cafebabe").write_text("{")
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "done.txt").write_text("ok")
    with atomic_file(tmp_path / "file.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.json", "out"]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux) to list open files")
def test_background_syncs_run_in_their_own_thread_and_close_every_descriptor(tmp_path):
    files = [tmp_path / f"part-{i}" for i in range(20)]
    before = open_fds()
    for path in files:
        path.write_bytes(os.urandom(1 << 16))
        start_writeback(path)
    with open(files[0], "rb") as handle:
        start_writeback_of(handle.fileno())  # its own copy of the descriptor: the handle may close at once
    assert "textrnn-fsync" in {thread.name.split("_")[0] for thread in threading.enumerate()}
    wait_for_background_syncs()
    assert open_fds() == before


def test_a_file_deleted_before_its_background_sync_runs_is_no_error(tmp_path):
    path = tmp_path / "gone.bin"
    path.write_bytes(b"x" * 4096)
    start_writeback(path)
    path.unlink()
    wait_for_background_syncs()  # raises nothing: the sync holds its own descriptor


def _sync_in_child(path: str) -> str:
    start_writeback(path)
    wait_for_background_syncs()
    return Path(path).read_text()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_worker_starts_a_syncer_of_its_own(tmp_path):
    start_writeback(__file__)  # the parent's syncer thread exists before the fork
    path = tmp_path / "child.txt"
    path.write_text("written by the parent")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        # Were the parent's syncer (whose thread the child lacks) kept, the wait would never end.
        assert pool.submit(_sync_in_child, str(path)).result(timeout=60) == "written by the parent"

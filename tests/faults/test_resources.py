"""Resource faults: an output folder that cannot be written, a missing input, a full disk, a file-size
limit. Each stage must fail with an OSError that says what went wrong, leave the outputs of its earlier
good run untouched (same content hash) and leave no temp file behind.

The tests run as root, where chmod does not stop a write; unwritable folders are made with a read-only
bind mount (or, where mounting is not allowed, a regular file standing where a folder must be), a full
disk with a 1 MiB tmpfs (or, without mount rights, RLIMIT_FSIZE, which fails writes with EFBIG).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from textrnn.config import Params, load_params
from textrnn.io import TMP_MARK, content_hash
from textrnn.pipeline import STAGE_SPECS, run_stage, stage_paths

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TINY = REPO / "tests" / "profiles" / "tiny.yaml"
PARAMS = REPO / "params.yaml"  # the tiny profile is laid over it
STAGES = list(STAGE_SPECS)


def _params(**paths: str) -> Params:
    params = load_params(PARAMS, {"export.exporter": "torchscript"}, profile=TINY)
    return dataclasses.replace(params, paths=dataclasses.replace(params.paths, **paths))


def _snapshot(root: Path) -> dict[str, str]:
    """Content hash of every file in the project (the lock file aside)."""
    return {str(p.relative_to(root)): content_hash(p) for p in sorted(root.rglob("*"))
            if p.is_file() and ".textrnn" not in p.parts}


def _temps(root: Path) -> list[Path]:
    return list(root.rglob(f"*{TMP_MARK}*"))


def _mount(*args: str) -> bool:
    if shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[bool]:
    """`folder` bind-mounted read-only onto itself; yields False where mounting is not allowed."""
    if not _mount("--bind", str(folder), str(folder)):
        yield False
        return
    try:
        if not _mount("-o", "remount,bind,ro", str(folder)):
            yield False
            return
        yield True
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def _tiny_tmpfs(folder: Path) -> Iterator[bool]:
    """A 1 MiB tmpfs at `folder`; yields False where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)):
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _fill(folder: Path) -> None:
    """Write a filler file until the filesystem says ENOSPC."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as err:  # the loop ends only by raising
            while True:
                os.write(fd, b"\0" * 4096)
        assert err.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _limited_stage(root: Path, name: str, max_file_bytes: int, **paths: str) -> subprocess.CompletedProcess:
    """`textrnn stage NAME` with RLIMIT_FSIZE: a write past the limit fails with EFBIG (Python ignores
    SIGXFSZ), the way a quota or a full disk fails it."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    extra = [arg for key, value in paths.items() for arg in ("--set", f"paths.{key}={value}")]
    return subprocess.run([str(BIN / "textrnn"), "stage", name, *extra], cwd=root, capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)


# --- an output folder that cannot be written --------------------------------------------------------------

@pytest.mark.parametrize("name", STAGES)
def test_read_only_output_folder_fails_cleanly_and_keeps_the_old_outputs(name, project):
    params = _params()
    outs = stage_paths(name, params, "outs")
    before = _snapshot(project)
    with _read_only(outs[0].parent) as mounted:
        if mounted:
            with pytest.raises(OSError) as err:
                run_stage(name, params)
            assert err.value.errno == errno.EROFS
            assert str(outs[0].parent) in str(err.value)
        else:  # no mount rights: a regular file stands where the output's folder must be
            blocked = {key: f"blocked/{Path(getattr(params.paths, key)).name}" for key in STAGE_SPECS[name].outs}
            (project / "blocked").write_text("not a folder\n")
            before = _snapshot(project)
            with pytest.raises(OSError, match="blocked"):
                run_stage(name, _params(**blocked))
    assert _snapshot(project) == before
    assert _temps(project) == []


@pytest.mark.parametrize("name", STAGES)
def test_output_folder_under_a_regular_file_fails_naming_the_path(name, project):
    params = _params()
    (project / "blocked").write_text("not a folder\n")
    blocked = {key: f"blocked/{Path(getattr(params.paths, key)).name}" for key in STAGE_SPECS[name].outs}
    before = _snapshot(project)
    with pytest.raises(OSError, match="blocked") as err:
        run_stage(name, _params(**blocked))
    assert err.value.errno in (errno.EEXIST, errno.ENOTDIR)
    assert _snapshot(project) == before
    assert _temps(project) == []


# --- a missing input ----------------------------------------------------------------------------------------

MISSING = {"clean": "data/raw", "vocab": "data/clean", "train": "data/vocab", "evaluate": "models/checkpoint.pt",
           "export": "metrics/metrics.json"}


@pytest.mark.parametrize("name", list(MISSING))
def test_missing_input_is_file_not_found_naming_it(name, project):
    gone = project / MISSING[name]
    shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
    before = _snapshot(project)
    with pytest.raises(FileNotFoundError, match=MISSING[name].replace(".", r"\.")):
        run_stage(name, _params())
    assert _snapshot(project) == before
    assert _temps(project) == []


def test_cli_clean_without_raw_data_exits_non_zero_naming_the_folder(project):
    shutil.rmtree(project / "data/raw")
    before = _snapshot(project)
    result = subprocess.run([str(BIN / "textrnn"), "stage", "clean"], cwd=project, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    assert "FileNotFoundError" in result.stderr and "data/raw" in result.stderr
    assert _snapshot(project) == before
    assert _temps(project) == []


# --- a full disk ---------------------------------------------------------------------------------------------

def _outs_on(folder: str, name: str) -> dict[str, str]:
    params = _params()
    return {key: f"{folder}/{Path(getattr(params.paths, key)).name}" for key in STAGE_SPECS[name].outs}


def _disk_full_failure(name: str, project: Path) -> tuple[str, int | None, str]:
    """Run `name` into a 1 MiB tmpfs, fill it, run it again: the second run must fail, leaving the first
    run's outputs and no temps. Returns (exception type, errno, message) of that failure.

    Without mount rights the same fault comes from RLIMIT_FSIZE in a CLI subprocess (EFBIG, errno 27)."""
    outs = _outs_on("full", name)
    with _tiny_tmpfs(project / "full") as mounted:
        if mounted:
            params = _params(**outs)
            run_stage(name, params)  # the earlier good run, into the same paths
            _fill(project / "full")
            before = _snapshot(project)
            try:
                run_stage(name, params)
            except Exception as exc:  # whatever it is, it must leave the disk as it was
                failure = (type(exc).__name__, getattr(exc, "errno", None), str(exc))
            else:
                pytest.fail(f"{name} succeeded on a full disk")
            gc.collect()  # the traceback's frames hold the failed writer's file open; release it to unmount
            assert _snapshot(project) == before
            assert _temps(project) == []
            return failure
    _limited_stage(project, name, 1 << 30, **outs)  # the earlier good run
    before = _snapshot(project)
    result = _limited_stage(project, name, 4096, **outs)
    assert result.returncode != 0
    assert _snapshot(project) == before
    assert _temps(project) == []
    last = result.stderr.strip().splitlines()[-1]
    return last.partition(":")[0].rpartition(".")[2], errno.EFBIG if "Errno 27" in last else None, last


@pytest.mark.parametrize("name", [name for name in STAGES if name != "train"])
def test_full_disk_is_enospc_and_keeps_the_old_outputs(name, project):
    kind, code, message = _disk_full_failure(name, project)  # asserts: old outputs intact, no temps
    assert kind == "OSError" and code in (errno.ENOSPC, errno.EFBIG), (kind, message)
    assert "No space left on device" in message or "File too large" in message


def test_full_disk_during_training_keeps_the_old_checkpoint(project):
    kind, _, message = _disk_full_failure("train", project)  # asserts: old outputs intact, no temps
    assert kind and message


def test_full_disk_during_training_is_an_oserror_with_enospc(project):
    kind, code, message = _disk_full_failure("train", project)
    assert kind == "OSError" and code in (errno.ENOSPC, errno.EFBIG), (kind, message)


@pytest.mark.parametrize("name", ["ingest", "evaluate"])
def test_full_disk_error_names_the_output_path(name, project):
    _, _, message = _disk_full_failure(name, project)
    assert "full/" in message


def test_file_size_limit_fails_the_cli_stage_and_keeps_the_old_outputs(project):
    """RLIMIT_FSIZE below the size of data/vocab/vocab.json: the write fails with EFBIG part-way through."""
    assert (project / "data/vocab/vocab.json").stat().st_size > 8192
    before = _snapshot(project)
    result = _limited_stage(project, "vocab", 8192)
    assert result.returncode != 0
    assert "File too large" in result.stderr
    assert _snapshot(project) == before
    assert _temps(project) == []

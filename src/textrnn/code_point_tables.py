"""Per-code-point tables asked of the engines that define a pass (utf8proc, RE2, Arrow, Python's Unicode
database), built once per installation and kept beside the package in __pycache__, as bytecode is."""

from __future__ import annotations

import functools
import hashlib
import os
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from textrnn import kernels

_TABLES_DIR = Path(__file__).with_name("__pycache__")
# The modules whose code decides what a table holds (the passes a table mirrors, and how it is built).
_TABLE_SOURCES = ("code_point_tables.py", "utf8.py", "nfkc.py", "normalisation.py", "tokenisation.py")


def once_per_installation(build):
    """`build`'s tables, asked of the engines once per installation rather than once per process (a
    noticeable start-up cost in every stage process): saved beside this module in __pycache__, as
    bytecode is, under a key of all they depend on (the text modules' source, the compiled kernels'
    source, the pyarrow and numpy versions, Python's Unicode database). A file that cannot be read is
    built again; where the folder cannot be written, the tables are built each time."""

    @functools.cache
    @functools.wraps(build)
    def remembered():
        path = _TABLES_DIR / f"textrnn{build.__name__}-{_tables_key()}.npz"
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = [saved[f"arr_{i}"] for i in range(len(saved.files) - 1)]
                return tuple(arrays) if saved["is_tuple"] else arrays[0]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass
        built = build()
        _save_tables(path, built if isinstance(built, tuple) else (built,), isinstance(built, tuple))
        return built

    return remembered


@functools.cache
def _tables_key() -> str:
    here = Path(__file__).parent
    sources = [hashlib.md5((here / name).read_bytes()).hexdigest() for name in _TABLE_SOURCES]
    parts = (*sources, kernels.SOURCE_MD5, pa.__version__, np.__version__, unicodedata.unidata_version)
    return hashlib.md5(repr(parts).encode()).hexdigest()[:16]


def _save_tables(path: Path, arrays: tuple[np.ndarray, ...], is_tuple: bool) -> None:
    """Written under a name of its own, then renamed: a reader sees the whole file or none."""
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        with open(temp, "wb") as handle:
            np.savez(handle, *arrays, is_tuple=np.array(is_tuple))
        os.replace(temp, path)
        for stale in path.parent.glob(f"{path.name.rsplit('-', 1)[0]}-*.npz"):  # older keys: never read again
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:  # a read-only installation: the tables are built each time
        temp.unlink(missing_ok=True)

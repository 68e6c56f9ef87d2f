"""Compiled single-pass loops over a string array's UTF-8 bytes: the common rows' normalisation, the cut
into tokens (and, fused with it, their lookup in the vocabulary), the text hash, and the small loops of
encoding and counting; a loop that is not vectorisable either: where a CSV file's records end; and a UTF-8
check 32 bytes at a time (AVX2). Each kept its place by saving at least 5% of its stage's time against the
library call it replaces (bench/kernels.py, docs/kernels.md); `gather_spans` did not, and is numpy's here.

Each pass of Arrow compute (and each numpy step) reads and writes the whole batch once, and normalising
and tokenising took a dozen such passes. These loops do the same work in one pass per row, with the
per-character decisions looked up in tables that `textrnn.normalisation` and `textrnn.tokenisation` build
from the same engines (utf8proc, RE2, Arrow) that define the Arrow passes, so the results are the same
(property tests compare them).

They are written in Cython (`_kernels.pyx`) and compiled when the package is installed (`make setup`, i.e.
`pip install -e .`): importing them costs a millisecond, where a JIT compiler's start-up cost each stage
process about a second. Their loops run without the GIL, so threads run them side by side. Where the
extension is not built (no compiler) or TEXTRNN_PURE=1, the names here are `textrnn.pure_kernels`' numpy
and Arrow versions of the loops inference needs (the same ids); the training stages' loops then raise.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import sys
from pathlib import Path

from textrnn import pure_kernels

SOURCE = Path(__file__).with_name("_kernels.pyx")
# Built kernels by the md5 of the source they were compiled from. A copy of the project that holds the
# source but no build (the temporary workspace of `dvc exp run --temp` or `dvc queue`, which copies only
# what git tracks) loads the build of the same source from here.
BUILD_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "textrnn" / "kernels"

log = logging.getLogger(__name__)

__all__ = ["COLLAPSIBLE", "CSV_START", "DONE", "FAST_UTF8_CHECK", "LEFT_TO_ARROW", "LOWERCASE", "LOWER_DIFFERS",  # noqa: F822
           "NEEDS_UTF8PROC", "NFKC", "NFKC_FIRST", "PLACEHOLDERS", "SOURCE_MD5", "STRIP_HTML", "TRIMMED",
           "count_codes", "count_rows", "csv_record_ends", "encode_rows", "first_of_each_row", "gather_spans",
           "hash_rows", "ids_of_codes", "normalise_common", "token_spans", "utf8_valid", "word_table"]
# Loops measured not to earn a compiled version (under 5% of their stage): always the numpy ones.
NUMPY_ONLY = ("gather_spans",)


def _implementation():
    """The compiled module, or `pure_kernels` (numpy/Arrow, inference only) where it is not built or
    TEXTRNN_PURE=1 asks for it: a light installation (no compiler, no training stack) still predicts."""
    if os.environ.get("TEXTRNN_PURE", "") not in ("", "0"):
        return pure_kernels, "TEXTRNN_PURE is set"
    try:
        from textrnn import _kernels
    except ImportError as err:  # installed without the extension, or a checkout never installed
        cached = _load_cached_build(_source_md5())
        if cached is not None:
            return cached, ""
        return pure_kernels, f"the compiled kernels are not built ({err})"
    _remember_build(_kernels)
    return _kernels, ""


def _source_md5(source: Path = SOURCE) -> str:
    return hashlib.md5(source.read_bytes()).hexdigest() if source.exists() else ""


def _load_cached_build(source_md5: str):
    """The build of this exact source from BUILD_CACHE, registered as textrnn._kernels; None if none."""
    path = BUILD_CACHE / source_md5 / f"_kernels{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    if not source_md5 or not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("textrnn._kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["textrnn._kernels"] = module
    return module


def _remember_build(module) -> None:
    """Keep a copy of the build in BUILD_CACHE under its source's md5 (where it can be written)."""
    target = BUILD_CACHE / module.SOURCE_MD5 / Path(module.__file__).name
    if target.exists():
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
        shutil.copyfile(module.__file__, tmp)
        os.replace(tmp, target)
    except OSError:
        pass  # a read-only home: the copies of the project just cannot borrow this build


_module, WHY_PURE = _implementation()
COMPILED = _module is not pure_kernels
globals().update({name: getattr(pure_kernels if name in NUMPY_ONLY else _module, name) for name in __all__})
if not COMPILED:
    log.debug("textrnn.kernels: numpy/Arrow fallback (%s); training stages need `make setup`", WHY_PURE)


def check_build_is_current(source: Path = SOURCE) -> None:
    """A build compiled from an older `_kernels.pyx` would silently run the old loops (and DVC would record
    the new source as their origin): refuse it. Installed without the source, there is nothing to compare."""
    if COMPILED and source.exists() and _source_md5(source) != _module.SOURCE_MD5:
        raise ImportError(f"textrnn's compiled kernels are older than {source}: run `make setup` "
                          "(or `pip install -e .`) to rebuild them")


check_build_is_current()

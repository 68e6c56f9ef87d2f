"""Compiled single-pass loops over a string array's UTF-8 bytes: the common rows' normalisation, the cut
into tokens (and, fused with it, their lookup in the vocabulary), the text hash, and the small loops of
encoding and counting; loops that are not vectorisable either: where a CSV file's records end, the merge
of the dedup index's sorted runs and its lookups; and a UTF-8 check 32 bytes at a time (AVX2).

Each pass of Arrow compute (and each numpy step) reads and writes the whole batch once, and normalising
and tokenising took a dozen such passes. These loops do the same work in one pass per row, with the
per-character decisions looked up in tables that `textrnn.text` builds from the same engines (utf8proc,
RE2, Arrow) that define the Arrow passes, so the results are the same (property tests compare them).

They are written in Cython (`_kernels.pyx`) and compiled when the package is installed (`make setup`, i.e.
`pip install -e .`): importing them costs a millisecond, where a JIT compiler's start-up cost each stage
process about a second. Their loops run without the GIL, so threads run them side by side. Where the
extension is not built (no compiler) or TEXTRNN_PURE=1, the names here are `textrnn.pure_kernels`' numpy
and Arrow versions of the loops inference needs (the same ids); the training stages' loops then raise.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from textrnn import pure_kernels

log = logging.getLogger(__name__)

__all__ = ["COLLAPSIBLE", "CSV_START", "DONE", "FAST_UTF8_CHECK", "LEFT_TO_ARROW", "LOWERCASE", "LOWER_DIFFERS",  # noqa: F822
           "NEEDS_UTF8PROC", "NFKC", "NFKC_FIRST", "PLACEHOLDERS", "SOURCE_MD5", "STRIP_HTML", "TRIMMED",
           "count_codes", "count_rows", "csv_record_ends", "encode_rows", "first_of_each_row", "gather_spans",
           "hash_rows", "ids_of_codes", "merge_sorted_keys", "normalise_common", "sorted_positions", "splice_rows",
           "token_spans", "utf8_valid", "word_table"]


def _implementation():
    """The compiled module, or `pure_kernels` (numpy/Arrow, inference only) where it is not built or
    TEXTRNN_PURE=1 asks for it: a light installation (no compiler, no training stack) still predicts."""
    if os.environ.get("TEXTRNN_PURE", "") not in ("", "0"):
        return pure_kernels, "TEXTRNN_PURE is set"
    try:
        from textrnn import _kernels
    except ImportError as err:  # installed without the extension, or a checkout never installed
        return pure_kernels, f"the compiled kernels are not built ({err})"
    return _kernels, ""


_module, WHY_PURE = _implementation()
COMPILED = _module is not pure_kernels
globals().update({name: getattr(_module, name) for name in __all__})
if not COMPILED:
    log.debug("textrnn.kernels: numpy/Arrow fallback (%s); training stages need `make setup`", WHY_PURE)


SOURCE = Path(__file__).with_name("_kernels.pyx")


def check_build_is_current(source: Path = SOURCE) -> None:
    """A build compiled from an older `_kernels.pyx` would silently run the old loops (and DVC would record
    the new source as their origin): refuse it. Installed without the source, there is nothing to compare."""
    if COMPILED and source.exists() and hashlib.md5(source.read_bytes()).hexdigest() != _module.SOURCE_MD5:
        raise ImportError(f"textrnn's compiled kernels are older than {source}: run `make setup` "
                          "(or `pip install -e .`) to rebuild them")


check_build_is_current()

"""Arrow string arrays as UTF-8 buffers and back, for the compiled passes and numpy: the bytes and row
offsets of an array (no copy), arrays built on numpy buffers, code points, and rows replaced."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def utf8_buffers(texts: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """A string array's UTF-8 bytes back to back (no copy) and where each row starts in them (+ the end)."""
    return utf8_bytes(texts), utf8_row_offsets(texts)


def utf8_bytes(texts: pa.StringArray) -> np.ndarray:
    """The UTF-8 bytes of all rows of a (possibly sliced) string array, back to back."""
    if len(texts) == 0 or texts.buffers()[2] is None:
        return np.zeros(0, np.uint8)
    offsets = _raw_offsets(texts)
    return np.frombuffer(texts.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]


def utf8_row_offsets(texts: pa.StringArray) -> np.ndarray:
    """Where each row starts in `utf8_bytes(texts)` (int64), and its end: len(texts) + 1 entries."""
    offsets = _raw_offsets(texts).astype(np.int64)
    return offsets - offsets[0]


def _raw_offsets(texts: pa.StringArray) -> np.ndarray:
    if len(texts) == 0:
        return np.zeros(1, np.int32)
    return np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset: texts.offset + len(texts) + 1]


def string_array(length: int, offsets: np.ndarray, data: np.ndarray, validity: pa.Buffer | None,
                  null_count: int) -> pa.StringArray:
    """A string array on numpy buffers (int64 offsets, cast down; Arrow reports an overflow past 2 GiB)."""
    if offsets[-1] <= np.iinfo(np.int32).max:
        return pa.StringArray.from_buffers(length, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data),
                                           validity, null_count)
    large = pa.LargeStringArray.from_buffers(length, pa.py_buffer(offsets), pa.py_buffer(data), validity, null_count)
    return large.cast(pa.string())


def from_row_0(texts: pa.StringArray) -> pa.StringArray:
    """The array with buffers that start at its row 0 (a copy only if it is a slice): the compiled passes
    build their output beside its buffers and reuse its validity bitmap, which must line up row for row."""
    return pa.concat_arrays([texts]) if texts.offset else texts


def replace_rows(texts: pa.StringArray, rows: np.ndarray, replacement: pa.Array) -> pa.StringArray:
    """`texts` with its rows `rows` (ascending) replaced by the rows of `replacement`, in order."""
    mask = np.zeros(len(texts), bool)
    mask[rows] = True
    return pc.replace_with_mask(texts, pa.array(mask), replacement.cast(texts.type))


def strings_of_code_points(points: np.ndarray) -> pa.StringArray:
    """A string array with one single-character string per code point."""
    offsets, data = _utf8_of_points(np.asarray(points, dtype=np.uint32))
    return pa.StringArray.from_buffers(len(points), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data))


def _utf8_of_points(points: np.ndarray) -> tuple[np.ndarray, bytes]:
    """The UTF-8 encoding of a uint32 array of code points, and where each one starts in it (+ the end)."""
    widths = 1 + (points >= 0x80).view(np.uint8) + (points >= 0x800) + (points >= 0x10000)
    offsets = np.zeros(len(points) + 1, np.int64)
    np.cumsum(widths, out=offsets[1:])
    return offsets, points.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8")


def code_points(texts: pa.StringArray) -> np.ndarray:
    """The code points of all rows back to back (uint32)."""
    return np.frombuffer(utf8_bytes(texts).tobytes().decode("utf-8").encode("utf-32-le"), dtype="<u4")


def every_code_point() -> np.ndarray:
    """0 to U+10FFFF as uint32, surrogates (which never occur in valid UTF-8) as spaces."""
    points = np.arange(0x110000, dtype=np.uint32)
    points[(points >= 0xD800) & (points < 0xE000)] = ord(" ")
    return points

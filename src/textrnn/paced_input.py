"""A file for Arrow's streaming readers that keeps their read-ahead a few blocks beyond what the consumer
has taken, so memory stays bounded by the block size, not by the file's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pyarrow as pa


class PacedInput:
    """A file for Arrow's streaming readers that lets them read at most `blocks_ahead` blocks beyond the
    batches handed on. Left alone, Arrow reads ahead as fast as the disk allows, so a consumer slower than
    the disk ends up holding the whole file in memory (measured: a 2 GB CSV took 2.2 GiB of RSS)."""

    def __init__(self, handle, block_size: int, blocks_ahead: int = 3, stall_seconds: float = 1.0):
        self._handle, self._block = handle, block_size
        self._turn = threading.Condition()
        self._read = 0
        self._allowed = blocks_ahead * block_size
        self._waiting_since: float | None = time.monotonic()  # the consumer waits from the start (open)
        self._stall = stall_seconds

    def read(self, nbytes: int = -1) -> bytes:
        with self._turn:
            while self._read >= self._allowed:
                # Never deadlock: if the consumer has waited a while, Arrow needs more than was allowed.
                if self._waiting_since is not None and time.monotonic() - self._waiting_since > self._stall:
                    self._allowed += self._block
                    break
                self._turn.wait(self._stall / 4)
        data = self._handle.read(nbytes)
        with self._turn:
            self._read += len(data)
        return data

    def batches(self, reader) -> Iterator[pa.RecordBatch]:
        """The reader's batches, one more block allowed for each."""
        try:
            while True:
                self._consumer_waits(True)
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                self._consumer_waits(False)
                yield batch
        finally:
            self.release()

    def release(self) -> None:
        """No more pacing: the consumer is done. A reader torn down while its read-ahead waits here would
        otherwise wait out the stall."""
        with self._turn:
            self._allowed = float("inf")
            self._turn.notify_all()

    def _consumer_waits(self, waiting: bool) -> None:
        with self._turn:
            self._waiting_since = time.monotonic() if waiting else None
            if not waiting:
                self._allowed += self._block
            self._turn.notify_all()

    # The rest of the file protocol that pyarrow's PythonFile asks for.
    closed = property(lambda self: self._handle.closed)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._handle.tell()

    def close(self) -> None:
        self._handle.close()

"""One run at a time per project: a second run fails at once with a clear message instead of writing
the same outputs concurrently."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_PATH = Path(".textrnn/run.lock")


class ProjectBusyError(RuntimeError):
    """Another textrnn run (flow or stage) is writing this project's outputs."""


@contextlib.contextmanager
def project_lock(path: Path = LOCK_PATH) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the duration; the OS releases it if the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open while the lock is held)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ProjectBusyError(f"another textrnn run (pid {holder}) is running in {Path.cwd()}; "
                                   f"wait for it to finish (lock: {path})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()

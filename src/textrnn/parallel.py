"""Executors for chunk work: threads or processes locally, or a Dask cluster's executor."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor


class SerialExecutor(Executor):
    """Runs each call at once in the caller's thread: the reference that every executor must match."""

    def submit(self, fn, /, *args, **kwargs):
        from concurrent.futures import Future

        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:
            future.set_exception(err)
        return future


@contextlib.contextmanager
def make_executor(kind: str, workers: int, dask_address: str = "") -> Iterator[Executor]:
    """An executor for `workers` parallel chunks; with a Dask address, that cluster's executor."""
    if dask_address:
        from distributed import Client

        with Client(dask_address) as client:
            yield client.get_executor()
        return
    if workers <= 1:
        yield SerialExecutor()
    elif kind == "process":
        with ProcessPoolExecutor(max_workers=workers) as pool:
            yield pool
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield pool


def runs_in_this_process(pool: Executor) -> bool:
    """Whether the pool's tasks run in this process (threads, or the caller's thread), sharing its memory."""
    return isinstance(pool, (ThreadPoolExecutor, SerialExecutor))


def given_or_new(pool: Executor | None, workers: int,
                 kind: str = "thread") -> contextlib.AbstractContextManager[Executor]:
    """The caller's executor as it is (the caller closes it), or a new one of `kind` for `workers`."""
    return contextlib.nullcontext(pool) if pool is not None else make_executor(kind, workers)


def in_order(futures: Iterable[Future], window: int = 4) -> Iterator:
    """The results of lazily created futures in order, creating the next ones only while fewer than
    `window` are pending."""
    pending: deque = deque()
    for future in futures:
        pending.append(future)
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


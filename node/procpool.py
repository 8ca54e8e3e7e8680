"""A spawn-context process pool that replaces itself when one of its processes dies.

``concurrent.futures.ProcessPoolExecutor`` marks itself broken for good when a worker
process exits unexpectedly (killed, out of memory): every later ``submit`` raises
``BrokenProcessPool``. A node runs for months, so ``RestartingPool.submit`` starts a
fresh pool instead; the futures that were in flight still fail with ``BrokenExecutor``
and their callers redo that work inline (DESIGN "Worker processes").
"""

import concurrent.futures
import logging
import multiprocessing
import threading
from collections.abc import Callable

log = logging.getLogger("workers")

BrokenExecutor = concurrent.futures.BrokenExecutor


def result_or_inline(future: concurrent.futures.Future, fn: Callable, *args):
    """``future``'s result, or ``fn(*args)`` in this thread if its worker process died
    (the work ``future`` stood for; blocking: call it from a thread)."""
    try:
        return future.result()
    except BrokenExecutor as exc:
        log.warning("worker task %s failed (%s); running it inline", fn.__name__, exc)
        return fn(*args)


class RestartingPool:
    """``workers`` spawned processes; ``initializer`` runs once in each new process."""

    def __init__(self, workers: int, initializer: Callable[[], None] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.workers = workers
        self._initializer = initializer
        self._lock = threading.Lock()  # one replacement at a time, from any thread
        self._pool = self._new()
        self.restarts = 0

    def _new(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=self._initializer)

    def submit(self, fn: Callable, *args) -> concurrent.futures.Future:
        """``fn(*args)`` in a worker process (``fn`` and ``args`` must pickle); a broken
        pool is replaced first. Raises ``RuntimeError`` after ``shutdown``."""
        pool = self._pool
        try:
            return pool.submit(fn, *args)
        except BrokenExecutor:
            with self._lock:
                if self._pool is pool:
                    log.warning("a worker process died; starting %d new ones", self.workers)
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new()
                    self.restarts += 1
                pool = self._pool
            return pool.submit(fn, *args)

    def run(self, fn: Callable, *args):
        """``fn(*args)`` in a worker process, or in this thread if that process dies
        meanwhile (blocking: call it from a thread)."""
        return result_or_inline(self.submit(fn, *args), fn, *args)

    def pids(self) -> list[int]:
        """Process ids of the current workers (those started so far)."""
        return [p.pid for p in (self._pool._processes or {}).values()]

    def shutdown(self, wait: bool = False) -> None:
        """Stop the processes; queued work is cancelled."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

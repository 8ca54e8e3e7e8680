"""SPEC §4.1 step 6 for batches of tickets: in a thread, or across worker processes.

The merchant service checks up to 10 000 signatures per request; that is nearly all of its
work. ``TicketVerifier(workers=1)`` runs batches in one worker thread beside the trio
event loop (libsodium releases the GIL, so the loop keeps parsing and storing meanwhile);
``workers=N > 1`` runs them in N spawned worker processes (``concurrent.futures``), driven
from trio through ``trio.to_thread`` so the loop never blocks on a result.

A batch crosses the process boundary as a few flat ``bytes`` (the tickets' 107-byte
encodings end to end, one owner index per ticket), so the IPC cost per ticket is a copy of
its bytes, not a pickled object. Each ticket is checked with ``consensus.keys.verify``,
the one verification rule of SPEC §0.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence

import trio

from consensus.keys import verify
from consensus.ticket import TICKET_MAGIC, TICKET_SIZE

log = logging.getLogger("merchant.verify")

SIGNED_BYTES = 43  # a ticket's signed body (SPEC §4); its signature follows
MIN_PROCESS_CHUNK = 250  # tickets per process task below which IPC costs more than it saves
PARENT_POLL = 1.0  # seconds between a worker's checks that the service still runs


def verify_batch(genesis_hash: bytes, owners: Sequence[bytes], owner_of: bytes,
                 tickets: bytes) -> bytes:
    """Check ``len(owner_of)`` ticket signatures; one result byte each (1 valid, 0 not).

    ``tickets`` holds the 107-byte encodings end to end; ticket ``i`` must be signed by
    ``owners[owner_of[i]]`` over ``b"MCT1" || genesis_hash || body`` (SPEC §4). Runs in a
    worker thread or process; never raises for bad signatures or keys.
    """
    prefix = TICKET_MAGIC + genesis_hash
    out = bytearray(len(owner_of))
    for i, owner in enumerate(owner_of):
        at = i * TICKET_SIZE
        message = prefix + tickets[at:at + SIGNED_BYTES]
        out[i] = verify(owners[owner], message, tickets[at + SIGNED_BYTES:at + TICKET_SIZE])
    return bytes(out)


def _worker_init() -> None:
    """Worker processes leave SIGINT and SIGTERM to the service, which stops them itself
    (a Ctrl-C reaches the whole process group; workers must not die mid-task or print
    tracebacks of their own), and exit by themselves if the service is killed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """Poll once a second; leave as soon as the service process is gone (a SIGKILLed
    service cannot shut its pool down, and its pipes stay open in the workers)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(0)


def _warm_up() -> int:
    """Run in each new worker process so its imports happen before the first request."""
    return multiprocessing.current_process().pid or 0


class TicketVerifier:
    """Verifies ticket batches with ``workers`` threads-or-processes (see module doc).

    Use as a context manager (or ``start()``/``close()``); ``await verify(...)``.
    ``chunk`` is the most tickets handed to one thread or process task at a time,
    ``min_chunk`` the fewest handed to a process task. Raises ``ValueError`` for
    ``workers < 1``.
    """

    def __init__(self, workers: int = 1, *, chunk: int = 1000,
                 min_chunk: int = MIN_PROCESS_CHUNK) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.workers = workers
        self.chunk = chunk
        self.min_chunk = min_chunk
        self._limiter = trio.CapacityLimiter(1)  # the one verifying thread (workers == 1)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.restarts = 0  # pools replaced after one of their processes died

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init)

    def _submit(self, *args) -> concurrent.futures.Future:
        """``verify_batch(*args)`` in a worker process. A pool one of whose processes
        died (killed, out of memory) refuses all later work; it is replaced here, as the
        node's ``node.procpool.RestartingPool`` does (the wallet does not import the
        node, DESIGN "Layers"). Only the event loop's thread submits, so no lock."""
        try:
            return self._pool.submit(verify_batch, *args)
        except concurrent.futures.BrokenExecutor:
            log.warning("a ticket-checking process died; starting %d new ones", self.workers)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            self.restarts += 1
            return self._pool.submit(verify_batch, *args)

    def pids(self) -> list[int]:
        """Process ids of the current worker processes (none on the thread)."""
        if self._pool is None:
            return []
        return [p.pid for p in (self._pool._processes or {}).values()]

    def start(self) -> TicketVerifier:
        """Start the worker processes (``workers > 1``) and wait until each answers."""
        if self.workers > 1 and self._pool is None:
            self._pool = self._new_pool()
            for future in [self._pool.submit(_warm_up) for _ in range(self.workers)]:
                future.result()
        return self

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> TicketVerifier:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def chunk_size(self, count: int) -> int:
        """Tickets per task for a request of ``count``: an even split across the worker
        processes (at least ``min_chunk``), at most ``chunk``."""
        if self.workers == 1:
            return self.chunk
        share = -(-count // self.workers)
        return max(self.min_chunk, min(self.chunk, share))

    async def verify(self, genesis_hash: bytes, owners: Sequence[bytes], owner_of: bytes,
                     tickets: bytes) -> bytes:
        """``verify_batch`` in the worker thread (waiting for it to be free) or in a
        worker process (queued at once: the pool hands tasks to processes as they free up,
        so no process waits for the event loop between two chunks)."""
        if self._pool is None:
            return await trio.to_thread.run_sync(verify_batch, genesis_hash, owners, owner_of,
                                                 tickets, limiter=self._limiter)
        future = self._submit(genesis_hash, tuple(owners), owner_of, tickets)
        try:
            return await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)
        except concurrent.futures.BrokenExecutor:  # its process died: checked here instead
            return await trio.to_thread.run_sync(verify_batch, genesis_hash, owners, owner_of,
                                                 tickets, limiter=self._limiter)
        finally:
            future.cancel()

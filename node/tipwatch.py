"""Tip-change notification for the waiting RPCs ``waitfornewblock`` / ``waitforblockheight``.

The node calls ``TipWatch.notify(tip_hash, height)`` (in the trio thread) every time its
connected tip changes; any number of RPC handlers ``await wait_for(predicate, timeout)``
meanwhile. One ``trio.Event`` per tip generation: ``notify`` sets the current event and
installs a fresh one, so a waiter never misses a change that happens between its check
and its wait. Push, not polling (issue 8 point 6; bitcoind's semantics, DESIGN "Waiting
RPCs").
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

MAX_WAIT_SECONDS = 600.0  # longest any wait lasts, also for timeout 0 ("no timeout")


class TipWatch:
    """The connected tip ``(hash, height)`` plus a way to wait until it satisfies a predicate.

    ``tip_hash`` is 32 bytes; ``height`` the tip's height. Not thread-safe: use from the
    trio thread only.
    """

    def __init__(self, tip_hash: bytes, height: int) -> None:
        self.tip_hash = tip_hash
        self.height = height
        self._changed = trio.Event()

    def notify(self, tip_hash: bytes, height: int) -> None:
        """Record a new tip and wake every waiter (cheap when nobody waits)."""
        self.tip_hash, self.height = tip_hash, height
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def current(self) -> tuple[bytes, int]:
        """``(tip_hash, height)`` now."""
        return self.tip_hash, self.height

    async def wait_for(self, predicate: Callable[[bytes, int], bool],
                       timeout: float) -> tuple[bytes, int]:
        """Wait until ``predicate(tip_hash, height)`` holds or ``timeout`` seconds pass;
        return the tip at that moment either way.

        ``timeout`` ≤ 0 or infinite means "no timeout", which is capped at
        ``MAX_WAIT_SECONDS`` so a request never hangs forever.
        """
        if timeout <= 0 or math.isinf(timeout) or timeout > MAX_WAIT_SECONDS:
            timeout = MAX_WAIT_SECONDS
        with trio.move_on_after(timeout):
            while not predicate(self.tip_hash, self.height):
                await self._changed.wait()
        return self.current()

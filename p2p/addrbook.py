"""Addresses learned from `addr` messages, for outbound discovery (SPEC §11 getaddr/addr).

A small, bounded stand-in for Bitcoin Core's addrman: IP-literal `(host, port)` pairs
with when they were learned, when we last tried them and how often that failed. Our own
listen addresses (found by dialling ourselves) are never offered again.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

CAPACITY = 2048  # addresses kept; beyond, a random old one is forgotten
RETRY_SECONDS = 60.0  # an address is not redialled sooner than this after an attempt
MAX_FAILURES = 5  # consecutive failed dials after which an address is forgotten


@dataclass
class _Entry:
    learned_at: float
    tried_at: float = -1e18
    failures: int = 0


def is_dialable(host: str, port: int) -> bool:
    """True for an IP literal (no name lookups on hostile input) and a non-zero port."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return 0 < port < 65536 and not address.is_unspecified and not address.is_multicast


class AddressBook:
    """Known peer addresses; times are trio clock seconds passed in by the caller."""

    def __init__(self, capacity: int = CAPACITY, rng: random.Random | None = None) -> None:
        self.capacity = capacity
        self._entries: dict[tuple[str, int], _Entry] = {}
        self._ours: set[tuple[str, int]] = set()
        self._rng = rng or random.Random()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, address: object) -> bool:
        return address in self._entries

    def add(self, addresses: list[tuple[str, int]], now: float) -> int:
        """Remember dialable addresses; returns how many were new."""
        new = 0
        for address in addresses:
            if address in self._entries or address in self._ours or not is_dialable(*address):
                continue
            if len(self._entries) >= self.capacity:
                del self._entries[self._rng.choice(list(self._entries))]
            self._entries[address] = _Entry(learned_at=now)
            new += 1
        return new

    def mark_ours(self, address: tuple[str, int]) -> None:
        """`address` reached this very node: never offer or dial it again."""
        self._ours.add(address)
        self._entries.pop(address, None)

    def attempt(self, address: tuple[str, int], now: float) -> None:
        """We are dialling `address` now."""
        entry = self._entries.get(address)
        if entry is not None:
            entry.tried_at = now

    def result(self, address: tuple[str, int], ok: bool) -> None:
        """The dial of `address` reached a peer (`ok`) or failed."""
        entry = self._entries.get(address)
        if entry is None:
            return
        entry.failures = 0 if ok else entry.failures + 1
        if entry.failures >= MAX_FAILURES:
            del self._entries[address]

    def candidates(self, now: float, exclude: set[tuple[str, int]]) -> list[tuple[str, int]]:
        """Addresses worth dialling now (not excluded, not tried in RETRY_SECONDS), shuffled."""
        found = [
            address for address, entry in self._entries.items()
            if address not in exclude and now - entry.tried_at >= RETRY_SECONDS
        ]
        self._rng.shuffle(found)
        return found

    def sample(self, count: int) -> list[tuple[str, int]]:
        """Up to `count` known addresses in random order (for `addr` replies)."""
        addresses = list(self._entries)
        self._rng.shuffle(addresses)
        return addresses[:count]

"""Which inbound peer to drop when every inbound slot is taken (Bitcoin Core's
`AttemptToEvictConnection`, net.cpp / node/eviction.cpp).

Pure selection over `Candidate` records: protect the peers that are hard for an
attacker to imitate — a few from distinct address groups, the lowest ping times, the
ones that recently gave us new transactions and blocks, and half of the rest by
connection age — then evict the newest connection of the address group that holds
the most remaining connections. None if everyone is protected.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PROTECT_BY_GROUP = 4
PROTECT_BY_PING = 8
PROTECT_BY_TX = 4
PROTECT_BY_BLOCK = 4


@dataclass(frozen=True)
class Candidate:
    """What eviction knows about one handshaken inbound peer (times: trio clock s)."""

    peer_id: int
    ip: str
    connected_at: float
    ping_rtt: float  # best round trip, inf if never measured
    last_block_at: float  # 0 if it never gave us a new block
    last_tx_at: float  # 0 if it never gave us a new transaction


def address_group(ip: str) -> str:
    """The address group of `ip`: its /16 for IPv4, /32 for IPv6 (as Bitcoin Core)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = 16 if address.version == 4 else 32
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _protect(pool: list[Candidate], key: Callable[[Candidate], object], count: int,
             *, reverse: bool = False) -> list[Candidate]:
    """Remove the best `count` of `pool` by `key` (ascending unless `reverse`)."""
    ranked = sorted(pool, key=key, reverse=reverse)
    return ranked[count:]


def _protect_recent(pool: list[Candidate], when: Callable[[Candidate], float],
                    count: int) -> list[Candidate]:
    """Remove the `count` with the latest non-zero `when` (0 = never: not protected)."""
    never = [c for c in pool if when(c) == 0]
    return never + _protect([c for c in pool if when(c) > 0], when, count, reverse=True)


def select_victim(candidates: Sequence[Candidate]) -> int | None:
    """The peer_id to evict, or None when no candidate is left unprotected."""
    pool = list(candidates)
    # Distinct address groups: keep the longest-connected peer of a few groups.
    by_group: dict[str, Candidate] = {}
    for cand in sorted(pool, key=lambda c: c.connected_at):
        by_group.setdefault(address_group(cand.ip), cand)
    kept = sorted(by_group.values(), key=lambda c: c.connected_at)[:PROTECT_BY_GROUP]
    pool = [c for c in pool if c not in kept]
    pool = _protect(pool, lambda c: c.ping_rtt, PROTECT_BY_PING)
    pool = _protect_recent(pool, lambda c: c.last_tx_at, PROTECT_BY_TX)
    pool = _protect_recent(pool, lambda c: c.last_block_at, PROTECT_BY_BLOCK)
    pool = _protect(pool, lambda c: c.connected_at, len(pool) // 2)
    if not pool:
        return None
    groups: dict[str, list[Candidate]] = {}
    for cand in pool:
        groups.setdefault(address_group(cand.ip), []).append(cand)
    # The most-connected group; ties go to the group with the newest connection.
    biggest = max(groups.values(), key=lambda g: (len(g), max(c.connected_at for c in g)))
    return max(biggest, key=lambda c: c.connected_at).peer_id

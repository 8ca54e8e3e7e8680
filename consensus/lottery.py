"""The lottery draw (SPEC §6, paper §4.3): exactly k distinct winners per draw group."""

from functools import lru_cache

from blake3 import blake3

from consensus.hashing import tagged_hash


def compute_winners(v: bytes, escrow_id: bytes, g: int, a: int, k: int) -> list[int]:
    """The ``k`` distinct winning sequence numbers of group ``g``, in draw order.

    ``v`` is the VDF value of block ``t_draw(g)`` (32 bytes), ``a`` the group size
    (``tkt_rate * draw_len``), winners lie in ``[g*a, (g+1)*a)``. Candidates come from a
    blake3 hash chain seeded by ``H(b"draw", v || escrow_id)``; values at or above
    ``bound = 2^64 - (2^64 mod a)`` are skipped to avoid modulo bias, and repeats are
    discarded. Raises ``ValueError`` unless ``1 <= k <= a``.
    """
    if not 1 <= k <= a:
        raise ValueError("need 1 <= k <= a")
    lo = g * a
    bound = 2**64 - (2**64 % a)
    h = tagged_hash(b"draw", v + escrow_id)
    winners: list[int] = []
    seen: set[int] = set()
    while len(winners) < k:
        x = int.from_bytes(h[:8], "big")
        if x < bound:
            s = lo + x % a
            if s not in seen:
                seen.add(s)
                winners.append(s)
        h = blake3(h).digest()
    return winners


@lru_cache(maxsize=256)
def winner_set(v: bytes, escrow_id: bytes, g: int, a: int, k: int) -> frozenset[int]:
    """``compute_winners`` as a set, memoised (a pure function: the cache is invisible).
    With ``k == a`` every seqno of the group wins, whatever order the draw finds them in,
    so the hash chain is not run (``compute_winners`` still checks ``1 <= k <= a``)."""
    if k == a >= 1:
        return frozenset(range(g * a, (g + 1) * a))
    return frozenset(compute_winners(v, escrow_id, g, a, k))

"""The lottery draw of SPEC §6: seed, hash chain, modulo-bias bound, duplicates."""

import pytest
from blake3 import blake3

from consensus import lottery
from consensus.hashing import tagged_hash
from consensus.lottery import compute_winners

V, EID = b"\x11" * 32, b"\x22" * 32


def _chain_values(seed: bytes, n: int) -> list[int]:
    h, out = seed, []
    for _ in range(n):
        out.append(int.from_bytes(h[:8], "big"))
        h = blake3(h).digest()
    return out


def test_first_candidate_is_tagged_seed():
    seed = tagged_hash(b"draw", V + EID)
    assert seed == blake3(bytes([4]) + b"draw" + V + EID).digest()
    a = 1000
    first = _chain_values(seed, 1)[0]
    if first < 2**64 - (2**64 % a):
        assert compute_winners(V, EID, 0, a, 1) == [first % a]
        assert compute_winners(V, EID, 7, a, 1) == [7 * a + first % a]


def test_duplicates_are_discarded_in_order():
    a, k = 5, 5
    seed = tagged_hash(b"draw", V + EID)
    expected = []
    for x in _chain_values(seed, 500):
        if x < 2**64 - (2**64 % a) and x % a not in expected:
            expected.append(x % a)
        if len(expected) == k:
            break
    assert compute_winners(V, EID, 0, a, k) == expected


@pytest.mark.parametrize("offset,skipped", [(0, True), (1, False), (3, False)])
def test_bound_removes_modulo_bias(monkeypatch, offset, skipped):
    """With a = 3, bound = 2^64 - 1: x = bound is skipped, x = bound - 1 is used."""
    a = 3
    bound = 2**64 - (2**64 % a)
    assert bound == 2**64 - 1
    x = bound - offset
    # a seed whose next chain value lands on another residue, so a skip is visible
    seed = next(s for s in (x.to_bytes(8, "big") + bytes([i]) * 24 for i in range(256))
                if _chain_values(blake3(s).digest(), 1)[0] % a != x % a)
    monkeypatch.setattr(lottery, "tagged_hash", lambda tag, data: seed)
    winners = compute_winners(V, EID, 4, a, 1)
    if skipped:
        nxt = _chain_values(blake3(seed).digest(), 1)[0]
        assert winners == [4 * a + nxt % a]
    else:
        assert winners == [4 * a + x % a]


def test_needs_one_to_a_winners():
    for a, k in ((3, 0), (3, 4), (1, 2)):
        with pytest.raises(ValueError):
            compute_winners(V, EID, 0, a, k)
    assert compute_winners(V, EID, 9, 1, 1) == [9]

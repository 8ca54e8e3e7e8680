"""Property: the candidate set's fork choice equals the brute-force maximum over random
block trees (most work; ties keep the tip, else the earliest seen)."""

from hypothesis import given, settings, strategies as st

from consensus.block import Header
from node.blockindex import FAILED, HAVE_DATA, HEADER_VALID, BlockIndex

TARGETS = [2**255 - 1, 2**254 - 1, 2**253 - 1]


def _header(height: int, prev: bytes, target: int, n: int) -> Header:
    return Header(1, height, prev, n, target, n, bytes(32), bytes(32), ())


def brute_force(index: BlockIndex, tip):
    ok = [e for e in index.entries.values() if e.chain_has_data and not e.status & FAILED]
    best = max(e.chainwork for e in ok)
    if tip.chainwork == best:
        return tip
    return min((e for e in ok if e.chainwork == best), key=lambda e: e.seq)


step = st.tuples(st.integers(0, 10_000), st.integers(0, 2), st.booleans(),
                 st.integers(0, 20))


@settings(max_examples=60, deadline=None)
@given(st.lists(step, min_size=1, max_size=60))
def test_fork_choice_equals_brute_force(steps):
    index = BlockIndex()
    genesis = index.insert(b"g" * 32, _header(0, bytes(32), TARGETS[0], 0), b"",
                           None, HEADER_VALID | HAVE_DATA)
    index.main = [genesis]
    nodes = [genesis]
    for n, (parent_pick, target_pick, has_data, action) in enumerate(steps, start=1):
        parent = nodes[parent_pick % len(nodes)]
        h = _header(parent.height + 1, parent.hash, TARGETS[target_pick], n)
        entry = index.insert(n.to_bytes(32, "big"), h, b"", parent, HEADER_VALID)
        nodes.append(entry)
        if has_data:
            index.mark_data(entry)
        if action == 0 and len(nodes) > 2:          # some block turns out invalid
            victim = nodes[1 + parent_pick % (len(nodes) - 1)]
            if not index.is_on_main(victim):
                index.mark_failed(victim, "bad")
        if action == 1:                             # data of an earlier block arrives
            index.mark_data(nodes[parent_pick % len(nodes)])
        tip = index.tip
        got = index.candidates.best(tip)
        assert got is brute_force(index, tip)
        walk = entry                                # skip pointers agree with parents
        while walk is not None:
            assert entry.get_ancestor(walk.height) is walk
            walk = walk.parent
        if got is not tip:                          # "connect" it: the main chain follows
            index.main = [got.get_ancestor(i) for i in range(got.height + 1)]

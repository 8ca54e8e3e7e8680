"""Initial block download between two node processes vs in-process connect (issue 5).

1. Build N empty regtest blocks in memory (the functional tests' block builder).
2. Reference: connect them in order into a fresh in-process node through its
   `ChainAccess.submit_block` (no network); this also fills node A's store.
3. Figure: start node A on that store and a fresh node B with `--connect A`; time from
   B's RPC being up until B's height is N.

Prints both rates in blocks/s and their ratio (goal: ≥ 400 blocks/s and ≥ 0.5×). The
p2p side is pipelined (16 blocks in flight per peer, getdata in batches); a low ratio
means the time goes to the network path, a low absolute rate with a ratio near 1 means
the node's own connect is the bottleneck.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import trio

from node.genesis import load_genesis
from tests.functional.chainserver import build_chain
from tests.functional.framework import NodeGroup, compute_genesis_hash


def connect_in_process(genesis_path: Path, datadir: Path, raws: list[bytes]) -> float:
    """Seconds to submit `raws` in order to an in-process Node on `datadir`."""
    from node.node import Node  # the node is only needed for this reference

    params = load_genesis(genesis_path, "regtest")
    node = Node(params, datadir)

    async def feed() -> float:
        start = time.perf_counter()
        for raw in raws:
            await node.submit_block(raw)
        return time.perf_counter() - start

    try:
        elapsed = trio.run(feed)
        assert node.best_height() == len(raws), node.best_height()
    finally:
        node.store.close()
    return elapsed


def wait_height(node, height: int, timeout: float) -> float:
    """Poll `node` until it reaches `height`; seconds taken (bounded by `timeout`)."""
    start = time.monotonic()
    for _ in range(int(timeout / 0.05) + 2):
        if node.getinfo()["height"] >= height:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            break
        time.sleep(0.05)
    raise RuntimeError(f"sync stopped at height {node.getinfo()['height']} of {height}")


def bench_sync(blocks: int) -> tuple[float, float]:
    """(p2p sync blocks/s, in-process connect blocks/s) for a chain of `blocks` blocks."""
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        group = NodeGroup(Path(tmp))
        try:
            chain = build_chain(blocks, compute_genesis_hash())
            raws = [block.encode() for block in chain]
            seed = group.add_node()
            reference = connect_in_process(group.genesis_path, seed.datadir, raws)
            seed.start()
            fresh = group.add_node()
            fresh.start(connect=[seed])
            elapsed = wait_height(fresh, blocks, timeout=max(120.0, blocks / 20))
            assert fresh.getinfo()["best_hash"] == chain[-1].hash().hex()
        finally:
            group.cleanup()
    return blocks / elapsed, blocks / reference


P2P_ONLY_BLOCKS = 5_000


def bench_p2p_only(blocks: int) -> float:
    """Blocks/s of the p2p layer alone: two Networks over loopback in one process, each
    on the tests' in-memory FakeChain (no consensus checks), both ends on one core."""
    from tests.unit.test_p2p_fakechain import FakeChain, start_network

    async def main() -> float:
        source, fresh = FakeChain(), FakeChain()
        source.mine(blocks)
        async with trio.open_nursery() as nursery:
            server = await start_network(nursery, source)
            start = time.perf_counter()
            await start_network(nursery, fresh, connect=[("127.0.0.1", server.listen_port)])
            with trio.fail_after(max(120.0, blocks / 50)):
                while fresh.best_height() < blocks:
                    await trio.sleep(0.02)
            elapsed = time.perf_counter() - start
            nursery.cancel_scope.cancel()
        return blocks / elapsed

    return trio.run(main)


def run_all(blocks: int = 20_000) -> None:
    """Print the sync figure beside the in-process reference, and the p2p layer's own rate."""
    figure, reference = bench_sync(blocks)
    print(f"{'sync: ' + str(blocks) + ' blocks, 2 processes':<38} {figure:>12,.0f}/s   "
          f"{'in-process submit_block':<30} {reference:>12,.0f}/s   "
          f"ratio {figure / reference:5.2f}")
    # The tests' FakeChain answers headers in time linear in its length, so the p2p-only
    # figure uses at most 5 000 blocks (enough to be past the first header batches).
    fake_blocks = min(blocks, P2P_ONLY_BLOCKS)
    try:
        p2p_only = bench_p2p_only(fake_blocks)
    except trio.TooSlowError:
        print(f"sync: p2p layer only ({fake_blocks} blocks, fake chain): timed out")
        return
    print(f"{'sync: p2p layer only (fake chain)':<38} {p2p_only:>12,.0f}/s   "
          f"{'in-process submit_block':<30} {reference:>12,.0f}/s   "
          f"ratio {p2p_only / reference:5.2f}")


if __name__ == "__main__":
    import sys

    run_all(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)

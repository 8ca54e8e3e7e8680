"""Two or three p2p Networks over loopback in one trio.run (SPEC §11).

Handshake, genesis mismatch, self-connection, duplicate connections, block relay by
inv/getheaders/getdata, and headers-first sync of a late peer across a full 2000-header
batch. The chain behind each Network is the in-memory FakeChain.
"""

from __future__ import annotations

import logging

import pytest
import trio

from tests.unit.test_p2p_fakechain import FakeChain, start_network, wait_until

LOCAL = "127.0.0.1"

pytestmark = pytest.mark.timeout(60)


def logged(caplog, text: str) -> int:
    """How many p2p log records contain `text`."""
    return sum(text in record.getMessage() for record in caplog.records if record.name == "p2p")


def test_handshake_lists_peers_both_ways():
    async def main():
        async with trio.open_nursery() as nursery:
            a_chain = FakeChain()
            a_chain.mine(3)
            a = await start_network(nursery, a_chain)
            b = await start_network(nursery, FakeChain(), connect=[(LOCAL, a.listen_port)])
            await wait_until(lambda: a.peer_count() == 1 and b.peer_count() == 1)
            assert b.peer_info() == [
                {"address": f"{LOCAL}:{a.listen_port}", "height": 3, "inbound": False}
            ]
            [seen_by_a] = a.peer_info()
            assert seen_by_a["inbound"] is True
            assert seen_by_a["address"].startswith(f"{LOCAL}:")
            assert a.known_addresses() == [(LOCAL, b.listen_port)]
            assert a.node_nonce != b.node_nonce
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_genesis_mismatch_closes_without_ban(caplog):
    caplog.set_level(logging.INFO, logger="p2p")

    async def main():
        async with trio.open_nursery() as nursery:
            a = await start_network(nursery, FakeChain())
            b = await start_network(
                nursery, FakeChain(genesis_salt=1), connect=[(LOCAL, a.listen_port)]
            )
            await wait_until(lambda: logged(caplog, "genesis mismatch") >= 2)
            assert a.peer_count() == 0 and b.peer_count() == 0
            assert len(a.bans) == 0 and len(b.bans) == 0
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_self_connection_is_closed_and_not_redialled(caplog):
    caplog.set_level(logging.INFO, logger="p2p")

    async def main():
        async with trio.open_nursery() as nursery:
            a = await start_network(nursery, FakeChain())
            a.add_node(LOCAL, a.listen_port)
            await wait_until(lambda: logged(caplog, "is this node") == 1)
            assert logged(caplog, "connected to ourselves") >= 1
            assert a.peer_count() == 0
            assert len(a.bans) == 0
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_duplicate_connections_resolve_to_one_working_link(caplog):
    caplog.set_level(logging.INFO, logger="p2p")

    async def main():
        async with trio.open_nursery() as nursery:
            a_chain, b_chain = FakeChain(), FakeChain()
            a = await start_network(nursery, a_chain)
            b = await start_network(nursery, b_chain)
            a.add_node(LOCAL, b.listen_port)
            b.add_node(LOCAL, a.listen_port)
            await wait_until(lambda: logged(caplog, "duplicate connection") >= 1)
            await wait_until(lambda: a.peer_count() == 1 and b.peer_count() == 1)
            a.announce_block(a_chain.mine(1)[0])
            await wait_until(lambda: b_chain.best_hash() == a_chain.best_hash())
            b.announce_block(b_chain.mine(1)[0])
            await wait_until(lambda: a_chain.best_hash() == b_chain.best_hash())
            assert a.peer_count() == 1 and b.peer_count() == 1
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_block_gossip_relays_through_a_middle_node():
    async def main():
        async with trio.open_nursery() as nursery:
            chains = [FakeChain() for _ in range(3)]
            a = await start_network(nursery, chains[0])
            b = await start_network(nursery, chains[1], connect=[(LOCAL, a.listen_port)])
            c = await start_network(nursery, chains[2], connect=[(LOCAL, b.listen_port)])
            await wait_until(lambda: (a.peer_count(), b.peer_count(), c.peer_count()) == (1, 2, 1))
            for miner, network in ((chains[0], a), (chains[2], c), (chains[0], a)):
                (new,) = miner.mine(1)
                network.announce_block(new)
                await wait_until(lambda: all(ch.best_hash() == new for ch in chains))
            # Each block was fetched once per receiving node, never sent back to its origin.
            assert [ch.submitted_blocks for ch in chains] == [1, 3, 2]
            assert [ch.best_height() for ch in chains] == [3, 3, 3]
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_headers_first_sync_of_late_peer_across_header_batches():
    async def main():
        async with trio.open_nursery() as nursery:
            a_chain = FakeChain()
            a_chain.mine(2050)
            a = await start_network(nursery, a_chain)
            b_chain = FakeChain()
            b = await start_network(nursery, b_chain, connect=[(LOCAL, a.listen_port)])
            await wait_until(lambda: b_chain.best_hash() == a_chain.best_hash(), timeout=30)
            assert b_chain.best == a_chain.best
            assert b_chain.submitted_blocks == 2050  # no block fetched twice
            assert b.peer_info()[0]["height"] == 2050
            # A third node syncs from the late one.
            c_chain = FakeChain()
            await start_network(nursery, c_chain, connect=[(LOCAL, b.listen_port)])
            await wait_until(lambda: c_chain.best_hash() == a_chain.best_hash(), timeout=30)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_sync_from_idle_peer_continues_across_many_header_batches():
    """Regression: 6 500 blocks (4 header batches) from a peer that never mines again.
    Before the shared scheduler, sync stopped after the first ~2 000 blocks."""

    async def main():
        async with trio.open_nursery() as nursery:
            a_chain = FakeChain()
            a_chain.mine(6500)
            a = await start_network(nursery, a_chain)
            b_chain = FakeChain()
            await start_network(nursery, b_chain, connect=[(LOCAL, a.listen_port)])
            await wait_until(lambda: b_chain.best_height() == 6500, timeout=60)
            assert b_chain.best == a_chain.best
            assert b_chain.submitted_blocks == 6500  # no block fetched twice
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_blocks_are_fetched_from_several_peers_without_duplicates():
    async def main():
        async with trio.open_nursery() as nursery:
            source = FakeChain()
            source.mine(3000)
            servers = []
            for _ in range(2):
                chain = FakeChain()
                chain.headers, chain.blocks = dict(source.headers), dict(source.blocks)
                chain.best, chain.children = list(source.best), dict(source.children)
                servers.append((chain, await start_network(nursery, chain)))
            b_chain = FakeChain()
            b = await start_network(
                nursery, b_chain, connect=[(LOCAL, n.listen_port) for _, n in servers]
            )
            await wait_until(lambda: b_chain.best_height() == 3000, timeout=60)
            assert b_chain.best == source.best
            assert b_chain.submitted_blocks == 3000
            served = [chain.served for chain, _ in servers]
            assert sum(served) == 3000 and min(served) > 300, served
            assert b.download.queued() == 0
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_node_told_one_peer_finds_the_others_through_addr():
    """Issue 9 point 1 (p2p side): C is told only B; B's `addr` reply names A, so C
    connects to A too, and never to itself."""

    async def main():
        async with trio.open_nursery() as nursery:
            a = await start_network(nursery, FakeChain())
            b = await start_network(nursery, FakeChain(), connect=[(LOCAL, a.listen_port)])
            await wait_until(lambda: a.peer_count() == 1)
            c = await start_network(nursery, FakeChain(), connect=[(LOCAL, b.listen_port)],
                                    discover=True)
            await wait_until(lambda: c.peer_count() == 2 and a.peer_count() == 2, timeout=20)
            assert {p["address"] for p in c.peer_info()} == {
                f"{LOCAL}:{a.listen_port}", f"{LOCAL}:{b.listen_port}"}
            assert (LOCAL, c.listen_port) not in c.addresses
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_address_book_keeps_ip_literals_and_forgets_failures():
    from p2p.addrbook import MAX_FAILURES, RETRY_SECONDS, AddressBook

    book = AddressBook(capacity=3)
    assert book.add([("10.0.0.1", 1), ("example.com", 2), ("10.0.0.2", 0), ("::1", 3)], 0) == 2
    assert book.candidates(0, exclude={("::1", 3)}) == [("10.0.0.1", 1)]
    book.attempt(("10.0.0.1", 1), 0)
    assert book.candidates(RETRY_SECONDS - 1, set()) == [("::1", 3)]
    for _ in range(MAX_FAILURES):
        book.result(("10.0.0.1", 1), ok=False)
    assert ("10.0.0.1", 1) not in book
    book.mark_ours(("::1", 3))
    assert book.add([("::1", 3)], 1) == 0 and len(book) == 0
    book.add([(f"10.1.0.{i}", 1) for i in range(10)], 2)
    assert len(book) == 3


async def run_in_own_nursery(chain: FakeChain, port: int, *, task_status=trio.TASK_STATUS_IGNORED):
    """Run a Network in a nursery of its own; report (network, its cancel scope)."""
    async with trio.open_nursery() as inner:
        network = await start_network(inner, chain, port=port)
        task_status.started((network, inner.cancel_scope))


def test_redials_a_target_that_went_away():
    async def main():
        async with trio.open_nursery() as nursery:
            a_chain = FakeChain()
            a, a_scope = await nursery.start(run_in_own_nursery, a_chain, 0)
            b = await start_network(nursery, FakeChain(), connect=[(LOCAL, a.listen_port)])
            await wait_until(lambda: b.peer_count() == 1)
            a_scope.cancel()
            await wait_until(lambda: b.peer_count() == 0)
            a_chain.mine(2)
            await nursery.start(run_in_own_nursery, a_chain, a.listen_port)
            await wait_until(lambda: b.peer_count() == 1)
            assert b.peer_info()[0]["height"] == 2
            nursery.cancel_scope.cancel()

    trio.run(main)

"""Connection slots (issue 6 point 3): pending handshakes capped and reclaimed, a limit
per address, slots counted after the handshake, eviction of the least useful inbound
peer (Bitcoin Core's AttemptToEvictConnection)."""

from __future__ import annotations

import socket

import pytest
import trio

from p2p.eviction import Candidate, address_group, select_victim
from p2p.network import MAX_INBOUND_PER_IP, MAX_PENDING, MAX_PENDING_PER_IP
from tests.functional.rawpeer import RawPeer
from tests.unit.test_p2p_fakechain import FakeChain, start_network, wait_until
from tests.unit.test_p2p_rawpeer import LOCAL, handshake, run_scenario

pytestmark = pytest.mark.timeout(60)


def cand(i: int, ip: str = "10.0.0.1", *, at: float = 0.0, ping: float = 1.0,
         block: float = 0.0, tx: float = 0.0) -> Candidate:
    return Candidate(i, ip, at, ping, block, tx)


def test_address_groups():
    assert address_group("10.1.2.3") == address_group("10.1.200.1") == "10.1.0.0/16"
    assert address_group("10.2.0.1") != address_group("10.1.0.1")
    assert address_group("::ffff:10.1.2.3") == "10.1.0.0/16"
    assert address_group("2001:db8::1") == "2001:db8::/32"


def test_eviction_protects_useful_peers_and_picks_the_biggest_group():
    honest = [
        cand(1, "11.0.0.1", at=1, ping=0.001),  # fast
        cand(2, "12.0.0.1", at=2, block=50),  # gave us a block
        cand(3, "13.0.0.1", at=3, tx=60),  # gave us a tx
    ]
    hostile = [cand(10 + i, f"66.6.0.{i}", at=100 + i, ping=5.0) for i in range(30)]
    victim = select_victim(honest + hostile)
    assert victim in {c.peer_id for c in hostile}
    assert victim == 39  # newest of the biggest group
    assert select_victim(honest) is None  # every one protected


def test_eviction_never_picks_a_recent_block_source_over_idle_sockets():
    pool = [cand(i, f"20.{i}.0.1", at=i, ping=0.5) for i in range(20)]
    pool.append(cand(99, "30.0.0.1", at=1000, ping=9.0, block=999))
    assert select_victim(pool) != 99


def open_idle(port: int, count: int, first_host: int) -> list[socket.socket]:
    socks = []
    for i in range(count):
        host = f"127.0.{1 + (first_host + i) // 200}.{2 + (first_host + i) % 200}"
        try:
            socks.append(socket.create_connection((LOCAL, port), timeout=2,
                                                  source_address=(host, 0)))
        except OSError:
            pass
    return socks


def test_honest_peer_connects_while_idle_and_handshaken_sockets_fill_the_node():
    """Regression (issue 6): 200 idle sockets filled every slot before any handshake."""

    def scenario(network, chain, _):
        idle = open_idle(network.listen_port, 120, 0)
        hostile = []
        for i in range(30):  # handshaken squatters fill all 30 inbound slots
            hostile.append(handshake(network, local_host=f"127.0.5.{i + 2}"))
        idle += open_idle(network.listen_port, 80, 120)
        try:
            assert trio.from_thread.run_sync(lambda: len(network._pending)) <= MAX_PENDING
            honest = handshake(network, local_host="127.0.9.9")
            assert not honest.is_disconnected(0.5)
            info = trio.from_thread.run_sync(network.peer_info)
            assert any(p["address"].startswith("127.0.9.9:") for p in info)
            assert sum(p["inbound"] for p in info) == 30
            honest.close()
        finally:
            for sock in idle:
                sock.close()
            for peer in hostile:
                peer.close()

    run_scenario(scenario, max_peers=30, handshake_timeout=5)


def test_limit_per_address_and_pending_per_address():
    def scenario(network, chain, _):
        socks = [socket.create_connection((LOCAL, network.listen_port), timeout=2,
                                          source_address=("127.0.0.7", 0))
                 for _ in range(MAX_PENDING_PER_IP + 3)]
        try:
            trio.from_thread.run(wait_until, lambda: sum(
                p.ip == "127.0.0.7" for p in network._pending.values()) == MAX_PENDING_PER_IP)
            extra = RawPeer.connect(LOCAL, network.listen_port, local_host="127.0.0.7")
            assert extra.is_disconnected(3)  # refused while 8 handshakes are pending
        finally:
            for sock in socks:
                sock.close()
        assert MAX_INBOUND_PER_IP >= 16  # a 16-node devnet shares 127.0.0.1

    run_scenario(scenario)


def test_outbound_is_not_crowded_out_by_full_inbound_slots():
    async def main():
        async with trio.open_nursery() as nursery:
            target_chain = FakeChain()
            target_chain.mine(3)
            target = await start_network(nursery, target_chain)
            chain = FakeChain()
            node = await start_network(nursery, chain, max_peers=1)
            squat = await start_network(nursery, FakeChain(), connect=[(LOCAL, node.listen_port)])
            await wait_until(lambda: node.peer_count() == 1)
            node.add_node(LOCAL, target.listen_port)
            await wait_until(lambda: chain.best_height() == 3)
            assert node.peer_count() == 2 and squat.peer_count() == 1
            nursery.cancel_scope.cancel()

    trio.run(main)

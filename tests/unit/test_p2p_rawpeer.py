"""A raw wire peer (tests/functional/rawpeer.py) against a live Network (SPEC §11).

The Network runs in trio; each scenario drives a blocking RawPeer in a worker thread
and reports what it saw. Covers bans (malformed, over-limit, before-hello, invalid
block/tx), keepalive, serving getheaders/getdata/getaddr, the 16-block in-flight cap,
orphan handling, and relay without echo.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import msgpack
import pytest
import trio
from blake3 import blake3

from p2p.framing import MAX_FRAME_BYTES
from tests.functional.rawpeer import RawPeer
from tests.unit.test_p2p_fakechain import (
    INVALID_SALT,
    ZERO,
    FakeChain,
    header_hash,
    make_block,
    start_network,
    wait_until,
)

LOCAL = "127.0.0.1"
EVIL = "127.0.0.2"
OTHER = "127.0.0.3"

pytestmark = pytest.mark.timeout(60)


def run_scenario(scenario: Callable, chain: FakeChain | None = None, *, peers: int = 0, **kwargs):
    """Run `scenario(network, chain, helpers)` in a thread against a live Network.

    `peers` extra Networks (each on its own FakeChain) connect to the tested one first;
    they are passed as `helpers`. Returns (scenario result, network, chain, helpers).
    """
    chain = chain or FakeChain()

    async def main():
        async with trio.open_nursery() as nursery:
            network = await start_network(nursery, chain, **kwargs)
            helpers = []
            for _ in range(peers):
                helper_chain = FakeChain()
                helper = await start_network(
                    nursery, helper_chain, connect=[(LOCAL, network.listen_port)]
                )
                helpers.append((helper, helper_chain))
            await wait_until(lambda: network.peer_count() == peers)
            result = await trio.to_thread.run_sync(scenario, network, chain, helpers)
            nursery.cancel_scope.cancel()
        return result, network, helpers

    result, network, helpers = trio.run(main)
    return result, network, chain, helpers


def handshake(network, local_host: str = EVIL, genesis: bytes | None = None) -> RawPeer:
    """A RawPeer that has exchanged hellos with `network`."""
    peer = RawPeer.connect(LOCAL, network.listen_port, local_host=local_host, timeout=5)
    peer.send_hello(genesis or network.chain.genesis_hash)
    hello = peer.wait_for("hello")
    assert hello[1] == network.chain.genesis_hash and hello[5] == network.node_nonce
    return peer


def messages_until_pong(peer: RawPeer) -> list[tuple[str, object]]:
    """Send a ping and collect everything the node sends before the matching pong."""
    peer.send_msg("ping", [4242])
    seen = []
    while True:
        msg_type, payload = peer.recv_msg(5)
        if msg_type == "pong" and payload == [4242]:
            return seen
        seen.append((msg_type, payload))


def banned(network, ip: str) -> bool:
    """Ask the (trio-side) ban list from the scenario thread."""
    return trio.from_thread.run_sync(network.bans.is_banned, ip)


def refused(network, local_host: str) -> bool:
    """True if a new connection from `local_host` is closed without a hello."""
    with RawPeer.connect(LOCAL, network.listen_port, local_host=local_host, timeout=5) as peer:
        try:
            peer.recv_msg(5)
        except (ConnectionError, OSError):
            return True
        return False


def test_invalid_malformed_frame_disconnects_bans_and_refuses():
    def scenario(network, chain, _):
        with handshake(network) as peer:
            peer.send_raw_frame(b"\xc1\xc1")
            assert peer.is_disconnected(5)
        assert banned(network, EVIL) and not banned(network, LOCAL)
        assert refused(network, EVIL)
        with handshake(network, OTHER) as other:  # a different loopback IP is still served
            assert messages_until_pong(other)[0][0] == "getheaders"

    run_scenario(scenario)


def over_limit_messages():
    h = b"\x07" * 32
    return [
        ("inv", [["tx", h]] * 1001),
        ("getdata", [["block", h]] * 1001),
        ("notfound", [["tx", h]] * 1001),
        ("getheaders", [[h] * 65, ZERO]),
        ("headers", [[[1, 1, h, 0]] * 2001]),
        ("addr", [["127.0.0.9", 1]] * 1001),
        ("hello", [1, h, 0, h, 0, 5, "again", "extra"]),
        ("inv", [["blk", h]]),
        ("block", [b"not-an-array"]),
    ]


@pytest.mark.parametrize("msg_type,payload", over_limit_messages())
def test_invalid_over_limit_or_malformed_message_bans(msg_type, payload):
    def scenario(network, chain, _):
        with handshake(network) as peer:
            peer.send_msg(msg_type, payload)
            return peer.is_disconnected(5)

    disconnected, network, _, _ = run_scenario(scenario)
    assert disconnected
    assert len(network.bans) == 1


def test_invalid_oversize_length_prefix_bans():
    def scenario(network, chain, _):
        with handshake(network) as peer:
            peer.send_bytes(struct.pack(">I", MAX_FRAME_BYTES + 1))
            assert peer.is_disconnected(5)
        assert banned(network, EVIL)

    run_scenario(scenario)


def test_invalid_message_before_hello_bans():
    def scenario(network, chain, _):
        with RawPeer.connect(LOCAL, network.listen_port, timeout=5) as peer:
            peer.send_msg("ping", [1])
            assert peer.is_disconnected(5)
        assert banned(network, EVIL)

    run_scenario(scenario)


def test_invalid_block_bans_and_valid_limits_do_not():
    def scenario(network, chain, _):
        with handshake(network) as peer:
            h = b"\x05" * 32
            peer.send_msg("inv", [["block", h]] * 1000)  # at the limit: fine
            peer.send_msg("getheaders", [[h] * 64, ZERO])
            assert [m for m, _ in messages_until_pong(peer)].count("headers") == 1
            invalid = make_block(1, chain.genesis_hash, INVALID_SALT)
            peer.send_msg("block", [msgpack.unpackb(invalid)])
            assert peer.is_disconnected(5)
        assert banned(network, EVIL)

    run_scenario(scenario)


def test_invalid_tx_bans_but_policy_reject_does_not():
    def scenario(network, chain, _):
        with handshake(network) as peer:
            peer.send_msg("tx", [["pay", 1]])
            peer.send_msg("tx", [["pay", 1]])  # duplicate: policy reject, no ban
            messages_until_pong(peer)
            assert not peer.is_disconnected(0.2)
            peer.send_msg("tx", [["bad", 1]])
            assert peer.is_disconnected(5)
        assert banned(network, EVIL)
        return chain.txs

    txs, _, _, _ = run_scenario(scenario)
    assert list(txs.values()) == [msgpack.packb(["pay", 1])]


def test_wrong_genesis_and_handshake_timeout_close_without_ban():
    def scenario(network, chain, _):
        with RawPeer.connect(LOCAL, network.listen_port, timeout=5) as peer:
            peer.send_hello(b"\x11" * 32)
            assert peer.is_disconnected(5)
        with RawPeer.connect(LOCAL, network.listen_port, timeout=5) as silent:
            assert silent.wait_for("hello")[0] == 1
            assert silent.is_disconnected(5)  # no hello within handshake_timeout
        assert not banned(network, EVIL)

    run_scenario(scenario, handshake_timeout=0.5)


def test_unknown_message_ignored_and_idle_peer_pinged_then_dropped():
    def scenario(network, chain, _):
        with handshake(network) as peer:
            peer.send_msg("future-message", [{"any": "thing"}])
            assert messages_until_pong(peer)[0][0] == "getheaders"
            nonce = peer.wait_for("ping", 3, answer_pings=False)
            assert isinstance(nonce[0], int)
            assert peer.is_disconnected(3)
        assert not banned(network, EVIL)

    run_scenario(scenario, idle_timeout=1.0)


def test_serves_headers_blocks_notfound_and_addr():
    chain = FakeChain()
    hashes = chain.mine(5)

    def scenario(network, chain, helpers):
        with handshake(network) as peer:
            peer.send_msg("getheaders", [[hashes[1], chain.genesis_hash], ZERO])
            (headers,) = peer.wait_for("headers")
            assert [header_hash(hd) for hd in headers] == hashes[2:]
            peer.send_msg("getheaders", [[chain.genesis_hash], hashes[2]])
            assert [header_hash(hd) for hd in peer.wait_for("headers")[0]] == hashes[:3]
            missing = b"\x09" * 32
            peer.send_msg("getdata", [["block", hashes[3]], ["block", missing], ["tx", missing]])
            (block,) = peer.wait_for("block")
            assert msgpack.packb(block) == chain.blocks[hashes[3]]
            assert peer.wait_for("notfound") == [["block", missing], ["tx", missing]]
            peer.send_msg("getaddr", [])
            (helper, _), = helpers
            assert peer.wait_for("addr") == [[LOCAL, helper.listen_port]]

    run_scenario(scenario, chain, peers=1)


def test_headers_first_fetch_keeps_16_in_flight_and_handles_orphans():
    source = FakeChain()
    hashes = source.mine(40)
    headers = [source.headers[h] for h in hashes]

    def scenario(network, chain, _):
        with handshake(network) as peer:
            peer.wait_for("getheaders")
            peer.send_msg("headers", [[]])  # nothing yet
            # An orphan block makes the node ask for headers.
            peer.send_msg("block", [msgpack.unpackb(source.blocks[hashes[5]])])
            locator, stop = peer.wait_for("getheaders")
            assert locator == [chain.genesis_hash] and stop == ZERO
            peer.send_msg("headers", [headers])
            outstanding: list[bytes] = []
            requested = largest = 0
            for _ in range(200):  # bounded: 40 blocks, a few getdata each
                if not outstanding and requested == len(hashes):
                    break
                try:
                    msg_type, payload = peer.recv_msg(0.3 if outstanding else 5)
                except TimeoutError:  # the node tops up in batches: deliver one more
                    peer.send_msg("block", [msgpack.unpackb(source.blocks[outstanding.pop(0)])])
                    continue
                if msg_type == "getdata":
                    outstanding += [item[1] for item in payload]
                    requested += len(payload)
                    largest = max(largest, len(outstanding))
                    if requested == len(hashes):  # everything asked for: send the rest
                        for block_hash in outstanding:
                            peer.send_msg("block", [msgpack.unpackb(source.blocks[block_hash])])
                        outstanding = []
            assert largest == 16
            trio.from_thread.run(wait_until, lambda: chain.best == source.best)
            # Blocks it connected are not announced back to us.
            assert not [m for m in messages_until_pong(peer) if m[0] == "inv"]

    run_scenario(scenario)


def test_relay_reaches_other_peers_but_never_echoes():
    def scenario(network, chain, helpers):
        (helper, helper_chain), = helpers
        with handshake(network) as peer:
            block = make_block(1, chain.genesis_hash)
            peer.send_msg("inv", [["block", header_hash(msgpack.unpackb(block)[0])]])
            peer.wait_for("getheaders")
            peer.send_msg("headers", [[msgpack.unpackb(block)[0]]])
            peer.wait_for("getdata")
            peer.send_msg("block", [msgpack.unpackb(block)])
            tx = ["pay", 7]
            txid = blake3(msgpack.packb(tx)).digest()
            peer.send_msg("inv", [["tx", txid]])
            assert peer.wait_for("getdata") == [["tx", txid]]
            peer.send_msg("tx", [tx])
            trio.from_thread.run(
                wait_until, lambda: helper_chain.has_tx(txid) and helper_chain.best_height() == 1
            )
            echoed = [m for m in messages_until_pong(peer) if m[0] == "inv"]
            assert echoed == []
            return helper_chain.best_hash() == chain.best_hash()

    same_tip, _, _, _ = run_scenario(scenario, peers=1)
    assert same_tip


def test_invalid_getheaders_flood_gets_banned_by_score():
    """Regression (issue 6): a getheaders flood was served without limit, never penalised.
    Beyond the burst, each request costs 10 points; 100 points ban the IP."""

    def scenario(network, chain, _):
        with handshake(network) as peer:
            request = [[chain.genesis_hash], ZERO]
            for _ in range(300):
                try:
                    peer.send_msg("getheaders", request)
                except OSError:
                    break  # the node already closed the connection
            assert peer.is_disconnected(5)
        trio.from_thread.run(wait_until, lambda: network.bans.is_banned(EVIL))

    run_scenario(scenario)

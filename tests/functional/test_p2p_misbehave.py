"""A raw wire peer misbehaves; the node disconnects it, bans its IP, and keeps serving
(SPEC §11). Every raw peer comes from its own loopback address (127.0.0.x, x ≥ 2) so that
bans never touch the framework's own 127.0.0.1 connections."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from consensus.tx import make_transfer
from tests.functional.framework import (
    make_block,
    test_pubkey,
    test_seed,
    wait_until,
)
from tests.functional.rawpeer import RawPeer

pytestmark = pytest.mark.timeout(90)

MAX_FRAME = 4 * 1024 * 1024  # SPEC §11 frame limit
DISCONNECT_TIMEOUT = 10.0  # seconds the node may take to drop a misbehaving peer


class Peers:
    """Opens raw peers to one node and closes every one at teardown."""

    def __init__(self, node) -> None:
        self.node = node
        self.genesis_hash = bytes.fromhex(node.getinfo()["genesis_hash"])
        self.opened: list[RawPeer] = []

    def connect(self, local_host: str) -> RawPeer:
        """A TCP connection from ``local_host`` to the node's P2P port (no hello yet)."""
        peer = RawPeer.connect("127.0.0.1", self.node.p2p_port, local_host=local_host)
        self.opened.append(peer)
        return peer

    def handshake(self, local_host: str) -> RawPeer:
        """Connect, exchange hellos, and wait until the node lists the peer."""
        peer = self.connect(local_host)
        peer.send_hello(self.genesis_hash)
        peer.wait_for("hello", timeout=10)
        wait_until(lambda: peer_listed(self.node, local_host), 10,
                   description=f"node lists peer {local_host}")
        return peer

    def close_all(self) -> None:
        """Close every raw peer opened here."""
        for peer in self.opened:
            peer.close()


def peer_listed(node, host: str) -> bool:
    """Whether ``getpeerinfo`` shows a connection from ``host``."""
    for peer in node.rpc.call("getpeerinfo"):
        address = peer.get("address")
        shown = address[0] if isinstance(address, list) else str(address).rsplit(":", 1)[0]
        if shown == host:
            return True
    return False


@pytest.fixture
def node(nodes_factory):
    """One running node with a few blocks on top of genesis."""
    (node,) = nodes_factory.start_nodes(1)
    node.rpc.call("generate", 3, test_pubkey(9).hex())
    return node


@pytest.fixture
def peers(node) -> Iterator[Peers]:
    """Raw peers to ``node``, closed at teardown."""
    opened = Peers(node)
    try:
        yield opened
    finally:
        opened.close_all()


def assert_node_healthy(node, height: int) -> None:
    """The process runs, RPC answers, and the tip is still at ``height``."""
    assert node.is_running(), node.log_tail(30)
    assert node.getinfo()["height"] == height


def assert_refused(peers: Peers, local_host: str) -> None:
    """A new connection from ``local_host`` is refused or closed at once (banned IP)."""
    try:
        peer = peers.connect(local_host)
    except OSError:
        return  # refused at the TCP level
    try:
        peer.send_hello(peers.genesis_hash)
    except OSError:
        return  # closed by the node before our hello went out
    assert peer.is_disconnected(DISCONNECT_TIMEOUT), f"banned {local_host} was served"
    assert not peer_listed(peers.node, local_host)


def test_invalid_garbage_frame_bans_ip(node, peers):
    """Undecodable bytes disconnect the peer and ban 127.0.0.2; 127.0.0.3 still connects."""
    peer = peers.handshake("127.0.0.2")
    peer.send_raw_frame(b"\xc1" * 8)  # correctly framed; 0xc1 is never valid msgpack
    assert peer.is_disconnected(DISCONNECT_TIMEOUT)
    wait_until(lambda: not peer_listed(node, "127.0.0.2"), 10, description="peer dropped")
    assert_node_healthy(node, 3)

    assert_refused(peers, "127.0.0.2")
    other = peers.handshake("127.0.0.3")
    assert not other.is_disconnected(0.5)
    assert_node_healthy(node, 3)


def test_invalid_wrong_genesis_hello_disconnected(node, peers):
    """A hello naming another chain's genesis is answered by a disconnect."""
    peer = peers.connect("127.0.0.2")
    peer.send_hello(b"\x11" * 32)
    assert peer.is_disconnected(DISCONNECT_TIMEOUT)
    assert not peer_listed(node, "127.0.0.2")
    assert_node_healthy(node, 3)


def test_invalid_message_before_hello_disconnected(node, peers):
    """Any message before hello is a protocol violation."""
    peer = peers.connect("127.0.0.2")
    peer.send_msg("ping", [7])
    assert peer.is_disconnected(DISCONNECT_TIMEOUT)
    assert_node_healthy(node, 3)


def test_invalid_oversize_length_prefix_disconnected(node, peers):
    """A length prefix above 4 MiB disconnects the peer before any payload is sent."""
    peer = peers.handshake("127.0.0.2")
    peer.send_bytes(struct.pack(">I", MAX_FRAME + 1))
    assert peer.is_disconnected(DISCONNECT_TIMEOUT)
    assert_node_healthy(node, 3)
    assert_refused(peers, "127.0.0.2")


def test_valid_block_from_raw_peer_is_accepted(node, peers):
    """Control for the invalid-block tests: the same builder's valid block is connected."""
    peer = peers.handshake("127.0.0.2")
    tip = node.rpc.call("getblock", node.getinfo()["best_hash"])
    transfer = make_transfer(test_seed(0), peers.genesis_hash, 0, 100, test_pubkey(6), 4_000)
    block = make_block(tip, [transfer])
    peer.send_msg("block", [block.to_obj()])
    wait_until(lambda: node.getinfo()["best_hash"] == block.hash().hex(), 15,
               description="raw peer's valid block connected")
    assert node.rpc.call("getaccount", test_pubkey(6).hex())["balance"] == 4_000
    assert not peer.is_disconnected(0.5)


def test_invalid_block_bad_pow_disconnected(node, peers):
    """A block whose hash is above its target gets the sender disconnected and banned."""
    peer = peers.handshake("127.0.0.2")
    tip = node.rpc.call("getblock", node.getinfo()["best_hash"])
    block = make_block(tip, valid_pow=False)
    peer.send_msg("block", [block.to_obj()])
    assert peer.is_disconnected(DISCONNECT_TIMEOUT)
    assert_node_healthy(node, 3)
    assert node.getinfo()["best_hash"] == tip["hash"]
    assert_refused(peers, "127.0.0.2")


def test_invalid_block_bad_tx_disconnected(node, peers):
    """A block with valid PoW carrying a badly signed transfer is rejected with its sender."""
    peer = peers.handshake("127.0.0.2")
    tip = node.rpc.call("getblock", node.getinfo()["best_hash"])
    good = make_transfer(test_seed(0), peers.genesis_hash, 0, 100, test_pubkey(6), 4_000)
    forged = type(good)(good.version, good.kind, good.sender, good.nonce, good.fee, good.body,
                        bytes([good.sig[0] ^ 1]) + good.sig[1:])
    block = make_block(tip, [forged])
    peer.send_msg("block", [block.to_obj()])
    assert peer.is_disconnected(DISCONNECT_TIMEOUT)
    assert_node_healthy(node, 3)
    assert node.getinfo()["best_hash"] == tip["hash"]
    assert node.rpc.call("getaccount", test_pubkey(6).hex())["balance"] == 0
    assert_refused(peers, "127.0.0.2")
    # A well-behaved peer from elsewhere can still hand over the valid version.
    honest = peers.handshake("127.0.0.3")
    honest.send_msg("block", [make_block(tip, [good]).to_obj()])
    wait_until(lambda: node.getinfo()["height"] == 4, 15, description="valid block accepted")

"""PeerSession against hostile input: it may only end with ProtocolViolation or
PeerDisconnect, never with any other exception (SPEC §11: hostile input never crashes
the node)."""

from __future__ import annotations

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p import messages
from p2p.decode import DECODERS
from p2p.download import BlockDownload
from p2p.errors import PeerDisconnect, ProtocolViolation
from p2p.framing import encode_message, frame_body
from p2p.peer import Peer
from p2p.session import PeerSession
from tests.unit.test_p2p_fakechain import FakeChain

hashes = st.binary(min_size=32, max_size=32) | st.sampled_from([bytes(32)])
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | hashes
    | st.text(max_size=10)
    | st.sampled_from(["block", "tx"])
)
payloads = st.recursive(leaves, lambda children: st.lists(children, max_size=6), max_leaves=40)
msg_types = st.sampled_from(sorted(DECODERS) + ["unknown"])


class Host:
    """A SessionHost with a FakeChain and fixed identity."""

    def __init__(self) -> None:
        self.chain = FakeChain()
        self.chain.mine(3)
        self.node_nonce = 1
        self.listen_port = 0
        self.user_agent = "test"
        self.handshake_timeout = 5.0
        self.idle_timeout = 60.0
        self.registered: list[Peer] = []
        self.scores: list[tuple[int, str]] = []
        self.download = BlockDownload(self.chain)

    def register_peer(self, peer: Peer) -> None:
        self.registered.append(peer)
        self.download.add_peer(peer)

    def known_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", 9)]

    def addresses_received(self, peer: Peer, addresses) -> None:
        pass

    def misbehaving(self, peer: Peer, points: int, reason: str) -> None:
        self.scores.append((points, reason))

    def watch_received(self, peer: Peer, entries) -> None:
        pass

    async def tickets_received(self, peer: Peer, escrow_id: bytes, tickets) -> int:
        return 0

    def headers_reply(self, request) -> bytes:
        return messages.build_headers(
            self.chain.get_headers_after(request.locator, request.stop_hash, 2000)
        )


async def run_session(data: bytes) -> tuple[Host, BaseException]:
    """Feed `data` to a fresh session, then EOF; return how the session ended."""
    host = Host()
    ours, theirs = trio.testing.memory_stream_pair()
    peer = Peer(1, ours, "127.0.0.2", 1, inbound=True)
    await theirs.send_all(data)
    await theirs.send_stream.aclose()
    with trio.fail_after(10):
        try:
            await PeerSession(host, peer).run()
        except (ProtocolViolation, PeerDisconnect) as exc:
            return host, exc
    raise AssertionError("a session only ends by raising")


def hello_frame(host_nonce: int = 2, genesis: bytes | None = None) -> bytes:
    chain = Host().chain
    return messages.build_hello(
        messages.Hello(1, genesis or chain.genesis_hash, 0, chain.genesis_hash, 0, host_nonce, "x")
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(msg_types, payloads), max_size=6))
def test_hostile_payloads_end_only_in_violation_or_disconnect(msgs):
    data = hello_frame() + b"".join(encode_message(t, p) for t, p in msgs)
    trio.run(run_session, data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_hostile_bytes_end_only_in_violation_or_disconnect(noise):
    trio.run(run_session, hello_frame() + frame_body(noise))
    trio.run(run_session, hello_frame() + noise)


@pytest.mark.parametrize(
    "data,expected",
    [
        (hello_frame(), PeerDisconnect),  # then EOF
        (hello_frame(host_nonce=1), PeerDisconnect),  # our own nonce
        (hello_frame(genesis=b"\x11" * 32), PeerDisconnect),
        (encode_message("ping", [1]), ProtocolViolation),
        (hello_frame() + encode_message("inv", [["tx", b"\x01" * 32]] * 1001), ProtocolViolation),
        (hello_frame() + encode_message("tx", [["bad"]]), ProtocolViolation),
    ],
)
def test_session_outcomes(data, expected):
    host, exc = trio.run(run_session, data)
    assert isinstance(exc, expected)


def test_session_serves_before_eof():
    chain = Host().chain
    request = encode_message("getheaders", [[chain.genesis_hash], bytes(32)])

    async def main():
        host = Host()
        ours, theirs = trio.testing.memory_stream_pair()
        peer = Peer(1, ours, "127.0.0.2", 1, inbound=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.run_writer)
            nursery.start_soon(PeerSession(host, peer).run)
            await theirs.send_all(hello_frame() + request)
            received = b""
            with trio.fail_after(5):
                while received.count(b"headers") < 2:  # its own getheaders, then the reply
                    received += await theirs.receive_some()
            nursery.cancel_scope.cancel()
        assert host.registered == [peer]
        assert msgpack.packb(host.chain.headers[host.chain.best[1]]) in received

    trio.run(main)

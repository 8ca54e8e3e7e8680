"""Per-peer state: download bookkeeping, known-inventory set, bans, send queue (SPEC §11)."""

from __future__ import annotations

import math

import trio
import trio.testing

from p2p.bans import BanList
from p2p.peer import SEND_QUEUE_BYTES, SEND_QUEUE_FRAMES, KnownSet, Peer, format_address
from p2p.sync import MAX_BACKLOG, MAX_BLOCKS_IN_FLIGHT, PeerSync


def h(i: int) -> bytes:
    return i.to_bytes(32, "big")


def test_at_most_16_blocks_in_flight_in_chain_order():
    sync = PeerSync(stall_timeout=10)
    sync.add_wanted([h(i) for i in range(40)])
    first = sync.next_requests(lambda _: False, now=0)
    assert first == [h(i) for i in range(MAX_BLOCKS_IN_FLIGHT)]
    assert sync.next_requests(lambda _: False, now=0) == []
    sync.block_received(h(0), now=1)
    sync.block_received(h(1), now=1)
    assert sync.next_requests(lambda _: False, now=1) == [h(16), h(17)]
    assert len(sync.in_flight) == MAX_BLOCKS_IN_FLIGHT


def test_known_blocks_and_duplicates_are_skipped():
    sync = PeerSync(stall_timeout=10)
    sync.add_wanted([h(1), h(2), h(3)])
    sync.add_wanted([h(2), h(4)])
    assert sync.backlog() == 4
    assert sync.next_requests(lambda x: x == h(2), now=0) == [h(1), h(3), h(4)]
    assert sync.is_tracked(h(3)) and not sync.is_tracked(h(2))


def test_notfound_forgets_queued_and_in_flight():
    sync = PeerSync(stall_timeout=10)
    sync.add_wanted([h(i) for i in range(20)])
    sync.next_requests(lambda _: False, now=0)
    sync.forget(h(3))
    sync.forget(h(18))
    assert not sync.is_tracked(h(3)) and not sync.is_tracked(h(18))
    assert sync.next_requests(lambda _: False, now=0) == [h(16)]


def test_stall_deadline_tracks_requests_and_progress():
    sync = PeerSync(stall_timeout=10)
    assert sync.stall_deadline() == math.inf
    sync.headers_requested(now=5)
    assert sync.headers_outstanding and sync.stall_deadline() == 15
    sync.headers_received(now=6)
    assert not sync.headers_outstanding and sync.stall_deadline() == math.inf
    sync.add_wanted([h(1), h(2)])
    sync.next_requests(lambda _: False, now=7)
    assert sync.stall_deadline() == 17
    sync.block_received(h(1), now=12)
    assert sync.stall_deadline() == 22
    sync.block_received(h(2), now=13)
    assert sync.stall_deadline() == math.inf


def test_header_continuation_waits_for_backlog():
    sync = PeerSync(stall_timeout=10)
    sync.continue_from = h(9)
    sync.headers_requested(now=0)
    assert not sync.wants_continuation()
    sync.headers_received(now=0)
    sync.add_wanted([h(i) for i in range(MAX_BACKLOG)])
    assert not sync.wants_continuation()
    sync.next_requests(lambda _: False, now=0)
    sync.block_received(h(0), now=0)
    assert sync.wants_continuation()


def test_known_set_is_bounded_lru():
    known = KnownSet(capacity=3)
    for i in range(3):
        known.add(h(i))
    known.add(h(0))  # refresh: h(1) is now the oldest
    known.add(h(3))
    assert h(0) in known and h(3) in known and h(1) not in known
    assert len(known) == 3


def test_bans_are_per_exact_ip_and_expire():
    async def main():
        bans = BanList()
        bans.ban("127.0.0.2", 600)
        assert bans.is_banned("127.0.0.2")
        assert not bans.is_banned("127.0.0.1")
        assert not bans.is_banned("127.0.0.20")
        clock.jump(599)
        assert 0 < bans.remaining("127.0.0.2") <= 1
        clock.jump(2)
        assert not bans.is_banned("127.0.0.2")
        assert len(bans) == 0

    clock = trio.testing.MockClock()
    trio.run(main, clock=clock)


def test_send_queue_overflow_closes_peer():
    async def main():
        stream, _other = trio.testing.memory_stream_pair()
        peer = Peer(1, stream, "127.0.0.2", 5000, inbound=True)
        for _ in range(SEND_QUEUE_FRAMES):
            assert peer.send_frame(b"f")
        assert not peer.send_frame(b"f")
        assert peer.close_reason == "send queue overflow"
        assert peer.cancel_scope.cancel_called
        assert not peer.send_frame(b"f")

        big = Peer(2, stream, "127.0.0.2", 5001, inbound=True)
        assert big.send_frame(b"x" * (SEND_QUEUE_BYTES // 2))
        assert not big.send_frame(b"x" * (SEND_QUEUE_BYTES // 2 + 1))
        assert big.close_reason == "send queue overflow"

    trio.run(main)


def test_writer_drains_queue_onto_stream():
    async def main():
        ours, theirs = trio.testing.memory_stream_pair()
        peer = Peer(1, ours, "::1", 7, inbound=False, target=("::1", 7))
        assert peer.address == "[::1]:7" and peer.listen_address == ("::1", 7)
        async with trio.open_nursery() as nursery:
            with peer.cancel_scope:
                nursery.start_soon(peer.run_writer)
                peer.send_frame(b"abc")
                peer.send_frame(b"def")
                received = b""
                with trio.fail_after(5):
                    while len(received) < 6:
                        received += await theirs.receive_some()
                assert received == b"abcdef"
                peer.close("done")
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert format_address("10.0.0.1", 80) == "10.0.0.1:80"

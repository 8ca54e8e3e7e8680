"""Per-peer state: the shared block download scheduler, known-inventory set, bans, send queue (SPEC §11)."""

from __future__ import annotations

import msgpack
import trio
import trio.testing

from p2p.bans import BanList
from p2p.peer import SEND_BUFFER_BYTES, SEND_BUFFER_HARD_BYTES, KnownSet, Peer, format_address
from p2p.download import MAX_BLOCKS_IN_FLIGHT, TOP_UP_BATCH, BlockDownload


def h(i: int) -> bytes:
    return i.to_bytes(32, "big")


class Chain:
    """Just enough ChainAccess for the scheduler: which blocks we have."""

    def __init__(self) -> None:
        self.have: set[bytes] = set()

    def has_block(self, block_hash: bytes) -> bool:
        return block_hash in self.have


def sent_hashes(peer_stream) -> list[bytes]:
    """Hashes of every getdata queued on a Peer (read from its send channel)."""
    out = []
    while peer_stream._queue:
        frame = peer_stream._queue.popleft()
        msg_type, items = msgpack.unpackb(frame[4:])
        assert msg_type == "getdata"
        out += [item[1] for item in items]
    return out


def new_peer(peer_id: int) -> Peer:
    stream, _ = trio.testing.memory_stream_pair()
    return Peer(peer_id, stream, "127.0.0.2", 5000 + peer_id, inbound=True)


def test_at_most_16_blocks_in_flight_in_chain_order_topped_up_in_batches():
    async def main():
        download = BlockDownload(Chain())
        peer = new_peer(1)
        download.add_peer(peer)
        download.add_wanted(peer, [h(i) for i in range(40)], tip=None)
        assert sent_hashes(peer) == [h(i) for i in range(MAX_BLOCKS_IN_FLIGHT)]
        for i in range(TOP_UP_BATCH - 1):
            download.block_received(peer, h(i))
        assert sent_hashes(peer) == []  # waits for a batch of free slots
        download.block_received(peer, h(TOP_UP_BATCH - 1))
        assert sent_hashes(peer) == [h(16 + i) for i in range(TOP_UP_BATCH)]
        assert download.in_flight(peer) == MAX_BLOCKS_IN_FLIGHT

    trio.run(main)


def test_known_blocks_and_duplicates_are_skipped():
    async def main():
        chain = Chain()
        chain.have.add(h(2))
        download = BlockDownload(chain)
        peer = new_peer(1)
        download.add_peer(peer)
        download.add_wanted(peer, [h(1), h(2), h(3)], tip=None)
        download.add_wanted(peer, [h(3), h(4)], tip=None)
        assert sent_hashes(peer) == [h(1), h(3), h(4)]
        assert download.is_tracked(h(3)) and not download.is_tracked(h(2))

    trio.run(main)


def test_two_peers_never_fetch_the_same_block():
    async def main():
        download = BlockDownload(Chain())
        a, b = new_peer(1), new_peer(2)
        download.add_peer(a)
        download.add_peer(b)
        wanted = [h(i) for i in range(40)]
        download.add_wanted(a, wanted, tip=None)
        download.add_wanted(b, wanted, tip=None)
        got_a, got_b = sent_hashes(a), sent_hashes(b)
        assert got_a == wanted[:16] and got_b == wanted[16:32]

    trio.run(main)


def test_notfound_and_disconnect_hand_blocks_to_other_sources():
    async def main():
        download = BlockDownload(Chain())
        a, b = new_peer(1), new_peer(2)
        download.add_peer(a)
        download.add_wanted(a, [h(i) for i in range(20)], tip=None)
        assert len(sent_hashes(a)) == 16
        download.add_peer(b)
        download.add_wanted(b, [h(i) for i in range(20)], tip=None)
        assert sent_hashes(b) == [h(16), h(17), h(18), h(19)]
        download.not_found(a, h(3))  # b can serve it: retried first
        for i in range(16, 20):
            download.block_received(b, h(i))
        assert sent_hashes(b) == [h(3)]
        download.remove_peer(a)  # a's other 15 go to b
        assert sorted(sent_hashes(b)) == sorted(h(i) for i in range(16) if i != 3)[:15]
        download.not_found(b, h(0))  # no one else has it: dropped
        assert not download.is_tracked(h(0))

    trio.run(main)


def test_stalled_peer_work_is_reassigned():
    async def main():
        download = BlockDownload(Chain(), stall_seconds=5)
        a, b = new_peer(1), new_peer(2)
        download.add_peer(a)
        download.add_wanted(a, [h(i) for i in range(16)], tip=None)
        sent_hashes(a)
        download.add_peer(b)
        download.add_wanted(b, [h(i) for i in range(16)], tip=None)
        assert sent_hashes(b) == []  # everything is in flight from a
        assert download.stall_deadline(a, 60) == trio.current_time() + 60
        clock.jump(6)
        download._reassign_stalled()
        download._dispatch()
        assert sent_hashes(b) == [h(i) for i in range(16)]
        assert download.reassigned == 16 and download.in_flight(a) == 0
        download.add_wanted(a, [h(99)], tip=None)
        assert sent_hashes(a) == []  # a stalling peer gets no new work...
        download.block_message(a)  # ...until it delivers again
        download.add_wanted(a, [h(100)], tip=None)
        assert sent_hashes(a) == [h(99), h(100)]

    clock = trio.testing.MockClock()
    trio.run(main, clock=clock)


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


def test_send_buffer_pauses_at_soft_limit_and_closes_at_hard_limit():
    async def main():
        ours, theirs = trio.testing.memory_stream_pair()
        peer = Peer(1, ours, "127.0.0.2", 5000, inbound=True)
        assert peer.send_frame(b"x" * (SEND_BUFFER_BYTES - 1))
        assert not peer.send_paused
        assert peer.send_frame(b"y")
        assert peer.send_paused
        assert not await peer.wait_send_drained(0.05)  # nobody writes: still full
        async with trio.open_nursery() as nursery:
            with peer.cancel_scope:
                nursery.start_soon(peer.run_writer)

                async def read_all():
                    got = 0
                    while got < SEND_BUFFER_BYTES:
                        got += len(await theirs.receive_some())

                nursery.start_soon(read_all)
                assert await peer.wait_send_drained(5)
                assert peer.total_queued == SEND_BUFFER_BYTES and not peer.send_paused
            nursery.cancel_scope.cancel()

        big = Peer(2, ours, "127.0.0.2", 5001, inbound=True)
        assert big.send_frame(b"x" * (SEND_BUFFER_HARD_BYTES - 10))
        assert not big.send_frame(b"x" * 11)
        assert big.close_reason == "send buffer overflow"
        assert big.cancel_scope.cancel_called
        assert not big.send_frame(b"f")

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

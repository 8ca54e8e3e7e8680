"""The node's ticket watch (node.ticketwatch) and its wire messages, without sockets:
three TicketWatch instances wired A – B – C by an in-memory `send` (DESIGN "Ticket watch
between merchants")."""

from __future__ import annotations

import msgpack
import pytest
import trio

from consensus import keys
from consensus.escrow import EscrowState
from consensus.ticket import sign_ticket
from node.ticketwatch import MAX_LOCAL_ESCROWS, TicketWatch
from p2p import decode, messages
from p2p.errors import ProtocolViolation
from p2p.framing import MAX_MSG_TYPE_LEN

GENESIS = b"\x05" * 32
OWNER_SEED = b"\x01" * 32
EID = b"\x07" * 32
ESCROW = EscrowState(keys.public_key(OWNER_SEED), 10**10, 10**9, 1, 2, 10**6, 10, 1, 4,
                     (b"\x0a" * 32, b"\x0b" * 32), 5, 8, 20, False)


def in_trio(fn):
    """Run an async test under trio (no pytest-trio here)."""
    def test() -> None:
        trio.run(fn)
    test.__name__, test.__doc__ = fn.__name__, fn.__doc__
    return test


def ticket(mi: int, seqno: int, seed: bytes = OWNER_SEED) -> bytes:
    return sign_ticket(seed, GENESIS, EID, mi, seqno).encode()


def verify_many(triples):
    return [t for t in triples if keys.verify(*t)]


def unframe(frame: bytes) -> tuple[str, object]:
    msg_type, payload = msgpack.unpackb(frame[4:])
    return msg_type, decode.decode_payload(msg_type, msgpack.packb(payload))


class Net:
    """Watches by name; frames are delivered by `pump` (decoded as p2p would)."""

    def __init__(self, names: str, links: list[tuple[str, str]]) -> None:
        self.queue: list[tuple[str, str, bytes]] = []
        self.w = {}
        for name in names:
            self.w[name] = TicketWatch(lambda eid: ESCROW if eid == EID else None, GENESIS,
                                       verify_many, self._sender(name))
        for a, b in links:
            self.w[a].peer_connected(b)
            self.w[b].peer_connected(a)

    def _sender(self, name: str):
        def send(peer, frame: bytes) -> bool:
            self.queue.append((name, peer, frame))
            return True
        return send

    async def pump(self) -> None:
        for _ in range(50):
            for w in self.w.values():
                w._sent_at.clear()  # no pacing in the test
                await w.flush()
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for src, dst, frame in batch:
                msg_type, value = unframe(frame)
                if msg_type == "watch":
                    self.w[dst].watch_received(src, value)
                else:
                    await self.w[dst].tickets_received(src, value.escrow_id, value.tickets)


@in_trio
async def test_duplicate_issued_at_both_ends_is_seen_by_both_merchants() -> None:
    net = Net("ABC", [("A", "B"), ("B", "C")])
    net.w["A"].watch_local([EID])
    net.w["C"].watch_local([EID])
    await net.pump()
    assert net.w["B"].peer_subs == {"A": {EID: 0}, "C": {EID: 0}}
    assert net.w["A"].peer_subs["B"] == {EID: 1}  # C's subscription, one hop further
    first = await net.w["A"].announce_local(EID, [ticket(0, 3), ticket(0, 4)])
    assert (first.new, first.conflicts) == (2, [])
    await net.pump()
    assert net.w["C"].tracked == 2  # relayed through B
    second = await net.w["C"].announce_local(EID, [ticket(1, 3)])
    await net.pump()
    assert second.new == 1 and [c.kind for c in second.conflicts] == ["duplicate"]
    for name in "ABC":
        found = net.w[name].conflicts_after(0)
        assert [(c.seqno, c.kind) for c in found] == [(3, "duplicate")], name
        assert set(found[0].tickets) == {ticket(0, 3), ticket(1, 3)}


@in_trio
async def test_late_subscriber_gets_a_catch_up_and_out_of_range_is_a_conflict() -> None:
    net = Net("AB", [("A", "B")])
    forged = ticket(0, 9, seed=b"\x09" * 32)  # a buggy local merchant: not checked yet
    await net.w["A"].announce_local(EID, [ticket(0, 1), ticket(1, ESCROW.N), forged])
    assert net.w["A"].local and net.w["A"].tracked == 3  # announcing also watches
    assert [c.kind for c in net.w["A"].conflicts_after(0)] == ["out-of-range"]
    net.w["B"].watch_local([EID])  # subscribes after the tickets were announced
    await net.pump()
    assert net.w["B"].tracked == 2  # the catch-up checked them: the forged one stayed home
    assert net.w["A"].tracked == 2
    late = await net.w["B"].announce_local(EID, [ticket(1, 1)])
    assert [c.kind for c in late.conflicts] == ["duplicate"]


@in_trio
async def test_bad_signatures_unknown_escrows_and_lapsed_subscriptions() -> None:
    net = Net("AB", [("A", "B")])
    net.w["A"].watch_local([EID])
    await net.pump()
    forged = ticket(0, 2, seed=b"\x09" * 32)
    result = await net.w["B"].tickets_received("A", EID, [forged])
    assert result.invalid == 1  # the session bans a peer for this
    assert (await net.w["A"].announce_local(b"\x08" * 32, [])).ignored == 0
    net.w["A"].watch_local([EID], 0)  # unsubscribe
    await net.pump()
    assert net.w["B"].peer_subs["A"] == {}
    with pytest.raises(ValueError):
        net.w["A"].watch_local([bytes([i % 256, i // 256]) * 16
                                for i in range(MAX_LOCAL_ESCROWS + 1)])


@in_trio
async def test_a_subscription_loop_dies_out_after_max_hops() -> None:
    net = Net("ABC", [("A", "B"), ("B", "C"), ("C", "A")])
    net.w["A"].watch_local([EID])
    await net.pump()
    assert EID in net.w["B"].advertised_for("C")
    net.w["A"].watch_local([EID], 0)
    for _ in range(3):
        await net.pump()
    for name in "ABC":
        assert not net.w[name].interested(EID), (name, net.w[name].peer_subs)


@in_trio
async def test_a_colliding_redeem_in_the_mempool_is_a_conflict() -> None:
    from consensus.ticket import Ticket

    watch = TicketWatch(lambda eid: ESCROW, GENESIS, verify_many)
    assert watch.observe_redeem([Ticket.decode(ticket(1, 7))], "mempool") == []  # unwatched
    assert watch.tracked == 0
    await watch.announce_local(EID, [ticket(0, 6)])  # watches the escrow too
    (found,) = watch.observe_redeem([Ticket.decode(ticket(1, 6))], "mempool")
    assert (found.kind, found.source, found.tickets) == ("duplicate", "mempool",
                                                        (ticket(0, 6), ticket(1, 6)))


@in_trio
async def test_conflict_waiters_wake() -> None:
    watch = TicketWatch(lambda eid: ESCROW, GENESIS, verify_many)
    got = []

    async def waiter():
        got.extend(await watch.wait_conflicts(0, 5))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.01)
        await watch.announce_local(EID, [ticket(0, 5), ticket(1, 5)])
    assert [c.seqno for c in got] == [5]
    assert await watch.wait_conflicts(got[0].conflict_id, 0.01) == []


def test_wire_messages_round_trip_and_limits() -> None:
    entries = {EID: 0, b"\x08" * 32: messages.MAX_WATCH_HOPS}
    frame = messages.build_watch(entries)
    assert unframe(frame) == ("watch", entries)
    tickets = [ticket(0, s) for s in range(messages.MAX_TKTANN_TICKETS)]
    frame = messages.build_tktann(EID, tickets)
    assert len(frame) - 4 <= decode.PAYLOAD_LIMITS["tktann"] + 1 + 2 + MAX_MSG_TYPE_LEN
    assert unframe(frame)[1] == messages.TicketAnnouncement(EID, tickets)
    many = [[bytes([i % 256, i // 256]) * 16, 0] for i in range(messages.MAX_WATCH_ESCROWS)]
    assert len(msgpack.packb(many)) <= decode.PAYLOAD_LIMITS["watch"]
    for bad in ([[EID, messages.MAX_WATCH_HOPS + 1]], [[EID, 0], [EID, 1]], [[EID]],
                many + [[b"\x09" * 32, 0]]):
        with pytest.raises(ProtocolViolation):
            decode.decode_payload("watch", msgpack.packb(bad))
    wrong_escrow = sign_ticket(OWNER_SEED, GENESIS, b"\x08" * 32, 0, 1).encode()
    for bad in ([EID, [wrong_escrow]], [EID, [tickets[0][:-1]]], [EID[:31], []],
                [EID, tickets + tickets[:1]]):
        with pytest.raises(ProtocolViolation):
            decode.decode_payload("tktann", msgpack.packb(bad))

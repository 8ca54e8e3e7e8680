"""The node's ticket-watch relay: merchants of one escrow compare the tickets they accept
(issue 8 point 2; DESIGN "Ticket watch between merchants").

A merchant subscribes to the escrows it serves (RPC ``watchescrow``, a lease) and
announces every ticket it accepts (``announcetickets``). Nodes tell their peers which
escrows they want tickets of (p2p ``watch [[escrow_id, hops], ...]``, a distance vector:
a subscription travels at most ``MAX_WATCH_HOPS`` links, with split horizon) and relay
the tickets of those escrows (``tktann [escrow_id, [ticket, ...]]``) to the peers that
want them. Every node on the way checks each ticket against its escrow (SPEC §4: owner
signature over ``b"MCT1" || genesis_hash || bytes[0:43]``) and remembers the first
ticket per ``(escrow_id, seqno, merchant_index)``; a second merchant_index for one
``(escrow_id, seqno)`` is a duplicate — a SPEC §8 proof — and so is a ticket with
``seqno ≥ N``. Such a *conflict* is kept (bounded) and handed to the merchants through
``waitforconflicts`` / ``getconflicts``; they build and send the CHEAT_PROOF.
REDEEM transactions entering the mempool or a connected block feed the same table, so a
merchant also learns of another merchant's colliding REDEEM.

Peers are opaque hashable ids (the p2p layer's ``peer_id``). Everything runs in the trio
thread except signature checks of large batches (a worker thread). Bounded everywhere:
``MAX_LOCAL_ESCROWS`` local leases, ``MAX_WATCH_ESCROWS`` entries per peer,
``MAX_TRACKED_TICKETS`` remembered tickets (oldest forgotten first), ``MAX_CONFLICTS``
conflicts kept, ``MAX_CATCHUP_TICKETS`` sent to a peer that newly subscribes.
"""

from __future__ import annotations

import collections
import logging
import math
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import trio

from consensus.escrow import EscrowState
from consensus.ticket import TICKET_SIZE, Ticket
from p2p.messages import (MAX_TKTANN_TICKETS, MAX_WATCH_ESCROWS, MAX_WATCH_HOPS,
                          build_tktann, build_watch)

log = logging.getLogger("node.ticketwatch")

MAX_LOCAL_ESCROWS = 1024  # escrows local merchants may watch at once
DEFAULT_LEASE_SECONDS = 600.0  # a local subscription lasts this long unless renewed
MAX_LEASE_SECONDS = 3600.0
MAX_TRACKED_TICKETS = 200_000  # (escrow, seqno) entries remembered; oldest forgotten first
MAX_CONFLICTS = 1024  # conflicts kept for the merchants (oldest dropped)
MAX_CATCHUP_TICKETS = 10_000  # tickets of an escrow sent to a peer that newly subscribes
WATCH_MIN_INTERVAL = 1.0  # seconds between two `watch` messages to one peer
TICK_SECONDS = 0.25  # how often subscriptions are re-advertised when they changed
INLINE_VERIFY = 32  # batches up to this many signatures are checked in the trio thread
MAX_WAIT_SECONDS = 600.0  # longest `waitforconflicts` wait (also for "no timeout")
CHECKPOINT_EVERY = 1000  # tickets of one announcement handled between event-loop checkpoints

_HEAD = struct.Struct(">BH32sQ")  # SPEC §4 bytes 0..42: version, merchant_index, escrow_id, seqno

EscrowLookup = Callable[[bytes], EscrowState | None]
VerifyMany = Callable[[list[tuple[bytes, bytes, bytes]]], list]
SendFrame = Callable[[object, bytes], bool]


@dataclass(frozen=True)
class Conflict:
    """Proof material for SPEC §8: two tickets of one (escrow_id, seqno) for different
    merchant indexes (``kind`` "duplicate"), or one ticket with seqno ≥ N
    ("out-of-range"). ``tickets`` are 107-byte encodings, first-seen first."""

    conflict_id: int  # increasing from 1 per node run
    escrow_id: bytes
    seqno: int
    kind: str
    tickets: tuple[bytes, ...]
    source: str  # where the ticket that completed it came from: local, peer, mempool, block

    def to_json(self) -> dict:
        """The RPC form: ids and tickets as hex."""
        return {"id": self.conflict_id, "escrow_id": self.escrow_id.hex(), "seqno": self.seqno,
                "kind": self.kind, "tickets": [t.hex() for t in self.tickets],
                "source": self.source}


@dataclass
class AnnounceResult:
    """What one batch of tickets did to the table (counts of tickets)."""

    new: int = 0  # first seen here (and relayed)
    known: int = 0  # already seen with this merchant_index
    ignored: int = 0  # escrow unknown / broken / not watched, or no such merchant_index
    invalid: int = 0  # signature does not verify against the escrow owner
    conflicts: list[Conflict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"new": self.new, "known": self.known, "ignored": self.ignored,
                "invalid": self.invalid, "conflicts": [c.to_json() for c in self.conflicts]}


class TicketWatch:
    """Subscriptions, seen tickets and conflicts of one node (see module docstring).

    ``escrow`` looks an escrow up in the node's best state; ``genesis_hash`` (32 bytes)
    is part of every ticket's signed message; ``verify_many`` returns the valid ones of
    ``(pubkey, message, sig)`` triples (blocking; big batches run in a thread); ``send``
    queues a frame to a peer id (False if it is gone). Not thread-safe: trio thread only.
    """

    def __init__(self, escrow: EscrowLookup, genesis_hash: bytes, verify_many: VerifyMany,
                 send: SendFrame | None = None) -> None:
        self._escrow = escrow
        self._genesis_hash = genesis_hash
        self._verify_many = verify_many
        self.send = send or (lambda peer, frame: False)
        self.local: dict[bytes, float] = {}  # escrow_id -> lease end (trio time)
        self.peer_subs: dict[object, dict[bytes, int]] = {}  # peer -> {escrow_id: hops}
        self._peers: set[object] = set()
        self._sent: dict[object, dict[bytes, int]] = {}  # last `watch` sent to each peer
        self._sent_at: dict[object, float] = {}
        self._seen: dict[bytes, dict[int, dict[int, bytes]]] = {}  # eid -> seqno -> mi -> ticket
        self._order: collections.deque[tuple[bytes, int]] = collections.deque()
        self.tracked = 0
        self.conflicts: collections.deque[Conflict] = collections.deque(maxlen=MAX_CONFLICTS)
        self._next_conflict = 1
        self._conflict_event = trio.Event()
        self._dirty = trio.Event()
        self._catchups: collections.deque[tuple[object, bytes]] = collections.deque()
        # Local tickets not yet signature-checked: checked when first relayed to a peer.
        self._unverified: set[tuple[bytes, int, int]] = set()  # (escrow_id, seqno, mi)

    # --- subscriptions ------------------------------------------------------------------

    def _now(self) -> float:
        try:
            return trio.current_time()
        except RuntimeError:  # outside trio (unit tests of the pure parts)
            return 0.0

    def watch_local(self, escrow_ids: Iterable[bytes],
                    lease_seconds: float = DEFAULT_LEASE_SECONDS) -> list[bytes]:
        """Subscribe local merchants to ``escrow_ids`` for ``lease_seconds`` (renewing);
        0 cancels. Returns the ids now watched locally. ``ValueError`` beyond
        ``MAX_LOCAL_ESCROWS`` (nothing changed) or for a lease out of 0..3600 s."""
        if not 0 <= lease_seconds <= MAX_LEASE_SECONDS:
            raise ValueError(f"lease must be 0..{MAX_LEASE_SECONDS:g} seconds")
        ids = list(dict.fromkeys(escrow_ids))
        now = self._now()
        self._expire(now)
        if lease_seconds == 0:
            for eid in ids:
                self.local.pop(eid, None)
        else:
            if len(set(self.local) | set(ids)) > MAX_LOCAL_ESCROWS:
                raise ValueError(f"at most {MAX_LOCAL_ESCROWS} escrows may be watched")
            for eid in ids:
                self.local[eid] = now + lease_seconds
        self._dirty.set()
        return sorted(self.local)

    def _expire(self, now: float) -> None:
        gone = [eid for eid, end in self.local.items() if end <= now]
        for eid in gone:
            del self.local[eid]
        if gone:
            self._dirty.set()

    def interested(self, escrow_id: bytes) -> bool:
        """True if a local merchant or some peer wants tickets of ``escrow_id``."""
        return escrow_id in self.local or any(escrow_id in subs
                                              for subs in self.peer_subs.values())

    def advertised_for(self, peer: object) -> dict[bytes, int]:
        """The `watch` entries for ``peer``: local escrows at 0 hops, other peers' ones one
        hop further (never back to the peer they came from; ≤ MAX_WATCH_HOPS), at most
        MAX_WATCH_ESCROWS of them, nearest first."""
        entries = {eid: 0 for eid in self.local}
        for other, subs in self.peer_subs.items():
            if other == peer:
                continue
            for eid, hops in subs.items():
                if hops + 1 <= MAX_WATCH_HOPS and hops + 1 < entries.get(eid, math.inf):
                    entries[eid] = hops + 1
        if len(entries) > MAX_WATCH_ESCROWS:
            kept = sorted(entries.items(), key=lambda kv: (kv[1], kv[0]))[:MAX_WATCH_ESCROWS]
            entries = dict(kept)
        return entries

    def peer_connected(self, peer: object) -> None:
        """A handshaken peer: it gets our `watch` at the next tick."""
        self._peers.add(peer)
        self._dirty.set()

    def peer_disconnected(self, peer: object) -> None:
        """Forget a peer's subscriptions (others' advertisements may shrink)."""
        self._peers.discard(peer)
        self._sent.pop(peer, None)
        self._sent_at.pop(peer, None)
        if self.peer_subs.pop(peer, None):
            self._dirty.set()

    def watch_received(self, peer: object, entries: dict[bytes, int]) -> None:
        """A peer's `watch` (its whole subscription set, replacing the last one). Escrows
        it newly wants get a catch-up of the tickets we hold for them."""
        old = self.peer_subs.get(peer, {})
        self.peer_subs[peer] = dict(entries)
        for eid in entries:
            if eid not in old and eid in self._seen:
                self._catchups.append((peer, eid))
        if old != entries or self._catchups:
            self._dirty.set()

    async def _catch_up(self, peer: object, escrow_id: bytes) -> None:
        """Send ``peer`` the tickets held for ``escrow_id`` (local ones checked first)."""
        if peer not in self._peers or escrow_id not in self.peer_subs.get(peer, {}):
            return
        await self._verify_local(escrow_id)
        per = self._seen.get(escrow_id)
        if not per:
            return
        tickets = [raw for seqno in sorted(per, reverse=True)[:MAX_CATCHUP_TICKETS]
                   for raw in per[seqno].values()][:MAX_CATCHUP_TICKETS]
        for start in range(0, len(tickets), MAX_TKTANN_TICKETS):
            if not self.send(peer, build_tktann(escrow_id,
                                                tickets[start:start + MAX_TKTANN_TICKETS])):
                return

    def advertise(self) -> None:
        """Send `watch` to each peer whose entries changed (≤ 1 per WATCH_MIN_INTERVAL)."""
        now = self._now()
        self._expire(now)
        for peer in list(self._peers):
            entries = self.advertised_for(peer)
            if entries == self._sent.get(peer, {}) and peer in self._sent:
                continue
            if peer not in self._sent and not entries:
                self._sent[peer] = {}  # nothing to say yet: a peer assumes no subscription
                continue
            if now - self._sent_at.get(peer, -math.inf) < WATCH_MIN_INTERVAL:
                self._dirty.set()  # try again at the next tick
                continue
            if self.send(peer, build_watch(entries)):
                self._sent[peer] = entries
                self._sent_at[peer] = now

    async def flush(self) -> None:
        """Advertise changed subscriptions, then send the pending catch-ups."""
        self.advertise()
        while self._catchups:
            peer, eid = self._catchups.popleft()
            await self._catch_up(peer, eid)

    async def run(self) -> None:
        """Re-advertise subscriptions when they change; runs until cancelled."""
        while True:
            with trio.move_on_after(max(TICK_SECONDS, 1.0)):
                await self._dirty.wait()
            self._dirty = trio.Event()
            await self.flush()
            await trio.sleep(TICK_SECONDS)

    # --- tickets ------------------------------------------------------------------------

    async def tickets_received(self, peer: object, escrow_id: bytes,
                               tickets: Sequence[bytes]) -> AnnounceResult:
        """A peer's `tktann` (already shape-checked by p2p.messages.parse_tktann):
        record, detect conflicts, relay the new tickets. ``invalid`` > 0 means the peer
        relayed a ticket whose signature fails against a known escrow (it misbehaves)."""
        return await self._add(escrow_id, tickets, peer, "peer")

    async def announce_local(self, escrow_id: bytes, tickets: Sequence[bytes]) -> AnnounceResult:
        """Tickets a local merchant accepted (RPC ``announcetickets``); this also watches
        the escrow locally, if it exists (a lease of DEFAULT_LEASE_SECONDS unless one runs).

        The merchant checked the signatures already (SPEC §4.1 step 6): they are checked
        here only before a ticket first goes to a peer (a bad one would get this node
        banned), not for merely remembering it — conflicts are checked again by the
        merchant that proves them."""
        escrow = self._escrow(escrow_id)
        if escrow_id not in self.local and escrow is not None and not escrow.broken:
            try:
                self.watch_local([escrow_id])
            except ValueError:
                pass  # at the lease limit: announced all the same
        return await self._add(escrow_id, tickets, None, "local")

    def observe_redeem(self, tickets: Sequence[Ticket], source: str) -> list[Conflict]:
        """Tickets of a REDEEM the mempool accepted or a block connected (signatures
        already checked by consensus): recorded for watched escrows, not relayed."""
        found: list[Conflict] = []
        for ticket in tickets:
            if not self.interested(ticket.escrow_id):
                continue
            escrow = self._escrow(ticket.escrow_id)
            if escrow is None or escrow.broken:
                continue
            _, conflict = self._record(escrow, ticket.escrow_id, ticket.seqno,
                                       ticket.merchant_index, ticket.encode(), source)
            if conflict is not None:
                found.append(conflict)
        return found

    async def _add(self, escrow_id: bytes, tickets: Sequence[bytes], peer: object | None,
                   source: str) -> AnnounceResult:
        result = AnnounceResult()
        escrow = self._escrow(escrow_id)
        if escrow is None or escrow.broken or (peer is not None
                                               and not self.interested(escrow_id)):
            result.ignored = len(tickets)
            return result
        fresh: list[tuple[int, int, bytes]] = []  # (seqno, merchant_index, raw)
        batch_keys: set[tuple[int, int]] = set()
        seen = self._seen.get(escrow_id, {})
        merchants = len(escrow.merchants)
        head = _HEAD.unpack_from
        for i, raw in enumerate(tickets):  # one struct call per ticket
            if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                await trio.lowlevel.checkpoint()  # RPC and peers between slices
            if len(raw) != TICKET_SIZE:
                result.invalid += 1
                continue
            version, mi, eid, seqno = head(raw)
            if version != 1 or eid != escrow_id:
                result.invalid += 1
                continue
            if mi >= merchants:
                result.ignored += 1
                continue
            key = (seqno, mi)
            known = seen.get(seqno)
            if (known is not None and mi in known) or key in batch_keys:
                result.known += 1
                continue
            batch_keys.add(key)
            fresh.append((seqno, mi, raw))
        check = peer is not None or any(escrow_id in subs for subs in self.peer_subs.values())
        valid = await self._verify(escrow, fresh) if check else [True] * len(fresh)
        relay: list[bytes] = []
        unverified: list[tuple[bytes, int, int]] = []
        for i, ((seqno, mi, raw), ok) in enumerate(zip(fresh, valid)):
            if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1:
                await trio.lowlevel.checkpoint()  # _record re-checks what others added
            if not ok:
                result.invalid += 1
                continue
            new, conflict = self._record(escrow, escrow_id, seqno, mi, raw, source)
            if new:
                relay.append(raw)
                if not check:
                    unverified.append((escrow_id, seqno, mi))
            else:
                result.known += 1
            if conflict is not None:
                result.conflicts.append(conflict)
        result.new += len(relay)
        self._unverified.update(unverified)
        if relay:
            self._relay(escrow_id, relay, peer)
        return result

    async def _verify(self, escrow: EscrowState, fresh: list[tuple[int, int, bytes]]) -> list[bool]:
        """One bool per ticket of ``fresh``: the owner's signature verifies (SPEC §4)."""
        if not fresh:
            return []
        magic = b"MCT1" + self._genesis_hash
        triples = [(escrow.owner, magic + raw[:43], raw[43:]) for _, _, raw in fresh]
        if len(triples) <= INLINE_VERIFY:
            good = self._verify_many(triples)
        else:
            good = await trio.to_thread.run_sync(self._verify_many, triples)
        good_set = set(good)
        return [t in good_set for t in triples]

    async def _verify_local(self, escrow_id: bytes) -> None:
        """Check the unverified local tickets of ``escrow_id``; drop the bad ones."""
        keys = [k for k in self._unverified if k[0] == escrow_id] if self._unverified else []
        escrow = self._escrow(escrow_id)
        if not keys or escrow is None:
            return
        per = self._seen.get(escrow_id, {})
        held = [(seqno, mi, per[seqno][mi]) for _, seqno, mi in keys
                if mi in per.get(seqno, {})]
        valid = await self._verify(escrow, held)
        self._unverified.difference_update(keys)
        for (seqno, mi, _), ok in zip(held, valid):
            if not ok:
                log.warning("escrow %s: a local merchant announced a badly signed ticket "
                            "(seqno %d); dropped", escrow_id.hex(), seqno)
                entry = per.get(seqno, {})
                entry.pop(mi, None)
                if not entry:
                    per.pop(seqno, None)
                    self.tracked -= 1

    def _record(self, escrow: EscrowState, escrow_id: bytes, seqno: int, mi: int, raw: bytes,
                source: str) -> tuple[bool, Conflict | None]:
        """Remember one valid ticket; ``(new, conflict it completes or None)``."""
        per = self._seen.setdefault(escrow_id, {})
        entry = per.get(seqno)
        if entry is None:
            per[seqno] = {mi: raw}
            self._order.append((escrow_id, seqno))
            self.tracked += 1
            if self.tracked > MAX_TRACKED_TICKETS:
                self._evict()
            if seqno >= escrow.N:
                return True, self._conflict(escrow_id, seqno, "out-of-range", (raw,), source)
            return True, None
        if mi in entry or len(entry) >= 2:
            return False, None  # first ticket per merchant_index wins; one pair is proof enough
        (first,) = entry.values()
        entry[mi] = raw
        return True, self._conflict(escrow_id, seqno, "duplicate", (first, raw), source)

    def _evict(self) -> None:
        while self.tracked > MAX_TRACKED_TICKETS and self._order:
            eid, seqno = self._order.popleft()
            per = self._seen.get(eid)
            entry = per.pop(seqno, None) if per is not None else None
            if entry is not None:
                self.tracked -= 1
                if self._unverified:
                    self._unverified.difference_update((eid, seqno, mi) for mi in entry)
                if not per:
                    del self._seen[eid]

    def _conflict(self, escrow_id: bytes, seqno: int, kind: str, tickets: tuple[bytes, ...],
                  source: str) -> Conflict:
        conflict = Conflict(self._next_conflict, escrow_id, seqno, kind, tickets, source)
        self._next_conflict += 1
        self.conflicts.append(conflict)
        event, self._conflict_event = self._conflict_event, trio.Event()
        event.set()
        log.warning("escrow %s: %s ticket conflict at seqno %d (from %s)",
                    escrow_id.hex(), kind, seqno, source)
        return conflict

    def _relay(self, escrow_id: bytes, tickets: list[bytes], came_from: object | None) -> None:
        """Send new tickets to every peer (but the sender) that subscribes to the escrow."""
        peers = [peer for peer, subs in self.peer_subs.items()
                 if peer != came_from and escrow_id in subs]
        if not peers:
            return
        frames = [build_tktann(escrow_id, tickets[i:i + MAX_TKTANN_TICKETS])
                  for i in range(0, len(tickets), MAX_TKTANN_TICKETS)]
        for peer in peers:
            for frame in frames:
                if not self.send(peer, frame):
                    break

    def prune(self) -> None:
        """Forget tickets of escrows that are gone (refunded) or broken (already proven):
        called after each tip change."""
        gone = [eid for eid in self._seen if (e := self._escrow(eid)) is None or e.broken]
        for eid in gone:
            self.tracked -= len(self._seen.pop(eid))
        if gone and self._unverified:
            dropped = set(gone)
            self._unverified = {k for k in self._unverified if k[0] not in dropped}
        if len(self._order) > 2 * self.tracked + 1024:
            self._order = collections.deque(
                key for key in self._order if key[1] in self._seen.get(key[0], ()))

    # --- conflicts for the merchants ----------------------------------------------------

    def conflicts_after(self, after: int, escrow_ids: set[bytes] | None = None) -> list[Conflict]:
        """Kept conflicts with id > ``after`` (of ``escrow_ids`` only, when given)."""
        return [c for c in self.conflicts if c.conflict_id > after
                and (escrow_ids is None or c.escrow_id in escrow_ids)]

    async def wait_conflicts(self, after: int, timeout: float,
                             escrow_ids: set[bytes] | None = None) -> list[Conflict]:
        """``conflicts_after``, waiting up to ``timeout`` s (≤ 0: the cap) for one."""
        if timeout <= 0 or timeout > MAX_WAIT_SECONDS:
            timeout = MAX_WAIT_SECONDS
        with trio.move_on_after(timeout):
            while not (found := self.conflicts_after(after, escrow_ids)):
                await self._conflict_event.wait()
            return found
        return []

    @property
    def next_id(self) -> int:
        """The id the next conflict will get (pass ``next_id - 1`` as ``after``)."""
        return self._next_conflict

    def info(self) -> dict:
        """Counts for ``getwatchinfo``."""
        self._expire(self._now())
        return {"local": sorted(eid.hex() for eid in self.local),
                "peers": {str(p): len(s) for p, s in self.peer_subs.items()},
                "tracked_tickets": self.tracked, "escrows_tracked": len(self._seen),
                "conflicts": len(self.conflicts), "next_conflict_id": self._next_conflict}

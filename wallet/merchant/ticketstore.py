"""The merchant's durable ticket store: LevelDB (plyvel), every write ``sync=True``.

SPEC §4.1 step 3 and §13: a ticket is recorded durably before it is acknowledged, and
``(escrow_id, seqno)`` is never accepted twice. Each public write is one LevelDB write
batch holding the ticket records, their indexes and the per-escrow summary counts, so
after a crash the counts always match the records.

Layout (all integers big-endian):

| key | value (msgpack array) |
|---|---|
| ``T`` escrow_id(32) seqno(8) | ``[merchant_index, round, group, status, ticket(107), txid or None, reason]`` |
| ``O`` escrow_id group(8) seqno(8) | ``b""`` — open tickets (status held or winning) |
| ``G`` escrow_id group(8) | ``[t_draw, t_expire]`` of a group with open tickets |
| ``X`` txid(32) | ``[escrow_id, group, [seqno, ...], sent_height]`` — a REDEEM in flight |
| ``S`` escrow_id | ``[held, winning, redeemed, expired, losing, failed, evidence]`` |
| ``E`` escrow_id seqno(8) kind | ``[kind, [ticket, ...], note]`` — cheating evidence |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import msgpack

from wallet.merchant.leveldb import LevelDBStore, pack, unpack

HELD = "held"  # accepted, draw not yet known
WINNING = "winning"  # drawn as a winner, not yet redeemed (a REDEEM may be in flight)
REDEEMED = "redeemed"  # a REDEEM paying it is confirmed
EXPIRED = "expired"  # a winner whose redeem window closed unpaid
LOSING = "losing"  # not drawn
FAILED = "failed"  # a REDEEM was rejected for a reason retrying cannot fix
STATUSES = (HELD, WINNING, REDEEMED, EXPIRED, LOSING, FAILED)
OPEN_STATUSES = frozenset((HELD, WINNING))
COUNT_FIELDS = STATUSES + ("evidence",)

EVIDENCE_OUT_OF_RANGE = "out-of-range"  # one signed ticket with seqno >= N (SPEC §8)
EVIDENCE_DUPLICATE = "duplicate"  # our seqno also redeemed under another merchant_index

_TICKET, _OPEN, _GROUP, _REDEEM, _SUMMARY, _EVIDENCE = b"T", b"O", b"G", b"X", b"S", b"E"
_ID = 32


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")



class StoreError(Exception):
    """The store cannot be opened (in use by another process, or not a store)."""


class NewTicket(NamedTuple):
    """A ticket that passed the SPEC §4.1 checks, with its schedule (heights are rounds).

    ``ticket`` is the 107-byte encoding; ``group`` is ``seqno // a``; ``t_draw`` and
    ``t_expire`` are the group's draw and expiry rounds (SPEC §3.2). A named tuple, not a
    dataclass: the merchant service makes up to 10 000 per request.
    """

    escrow_id: bytes  # 32 bytes
    seqno: int  # u64
    merchant_index: int  # u16
    round: int  # start + seqno // tkt_rate
    group: int  # seqno // (tkt_rate * draw_len)
    t_draw: int  # round whose block's VDF decides the group's draw
    t_expire: int  # last round a winner of the group is redeemable
    ticket: bytes  # 107-byte ticket encoding


@dataclass(frozen=True)
class StoredTicket:
    """One stored ticket and its status (one of ``STATUSES``)."""

    escrow_id: bytes
    seqno: int
    merchant_index: int
    round: int
    group: int
    status: str
    ticket: bytes  # 107-byte ticket encoding
    txid: bytes | None  # REDEEM in flight that carries it, if any
    reason: str  # reject reason when status is ``failed``; else ""


@dataclass(frozen=True)
class OpenGroup:
    """A draw group that still has held or winning tickets, or a REDEEM in flight."""

    escrow_id: bytes
    group: int
    t_draw: int
    t_expire: int


@dataclass(frozen=True)
class PendingRedeem:
    """A REDEEM transaction sent (or about to be sent) for tickets of one group."""

    txid: bytes
    escrow_id: bytes
    group: int
    seqnos: tuple[int, ...]
    sent_height: int  # best height when it was built
    fee: int = 0  # units it pays (the redeemer raises it by replacement, DESIGN "Replace-by-fee")


@dataclass(frozen=True)
class Evidence:
    """Cheating evidence (SPEC §8): ``kind`` is ``out-of-range`` or ``duplicate``."""

    kind: str
    escrow_id: bytes
    seqno: int
    tickets: tuple[bytes, ...]  # 107-byte encodings
    note: str


class TicketStore(LevelDBStore):
    """Durable merchant ticket store in a LevelDB directory (SPEC §4.1, §13).

    Safe to call from several threads (one lock); one process at a time (LevelDB's lock).
    Raises ``StoreError`` if the directory is in use or unreadable.
    """

    WHAT = "ticket store"
    ERROR = StoreError

    # --- reads -----------------------------------------------------------------------

    def contains(self, escrow_id: bytes, seqno: int) -> bool:
        """True if ``(escrow_id, seqno)`` was accepted before (SPEC §4.1 step 3)."""
        return self._db.get(_TICKET + escrow_id + _u64(seqno)) is not None

    def stored_among(self, escrow_id: bytes, seqnos: Sequence[int]) -> set[int]:
        """The members of ``seqnos`` already stored for ``escrow_id`` (SPEC §4.1 step 3).

        A dense batch (the usual one: consecutive seqnos) is answered by one range scan
        of the keys between its lowest and highest seqno; a sparse one by a lookup each,
        so the work stays within a few times ``len(seqnos)`` either way.
        """
        if not seqnos:
            return set()
        lo, hi = min(seqnos), max(seqnos)
        if hi - lo >= 4 * len(seqnos) + 64:
            return {s for s in set(seqnos) if self.contains(escrow_id, s)}
        prefix = _TICKET + escrow_id
        wanted = set(seqnos)
        found = set()
        for key in self._db.iterator(start=prefix + _u64(lo), stop=prefix + _u64(hi) + b"\0",
                                     include_value=False):
            seqno = int.from_bytes(key[1 + _ID:], "big")
            if seqno in wanted:
                found.add(seqno)
        return found

    def get(self, escrow_id: bytes, seqno: int) -> StoredTicket | None:
        """The stored ticket ``(escrow_id, seqno)``, or ``None``."""
        raw = self._db.get(_TICKET + escrow_id + _u64(seqno))
        return None if raw is None else self._ticket_from(escrow_id, seqno, raw)

    @staticmethod
    def _ticket_from(escrow_id: bytes, seqno: int, raw: bytes) -> StoredTicket:
        merchant_index, rnd, group, status, ticket, txid, reason = unpack(raw)
        return StoredTicket(escrow_id, seqno, merchant_index, rnd, group, status, ticket,
                            txid, reason)

    def tickets(self, escrow_id: bytes) -> list[StoredTicket]:
        """Every stored ticket of an escrow, by seqno."""
        prefix = _TICKET + escrow_id
        return [
            self._ticket_from(escrow_id, int.from_bytes(key[1 + _ID:], "big"), raw)
            for key, raw in self._db.iterator(prefix=prefix)
        ]

    def open_groups(self) -> list[OpenGroup]:
        """Groups that still need the redeemer's attention, by (escrow_id, group)."""
        groups = []
        for key, raw in self._db.iterator(prefix=_GROUP):
            t_draw, t_expire = unpack(raw)
            groups.append(OpenGroup(key[1:1 + _ID], int.from_bytes(key[1 + _ID:], "big"),
                                    t_draw, t_expire))
        return groups

    def open_tickets(self, escrow_id: bytes, group: int) -> list[StoredTicket]:
        """Held and winning tickets of one group, by seqno."""
        found = []
        for key in self._db.iterator(prefix=_OPEN + escrow_id + _u64(group), include_value=False):
            seqno = int.from_bytes(key[-8:], "big")
            stored = self.get(escrow_id, seqno)
            if stored is not None:
                found.append(stored)
        return found

    def pending_redeems(self, escrow_id: bytes | None = None,
                        group: int | None = None) -> list[PendingRedeem]:
        """REDEEMs in flight, optionally only those of one escrow / group."""
        found = []
        for key, raw in self._db.iterator(prefix=_REDEEM):
            eid, grp, seqnos, sent_height, *rest = unpack(raw)  # fee: since issue 8
            if escrow_id is not None and eid != escrow_id:
                continue
            if group is not None and grp != group:
                continue
            found.append(PendingRedeem(key[1:], eid, grp, tuple(seqnos), sent_height,
                                       rest[0] if rest else 0))
        return found

    def summary(self, escrow_id: bytes) -> dict[str, int]:
        """Counts per status (plus ``evidence``) for one escrow; zeros if unknown."""
        raw = self._db.get(_SUMMARY + escrow_id)
        values = unpack(raw) if raw is not None else [0] * len(COUNT_FIELDS)
        return dict(zip(COUNT_FIELDS, values))

    def summaries(self) -> dict[bytes, dict[str, int]]:
        """``summary`` of every escrow the store has seen."""
        return {
            key[1:]: dict(zip(COUNT_FIELDS, unpack(raw)))
            for key, raw in self._db.iterator(prefix=_SUMMARY)
        }

    def evidence(self) -> list[Evidence]:
        """All recorded cheating evidence, by (escrow_id, seqno, kind)."""
        found = []
        for key, raw in self._db.iterator(prefix=_EVIDENCE):
            kind, tickets, note = unpack(raw)
            found.append(Evidence(kind, key[1:1 + _ID],
                                  int.from_bytes(key[1 + _ID:1 + _ID + 8], "big"),
                                  tuple(tickets), note))
        return found

    # --- writes ----------------------------------------------------------------------

    @staticmethod
    def encode_tickets(tickets: Sequence[NewTicket]) -> list[tuple[bytes, bytes, bytes]]:
        """The rows ``add_tickets`` writes for each ticket: ``(ticket key, record,
        open-index key)``. Reads nothing, so the merchant service computes them in a
        thread while the signatures are checked (its answer waits only for the write)."""
        pack = msgpack.Packer(use_bin_type=True).pack
        rows = []
        for new in tickets:
            tail = new.escrow_id + new.group.to_bytes(8, "big") + new.seqno.to_bytes(8, "big")
            rows.append((_TICKET + tail[:_ID] + tail[_ID + 8:], pack(
                [new.merchant_index, new.round, new.group, HELD, new.ticket, None, ""]),
                _OPEN + tail))
        return rows

    def add_tickets(self, tickets: Sequence[NewTicket],
                    rows: Sequence[tuple[bytes, bytes, bytes]] | None = None) -> None:
        """Record accepted tickets as ``held`` in one synced write batch (SPEC §4.1, §13).

        ``rows`` are ``encode_tickets(tickets)`` when computed ahead. Raises
        ``ValueError`` (writing nothing) if any ``(escrow_id, seqno)`` is already stored
        or appears twice in ``tickets``, or if ``rows`` has not one row per ticket.
        """
        if rows is not None and len(rows) != len(tickets):
            raise ValueError(f"{len(rows)} rows for {len(tickets)} tickets")
        pack = msgpack.Packer(use_bin_type=True).pack
        by_escrow: dict[bytes, list[int]] = {}
        for new in tickets:
            by_escrow.setdefault(new.escrow_id, []).append(new.seqno)
        with self._lock:
            for escrow_id, seqnos in by_escrow.items():
                stored = self.stored_among(escrow_id, seqnos)
                if not stored and len(set(seqnos)) != len(seqnos):
                    seen: set[int] = set()
                    stored = {s for s in seqnos if s in seen or seen.add(s)}
                if stored:
                    raise ValueError(f"ticket {escrow_id.hex()}/{min(stored)} already stored")
            if rows is None:
                rows = self.encode_tickets(tickets)
            groups = {(new.escrow_id, new.group): (new.t_draw, new.t_expire) for new in tickets}
            with self._db.write_batch(sync=True, transaction=True) as batch:
                put = batch.put
                for ticket_key, record, open_key in rows:
                    put(ticket_key, record)
                    put(open_key, b"")
                for (eid, group), times in groups.items():
                    put(_GROUP + eid + _u64(group), pack(list(times)))
                self._write_summaries(batch, {eid: {HELD: len(seqnos)}
                                              for eid, seqnos in by_escrow.items()})

    def set_status(self, changes: Iterable[tuple[bytes, int, str, str]]) -> None:
        """Move tickets to new statuses in one synced batch.

        ``changes`` holds ``(escrow_id, seqno, status, reason)``; a ticket leaving the open
        statuses loses its open-index entry and any attached txid. Unknown tickets are
        skipped. Raises ``ValueError`` for an unknown status.
        """
        with self._lock, self._db.write_batch(sync=True, transaction=True) as batch:
            deltas: dict[bytes, dict[str, int]] = {}
            overlay: dict[bytes, list] = {}
            for escrow_id, seqno, status, reason in changes:
                self._change(batch, deltas, overlay, escrow_id, seqno, status, reason)
            self._write_summaries(batch, deltas)

    def attach_redeem(self, redeem: PendingRedeem) -> None:
        """Record a REDEEM in flight and tag its tickets with its txid (before sending)."""
        with self._lock, self._db.write_batch(sync=True, transaction=True) as batch:
            batch.put(_REDEEM + redeem.txid, pack(
                [redeem.escrow_id, redeem.group, list(redeem.seqnos), redeem.sent_height,
                 redeem.fee]))
            for seqno in redeem.seqnos:
                key = _TICKET + redeem.escrow_id + _u64(seqno)
                raw = self._db.get(key)
                if raw is not None:
                    record = unpack(raw)
                    record[5] = redeem.txid
                    batch.put(key, pack(record))

    def finish_redeem(self, txid: bytes,
                      changes: Iterable[tuple[bytes, int, str, str]] = ()) -> None:
        """Forget REDEEM ``txid``: apply ``changes`` (as ``set_status``) and untag the rest.

        Tickets of the REDEEM not named in ``changes`` stay ``winning`` without a txid, so
        the redeemer may send them again. One synced batch.
        """
        with self._lock, self._db.write_batch(sync=True, transaction=True) as batch:
            raw = self._db.get(_REDEEM + txid)
            deltas: dict[bytes, dict[str, int]] = {}
            overlay: dict[bytes, list] = {}
            for escrow_id, seqno, status, reason in changes:
                self._change(batch, deltas, overlay, escrow_id, seqno, status, reason)
            if raw is not None:
                escrow_id, _group, seqnos, _sent, *_fee = unpack(raw)
                for seqno in seqnos:
                    key = _TICKET + escrow_id + _u64(seqno)
                    fields = overlay.get(key)
                    if fields is None:
                        record = self._db.get(key)
                        fields = unpack(record) if record is not None else None
                    if fields is not None and fields[5] == txid:
                        fields[5] = None
                        batch.put(key, pack(fields))
                batch.delete(_REDEEM + txid)
            self._write_summaries(batch, deltas)

    def drop_group(self, escrow_id: bytes, group: int) -> None:
        """Forget a group's schedule record once nothing in it is open (synced)."""
        with self._lock:
            self._db.delete(_GROUP + escrow_id + _u64(group), sync=True)

    def add_evidence(self, kind: str, escrow_id: bytes, seqno: int,
                     tickets: Sequence[bytes], note: str = "") -> bool:
        """Keep cheating evidence (SPEC §4.1 step 4, §8); False if already held (synced)."""
        key = _EVIDENCE + escrow_id + _u64(seqno) + kind.encode("ascii")
        with self._lock:
            if self._db.get(key) is not None:
                return False
            with self._db.write_batch(sync=True, transaction=True) as batch:
                batch.put(key, pack([kind, list(tickets), note]))
                deltas: dict[bytes, dict[str, int]] = {}
                _bump(deltas, escrow_id, "evidence", 1)
                self._write_summaries(batch, deltas)
            return True

    # --- helpers (caller holds the lock) -----------------------------------------------

    def _change(self, batch, deltas, overlay: dict[bytes, list], escrow_id: bytes,
                seqno: int, status: str, reason: str) -> None:
        """Stage one status change; ``overlay`` holds records already changed in ``batch``."""
        if status not in STATUSES:
            raise ValueError(f"unknown ticket status {status!r}")
        key = _TICKET + escrow_id + _u64(seqno)
        fields = overlay.get(key)
        if fields is None:
            raw = self._db.get(key)
            if raw is None:
                return
            fields = unpack(raw)
        old = fields[3]
        fields[3] = status
        fields[6] = reason
        open_key = _OPEN + escrow_id + _u64(fields[2]) + _u64(seqno)
        if status in OPEN_STATUSES:
            batch.put(open_key, b"")
        else:
            fields[5] = None
            batch.delete(open_key)
        overlay[key] = fields
        batch.put(key, pack(fields))
        if old != status:
            _bump(deltas, escrow_id, old, -1)
            _bump(deltas, escrow_id, status, 1)

    def _write_summaries(self, batch, deltas: dict[bytes, dict[str, int]]) -> None:
        for escrow_id, delta in deltas.items():
            counts = self.summary(escrow_id)
            for field, change in delta.items():
                counts[field] = max(0, counts[field] + change)
            batch.put(_SUMMARY + escrow_id, pack([counts[f] for f in COUNT_FIELDS]))


def _bump(deltas: dict[bytes, dict[str, int]], escrow_id: bytes, field: str, by: int) -> None:
    per = deltas.setdefault(escrow_id, {})
    per[field] = per.get(field, 0) + by

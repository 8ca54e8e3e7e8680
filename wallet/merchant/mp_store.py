"""The payee's durable MICROPAY store: LevelDB (plyvel), every write ``sync=True`` (SPEC §15).

What it keeps, so that nothing handed out or acknowledged is lost across a crash:

- the secret ``r1`` behind every commitment ``c = H(b"mp-commit", r1)`` the service hands
  out — written (synced) *before* ``c`` leaves the process, so a ticket for ``c`` can
  always be claimed;
- every ticket the service answered, with its verdict — written in one synced batch with
  the commitment it used up and the escrow's counts, *before* the answer is sent;
- per MP escrow: its terms, the counts, and at most one winning ticket with the MP_CLAIM
  in flight (status, txid), which the claimer (``wallet.merchant.mp_claimer``) follows.

Layout (values msgpack):

| key | value |
|---|---|
| ``K`` c(32) | ``[r1, created]`` — an open commitment (``created``: unix seconds) |
| ``T`` c(32) | ``[mp_escrow_id, r2, ticket_sig, r1, verdict]`` — the ticket that used ``c`` |
| ``E`` mp_escrow_id(32) | ``[owner, amount, win_bits, refund_height, held, refused, winner_c, status, txid, sent_height, reason]`` |
| ``W`` mp_escrow_id(32) | ``b""`` — the escrow has a claim to send or follow (status won/claiming) |

A ticket's ``verdict`` is ``held`` (accepted, losing), ``won`` (accepted, winning) or the
reason it was refused. Escrow statuses: ``open`` (tickets held, none winning), ``won``
(a winner held, MP_CLAIM not sent yet), ``claiming`` (MP_CLAIM recorded before it was
sent, in flight), ``claimed`` (confirmed), ``moot`` (the escrow left the chain without
this claim: another payee's winner took it), ``expired`` (no block left to include the
claim), ``failed`` (a rejection retrying cannot fix; ``reason``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from consensus.micropay import MpEscrowState, MpTicket, compute_mp_commitment
from wallet.merchant.leveldb import LevelDBStore, pack, unpack

OPEN, WON, CLAIMING = "open", "won", "claiming"
CLAIMED, MOOT, EXPIRED, FAILED = "claimed", "moot", "expired", "failed"
CLAIM_STATUSES = frozenset((WON, CLAIMING))  # indexed under ``W``: the claimer's work
STATUSES = (OPEN, WON, CLAIMING, CLAIMED, MOOT, EXPIRED, FAILED)
HELD, WINNING = "held", "won"  # verdicts of accepted tickets

_COMMIT, _TICKET, _ESCROW, _WORK = b"K", b"T", b"E", b"W"



class MpStoreError(Exception):
    """The store cannot be opened (in use by another process, or not a store)."""


@dataclass(frozen=True)
class StoredMpEscrow:
    """An MP escrow this payee holds tickets of, and what it does with its winner."""

    mp_escrow_id: bytes
    owner: bytes
    amount: int  # units, the face value of the one winner
    win_bits: int
    refund_height: int
    held: int  # tickets accepted (the winner included)
    refused: int  # tickets answered with a refusal
    winner_c: bytes | None  # commitment of the winning ticket held, if any
    status: str  # one of STATUSES
    txid: bytes | None  # MP_CLAIM in flight or confirmed
    sent_height: int  # best height when it was built
    reason: str  # why ``failed`` / ``moot`` / ``expired``

    def _value(self) -> bytes:
        return pack([self.owner, self.amount, self.win_bits, self.refund_height, self.held,
                      self.refused, self.winner_c, self.status, self.txid, self.sent_height,
                      self.reason])

    def to_json(self) -> dict:
        """JSON-friendly form for ``GET /v1/mp/status`` and ``merchant status``."""
        return {"mp_escrow_id": self.mp_escrow_id.hex(), "owner": self.owner.hex(),
                "amount": self.amount, "win_bits": self.win_bits,
                "refund_height": self.refund_height, "held": self.held,
                "refused": self.refused, "winning": int(self.winner_c is not None),
                "status": self.status, "txid": None if self.txid is None else self.txid.hex(),
                "reason": self.reason}


@dataclass(frozen=True)
class StoredMpTicket:
    """A ticket the service answered (``verdict``: ``held``, ``won`` or a refusal)."""

    ticket: MpTicket
    r1: bytes
    verdict: str

    @property
    def accepted(self) -> bool:
        """Whether the payee took it as a payment."""
        return self.verdict in (HELD, WINNING)


@dataclass(frozen=True)
class TicketOutcome:
    """What ``record`` writes for one ticket: the verdict and, for accepted ones, the
    escrow they count against (``escrow`` None for a refusal before the escrow was known)."""

    ticket: MpTicket
    r1: bytes
    verdict: str
    escrow: MpEscrowState | None


class MpStore(LevelDBStore):
    """LevelDB store of the payee's MICROPAY state at ``path`` (created if missing).

    Raises ``MpStoreError`` if another process holds it. Use as a context manager or call
    ``close``. Thread-safe (one lock around read-modify-writes).
    """

    WHAT = "MICROPAY store"
    ERROR = MpStoreError

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self.open_commitments = sum(1 for _ in self._db.iterator(prefix=_COMMIT,
                                                                 include_value=False))

    # ---- commitments -------------------------------------------------------------------

    def add_commitments(self, secrets: list[bytes], now: float | None = None) -> None:
        """Keep the secrets ``r1`` (16 bytes each) of new commitments, synced; the caller
        sends ``H(b"mp-commit", r1)`` only after this returns."""
        created = int(time.time() if now is None else now)
        with self._lock, self._db.write_batch(sync=True) as batch:
            for r1 in secrets:
                batch.put(_COMMIT + compute_mp_commitment(r1), pack([r1, created]))
            self.open_commitments += len(secrets)

    def commitment_secret(self, c: bytes) -> bytes | None:
        """``r1`` of the open commitment ``c``, or None (unknown or used up)."""
        raw = self._db.get(_COMMIT + c)
        return None if raw is None else unpack(raw)[0]

    def prune_commitments(self, older_than: float) -> int:
        """Forget open commitments created before ``older_than`` (unix seconds); the
        number dropped. A ticket for one of them is then ``unknown-commitment``."""
        with self._lock:
            stale = [key for key, raw in self._db.iterator(prefix=_COMMIT)
                     if unpack(raw)[1] < older_than]
            with self._db.write_batch(sync=True) as batch:
                for key in stale:
                    batch.delete(key)
            self.open_commitments -= len(stale)
        return len(stale)

    # ---- tickets -----------------------------------------------------------------------

    def ticket(self, c: bytes) -> StoredMpTicket | None:
        """The ticket answered for commitment ``c``, or None."""
        raw = self._db.get(_TICKET + c)
        if raw is None:
            return None
        eid, r2, sig, r1, verdict = unpack(raw)
        return StoredMpTicket(MpTicket(eid, c, r2, sig), r1, verdict)

    def record(self, outcomes: list[TicketOutcome]) -> None:
        """Write the answers of one request in one synced batch: each commitment used up,
        each ticket with its verdict, the escrows' counts and a new winner (indexed for the
        claimer). The caller checked everything (``wallet.merchant.mp_service``), including
        that no escrow gets a second winner."""
        with self._lock:
            escrows: dict[bytes, StoredMpEscrow] = {}
            with self._db.write_batch(sync=True) as batch:
                for out in outcomes:
                    t = out.ticket
                    batch.delete(_COMMIT + t.c)
                    batch.put(_TICKET + t.c, pack([t.mp_escrow_id, t.r2, t.ticket_sig,
                                                    out.r1, out.verdict]))
                    if out.escrow is None:
                        continue
                    rec = escrows.get(t.mp_escrow_id) or self.escrow(t.mp_escrow_id)
                    if rec is None:
                        e = out.escrow
                        rec = StoredMpEscrow(t.mp_escrow_id, e.owner, e.amount, e.win_bits,
                                             e.refund_height, 0, 0, None, OPEN, None, 0, "")
                    if out.verdict == HELD:
                        rec = replace(rec, held=rec.held + 1)
                    elif out.verdict == WINNING:
                        rec = replace(rec, held=rec.held + 1, winner_c=t.c, status=WON)
                        batch.put(_WORK + t.mp_escrow_id, b"")
                    else:
                        rec = replace(rec, refused=rec.refused + 1)
                    escrows[t.mp_escrow_id] = rec
                for eid, rec in escrows.items():
                    batch.put(_ESCROW + eid, rec._value())
            self.open_commitments -= len(outcomes)

    # ---- escrows -----------------------------------------------------------------------

    def escrow(self, mp_escrow_id: bytes) -> StoredMpEscrow | None:
        """The record of ``mp_escrow_id`` or None (no ticket of it held)."""
        raw = self._db.get(_ESCROW + mp_escrow_id)
        if raw is None:
            return None
        return StoredMpEscrow(mp_escrow_id, *unpack(raw))

    def escrows(self) -> Iterator[StoredMpEscrow]:
        """Every escrow record in id order."""
        for key, _ in self._db.iterator(prefix=_ESCROW):
            yield self.escrow(key[1:])

    def claims(self) -> list[StoredMpEscrow]:
        """Escrows with a claim to send or follow (status won or claiming)."""
        return [self.escrow(key[1:]) for key, _ in self._db.iterator(prefix=_WORK)]

    def set_status(self, mp_escrow_id: bytes, status: str, *, txid: bytes | None = None,
                   sent_height: int | None = None, reason: str = "") -> StoredMpEscrow:
        """Change an escrow's claim status (with the MP_CLAIM in flight, if any), synced;
        a final status drops it from ``claims``. Raises ``KeyError`` for an unknown one."""
        with self._lock:
            old = self.escrow(mp_escrow_id)
            if old is None:
                raise KeyError(mp_escrow_id.hex())
            record = replace(old, status=status, reason=reason,
                             txid=old.txid if txid is None else txid,
                             sent_height=old.sent_height if sent_height is None else sent_height)
            with self._db.write_batch(sync=True) as batch:
                batch.put(_ESCROW + mp_escrow_id, record._value())
                if status not in CLAIM_STATUSES:
                    batch.delete(_WORK + mp_escrow_id)
        return record

    def summary(self) -> dict:
        """``{"escrows": [StoredMpEscrow.to_json()...], "totals": {...}, "open_commitments"}``
        for status: totals count held / winning tickets and escrows per status."""
        rows = [e.to_json() for e in self.escrows()]
        totals = {"held": sum(r["held"] for r in rows), "refused": sum(r["refused"] for r in rows),
                  "winning": sum(r["winning"] for r in rows),
                  "units_claimed": sum(r["amount"] for r in rows if r["status"] == CLAIMED)}
        totals.update({s: sum(1 for r in rows if r["status"] == s) for s in STATUSES})
        return {"escrows": rows, "totals": totals, "open_commitments": self.open_commitments}

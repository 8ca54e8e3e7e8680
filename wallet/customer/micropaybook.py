"""The payer's durable record of its MICROPAY escrows and tickets (SPEC §15).

One JSON file, ``<wallet_dir>/micropay.json`` (mode 0600), changed only by locked
read-modify-writes (an exclusive ``flock`` on ``<wallet_dir>/micropay.lock``; written to a
temporary file, fsynced and renamed), like ``channels.json``.

The rule this file exists for: **an MP escrow carries at most one ticket whose outcome the
payer does not know.** MICROPAY pays at most one winner per escrow; a payer that signs a
second ticket on an escrow while the first may have won lets both win, and the second
payee — who took it as a payment — is cheated. So ``reserve_ticket`` writes the ticket's
``(c, r2, payee)`` as the escrow's ``pending`` ticket durably and only then may the
caller sign and send it; it picks only escrows that are ``ready`` and have no pending
ticket. The payee's answer reveals ``r1``; ``resolve`` then records a loser (the escrow is
free again), a winner (the escrow is ``won`` and never used again) or an outcome that
stays unknown (the escrow is ``retired``: no more tickets, it waits for its refund). A
crash after ``reserve_ticket`` leaves the ticket pending: the next ``micropay pay`` sends
the same ticket again (Ed25519 signatures are deterministic, so it is the same bytes)
and learns its outcome, or the chain tells (the escrow gone before ``refund_height``).

Escrow statuses: ``pending`` (MP_ESCROW sent, not in a block yet), ``ready`` (on chain,
takes tickets), ``won`` (a ticket won; spent), ``retired`` (no more tickets: too close to
its refund, or a ticket of unknown outcome), ``claimed`` (gone from the chain after a
win), ``refunded`` (gone at ``refund_height``), ``dropped`` (its MP_ESCROW never
confirmed). The last three are final; at most ``KEEP_FINISHED`` final records are kept,
older ones are folded into per-key ``totals``.

Document (version 1)::

    {"version": 1, "escrows": {mp_escrow_id_hex: MpEscrowRecord},
     "templates": {key: {"amount", "win_bits", "blocks", "fee"}},
     "totals": {key: {"escrows", "tickets", "wins"}}}
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wallet.jsonfile import JsonRecord, LockedJsonFile

FILE_VERSION = 1
KEEP_FINISHED = 256  # final escrow records kept; older ones become totals

PENDING, READY, WON, RETIRED = "pending", "ready", "won", "retired"
CLAIMED, REFUNDED, DROPPED = "claimed", "refunded", "dropped"
LIVE = frozenset((PENDING, READY, WON, RETIRED))
FINAL = frozenset((CLAIMED, REFUNDED, DROPPED))

# resolve() outcomes
LOST, WINNER, REFUSED, UNKNOWN = "lost", "won", "refused", "unknown"


@dataclass
class MpEscrowRecord(JsonRecord):
    """An MP escrow this wallet funded (SPEC §15). Amounts in units.

    ``tickets`` counts tickets the payees accepted; ``pending`` is the ticket signed (or
    about to be) whose outcome is not known yet: ``{"c", "r2", "payee", "url"}`` (hex).
    """

    mp_escrow_id: str  # 64 hex digits, H(b"mp-escrow", txid)
    txid: str  # the MP_ESCROW
    payer_key: str  # name of the key in this wallet that signs tickets
    payer: str  # hex address
    genesis_hash: str
    amount: int
    win_bits: int
    refund_height: int
    fee: int  # of the MP_ESCROW
    status: str = PENDING
    tickets: int = 0
    pending: dict | None = None
    won_c: str = ""  # commitment of the winning ticket
    won_payee: str = ""

    RECORD_NAME = "MP escrow record"


class MicropayBook:
    """Locked access to ``<wallet_dir>/micropay.json`` (see the module docstring)."""

    def __init__(self, wallet_dir: Path | str) -> None:
        self.wallet_dir = Path(wallet_dir)
        self._file = LockedJsonFile(
            self.wallet_dir, "micropay", "MICROPAY",
            {"version": FILE_VERSION, "escrows": {}, "templates": {}, "totals": {}})
        self.path = self._file.path
        self._transaction = functools.partial(self._file.transaction, _fold_finished)
        self._load = self._file.load

    # ---- reads -------------------------------------------------------------------------

    def get(self, mp_escrow_id: str) -> MpEscrowRecord | None:
        """The record of ``mp_escrow_id`` or None."""
        data = self._load()["escrows"].get(mp_escrow_id)
        return None if data is None else MpEscrowRecord.from_json(data)

    def all(self, payer_key: str | None = None) -> list[MpEscrowRecord]:
        """Every escrow (of ``payer_key`` when given), by refund height."""
        records = [MpEscrowRecord.from_json(v) for v in self._load()["escrows"].values()]
        return sorted((r for r in records if payer_key in (None, r.payer_key)),
                      key=lambda r: (r.refund_height, r.mp_escrow_id))

    def template(self, payer_key: str) -> dict[str, int] | None:
        """The terms ``micropay escrow create`` last used for ``payer_key``, or None."""
        return self._load()["templates"].get(payer_key)

    def totals(self, payer_key: str) -> dict[str, int]:
        """``{"escrows", "tickets", "wins"}`` of ``payer_key``'s folded-away records."""
        return self._load()["totals"].get(payer_key, {"escrows": 0, "tickets": 0, "wins": 0})

    # ---- writes ------------------------------------------------------------------------

    def add(self, record: MpEscrowRecord, template: dict[str, int] | None = None) -> None:
        """Store an escrow about to be funded (before its MP_ESCROW is sent) and, when
        given, the terms to fund its successors with."""
        with self._transaction() as doc:
            doc["escrows"][record.mp_escrow_id] = record.to_json()
            if template is not None:
                doc["templates"][record.payer_key] = template

    def drop(self, mp_escrow_id: str) -> None:
        """Forget an escrow whose MP_ESCROW the node rejected."""
        with self._transaction() as doc:
            doc["escrows"].pop(mp_escrow_id, None)

    def set_status(self, mp_escrow_id: str, status: str, *, only_from: frozenset[str] = LIVE
                   ) -> None:
        """Move an escrow to ``status`` if its status is in ``only_from``. Going final with
        a pending ticket resolves it from the chain: ``claimed`` means it won."""
        with self._transaction() as doc:
            data = doc["escrows"].get(mp_escrow_id)
            if data is None or data["status"] not in only_from:
                return
            if status == CLAIMED and data.get("pending"):
                data["tickets"] += 1
                data["won_c"], data["won_payee"] = data["pending"]["c"], data["pending"]["payee"]
            if status in FINAL:
                data["pending"] = None
            data["status"] = status

    def reserve_ticket(self, payer_key: str, c: str, payee: str, url: str, r2: str,
                       min_refund_height: int, settle: tuple[str, str, str] | None = None
                       ) -> MpEscrowRecord | None:
        """Bind the next ticket (commitment ``c``, payer randomness ``r2``, ``payee``) to a
        usable escrow of ``payer_key`` durably and return that escrow, or None when none is
        usable: status ``ready``, no pending ticket, ``refund_height >= min_refund_height``.
        The escrow refunded soonest is used first. ``settle`` — ``(mp_escrow_id, c,
        outcome)`` of the previous ticket — is applied first, in the same write, as
        ``resolve`` would."""
        with self._transaction() as doc:
            if settle is not None:
                _resolve(doc, *settle)
            usable = [v for v in doc["escrows"].values()
                      if v["payer_key"] == payer_key and v["status"] == READY
                      and not v.get("pending") and v["refund_height"] >= min_refund_height]
            if not usable:
                return None
            data = min(usable, key=lambda v: (v["refund_height"], v["mp_escrow_id"]))
            data["pending"] = {"c": c, "r2": r2, "payee": payee, "url": url}
            return MpEscrowRecord.from_json(data)

    def resolve(self, mp_escrow_id: str, c: str, outcome: str) -> None:
        """Record the outcome of the escrow's pending ticket for commitment ``c``:
        ``lost`` (accepted, losing: the escrow is free again), ``won`` (the escrow is
        spent), ``refused`` (refused, provably losing: nothing paid, the escrow is free) or
        ``unknown`` (refused without a way to tell: the escrow is retired). Does nothing
        when ``c`` is not the pending ticket (resolved already)."""
        with self._transaction() as doc:
            _resolve(doc, mp_escrow_id, c, outcome)


def _resolve(doc: dict[str, Any], mp_escrow_id: str, c: str, outcome: str) -> None:
    """``MicropayBook.resolve`` on a loaded document."""
    data = doc["escrows"].get(mp_escrow_id)
    if data is None or not data.get("pending") or data["pending"]["c"] != c:
        return
    payee = data["pending"]["payee"]
    data["pending"] = None
    if outcome in (LOST, WINNER):
        data["tickets"] += 1
    if outcome == WINNER:
        data["won_c"], data["won_payee"] = c, payee
        if data["status"] in (READY, RETIRED, PENDING):
            data["status"] = WON
    elif outcome == UNKNOWN and data["status"] == READY:
        data["status"] = RETIRED


def _fold_finished(doc: dict[str, Any]) -> None:
    """Keep at most ``KEEP_FINISHED`` final records; fold older ones into ``totals``."""
    final = [v for v in doc["escrows"].values() if v["status"] in FINAL]
    if len(final) <= KEEP_FINISHED:
        return
    final.sort(key=lambda v: (v["refund_height"], v["mp_escrow_id"]))
    for v in final[:len(final) - KEEP_FINISHED]:
        totals = doc["totals"].setdefault(v["payer_key"], {"escrows": 0, "tickets": 0,
                                                           "wins": 0})
        totals["escrows"] += 1
        totals["tickets"] += v["tickets"]
        totals["wins"] += int(bool(v.get("won_c")))
        del doc["escrows"][v["mp_escrow_id"]]

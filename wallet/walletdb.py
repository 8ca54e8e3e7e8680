"""The wallet's own small records: escrows it created, transactions it sent, escrow betas.

One JSON file, ``<wallet_dir>/wallet.json`` (mode 0600). Every change is a locked
read-modify-write: an exclusive ``flock`` on ``<wallet_dir>/wallet.lock`` is held while
the file is read, changed, written to a temporary file, fsynced and renamed into place,
so two wallet commands running at once never lose each other's records and a crash
leaves either the old or the new file.

Document (version 1)::

    {"version": 1,
     "escrows": {escrow_id_hex: EscrowRecord},   # confirmed ESCROW_CREATEs
     "pending_escrows": {txid_hex: EscrowRecord},  # sent, block (hence id) not yet known
     "sent": {txid_hex: {"genesis", "sender", "nonce", "kind"}},  # unconfirmed nonces
     "betas": {escrow_id_hex: beta}}             # merchant side: units per winning ticket

An escrow's id is ``H(b"escrow", block_hash || txid)`` (SPEC §3.2), so it is only known
once the creating transaction is in a block; until then the record waits under its txid.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wallet.jsonfile import JsonRecord, LockedJsonFile, WalletDBError

__all__ = ["EscrowRecord", "WalletDB", "WalletDBError"]

FILE_VERSION = 1


@dataclass
class EscrowRecord(JsonRecord):
    """An escrow this wallet created (SPEC §3). Amounts in units, heights are rounds.

    ``escrow_id``, ``block_hash``, ``created_height``, ``start`` and ``t_refund`` are
    None until the ESCROW_CREATE is in a block.
    """

    txid: str  # 64 hex digits, the ESCROW_CREATE transaction
    owner_key: str  # name of the key in this wallet that owns the escrow
    owner: str  # owner address, 64 hex digits
    merchants: list[str]  # merchant addresses (hex) in merchant_index order
    chain: str  # profile name reported by the node (getinfo.chain)
    genesis_hash: str  # 64 hex digits: the chain the escrow lives on
    escrow_amount: int  # units
    penalty_amount: int  # units
    win_num: int  # p = win_num / win_den
    win_den: int
    beta: int  # units per winning ticket
    tkt_rate: int  # seqnos per round
    draw_len: int  # rounds per draw group
    l_esc: int  # issuing rounds
    fee: int  # units paid for the ESCROW_CREATE
    escrow_id: str | None = None  # 64 hex digits once confirmed
    block_hash: str | None = None  # including block
    created_height: int | None = None  # height of the including block
    start: int | None = None  # first issuing round
    t_refund: int | None = None  # round whose block refunds the residue
    extra: dict[str, Any] = field(default_factory=dict)  # room for later fields

    RECORD_NAME = "escrow record"


class WalletDB:
    """Locked access to ``<wallet_dir>/wallet.json`` (see the module docstring).

    Nothing is created on disk until the first write.
    """

    def __init__(self, wallet_dir: Path | str) -> None:
        self.wallet_dir = Path(wallet_dir)
        self._file = LockedJsonFile(self.wallet_dir, "wallet", "wallet", _empty())
        self.path = self._file.path

    # ---- plumbing ------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        return self._file.load()

    @contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Yield the document under the lock; it is saved if the block ends normally."""
        with self._file.transaction() as doc:
            yield doc

    def read(self) -> dict[str, Any]:
        """A snapshot of the document. No lock is needed: writers replace the file
        atomically, so a reader sees the old or the new version, never a mix."""
        return self._load()

    # ---- sent transactions (nonce tracking, SPEC §2 rule 4) -------------------------

    def record_sent(self, genesis_hash: str, sender: str, nonce: int, txid: str,
                    kind: str) -> None:
        """Remember a TRANSFER / ESCROW_CREATE sent but not yet known to be confirmed."""
        with self.transaction() as doc:
            doc["sent"][txid] = {"genesis": genesis_hash, "sender": sender, "nonce": nonce,
                                 "kind": kind}

    def forget_sent(self, txids: list[str]) -> None:
        """Drop records of sent transactions (confirmed, rejected or gone)."""
        if not txids:
            return
        with self.transaction() as doc:
            for txid in txids:
                doc["sent"].pop(txid, None)

    def sent_by(self, genesis_hash: str, sender: str) -> dict[int, str]:
        """``{nonce: txid}`` of this wallet's unconfirmed sends from ``sender`` on a chain."""
        return {int(r["nonce"]): txid for txid, r in self.read()["sent"].items()
                if r.get("genesis") == genesis_hash and r.get("sender") == sender}

    # ---- escrows this wallet created ------------------------------------------------

    def add_pending_escrow(self, record: EscrowRecord) -> None:
        """Store an ESCROW_CREATE that was (about to be) sent, keyed by its txid."""
        with self.transaction() as doc:
            doc["pending_escrows"][record.txid] = record.to_json()

    def drop_pending_escrow(self, txid: str) -> None:
        """Forget a pending ESCROW_CREATE (the node rejected it)."""
        with self.transaction() as doc:
            doc["pending_escrows"].pop(txid, None)

    def confirm_escrow(self, txid: str, escrow_id: str, block_hash: str, created_height: int,
                       start: int, t_refund: int) -> EscrowRecord:
        """Move a pending escrow under its id now that its block is known (SPEC §3.2).

        Raises WalletDBError if no pending escrow has this txid.
        """
        with self.transaction() as doc:
            data = doc["pending_escrows"].pop(txid, None)
            if data is None:
                raise WalletDBError(f"no pending escrow with txid {txid} in {self.path}")
            record = EscrowRecord.from_json(data)
            record.escrow_id, record.block_hash = escrow_id, block_hash
            record.created_height, record.start, record.t_refund = (created_height, start,
                                                                     t_refund)
            doc["escrows"][escrow_id] = record.to_json()
            doc["betas"][escrow_id] = record.beta
        return record

    def escrows(self) -> list[EscrowRecord]:
        """Confirmed escrows, oldest first (by creation height)."""
        records = [EscrowRecord.from_json(v) for v in self.read()["escrows"].values()]
        return sorted(records, key=lambda r: (r.created_height or 0, r.escrow_id or ""))

    def pending_escrows(self) -> list[EscrowRecord]:
        """ESCROW_CREATEs sent whose block is not known yet."""
        return [EscrowRecord.from_json(v) for v in self.read()["pending_escrows"].values()]

    def escrow(self, escrow_id: str) -> EscrowRecord | None:
        """The record of a confirmed escrow this wallet created, or None."""
        data = self.read()["escrows"].get(escrow_id)
        return None if data is None else EscrowRecord.from_json(data)

    # ---- merchant side: beta per escrow (for "units redeemed") ----------------------

    def remember_betas(self, betas: dict[str, int]) -> None:
        """Remember ``beta`` (units per winning ticket) of escrows seen on chain."""
        if not betas:
            return
        with self.transaction() as doc:
            doc["betas"].update(betas)

    def betas(self) -> dict[str, int]:
        """``{escrow_id_hex: beta}`` remembered so far."""
        return dict(self.read()["betas"])


def _empty() -> dict[str, Any]:
    return {"version": FILE_VERSION, "escrows": {}, "pending_escrows": {}, "sent": {},
            "betas": {}}

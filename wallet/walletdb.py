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

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from wallet.durable import replace_durably

FILE_VERSION = 1
_MAX_FILE_BYTES = 64 * 1024 * 1024  # far above any real wallet; guards against junk files


class WalletDBError(Exception):
    """The wallet file cannot be read or written; the message names the file and why."""


@dataclass
class EscrowRecord:
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

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> EscrowRecord:
        """Inverse of ``to_json``; unknown keys are ignored. Raises WalletDBError."""
        if not isinstance(data, dict):
            raise WalletDBError("escrow record is not a JSON object")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise WalletDBError(f"escrow record is incomplete: {exc}") from None


class WalletDB:
    """Locked access to ``<wallet_dir>/wallet.json`` (see the module docstring).

    Nothing is created on disk until the first write.
    """

    def __init__(self, wallet_dir: Path | str) -> None:
        self.wallet_dir = Path(wallet_dir)
        self.path = self.wallet_dir / "wallet.json"
        self._lock_path = self.wallet_dir / "wallet.lock"

    # ---- plumbing ------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.wallet_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise WalletDBError(f"cannot open {self._lock_path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return _empty()
        except OSError as exc:
            raise WalletDBError(f"cannot read {self.path}: {exc}") from None
        if len(raw) > _MAX_FILE_BYTES:
            raise WalletDBError(f"{self.path} is too large to be a wallet file")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise WalletDBError(f"{self.path} is not valid JSON; move it aside to start afresh")
        if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
            raise WalletDBError(f"{self.path} is not a version {FILE_VERSION} wallet file")
        for key, value in _empty().items():
            if not isinstance(doc.setdefault(key, value), type(value)):
                raise WalletDBError(f"{self.path}: field {key!r} has the wrong type")
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
        try:
            replace_durably(self.path, data)
        except OSError as exc:
            raise WalletDBError(f"cannot write {self.path}: {exc}") from None

    @contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Yield the document under the lock; it is saved if the block ends normally."""
        with self._locked():
            doc = self._load()
            yield doc
            self._save(doc)

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

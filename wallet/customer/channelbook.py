"""The payer's durable record of its payment channels (SPEC §16).

One JSON file, ``<wallet_dir>/channels.json`` (mode 0600), changed only by locked
read-modify-writes (an exclusive ``flock`` on ``<wallet_dir>/channels.lock``; the file
is written to a temporary file, fsynced and renamed), like ``wallet.json``.

The rule this file exists for: **a voucher number ``k`` is bound to one cumulative
before it is signed.** ``reserve_voucher`` writes ``(k, cumulative)`` durably and only
then may the caller sign and send; a crash after the write leaves the record saying
``k`` means ``cumulative``, and the next payment re-sends exactly that voucher (Ed25519
signatures are deterministic, so it is the same bytes) before signing ``k + 1``. Two
different cumulatives for one ``k`` — an equivocation the payee could prove with
CHANNEL_CHEAT and take deposit and penalty — are never signed by this wallet.

Document (version 1)::

    {"version": 1,
     "channels": {channel_id_hex: ChannelRecord}}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wallet.jsonfile import JsonRecord, LockedJsonFile, WalletDBError

FILE_VERSION = 1


@dataclass
class ChannelRecord(JsonRecord):
    """A channel this wallet opened as payer (SPEC §16). Amounts in units.

    ``k`` / ``cumulative`` are the last voucher reserved (and maybe signed and sent);
    ``acked_k`` the last one the payee acknowledged. ``k > acked_k`` means voucher ``k``
    may not have reached the payee: it is sent again, unchanged, before any new one.
    """

    channel_id: str  # 64 hex digits, H(b"channel", txid)
    txid: str  # the CHANNEL_OPEN
    payer_key: str  # name of the key in this wallet that signs vouchers
    payer: str  # hex address
    payee: str  # hex address
    genesis_hash: str  # 64 hex digits
    deposit: int
    penalty: int
    expiry_height: int
    fee: int  # of the CHANNEL_OPEN
    k: int = 0  # last voucher number reserved
    cumulative: int = 0  # its cumulative
    acked_k: int = 0  # last voucher number the payee acknowledged
    url: str = ""  # payee service the last voucher went to
    receipt: dict | None = None  # the latest receipt (wallet.receipts, JSON form)

    RECORD_NAME = "channel record"


class ChannelBook:
    """Locked access to ``<wallet_dir>/channels.json`` (see the module docstring)."""

    def __init__(self, wallet_dir: Path | str) -> None:
        self.wallet_dir = Path(wallet_dir)
        self._file = LockedJsonFile(self.wallet_dir, "channels", "channel",
                                    {"version": FILE_VERSION, "channels": {}})
        self.path = self._file.path
        self._transaction = self._file.transaction
        self._load = self._file.load

    def add(self, record: ChannelRecord) -> None:
        """Store a channel about to be opened (before its CHANNEL_OPEN is sent)."""
        with self._transaction() as doc:
            doc["channels"][record.channel_id] = record.to_json()

    def drop(self, channel_id: str) -> None:
        """Forget a channel whose CHANNEL_OPEN the node rejected."""
        with self._transaction() as doc:
            doc["channels"].pop(channel_id, None)

    def get(self, channel_id: str) -> ChannelRecord | None:
        """The record of ``channel_id`` or None."""
        data = self._load()["channels"].get(channel_id)
        return None if data is None else ChannelRecord.from_json(data)

    def all(self) -> list[ChannelRecord]:
        """Every channel, by expiry height."""
        records = [ChannelRecord.from_json(v) for v in self._load()["channels"].values()]
        return sorted(records, key=lambda r: (r.expiry_height, r.channel_id))

    def reserve_voucher(self, channel_id: str, amount: int) -> ChannelRecord:
        """Bind voucher ``k + 1`` to ``cumulative + amount`` durably; return the record.

        Raises WalletDBError if the channel is unknown, ``amount < 0``, the new total
        exceeds the deposit, or the last voucher is still unacknowledged (send it first
        with ``resend`` semantics: see ``wallet.customer.channel``).
        """
        with self._transaction() as doc:
            data = doc["channels"].get(channel_id)
            if data is None:
                raise WalletDBError(f"no channel {channel_id} in {self.path}")
            record = ChannelRecord.from_json(data)
            if record.k > record.acked_k:
                raise WalletDBError(f"voucher {record.k} of channel {channel_id} is not "
                                    "acknowledged yet; it must be delivered first")
            total = record.cumulative + amount
            if amount < 0 or total > record.deposit:
                raise WalletDBError(f"paying {amount} units would bring the channel to "
                                    f"{total} of its {record.deposit}-unit deposit")
            record.k, record.cumulative = record.k + 1, total
            doc["channels"][channel_id] = record.to_json()
        return record

    def acknowledge(self, channel_id: str, k: int, url: str,
                    receipt: dict | None = None) -> None:
        """Note that the payee at ``url`` acknowledged voucher ``k``, with its point of
        sale's ``receipt`` (JSON form, already verified) when it gave one."""
        with self._transaction() as doc:
            data = doc["channels"].get(channel_id)
            if data is None:
                return
            if data.get("acked_k", 0) < k:
                data["acked_k"], data["url"] = k, url
            held = data.get("receipt")
            if receipt is not None and (held is None or held.get("k", 0) <= k):
                data["receipt"] = receipt

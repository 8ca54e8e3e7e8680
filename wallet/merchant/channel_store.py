"""The payee's durable channel store: LevelDB (plyvel), every write ``sync=True`` (SPEC §16).

A voucher is acknowledged only after ``accept`` returned, so nothing acknowledged is lost
across a crash. Each write is one batch (record + history, or record + proof), so after
a crash the best voucher, its history and the close in flight always agree.

Layout (integers big-endian; values msgpack):

| key | value |
|---|---|
| ``C`` channel_id(32) | ``[payer, deposit, penalty, expiry_height, k, cumulative, sig, status, txid or None, sent_height, reason]`` |
| ``H`` channel_id k(8) | ``[cumulative, sig]`` — every voucher accepted (finds an equivocation at any earlier ``k``) |
| ``Q`` channel_id | ``[voucher_a, voucher_b]`` (encoded vouchers) — a proven equivocation |
| ``O`` peer_id(8) seq(8) | an encoded receipt (``wallet.receipts``) still to be pushed to that peer point of sale |

Statuses: ``open`` (accepting), ``closing`` / ``cheating`` (a CHANNEL_CLOSE / CHANNEL_CHEAT
recorded before it was sent, in flight), ``closed`` / ``cheated`` (confirmed), ``expired``
(gone from the chain unclosed), ``failed`` (a rejection retrying cannot fix; ``reason``),
``settled`` (a point of sale other than 0, which never sends CHANNEL_CLOSE: the channel
left the chain after its acceptance stopped).

Several points of sale (docs/DESIGN.md "Several points of sale of one payee"): a voucher
this point accepted is written in the same batch as one outbox entry (``O``) per peer, so
nothing acknowledged is lost to the peers either; ``learn`` takes a voucher another point
accepted (from a receipt) into the history, where it meets every voucher accepted here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from consensus.channel import ChannelState, Voucher
from wallet.merchant.leveldb import LevelDBStore, pack, unpack

OPEN, CLOSING, CHEATING = "open", "closing", "cheating"
CLOSED, CHEATED, EXPIRED, FAILED = "closed", "cheated", "expired", "failed"
SETTLED = "settled"
LIVE_STATUSES = frozenset((OPEN, CLOSING, CHEATING))
STATUSES = (OPEN, CLOSING, CHEATING, CLOSED, CHEATED, EXPIRED, FAILED, SETTLED)
KNOWN, NEW, EQUIVOCATION = "known", "new", "equivocation"  # what ``learn`` found

_CHANNEL, _HISTORY, _PROOF, _OUTBOX = b"C", b"H", b"Q", b"O"



class ChannelStoreError(Exception):
    """The store cannot be opened (in use by another process, or not a store)."""


@dataclass(frozen=True)
class StoredChannel:
    """A channel with at least one accepted voucher, and what the payee does with it."""

    channel_id: bytes
    payer: bytes
    deposit: int
    penalty: int
    expiry_height: int
    k: int  # best (last accepted) voucher
    cumulative: int
    sig: bytes
    status: str  # one of STATUSES
    txid: bytes | None  # CHANNEL_CLOSE / CHANNEL_CHEAT in flight or confirmed
    sent_height: int  # best height when it was built
    reason: str  # why ``failed``

    @property
    def voucher(self) -> Voucher:
        """The best voucher."""
        return Voucher(self.k, self.cumulative, self.sig)

    def _value(self) -> bytes:
        return pack([self.payer, self.deposit, self.penalty, self.expiry_height, self.k,
                      self.cumulative, self.sig, self.status, self.txid, self.sent_height,
                      self.reason])

    def to_json(self) -> dict:
        """JSON-friendly form for ``GET /v1/channels`` and ``merchant status``."""
        return {"channel_id": self.channel_id.hex(), "payer": self.payer.hex(),
                "deposit": self.deposit, "penalty": self.penalty,
                "expiry_height": self.expiry_height, "k": self.k,
                "cumulative": self.cumulative, "status": self.status,
                "txid": None if self.txid is None else self.txid.hex(),
                "reason": self.reason}


class ChannelStore(LevelDBStore):
    """LevelDB store of the payee's channels at ``path`` (created if missing).

    Raises ``ChannelStoreError`` if another process holds it. Use as a context manager or
    call ``close``. Thread-safe (one lock around read-modify-writes).
    """

    WHAT = "channel store"
    ERROR = ChannelStoreError

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self._outbox_counts: dict[bytes, int] = {}
        self._next_seq = 0
        for key in self._db.iterator(prefix=_OUTBOX, include_value=False):
            peer = key[1:9]
            self._outbox_counts[peer] = self._outbox_counts.get(peer, 0) + 1
            self._next_seq = max(self._next_seq, int.from_bytes(key[9:17], "big") + 1)

    # ---- reads -----------------------------------------------------------------------

    def get(self, channel_id: bytes) -> StoredChannel | None:
        """The record of ``channel_id`` or None (no voucher accepted yet)."""
        raw = self._db.get(_CHANNEL + channel_id)
        if raw is None:
            return None
        payer, deposit, penalty, expiry, k, cum, sig, status, txid, sent, reason = unpack(raw)
        return StoredChannel(channel_id, payer, deposit, penalty, expiry, k, cum, sig, status,
                             txid, sent, reason)

    def voucher_at(self, channel_id: bytes, k: int) -> Voucher | None:
        """The voucher number ``k`` accepted on ``channel_id``, or None."""
        raw = self._db.get(_HISTORY + channel_id + k.to_bytes(8, "big"))
        if raw is None:
            return None
        cumulative, sig = unpack(raw)
        return Voucher(k, cumulative, sig)

    def proof(self, channel_id: bytes) -> tuple[Voucher, Voucher] | None:
        """The equivocation kept for ``channel_id`` (two vouchers, same ``k``), or None."""
        raw = self._db.get(_PROOF + channel_id)
        if raw is None:
            return None
        a, b = unpack(raw)
        return Voucher.decode(a), Voucher.decode(b)

    def channels(self) -> Iterator[StoredChannel]:
        """Every stored channel in id order."""
        for key, _ in self._db.iterator(prefix=_CHANNEL):
            yield self.get(key[1:])

    def live_channels(self) -> list[StoredChannel]:
        """Channels still to be closed or followed (status open, closing or cheating)."""
        return [c for c in self.channels() if c.status in LIVE_STATUSES]

    def summaries(self) -> list[dict]:
        """``to_json`` of every channel, for status."""
        return [c.to_json() for c in self.channels()]

    # ---- writes (each one synced batch) ------------------------------------------------

    def accept(self, channel_id: bytes, channel: ChannelState, voucher: Voucher, *,
               receipt: bytes = b"", peers: tuple[bytes, ...] = ()) -> StoredChannel:
        """Record ``voucher`` as the best one of ``channel_id`` (the caller checked it with
        ``verify_voucher_for_payee``), synced before returning. With ``peers`` (8-byte peer
        ids) the encoded ``receipt`` is queued for each of them in the same batch."""
        with self._lock:
            old = self.get(channel_id)
            if old is None:
                record = StoredChannel(channel_id, channel.payer, channel.deposit,
                                       channel.penalty, channel.expiry_height, voucher.k,
                                       voucher.cumulative, voucher.sig, OPEN, None, 0, "")
            else:
                record = replace(old, k=voucher.k, cumulative=voucher.cumulative,
                                 sig=voucher.sig)
            with self._db.write_batch(sync=True) as batch:
                batch.put(_CHANNEL + channel_id, record._value())
                batch.put(_HISTORY + channel_id + voucher.k.to_bytes(8, "big"),
                          pack([voucher.cumulative, voucher.sig]))
                for peer in peers:
                    batch.put(_OUTBOX + peer + self._next_seq.to_bytes(8, "big"), receipt)
            for peer in peers:
                self._outbox_counts[peer] = self._outbox_counts.get(peer, 0) + 1
            self._next_seq += 1
        return record

    def learn(self, channel_id: bytes, channel: ChannelState, voucher: Voucher) -> str:
        """Take in a voucher another point of sale accepted (its receipt was verified by
        the caller: payee's receipt signature, payer's voucher signature), synced.

        Returns ``KNOWN`` (voucher ``k`` already held with this cumulative: nothing
        written), ``EQUIVOCATION`` (held with another cumulative: both kept as the proof,
        if none was kept yet) or ``NEW`` (added to the history; it becomes the best
        voucher when its ``k`` is above the best one's, so the next voucher accepted here
        is ``k + 1`` with at least its cumulative plus the price).
        """
        with self._lock:
            hkey = _HISTORY + channel_id + voucher.k.to_bytes(8, "big")
            raw = self._db.get(hkey)
            if raw is not None:
                cumulative, sig = unpack(raw)
                if cumulative == voucher.cumulative:
                    return KNOWN
                if self._db.get(_PROOF + channel_id) is None:
                    self._db.put(_PROOF + channel_id, pack(
                        [Voucher(voucher.k, cumulative, sig).encode(), voucher.encode()]),
                        sync=True)
                return EQUIVOCATION
            old = self.get(channel_id)
            if old is None:
                record = StoredChannel(channel_id, channel.payer, channel.deposit,
                                       channel.penalty, channel.expiry_height, voucher.k,
                                       voucher.cumulative, voucher.sig, OPEN, None, 0, "")
            elif voucher.k > old.k:
                record = replace(old, k=voucher.k, cumulative=voucher.cumulative,
                                 sig=voucher.sig)
            else:
                record = old
            with self._db.write_batch(sync=True) as batch:
                if record is not old:
                    batch.put(_CHANNEL + channel_id, record._value())
                batch.put(hkey, pack([voucher.cumulative, voucher.sig]))
            return NEW

    # ---- outbox to peer points of sale ---------------------------------------------------

    def enqueue(self, receipt: bytes, peers: tuple[bytes, ...]) -> None:
        """Queue an encoded receipt for ``peers`` (8-byte ids) alone, synced: the refused
        half of an equivocation, so that every point holds the proof."""
        with self._lock:
            with self._db.write_batch(sync=True) as batch:
                for peer in peers:
                    batch.put(_OUTBOX + peer + self._next_seq.to_bytes(8, "big"), receipt)
            for peer in peers:
                self._outbox_counts[peer] = self._outbox_counts.get(peer, 0) + 1
            self._next_seq += 1

    def outbox_count(self, peer: bytes) -> int:
        """Receipts still queued for ``peer`` (8-byte id)."""
        return self._outbox_counts.get(peer, 0)

    def outbox(self, peer: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` ``(key, encoded receipt)`` queued for ``peer``, oldest first."""
        out = []
        for key, value in self._db.iterator(prefix=_OUTBOX + peer):
            out.append((key, value))
            if len(out) >= limit:
                break
        return out

    def outbox_done(self, peer: bytes, keys: list[bytes]) -> None:
        """Drop entries ``peer`` has acknowledged (keys from ``outbox``), synced."""
        with self._lock:
            with self._db.write_batch(sync=True) as batch:
                for key in keys:
                    batch.delete(key)
            self._outbox_counts[peer] = max(0, self._outbox_counts.get(peer, 0) - len(keys))

    def add_proof(self, channel_id: bytes, voucher_a: Voucher, voucher_b: Voucher) -> bool:
        """Keep an equivocation (both signatures checked by the caller); True if new."""
        with self._lock:
            if self._db.get(_PROOF + channel_id) is not None:
                return False
            self._db.put(_PROOF + channel_id, pack([voucher_a.encode(), voucher_b.encode()]),
                         sync=True)
            return True

    def set_status(self, channel_id: bytes, status: str, *, txid: bytes | None = None,
                   sent_height: int | None = None, reason: str = "") -> StoredChannel:
        """Change a channel's status (with the transaction in flight, if any), synced.
        Raises ``KeyError`` for an unknown channel."""
        with self._lock:
            old = self.get(channel_id)
            if old is None:
                raise KeyError(channel_id.hex())
            record = replace(old, status=status, reason=reason,
                             txid=old.txid if txid is None else txid,
                             sent_height=old.sent_height if sent_height is None else sent_height)
            self._db.put(_CHANNEL + channel_id, record._value(), sync=True)
        return record

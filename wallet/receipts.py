"""Channel receipts: the last accepted channel state, signed by the point of sale that
accepted it (SPEC §16 "passed ... as a receipt signed by the point of sale", wallet level;
docs/DESIGN.md "Several points of sale of one payee").

A receipt carries the payer's voucher itself, so whoever is shown one learns the exact
voucher ``k`` (and can use it as half of an equivocation proof), plus who accepted it::

    receipt = [channel_id(32), k, cumulative, voucher_sig(64), pos_index, sig(64)]
    sig     = Ed25519 by the payee key over
              H(b"channel-receipt", genesis_hash || channel_id ||
                packb([k, cumulative, voucher_sig, pos_index]))

Every point of sale of a payee holds the payee's seed (it signs CHANNEL_CLOSE /
CHANNEL_CHEAT), so the receipt is signed with the payee key and names the point of sale
by its index; a per-point key derived from the same seed would prove nothing more. A
receipt verifies when the receipt signature is the channel's payee's and the voucher
signature is the channel's payer's (``verify_receipt``). Only receipts of the payee's own
points of sale are ever believed: a payer cannot forge one, and a point of sale's peers
push nothing but receipts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consensus import keys
from consensus.channel import Voucher, verify_voucher_signature
from consensus.encoding import packb, unpackb_canonical
from consensus.errors import DecodeError
from consensus.hashing import tagged_hash

RECEIPT_TAG = b"channel-receipt"
MAX_POS_INDEX = 255  # points of sale of one payee: 0 ... 255
_U64 = 2**64


class ReceiptError(Exception):
    """A receipt that is malformed (bad JSON shape or encoding)."""


@dataclass(frozen=True)
class Receipt:
    """Voucher ``(k, cumulative, voucher_sig)`` of ``channel_id`` as accepted by point of
    sale ``pos_index``; ``sig`` by the payee key (module docstring). Amounts in units."""

    channel_id: bytes
    k: int
    cumulative: int
    voucher_sig: bytes
    pos_index: int
    sig: bytes

    @property
    def voucher(self) -> Voucher:
        """The payer's voucher the receipt carries."""
        return Voucher(self.k, self.cumulative, self.voucher_sig)

    def encode(self) -> bytes:
        """msgpack array ``[channel_id, k, cumulative, voucher_sig, pos_index, sig]``."""
        return packb([self.channel_id, self.k, self.cumulative, self.voucher_sig,
                      self.pos_index, self.sig])

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        """Inverse of ``encode``; raises ``ReceiptError`` for anything else."""
        try:
            obj = unpackb_canonical(data)
        except DecodeError:
            raise ReceiptError("receipt is not canonical msgpack") from None
        if not isinstance(obj, list) or len(obj) != 6:
            raise ReceiptError("receipt is not a 6-field array")
        cid, k, cum, vsig, pos, sig = obj
        receipt = cls(cid, k, cum, vsig, pos, sig)
        _check_fields(receipt)
        if receipt.encode() != data:
            raise ReceiptError("receipt is not canonical")
        return receipt

    def to_json(self) -> dict[str, Any]:
        """Wire form: ``{"channel_id", "k", "cumulative", "voucher_sig", "pos", "sig"}``
        (bytes as hex)."""
        return {"channel_id": self.channel_id.hex(), "k": self.k,
                "cumulative": self.cumulative, "voucher_sig": self.voucher_sig.hex(),
                "pos": self.pos_index, "sig": self.sig.hex()}

    @classmethod
    def from_json(cls, data: Any) -> Receipt:
        """Inverse of ``to_json``; raises ``ReceiptError``."""
        if not isinstance(data, dict):
            raise ReceiptError("receipt must be a JSON object")
        receipt = cls(parse_hex(data.get("channel_id"), 32, "receipt.channel_id"),
                      data.get("k"), data.get("cumulative"),
                      parse_hex(data.get("voucher_sig"), 64, "receipt.voucher_sig"),
                      data.get("pos"), parse_hex(data.get("sig"), 64, "receipt.sig"))
        _check_fields(receipt)
        return receipt


def parse_hex(value: Any, size: int, what: str,
              error: type[Exception] = ReceiptError) -> bytes:
    """``size`` bytes from a JSON string of ``2 * size`` hex digits; raises ``error``
    naming ``what`` otherwise (voucher and receipt bodies share it)."""
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != size:
        raise error(f"{what} must be {2 * size} hex digits")
    return raw


def _check_fields(r: Receipt) -> None:
    for value, size, what in ((r.channel_id, 32, "channel_id"), (r.voucher_sig, 64,
                              "voucher_sig"), (r.sig, 64, "sig")):
        if not isinstance(value, bytes) or len(value) != size:
            raise ReceiptError(f"receipt {what} must be {size} bytes")
    for value, what in ((r.k, "k"), (r.cumulative, "cumulative")):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _U64:
            raise ReceiptError(f"receipt {what} must be an integer 0 <= x < 2^64")
    if r.k < 1:
        raise ReceiptError("receipt k must be >= 1")
    if (not isinstance(r.pos_index, int) or isinstance(r.pos_index, bool)
            or not 0 <= r.pos_index <= MAX_POS_INDEX):
        raise ReceiptError(f"receipt pos must be an integer 0 ... {MAX_POS_INDEX}")


def compute_receipt_message(genesis_hash: bytes, channel_id: bytes, voucher: Voucher,
                            pos_index: int) -> bytes:
    """``H(b"channel-receipt", genesis_hash || channel_id || packb([k, cumulative,
    voucher_sig, pos_index]))`` — the 32 bytes a receipt signature covers."""
    return tagged_hash(RECEIPT_TAG, genesis_hash + channel_id + packb(
        [voucher.k, voucher.cumulative, voucher.sig, pos_index]))


def sign_receipt(payee_seed: bytes, genesis_hash: bytes, channel_id: bytes,
                 voucher: Voucher, pos_index: int) -> Receipt:
    """The receipt of point of sale ``pos_index`` for ``voucher`` (32-byte payee seed)."""
    message = compute_receipt_message(genesis_hash, channel_id, voucher, pos_index)
    sig = keys.sign(payee_seed, message)
    return Receipt(channel_id, voucher.k, voucher.cumulative, voucher.sig, pos_index, sig)


def verify_receipt_signature(payee: bytes, genesis_hash: bytes, receipt: Receipt) -> bool:
    """Whether ``receipt.sig`` is the payee's (32-byte key) over the receipt message."""
    message = compute_receipt_message(genesis_hash, receipt.channel_id, receipt.voucher,
                                      receipt.pos_index)
    return keys.verify(payee, message, receipt.sig)


def verify_receipt(payee: bytes, payer: bytes, genesis_hash: bytes,
                   receipt: Receipt) -> str | None:
    """Check a receipt of a channel paying ``payer`` → ``payee``: the reason it fails
    (``bad-receipt-signature``: not signed by the payee; ``bad-voucher-signature``: the
    voucher inside is not the payer's), or None when it holds."""
    if not verify_receipt_signature(payee, genesis_hash, receipt):
        return "bad-receipt-signature"
    if not verify_voucher_signature(payer, genesis_hash, receipt.channel_id, receipt.voucher):
        return "bad-voucher-signature"
    return None

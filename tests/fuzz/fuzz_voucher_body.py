"""Fuzz target: the payee's ``POST /v1/vouchers`` body parser (SPEC §16, wallet level).

``wallet.merchant.channel_service.parse_voucher_request`` turns any byte string into
``(channel_id, Voucher, Receipt or None)`` or refuses it with ``VoucherRequestError`` (HTTP 400); what it
returns has a 32-byte id, a 64-byte signature and u64 ``k`` / ``cumulative``, and
re-encodes to an equal request. Nothing else may escape (deep nesting included).
"""

from __future__ import annotations

import json

from consensus.channel import sign_voucher
from wallet.customer.channel import voucher_request
from wallet.merchant.channel_service import VoucherRequestError, parse_voucher_request
from wallet.receipts import sign_receipt

EXPECTED: tuple[type[BaseException], ...] = (VoucherRequestError,)

_CID = bytes([7]) * 32
_GOOD = voucher_request(_CID, sign_voucher(bytes([1]) * 32, bytes(range(32)), _CID, 3, 99))

_V = sign_voucher(bytes([1]) * 32, bytes(range(32)), _CID, 3, 99)
_RECEIPT = sign_receipt(bytes([2]) * 32, bytes(range(32)), _CID, _V, 1).to_json()

SEEDS: list[bytes] = [
    _GOOD,
    voucher_request(_CID, _V, _RECEIPT),
    voucher_request(_CID, sign_voucher(bytes([2]) * 32, bytes(32), _CID, 2**64 - 1, 0)),
]


def target(data: bytes) -> None:
    """Parse ``data`` as a voucher request."""
    channel_id, voucher, receipt = parse_voucher_request(data)
    assert len(channel_id) == 32 and len(voucher.sig) == 64
    assert 0 <= voucher.k < 2**64 and 0 <= voucher.cumulative < 2**64
    shown = None if receipt is None else receipt.to_json()
    assert parse_voucher_request(voucher_request(channel_id, voucher, shown)) == (
        channel_id, voucher, receipt)
    json.loads(data)  # it was JSON

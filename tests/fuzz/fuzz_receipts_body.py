"""Fuzz target: a peer point of sale's ``POST /v1/receipts`` body (docs/DESIGN.md "Several
points of sale of one payee").

``wallet.merchant.pos_gossip.parse_receipts_request`` turns any byte string into a list
of at most ``PUSH_BATCH`` entries, each a ``Receipt`` (well-formed fields, re-encoding
to bytes that decode back to it) or a reason string, or refuses the body with
``ValueError`` (HTTP 400). Nothing else may escape (deep nesting included).
"""

from __future__ import annotations

import json

from consensus.channel import sign_voucher
from wallet.merchant.pos_gossip import PUSH_BATCH, parse_receipts_request, receipts_request
from wallet.receipts import Receipt, sign_receipt

EXPECTED: tuple[type[BaseException], ...] = (ValueError,)

_CID = bytes([7]) * 32
_GENESIS = bytes(range(32))
_R = [sign_receipt(bytes([2]) * 32, _GENESIS, _CID,
                   sign_voucher(bytes([1]) * 32, _GENESIS, _CID, k, k // 2), k % 3)
      for k in (1, 2, 2**64 - 1)]

SEEDS: list[bytes] = [
    receipts_request(0, [r.encode() for r in _R]),
    receipts_request(1, []),
    json.dumps({"pos": 0, "receipts": [{"k": 1}, None, "x"]}).encode(),
]


def target(data: bytes) -> None:
    """Parse ``data`` as a push of receipts."""
    entries = parse_receipts_request(data)
    assert len(entries) <= PUSH_BATCH
    for entry in entries:
        if isinstance(entry, str):
            continue
        assert Receipt.decode(entry.encode()) == entry
        assert Receipt.from_json(entry.to_json()) == entry
    json.loads(data)  # it was JSON

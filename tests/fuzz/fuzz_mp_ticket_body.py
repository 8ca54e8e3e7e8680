"""Fuzz target: the payee's ``POST /v1/mp/tickets`` body parser (SPEC §15, wallet level).

``wallet.merchant.mp_service.parse_ticket_request`` turns any byte string into a list of
1–256 ``MpTicket`` or refuses it with ``MpRequestError`` (HTTP 400); what it returns has
32-byte ids and commitments, 16-byte ``r2`` and 64-byte signatures, and re-encodes to an
equal request. Nothing else may escape (deep nesting included).
"""

from __future__ import annotations

import json

from consensus.micropay import sign_mp_ticket
from wallet.merchant.mp_service import (MpRequestError, parse_commitment_request,
                                        parse_ticket_request, ticket_json)

EXPECTED: tuple[type[BaseException], ...] = (MpRequestError,)

_TICKET = sign_mp_ticket(bytes([1]) * 32, bytes(range(32)), bytes([7]) * 32, bytes([9]) * 32,
                         bytes([3]) * 16, bytes([2]) * 32)

SEEDS: list[bytes] = [
    json.dumps({"tickets": [ticket_json(_TICKET)]}).encode(),
    json.dumps({"tickets": [ticket_json(_TICKET)] * 3}).encode(),
    b'{"count": 5}',
]


def target(data: bytes) -> None:
    """Parse ``data`` as a ticket request (and, if that fails, as a commitment request)."""
    try:
        tickets = parse_ticket_request(data)
    except MpRequestError:
        count = parse_commitment_request(data)
        assert 1 <= count <= 256
        return
    assert 1 <= len(tickets) <= 256
    for t in tickets:
        assert (len(t.mp_escrow_id), len(t.c), len(t.r2), len(t.ticket_sig)) == (32, 32, 16, 64)
    again = json.dumps({"tickets": [ticket_json(t) for t in tickets]}).encode()
    assert parse_ticket_request(again) == tickets
    json.loads(data)  # it was JSON

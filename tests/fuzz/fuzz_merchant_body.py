"""Fuzz target: the merchant service's ``POST /v1/tickets`` body parser (SPEC §4, §13).

``wallet.merchant.service.parse_ticket_body`` turns any byte string into one entry per
107-byte record or refuses the request as a whole with ``RequestError`` (400 for a length
that is not a multiple of 107, 413 past 10 000 tickets); each entry agrees with
``consensus.ticket.Ticket.decode`` of its record (the fast parser must not grow a rule of
its own). ``check_content_type`` refuses any media type but ``application/octet-stream``
with a 415. Nothing else may escape.
"""

from __future__ import annotations

from consensus.errors import DecodeError
from consensus.ticket import TICKET_SIZE, Ticket, sign_ticket
from wallet.merchant.service import (MAX_TICKETS_PER_REQUEST, RequestError, check_content_type,
                                     parse_ticket_body)

EXPECTED: tuple[type[BaseException], ...] = (RequestError,)

_GENESIS, _ESCROW = bytes(range(32)), bytes([7]) * 32
_GOOD = sign_ticket(bytes([1]) * 32, _GENESIS, _ESCROW, 1, 5).encode()

# Valid request bodies (the runner requires seeds to pass without any exception); records
# that do not decode are still a valid body: they come back as None (bad-encoding).
SEEDS: list[bytes] = [
    b"",
    _GOOD,
    _GOOD * 3,
    b"\x02" + _GOOD[1:],  # unknown version
    _GOOD + b"\x00" * TICKET_SIZE,  # a good ticket and a version-0 record
    b"\xff" * (2 * TICKET_SIZE),
]


def target(data: bytes) -> None:
    """Parse ``data`` as a request body, and its first line as a Content-Type value."""
    try:
        parsed = parse_ticket_body(data)
    except RequestError as exc:
        assert exc.status in (400, 413), exc.status
        assert (exc.status == 400) == (len(data) % TICKET_SIZE != 0)
        raise
    assert len(parsed) == len(data) // TICKET_SIZE <= MAX_TICKETS_PER_REQUEST
    for i, fields in enumerate(parsed):
        record = data[i * TICKET_SIZE:(i + 1) * TICKET_SIZE]
        try:
            decoded = Ticket.decode(record)
        except DecodeError:
            assert fields is None, "the parser accepted a record Ticket.decode refuses"
            continue
        assert fields is not None and fields.ticket() == decoded
        assert decoded.encode() == record
    header = data.split(b"\n", 1)[0].decode("latin-1")
    try:
        check_content_type(header)
    except RequestError as exc:
        assert exc.status == 415
        return
    assert header.partition(";")[0].strip().lower() == "application/octet-stream"

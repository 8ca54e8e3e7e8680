"""Fuzz ``Ticket.decode`` (SPEC §4, 107 fixed bytes): only DecodeError; exact round trip."""

from consensus.errors import DecodeError
from consensus.ticket import Ticket, verify_ticket_signature
from tests.fuzz.samples import GENESIS_HASH, KEYS, TICKETS

EXPECTED = (DecodeError,)
SEEDS = [t.encode() for t in TICKETS]


def target(data: bytes) -> None:
    ticket = Ticket.decode(data)
    assert ticket.encode() == data
    ticket.key  # noqa: B018 - the property must not raise
    verify_ticket_signature(ticket, KEYS[0], GENESIS_HASH)  # never raises

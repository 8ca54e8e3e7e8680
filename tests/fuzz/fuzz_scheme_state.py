"""Fuzz the SPEC §15-§16 state records and off-chain objects: ``MpEscrowState``,
``ChannelState``, ``MpTicket`` and ``Voucher`` decoders raise only DecodeError and round
trip exactly. The first byte picks the decoder, the rest is its input."""

from consensus.channel import ChannelState, Voucher
from consensus.errors import DecodeError
from consensus.micropay import MpEscrowState, MpTicket
from tests.fuzz.samples import CHANNEL, MP_ESCROW, MP_TICKET, VOUCHERS

DECODERS = (MpEscrowState, ChannelState, MpTicket, Voucher)
EXPECTED = (DecodeError,)
SEEDS = [bytes([i]) + obj.encode()
         for i, obj in enumerate((MP_ESCROW, CHANNEL, MP_TICKET, VOUCHERS[0]))]


def target(data: bytes) -> None:
    if not data:
        raise DecodeError("empty input")
    decoded = DECODERS[data[0] % len(DECODERS)].decode(data[1:])
    assert decoded.encode() == data[1:]

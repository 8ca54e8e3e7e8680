"""Properties of the canonical encoding (SPEC §0, §4, §10): round trips, and rejection of
every non-canonical variant (a wider msgpack form of any node, an appended byte)."""

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.block import Block, Header
from consensus.channel import (ChannelCheatBody, ChannelCloseBody, ChannelOpenBody,
                               ChannelState, Voucher)
from consensus.encoding import packb
from consensus.errors import ConsensusError
from consensus.escrow import EscrowState
from consensus.micropay import MpClaimBody, MpEscrowBody, MpEscrowState, MpTicket
from consensus.ticket import Ticket
from consensus.tx import (CHANNEL_CHEAT, CHANNEL_CLOSE, CHANNEL_OPEN, CHEAT_PROOF, COINBASE,
                          ESCROW_CREATE, MP_CLAIM, MP_ESCROW, REDEEM, TRANSFER, Tx)
from tests.consensus_helpers import assert_rejects, widenable_count, widened

SETTINGS = settings(max_examples=50, deadline=None)

u63 = st.one_of(st.integers(0, 300), st.integers(0, 2**63 - 1))
u64 = st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1))
h32 = st.binary(min_size=32, max_size=32)
sig64 = st.binary(min_size=64, max_size=64)
r16 = st.binary(min_size=16, max_size=16)
vouchers = st.builds(Voucher, k=u63, cumulative=u63, sig=sig64)

tickets = st.builds(Ticket, version=st.just(1), merchant_index=st.integers(0, 2**16 - 1),
                    escrow_id=h32, seqno=u64, sig=sig64)
raw_tickets = tickets.map(Ticket.encode)

bodies = {
    COINBASE: st.lists(st.tuples(h32, u63).map(list), max_size=17),
    TRANSFER: st.tuples(h32, u63).map(list),
    ESCROW_CREATE: st.tuples(*[u63] * 7, st.lists(h32, max_size=4)).map(list),
    REDEEM: st.lists(raw_tickets, min_size=1, max_size=4),
    CHEAT_PROOF: st.tuples(raw_tickets, st.one_of(st.none(), raw_tickets)).map(list),
    MP_ESCROW: st.builds(MpEscrowBody, amount=u63, win_bits=u63, refund_height=u63),
    MP_CLAIM: st.builds(MpClaimBody, mp_escrow_id=h32, r1=r16, r2=r16, ticket_sig=sig64),
    CHANNEL_OPEN: st.builds(ChannelOpenBody, payee=h32, deposit=u63, penalty=u63,
                            expiry_height=u63),
    CHANNEL_CLOSE: st.builds(ChannelCloseBody, channel_id=h32, voucher=vouchers),
    CHANNEL_CHEAT: st.builds(ChannelCheatBody, channel_id=h32, voucher_a=vouchers,
                             voucher_b=vouchers),
}


@st.composite
def txs(draw, kind=None):
    kind = draw(st.sampled_from(sorted(bodies))) if kind is None else kind
    return Tx(1, kind, draw(h32), draw(u63), draw(u63), draw(bodies[kind]), draw(sig64))


headers = st.builds(Header, version=st.just(1), height=u63, prev_hash=h32, timestamp=u63,
                    target=st.integers(0, 2**256 - 1), nonce=u64, tx_root=h32, vdf=h32,
                    vdf_checkpoints=st.lists(h32, max_size=3).map(tuple))
blocks = st.builds(Block, header=headers, txs=st.lists(txs(), max_size=4).map(tuple))
escrow_states = st.builds(
    EscrowState, owner=h32, escrow_balance=u63, penalty_balance=u63, win_num=u63,
    win_den=u63, beta=u63, tkt_rate=u63, draw_len=u63, l_esc=u63,
    merchants=st.lists(h32, max_size=4).map(tuple), created_height=u63, start=u63,
    t_refund=u63, broken=st.booleans())

mp_escrow_states = st.builds(MpEscrowState, owner=h32, amount=u63, win_bits=u63,
                             refund_height=u63)
channel_states = st.builds(ChannelState, payer=h32, payee=h32, deposit=u63, penalty=u63,
                           expiry_height=u63)
mp_tickets = st.builds(MpTicket, mp_escrow_id=h32, c=h32, r2=r16, ticket_sig=sig64)

OBJECTS = st.one_of(
    txs().map(lambda o: (o, Tx.decode)),
    mp_escrow_states.map(lambda o: (o, MpEscrowState.decode)),
    channel_states.map(lambda o: (o, ChannelState.decode)),
    mp_tickets.map(lambda o: (o, MpTicket.decode)),
    vouchers.map(lambda o: (o, Voucher.decode)),
    headers.map(lambda o: (o, Header.decode)),
    blocks.map(lambda o: (o, Block.decode)),
    escrow_states.map(lambda o: (o, EscrowState.decode)),
)


@SETTINGS
@given(OBJECTS)
def test_round_trip(pair):
    obj, decode = pair
    raw = obj.encode()
    assert decode(raw) == obj
    assert raw == packb(obj.to_obj())


@SETTINGS
@given(tickets)
def test_ticket_round_trip(ticket):
    raw = ticket.encode()
    assert len(raw) == 107
    assert Ticket.decode(raw) == ticket


@SETTINGS
@given(OBJECTS, st.data())
def test_any_wider_form_is_rejected(pair, data):
    obj, decode = pair
    tree = obj.to_obj()
    n = widenable_count(tree)
    index = data.draw(st.integers(0, n - 1))
    raw = widened(tree, index)
    assert raw != obj.encode()
    assert msgpack.unpackb(raw) == msgpack.unpackb(obj.encode())  # same value, other bytes
    assert_rejects("bad-encoding", decode, raw)


@SETTINGS
@given(OBJECTS, st.binary(min_size=1, max_size=3))
def test_appended_bytes_are_rejected(pair, extra):
    obj, decode = pair
    assert_rejects("bad-encoding", decode, obj.encode() + extra)


@SETTINGS
@given(OBJECTS, st.data())
def test_truncation_is_rejected(pair, data):
    obj, decode = pair
    raw = obj.encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert_rejects("bad-encoding", decode, raw[:cut])


@SETTINGS
@given(OBJECTS, st.data())
def test_mutation_is_rejected_or_canonical(pair, data):
    """Any byte changed: decoding raises only ``ConsensusError``, and whatever decodes is
    canonical (re-encodes to exactly the input)."""
    obj, decode = pair
    raw = bytearray(obj.encode())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    try:
        again = decode(bytes(raw))
    except ConsensusError:
        return
    assert again.encode() == bytes(raw)


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_consensus_errors(raw):
    for decode in (Tx.decode, Header.decode, Block.decode, EscrowState.decode, Ticket.decode,
                   MpEscrowState.decode, ChannelState.decode, MpTicket.decode, Voucher.decode):
        try:
            obj = decode(raw)
        except ConsensusError:
            continue
        assert obj.encode() == raw


@SETTINGS
@given(tickets, st.integers(0, 255), st.binary(max_size=110))
def test_ticket_decode_rejects_bad_version_or_size(ticket, version, raw):
    body = bytes([version]) + ticket.encode()[1:]
    if version == 1:
        assert Ticket.decode(body) == ticket
    else:
        assert_rejects("bad-encoding", Ticket.decode, body)
    if len(raw) != 107:
        assert_rejects("bad-encoding", Ticket.decode, raw)


COMPARISON_TXS = st.sampled_from([MP_ESCROW, MP_CLAIM, CHANNEL_OPEN, CHANNEL_CLOSE,
                                  CHANNEL_CHEAT]).flatmap(lambda kind: txs(kind))


@SETTINGS
@given(COMPARISON_TXS, st.data())
def test_comparison_kinds_round_trip_and_reject_wider_forms(tx, data):
    """SPEC §15–§16 bodies: typed on decode, canonical bytes only (SPEC §0)."""
    raw = tx.encode()
    again = Tx.decode(raw)
    assert again == tx and type(again.body) is type(tx.body)
    tree = tx.to_obj()
    index = data.draw(st.integers(0, widenable_count(tree) - 1))
    assert_rejects("bad-encoding", Tx.decode, widened(tree, index))

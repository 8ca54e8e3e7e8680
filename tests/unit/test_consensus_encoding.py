"""Strict decoding of consensus objects (SPEC §0, §2 rule 1, §4, §10): every way bytes can
fail to be the canonical encoding is ``bad-encoding``; then ``bad-version``, ``bad-kind``."""

import msgpack
import pytest

from consensus.block import Block, Header
from consensus.encoding import packb, unpackb_canonical
from consensus.errors import ConsensusError, DecodeError
from consensus.escrow import EscrowState
from consensus.ticket import TICKET_SIZE, Ticket, sign_ticket
from consensus.tx import (CHEAT_PROOF, COINBASE, ESCROW_CREATE, REDEEM, TRANSFER, Tx,
                          make_cheat_proof, make_transfer)
from tests.consensus_helpers import (ALICE_SEED, BOB, CAROL, Chain, assert_rejects,
                                     widenable_count, widened)

GH = bytes(range(32))  # any genesis hash: decoding does not depend on it
EID = bytes([7]) * 32


def _ticket(merchant_index=0, seqno=5) -> Ticket:
    return sign_ticket(ALICE_SEED, GH, EID, merchant_index, seqno)


def _transfer() -> Tx:
    return make_transfer(ALICE_SEED, GH, 3, 10, BOB, 5000)


def _tx_obj(**changes) -> list:
    obj = _transfer().to_obj()
    names = ["version", "kind", "sender", "nonce", "fee", "body", "sig"]
    for name, value in changes.items():
        obj[names.index(name)] = value
    return obj


def _decode_tx_obj(obj) -> Tx:
    return Tx.decode(packb(obj))


@pytest.fixture(scope="module")
def block() -> Block:
    chain = Chain()
    chain.mine()
    return chain.build_block([make_transfer(ALICE_SEED, chain.genesis_hash, 0, 1, CAROL, 9)])


def _escrow_state() -> EscrowState:
    return EscrowState(BOB, 8, 17, 1, 2, 2, 2, 1, 4, (BOB, CAROL), 2, 5, 17, False)


# ---- round trips -------------------------------------------------------------------

def test_round_trip_every_object(block):
    tx = _transfer()
    assert Tx.decode(tx.encode()) == tx
    assert Header.decode(block.header.encode()) == block.header
    assert Block.decode(block.encode()) == block
    ticket = _ticket()
    assert len(ticket.encode()) == TICKET_SIZE
    assert Ticket.decode(ticket.encode()) == ticket
    state = _escrow_state()
    assert EscrowState.decode(state.encode()) == state
    proof = make_cheat_proof(ALICE_SEED, GH, 0, ticket, None)
    assert Tx.decode(proof.encode()) == proof


def test_ticket_layout_is_big_endian_fixed():
    ticket = _ticket(merchant_index=0x0102, seqno=0x0304)
    raw = ticket.encode()
    assert raw[0] == 1
    assert raw[1:3] == b"\x01\x02"
    assert raw[3:35] == EID
    assert raw[35:43] == (0x0304).to_bytes(8, "big")
    assert raw[43:] == ticket.sig
    assert ticket.signing_message(GH) == b"MCT1" + GH + raw[:43]


# ---- bad-encoding: framing ---------------------------------------------------------

@pytest.mark.parametrize("extra", [b"\x00", b"\xc0", b"\x90"])
def test_invalid_bad_encoding_trailing_bytes_tx(extra):
    assert_rejects("bad-encoding", Tx.decode, _transfer().encode() + extra)


def test_invalid_bad_encoding_trailing_bytes_block_header_escrow(block):
    assert_rejects("bad-encoding", Block.decode, block.encode() + b"\x00")
    assert_rejects("bad-encoding", Header.decode, block.header.encode() + b"\x01")
    assert_rejects("bad-encoding", EscrowState.decode, _escrow_state().encode() + b"\xc0")


def test_invalid_bad_encoding_truncated(block):
    raw = block.encode()
    for cut in (1, 2, len(raw) // 2, len(raw) - 1):
        assert_rejects("bad-encoding", Block.decode, raw[:cut])
    assert_rejects("bad-encoding", Tx.decode, b"")


def test_invalid_bad_encoding_not_bytes():
    assert_rejects("bad-encoding", Tx.decode, "not bytes")
    assert_rejects("bad-encoding", Tx.decode, None)


def test_invalid_bad_encoding_map_instead_of_array():
    raw = msgpack.packb({"version": 1}, use_bin_type=True)
    assert_rejects("bad-encoding", Tx.decode, raw)
    assert_rejects("bad-encoding", Header.decode, raw)


def test_invalid_bad_encoding_garbage():
    for raw in (b"\xc1", b"\xff" * 10, b"\x97" + b"\xc1" * 7, b"\xd4\x01\x00"):
        assert_rejects("bad-encoding", Tx.decode, raw)


# ---- bad-encoding: arity -----------------------------------------------------------

def test_invalid_bad_encoding_wrong_arity_tx():
    obj = _transfer().to_obj()
    assert_rejects("bad-encoding", _decode_tx_obj, obj[:6])
    assert_rejects("bad-encoding", _decode_tx_obj, obj + [0])
    assert_rejects("bad-encoding", _decode_tx_obj, [])


def test_invalid_bad_encoding_wrong_arity_bodies():
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(body=[BOB, 1, 2]))
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(body=[BOB]))
    escrow_body = [8, 17, 1, 2, 2, 2, 1]
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=ESCROW_CREATE, body=escrow_body))
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=ESCROW_CREATE, body=escrow_body + [[BOB], 0]))
    ticket = _ticket().encode()
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(kind=CHEAT_PROOF, body=[ticket]))
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=CHEAT_PROOF, body=[ticket, ticket, ticket]))
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=COINBASE, body=[[BOB, 1, 2]]))


def test_invalid_bad_encoding_wrong_arity_header_block(block):
    hobj = block.header.to_obj()
    assert_rejects("bad-encoding", Header.decode, packb(hobj[:8]))
    assert_rejects("bad-encoding", Header.decode, packb(hobj + [b""]))
    bobj = block.to_obj()
    assert_rejects("bad-encoding", Block.decode, packb(bobj[:1]))
    assert_rejects("bad-encoding", Block.decode, packb(bobj + [[]]))


# ---- bad-encoding: types -----------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("sender", "a" * 32),           # str, not bin
    ("sender", None),
    ("nonce", b"\x01"),
    ("nonce", 1.0),                 # float, not int
    ("fee", [1]),
    ("sig", 0),
    ("version", "1"),
    ("kind", None),
    ("body", {"to": BOB}),
    ("body", b"body"),
])
def test_invalid_bad_encoding_wrong_types_tx(field, value):
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(**{field: value}))


def test_invalid_bad_encoding_wrong_types_bodies():
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(body=[BOB, b"\x05"]))
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(body=[BOB.hex(), 5]))
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=ESCROW_CREATE, body=[8, 17, 1, 2, 2, 2, 1, BOB]))
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=ESCROW_CREATE, body=[8, 17, 1, 2, 2, b"2", 1, [BOB]]))
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(kind=REDEEM, body=b"x" * 107))
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(kind=REDEEM, body=[None]))
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=CHEAT_PROOF, body=[None, _ticket().encode()]))
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(kind=COINBASE, body=[[5, BOB]]))


def test_invalid_bad_encoding_wrong_types_header(block):
    for index, value in [(1, "1"), (2, 0), (3, 1.5), (4, 2**64 - 1), (5, b"n"), (6, None),
                         (7, [b"x" * 32]), (8, b"\x00" * 32), (8, [1])]:
        obj = block.header.to_obj()
        obj[index] = value
        assert_rejects("bad-encoding", Header.decode, packb(obj))


def test_invalid_bad_encoding_wrong_types_escrow_state():
    obj = _escrow_state().to_obj()
    obj[13] = 0  # broken must be a boolean
    assert_rejects("bad-encoding", EscrowState.decode, packb(obj))
    obj = _escrow_state().to_obj()
    obj[1] = True
    assert_rejects("bad-encoding", EscrowState.decode, packb(obj))


@pytest.mark.parametrize("field", ["version", "kind", "nonce", "fee"])
@pytest.mark.parametrize("value", [True, False])
def test_invalid_bad_encoding_bool_for_int(field, value):
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(**{field: value}))


def test_invalid_bad_encoding_bool_for_int_bodies(block):
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(body=[BOB, True]))
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=ESCROW_CREATE, body=[8, 17, True, 2, 2, 2, 1, [BOB]]))
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=COINBASE, body=[[BOB, True]]))
    obj = block.header.to_obj()
    obj[1] = True
    assert_rejects("bad-encoding", Header.decode, packb(obj))


def test_invalid_bad_encoding_integer_ranges(block):
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(fee=-1))
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(nonce=2**63))
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(body=[BOB, 2**63]))
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(body=[BOB, -5]))
    assert _decode_tx_obj(_tx_obj(nonce=2**63 - 1)).nonce == 2**63 - 1
    obj = block.header.to_obj()
    obj[5] = 2**64 - 1  # the header nonce is a u64
    assert Header.decode(packb(obj)).nonce == 2**64 - 1
    obj[3] = -1
    assert_rejects("bad-encoding", Header.decode, packb(obj))


# ---- bad-encoding: fixed lengths ---------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("sender", bytes(31)), ("sender", bytes(33)), ("sig", bytes(63)), ("sig", bytes(65)),
    ("body", [bytes(31), 5]), ("body", [bytes(33), 5]),
])
def test_invalid_bad_encoding_wrong_fixed_lengths_tx(field, value):
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(**{field: value}))


def test_invalid_bad_encoding_wrong_fixed_lengths_bodies():
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=ESCROW_CREATE, body=[8, 17, 1, 2, 2, 2, 1, [BOB, bytes(31)]]))
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=COINBASE, body=[[bytes(31), 1]]))


def test_invalid_bad_encoding_wrong_fixed_lengths_header(block):
    for index in (2, 4, 6, 7):  # prev_hash, target, tx_root, vdf: 32 bytes
        for size in (0, 31, 33):
            obj = block.header.to_obj()
            obj[index] = bytes(size)
            assert_rejects("bad-encoding", Header.decode, packb(obj))
    obj = block.header.to_obj()
    obj[8] = [bytes(32), bytes(31)]
    assert_rejects("bad-encoding", Header.decode, packb(obj))


# ---- bad-encoding: canonical form --------------------------------------------------

def test_invalid_bad_encoding_non_canonical_int():
    tx = _transfer()  # nonce 3 is a positive fixint; write it as uint8 0xcc 03
    canonical = tx.encode()
    for wide in (b"\xcc\x03", b"\xcd\x00\x03", b"\xce\x00\x00\x00\x03",
                 b"\xcf" + (3).to_bytes(8, "big"), b"\xd0\x03", b"\xd3" + (3).to_bytes(8, "big")):
        raw = (b"\x97\x01\x01\xc4\x20" + tx.sender + wide + canonical[5 + 32 + 1:])
        assert msgpack.unpackb(raw) == msgpack.unpackb(canonical)
        assert_rejects("bad-encoding", Tx.decode, raw)


def test_invalid_bad_encoding_non_canonical_every_node(block):
    for obj, decode in ((_transfer().to_obj(), Tx.decode),
                        (block.header.to_obj(), Header.decode),
                        (block.to_obj(), Block.decode),
                        (_escrow_state().to_obj(), EscrowState.decode)):
        n = widenable_count(obj)
        assert n > 5
        for i in range(n):
            raw = widened(obj, i)
            assert msgpack.unpackb(raw) == msgpack.unpackb(packb(obj))
            assert_rejects("bad-encoding", decode, raw)


def test_invalid_bad_encoding_str_for_bin():
    raw = msgpack.packb(_transfer().to_obj(), use_bin_type=False)  # bytes as raw str
    assert_rejects("bad-encoding", Tx.decode, raw)


def test_invalid_bad_encoding_float():
    obj = _tx_obj()  # the fee written as float32 10.0 (0xca)
    raw = (bytes([0x97]) + packb(obj[0]) + packb(obj[1]) + packb(obj[2]) + packb(obj[3])
           + b"\xca" + (0x41200000).to_bytes(4, "big") + packb(obj[5]) + packb(obj[6]))
    assert_rejects("bad-encoding", Tx.decode, raw)


def test_unpackb_canonical_only_raises_decode_error():
    for raw in (b"\x92\xc1", b"\xdd\xff\xff\xff\xff", b"\xc7\xff\x01", b"\xa2\xff\xfe",
                b"\x81\x01\x02", b"\xdf\x00\x00\x00\x01\xc0\xc0"):
        with pytest.raises(DecodeError):
            unpackb_canonical(raw)


# ---- bad-encoding: redeem ticket counts, ticket size and version -------------------

def test_invalid_bad_encoding_redeem_zero_tickets():
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(kind=REDEEM, nonce=0, body=[]))


def test_invalid_bad_encoding_redeem_257_tickets():
    ticket = _ticket().encode()
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=REDEEM, nonce=0, body=[ticket] * 257))
    ok = _decode_tx_obj(_tx_obj(kind=REDEEM, nonce=0, body=[ticket] * 256))
    assert len(ok.tickets()) == 256


@pytest.mark.parametrize("size", [0, 106, 108, 214])
def test_invalid_bad_encoding_ticket_size(size):
    raw = (_ticket().encode() * 3)[:size]
    assert_rejects("bad-encoding", Ticket.decode, raw)
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(kind=REDEEM, nonce=0, body=[raw]))
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=CHEAT_PROOF, nonce=0, body=[raw, None]))


@pytest.mark.parametrize("version", [0, 2, 255])
def test_invalid_bad_encoding_ticket_version(version):
    raw = bytes([version]) + _ticket().encode()[1:]
    assert_rejects("bad-encoding", Ticket.decode, raw)
    good = _ticket().encode()
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=REDEEM, nonce=0, body=[good, raw]))
    assert_rejects("bad-encoding", _decode_tx_obj,
                   _tx_obj(kind=CHEAT_PROOF, nonce=0, body=[good, raw]))


# ---- bad-version, bad-kind ---------------------------------------------------------

@pytest.mark.parametrize("version", [0, 2, 255])
def test_invalid_bad_version_tx(version):
    assert_rejects("bad-version", _decode_tx_obj, _tx_obj(version=version))


def test_invalid_bad_version_tx_inside_block(block):
    obj = block.to_obj()
    obj[1][1][0] = 2
    assert_rejects("bad-version", Block.decode, packb(obj))


@pytest.mark.parametrize("kind", [10, 11, 127, 2**32])
def test_invalid_bad_kind(kind):
    assert_rejects("bad-kind", _decode_tx_obj, _tx_obj(kind=kind))


def test_invalid_bad_kind_inside_block(block):
    obj = block.to_obj()
    obj[1][1][1] = 10
    assert_rejects("bad-kind", Block.decode, packb(obj))


def test_invalid_bad_version_checked_before_kind():
    # SPEC §2 rule 1 order: bad-encoding, then bad-version, then bad-kind
    assert_rejects("bad-version", _decode_tx_obj, _tx_obj(version=2, kind=10))
    assert_rejects("bad-encoding", _decode_tx_obj, _tx_obj(version=2, sender=bytes(3)))


def test_decode_errors_are_consensus_errors():
    assert issubclass(DecodeError, ConsensusError)
    assert DecodeError("x").reason == "bad-encoding"
    assert TRANSFER == 1 and COINBASE == 0


# ---- decode budget for peer bytes (issue 6: no amplification) --------------------------

def _array_count(data: bytes) -> int:
    count = 0

    def hook(items):
        nonlocal count
        count += 1
        return items
    msgpack.unpackb(data, raw=False, list_hook=hook)
    return count


def _smallest_txs_of_every_kind():
    """One valid-shaped transaction of every kind with the smallest field values."""
    from consensus.channel import Voucher
    from consensus.tx import (make_channel_cheat, make_channel_close, make_channel_open,
                              make_cheat_proof, make_coinbase, make_escrow_create,
                              make_mp_claim, make_mp_escrow, make_redeem, make_transfer)
    g, seed, to = bytes(32), ALICE_SEED, bytes(32)
    ticket = sign_ticket(seed, g, bytes(32), 0, 0)
    voucher = Voucher(1, 0, bytes(64))
    return [
        make_coinbase(0, []), make_coinbase(0, [(to, 0)] * 64),
        make_transfer(seed, g, 0, 0, to, 0),
        make_escrow_create(seed, g, 0, 0, 0, 0, 0, 0, 0, 0, 0, [to]),
        make_redeem(seed, g, 0, [ticket]), make_cheat_proof(seed, g, 0, ticket, None),
        make_mp_escrow(seed, g, 0, 0, 0, 0, 0), make_mp_claim(seed, g, 0, to, bytes(16), bytes(16), bytes(64)),
        make_channel_open(seed, g, 0, 0, to, 0, 0, 0),
        make_channel_close(seed, g, 0, to, voucher),
        make_channel_cheat(seed, g, 0, to, voucher, voucher),
    ]


def test_valid_objects_stay_far_below_the_peer_array_budget():
    """Every array of a valid tx/header carries ≥ 32 bytes for at most two arrays, so the
    budget ``8 + len // 16`` of ``unpackb_canonical(peer=True)`` never rejects one."""
    from consensus.encoding import BYTES_PER_ARRAY
    for tx in _smallest_txs_of_every_kind():
        raw = tx.encode()
        assert _array_count(raw) * BYTES_PER_ARRAY * 2 <= len(raw), tx.kind
        assert Tx.decode(raw) == tx
    header = Header(1, 0, bytes(32), 0, 1, 0, bytes(32), bytes(32), ())
    assert Header.decode(header.encode()) == header


@pytest.mark.parametrize("item", [b"\x90", b"\x80", b"\x91\x90", b"\x81\xa1a\x90"],
                         ids=["empty-arrays", "empty-maps", "nested-arrays", "maps-of-arrays"])
def test_invalid_bad_encoding_peer_bytes_over_array_budget(item):
    """A 1 MB block or tx of empty arrays/maps is refused before it is fully built."""
    n = 1_000_000 // len(item)
    txs = b"\xdd" + n.to_bytes(4, "big") + item * n
    for what, data in (("block", b"\x92" + b"\x90" + txs), ("tx", txs)):
        with pytest.raises(DecodeError):
            (Block if what == "block" else Tx).decode(data)
    with pytest.raises(DecodeError, match="over-limit|maps"):
        unpackb_canonical(txs, peer=True)

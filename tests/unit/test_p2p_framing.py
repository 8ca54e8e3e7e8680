"""Framing and message-shape tests: round trips, limits, malformed input (SPEC §11)."""

from __future__ import annotations

import struct

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from p2p import decode, messages
from p2p.errors import PeerDisconnect, ProtocolViolation
from p2p.framing import (
    MAX_FRAME_BYTES,
    FrameReader,
    FrameTooLarge,
    decode_message,
    encode_message,
    frame_body,
    msgpack_array_header,
)

H1 = b"\x01" * 32
H2 = b"\x02" * 32
ZERO = bytes(32)

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5),
    max_leaves=30,
)


def body_of(frame: bytes) -> bytes:
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    return frame[4:]


@given(
    msg_type=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=32),
    payload=msgpack_values,
)
def test_frame_round_trip(msg_type, payload):
    assert decode_message(body_of(encode_message(msg_type, payload))) == (msg_type, payload)


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536])
def test_array_header_matches_packb(count):
    assert msgpack.packb([None] * count).startswith(msgpack_array_header(count))
    assert len(msgpack_array_header(count)) == len(msgpack.packb([None] * count)) - count


def test_spliced_block_and_headers_equal_plain_encoding():
    block = [[3, H1, 0], [["tx", 1]]]
    raw = msgpack.packb(block)
    assert messages.build_block(raw) == encode_message("block", [block])
    assert messages.build_tx(msgpack.packb(["t"])) == encode_message("tx", [["t"]])
    headers = [[i, H1, 0] for i in range(20)]
    frame = messages.build_headers([msgpack.packb(h) for h in headers])
    assert frame == encode_message("headers", [headers])


def test_headers_builder_caps_count_and_size():
    raws = [msgpack.packb([i, H1, 0]) for i in range(2100)]
    _, payload = decode_message(body_of(messages.build_headers(raws)))
    assert len(payload[0]) == messages.MAX_HEADERS
    big = [msgpack.packb([b"x" * 1_000_000]) for _ in range(5)]
    _, payload = decode_message(body_of(messages.build_headers(big)))
    assert len(payload[0]) == 4


def test_frame_limit_on_encode():
    frame_body(b"x" * MAX_FRAME_BYTES)
    with pytest.raises(FrameTooLarge):
        frame_body(b"x" * (MAX_FRAME_BYTES + 1))
    with pytest.raises(FrameTooLarge):
        messages.build_block(msgpack.packb([b"x" * MAX_FRAME_BYTES]))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1",  # never-valid msgpack byte
        msgpack.packb(["ping", [1]]) + b"\x00",  # trailing bytes
        msgpack.packb(["ping"]),  # wrong arity
        msgpack.packb({"ping": [1]}),  # map envelope
        msgpack.packb([7, [1]]),  # msg_type not a string
        msgpack.packb(["", []]),  # empty msg_type
        msgpack.packb(["x" * 33, []]),  # msg_type too long
        msgpack.packb(["pi\u00e9", []]),  # not ASCII
        b"\x92\xa4ping\x91\xa2\xff\xfe",  # invalid UTF-8 str
        b"\x92\xa4ping" + b"\x91" * 3000 + b"\xc0",  # nesting past the decoder stack
        b"\x92\xa4ping\xdd\xff\xff\xff\xff",  # array length beyond the frame
        b"\x92\xa4ping\xc6\xff\xff\xff\xff",  # bin length beyond the frame
        b"\x92\xa4ping\xd6\xff\x00\x00\x00\x00",  # timestamp extension
        b"\x92\xa4ping\xc7\x00\x05",  # zero-length extension
        b"\x92\xa4ping\x81\x01\x02",  # integer map key
    ],
)
def test_invalid_malformed_body_is_violation(body):
    with pytest.raises(ProtocolViolation, match="malformed"):
        decode_message(body)


def test_unknown_msg_type_decodes():
    body = msgpack.packb(["future-thing", {"k": [1]}])
    assert decode_message(body) == ("future-thing", {"k": [1]})


def test_frame_reader_reassembles_chunks_and_survives_cancellation():
    async def main():
        send, receive = trio.testing.memory_stream_pair()
        reader = FrameReader(receive)
        frames = [encode_message("ping", [i]) for i in range(3)]
        frames.append(encode_message("x", [b"y" * 100_000]))
        data = b"".join(frames)
        await send.send_all(data[:3])
        with trio.move_on_after(0.05) as scope:
            await reader.read_frame()
        assert scope.cancelled_caught
        for i in range(3, len(data), 7001):
            await send.send_all(data[i : i + 7001])
        got = [decode_message(await reader.read_frame()) for _ in frames]
        assert got == [("ping", [0]), ("ping", [1]), ("ping", [2]), ("x", [b"y" * 100_000])]
        await send.aclose()
        with pytest.raises(PeerDisconnect):
            await reader.read_frame()

    trio.run(main)


def test_invalid_frame_reader_rejects_oversize_length_prefix():
    async def main():
        send, receive = trio.testing.memory_stream_pair()
        await send.send_all(struct.pack(">I", MAX_FRAME_BYTES + 1))
        with pytest.raises(ProtocolViolation, match="over-limit frame"):
            await FrameReader(receive).read_frame()

    trio.run(main)


# --- message payloads ---------------------------------------------------------------


def hello_payload(**changes):
    fields = dict(version=1, genesis=H1, height=5, best=H2, port=8333, nonce=2**64 - 1, agent="x/1")
    fields.update(changes)
    return list(fields.values())


def test_hello_round_trip():
    hello = messages.Hello(1, H1, 5, H2, 8333, 2**64 - 1, "x/1")
    msg_type, payload = decode_message(body_of(messages.build_hello(hello)))
    assert msg_type == "hello"
    assert messages.parse_hello(payload) == hello


@pytest.mark.parametrize(
    "payload",
    [
        hello_payload()[:6],
        hello_payload() + [0],
        hello_payload(genesis=H1[:31]),
        hello_payload(best="ab" * 16),
        hello_payload(height=True),
        hello_payload(height=-1),
        hello_payload(port=65536),
        hello_payload(nonce=2**64),
        hello_payload(agent=b"x"),
        hello_payload(agent="a" * 257),
        {"hello": 1},
    ],
)
def test_invalid_hello_shapes(payload):
    with pytest.raises(ProtocolViolation):
        messages.parse_hello(payload)


def test_inventory_limits_and_shapes():
    items = [["block", H1], ["tx", H2]] * 500
    assert len(messages.parse_inv(items)) == 1000
    with pytest.raises(ProtocolViolation, match="over-limit"):
        messages.parse_inv(items + [["tx", H1]])
    for bad in ([["blk", H1]], [["tx", H1[:5]]], [["tx", H1, 1]], [("tx")], "tx"):
        with pytest.raises(ProtocolViolation):
            messages.parse_inv(bad)
    frame = messages.build_inventory("getdata", [("block", H1)])
    assert decode_message(body_of(frame)) == ("getdata", [["block", H1]])


def test_getheaders_limit():
    assert messages.parse_getheaders([[H1] * 64, ZERO]) == messages.GetHeaders([H1] * 64, ZERO)
    with pytest.raises(ProtocolViolation, match="over-limit"):
        messages.parse_getheaders([[H1] * 65, ZERO])
    with pytest.raises(ProtocolViolation):
        messages.parse_getheaders([[H1], b"short"])
    frame = messages.build_getheaders([H1] * 70)
    assert messages.parse_getheaders(decode_message(body_of(frame))[1]).locator == [H1] * 64


def test_headers_limit_and_exact_bytes():
    headers = [[1, i, H1, 0] for i in range(2000)]
    parsed = decode.decode_headers(msgpack.packb([headers]))
    assert parsed.items[5] == msgpack.packb(headers[5])
    assert parsed.last_height == 1999
    with pytest.raises(ProtocolViolation, match="over-limit"):
        decode.decode_headers(msgpack.packb([headers + [[1, 1, H1, 0]]]))
    with pytest.raises(ProtocolViolation):
        decode.decode_headers(msgpack.packb([[b"not-an-array"]]))
    with pytest.raises(ProtocolViolation, match="over-limit header"):
        decode.decode_headers(msgpack.packb([[[b"x" * 2000]]]))
    assert decode.decode_headers(msgpack.packb([[]])).items == []


def test_block_and_tx_payloads_keep_the_bytes_received():
    block = [[1, 7, H1, 0], []]
    parsed = decode.decode_block(msgpack.packb([block]))
    assert parsed == messages.WireObject(msgpack.packb(block), 7)
    assert decode.decode_block(msgpack.packb([[["x"], []]])).height is None
    assert decode.decode_tx(msgpack.packb([[1, 2]])).raw == msgpack.packb([1, 2])
    # A non-canonical encoding is passed through as received (the node judges it).
    wide = b"\x91\x92\x94\x01\xcd\x00\x07\xc4\x20" + H1 + b"\x00\x90"
    assert decode.decode_block(wide) == messages.WireObject(wide[1:], 7)
    for bad in ([], [block, block], [b"raw-bytes"], [5]):
        with pytest.raises(ProtocolViolation):
            decode.decode_block(msgpack.packb(bad))
    with pytest.raises(ProtocolViolation, match="trailing"):
        decode.decode_block(msgpack.packb([block]) + b"\x00")


@pytest.mark.parametrize(
    "msg_type,payload",
    [
        ("inv", b"\xdc\x03\xe8" + b"\x90" * 1000),  # 1000 empty arrays: shape fails
        ("inv", b"\xdc\x03\xe9" + b"\x90" * 1001),  # over the item limit
        ("getheaders", b"\x92\xdc\x00\x41" + b"\xc0" * 65 + b"\xc0"),  # 65 locator slots
        ("hello", b"\x97" + b"\xc4\x21" + b"x" * 33 + b"\xc0" * 6),  # 33-byte bin
        ("ping", b"\x91\x81\xa1k\x01"),  # a map
        ("addr", b"\x91\x92\xda\x01\x00" + b"h" * 256 + b"\x01"),  # 256-byte host
    ],
)
def test_invalid_small_payloads_over_their_own_caps(msg_type, payload):
    with pytest.raises(ProtocolViolation):
        decode.decode_payload(msg_type, payload)


def test_every_type_has_a_limit_and_frames_fit():
    assert set(decode.PAYLOAD_LIMITS) == set(decode.DECODERS)
    for limit in decode.PAYLOAD_LIMITS.values():
        assert limit + decode.ENVELOPE_BYTES <= MAX_FRAME_BYTES


async def feed_reader(data: bytes, limits, **kwargs):
    ours, theirs = trio.testing.memory_stream_pair()
    await theirs.send_all(data)
    await theirs.send_stream.aclose()
    reader = FrameReader(ours)
    out = []
    try:
        while True:
            out.append(await reader.read_message(limits, **kwargs))
    except PeerDisconnect:
        return out, reader


def test_reader_refuses_over_limit_type_before_buffering_the_body():
    async def main():
        head = struct.pack(">I", 2_000_000) + b"\x92\xa3inv"  # 2 MB inv announced
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.send_all(head)
        with pytest.raises(ProtocolViolation, match="over-limit inv"):
            await FrameReader(ours).read_message(decode.PAYLOAD_LIMITS)

    trio.run(main)


def test_reader_skips_unknown_types_without_storing_them():
    async def main():
        big = encode_message("future-thing", b"x" * 3_000_000)
        ping = messages.build_ping(5)
        got, reader = await feed_reader(big + ping, decode.PAYLOAD_LIMITS)
        assert got == [("future-thing", None), ("ping", body_of(ping)[6:])]
        assert len(reader._buffer) == 0

    trio.run(main)


def test_invalid_reader_before_hello_allows_only_a_hello_sized_hello():
    async def main():
        only = {"hello": decode.PAYLOAD_LIMITS["hello"]}
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.send_all(encode_message("block", [b"x" * 100]))
        with pytest.raises(ProtocolViolation, match="message before hello"):
            await FrameReader(ours).read_message(only, only_known=True)
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.send_all(struct.pack(">I", 4_000_000) + b"\x92\xa5hello")
        with pytest.raises(ProtocolViolation, match="over-limit hello"):
            await FrameReader(ours).read_message(only, only_known=True)

    trio.run(main)


def test_addr_limit_and_shapes():
    items = [["127.0.0.1", 8000 + i] for i in range(1000)]
    assert messages.parse_addr(items)[0] == ("127.0.0.1", 8000)
    with pytest.raises(ProtocolViolation, match="over-limit"):
        messages.parse_addr(items + [["h", 1]])
    for bad in ([["h", 70000]], [["", 1]], [[b"h", 1]], [["h"]]):
        with pytest.raises(ProtocolViolation):
            messages.parse_addr(bad)
    messages.parse_getaddr([])
    with pytest.raises(ProtocolViolation):
        messages.parse_getaddr([1])
    frame = messages.build_addr([("h", i) for i in range(1500)])
    assert len(decode_message(body_of(frame))[1]) == 1000


def test_ping_nonce_shapes():
    assert messages.parse_nonce([2**64 - 1]) == 2**64 - 1
    for bad in ([], [1, 2], [-1], [2**64], [False], ["1"]):
        with pytest.raises(ProtocolViolation):
            messages.parse_nonce(bad)


def test_invalid_reader_refuses_a_tx_over_the_relay_limit():
    """A `tx` above MAX_TX_BYTES (relay policy) is refused before its body is buffered,
    while the largest valid tx (a 256-ticket REDEEM, ≈ 36 kB) fits."""
    assert decode.PAYLOAD_LIMITS["tx"] >= messages.MAX_TX_BYTES > 256 * 140

    async def main():
        head = struct.pack(">I", messages.MAX_TX_BYTES + 64) + b"\x92\xa2tx"
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.send_all(head)
        with pytest.raises(ProtocolViolation, match="over-limit tx"):
            await FrameReader(ours).read_message(decode.PAYLOAD_LIMITS)

    trio.run(main)

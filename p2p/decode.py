"""Bounded decoding of SPEC §11 payloads: each message type has its own limits.

`FrameReader.read_message` (p2p.framing) has already read the `msg_type` from the frame
head and checked the payload's byte length against `PAYLOAD_LIMITS[msg_type]` before
buffering the body. Here the payload bytes are decoded under per-type caps on array,
map, bin and str lengths, so no message can make us build more Python objects than its
own SPEC limits allow:

- small messages (`hello`, `ping`, `inv`, `getheaders`, `addr`...) are unpacked with caps
  sized to their SPEC shape (a hash is 32 bytes, a user agent ≤ 256, ≤ 1000 items...);
- `block`, `tx` and `headers` are never unpacked into objects: the embedded objects are
  located with msgpack's `skip` (no allocation) and handed to the node as the exact
  bytes received; only a header's height is peeked, under tight caps.

Every failure is ProtocolViolation("malformed ..." / "over-limit ...").
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack

from p2p import messages
from p2p.errors import ProtocolViolation
from p2p.framing import MAX_MSG_TYPE_LEN
from p2p.messages import (
    HASH_BYTES,
    MAX_ADDRS,
    MAX_HEADERS,
    MAX_HOST_LEN,
    MAX_INV_ITEMS,
    MAX_LOCATOR_HASHES,
    MAX_TKTANN_TICKETS,
    MAX_TX_BYTES,
    MAX_USER_AGENT_LEN,
    MAX_WATCH_ESCROWS,
    TICKET_BYTES,
    Headers,
    WireObject,
)

MAX_BLOCK_BYTES = 1_000_000  # SPEC §1 max_block_bytes (every profile); `block` ≤ this
MAX_HEADER_BYTES = 1024  # far above a §10 header with 16 VDF checkpoints (≈ 720 B)
# Payload byte limits per msg_type (the envelope adds at most 35 bytes).
INV_ITEM_BYTES = 1 + 6 + 2 + HASH_BYTES  # [kind, hash] with kind "block" / "tx"
PAYLOAD_LIMITS: dict[str, int] = {
    "hello": 1 + 9 + 34 + 9 + 34 + 3 + 9 + 3 + MAX_USER_AGENT_LEN,
    "ping": 1 + 9,
    "pong": 1 + 9,
    "inv": 5 + MAX_INV_ITEMS * INV_ITEM_BYTES,
    "getdata": 5 + MAX_INV_ITEMS * INV_ITEM_BYTES,
    "notfound": 5 + MAX_INV_ITEMS * INV_ITEM_BYTES,
    "block": 1 + MAX_BLOCK_BYTES,
    "tx": 4 + MAX_TX_BYTES,  # relay policy (p2p.messages.MAX_TX_BYTES)
    "getheaders": 1 + 3 + MAX_LOCATOR_HASHES * (2 + HASH_BYTES) + 2 + HASH_BYTES,
    "headers": 1 + 3 + MAX_HEADERS * MAX_HEADER_BYTES,
    "getaddr": 1,
    "addr": 5 + MAX_ADDRS * (1 + 2 + MAX_HOST_LEN + 3),
    # DESIGN "Ticket watch": [[escrow_id, hops]...] and [escrow_id, [ticket...]]
    "watch": 3 + MAX_WATCH_ESCROWS * (1 + 2 + HASH_BYTES + 1),
    "tktann": 1 + 2 + HASH_BYTES + 3 + MAX_TKTANN_TICKETS * (2 + TICKET_BYTES),
}
ENVELOPE_BYTES = 1 + 2 + MAX_MSG_TYPE_LEN  # fixarray(2) + str8 header + msg_type


def _unpack_small(payload: bytes, what: str, *, array: int, bin_len: int, str_len: int) -> object:
    """Unpack a small payload with length caps; maps and extension types are refused."""
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_array_len=array,
            max_map_len=0,
            max_bin_len=bin_len,
            max_str_len=str_len,
            max_ext_len=0,
            ext_hook=_reject_ext,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolViolation(f"malformed {what}: {exc.__class__.__name__}: {exc}") from None


def _reject_ext(code: int, data: bytes) -> object:
    raise ValueError(f"msgpack extension type {code} not allowed")


ARRAY_TYPES = frozenset(range(0x90, 0xA0)) | {0xDC, 0xDD}


def _split_objects(payload: bytes, what: str, limit: int) -> list[bytes]:
    """The raw bytes of each element of `[[obj, ...]]` / `[obj]`-shaped payloads.

    `limit` caps the element count; elements must be msgpack arrays. No objects are
    built (msgpack skip). Raises ProtocolViolation.
    """
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(payload), 1))
    unpacker.feed(payload)
    try:
        count = unpacker.read_array_header()
        raws: list[bytes] = []
        for _ in range(count):
            start = unpacker.tell()
            unpacker.skip()
            raws.append(payload[start : unpacker.tell()])
        end = unpacker.tell()
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolViolation(f"malformed {what}: {exc.__class__.__name__}: {exc}") from None
    if end != len(payload):
        raise ProtocolViolation(f"malformed {what}: trailing bytes")
    if count > limit:
        raise ProtocolViolation(f"over-limit {what}: {count} > {limit}")
    for raw in raws:
        if raw[0] not in ARRAY_TYPES:
            raise ProtocolViolation(f"malformed {what}: expected an array")
    return raws


def peek_height(raw_header: bytes) -> int | None:
    """The height field of a raw SPEC §10 header, or None if it lacks that shape."""
    unpacker = msgpack.Unpacker(
        max_buffer_size=max(len(raw_header), 1), max_array_len=64, max_bin_len=64,
        max_str_len=64, max_map_len=0, max_ext_len=0,
    )
    unpacker.feed(raw_header)
    try:
        if unpacker.read_array_header() < 2:
            return None
        unpacker.skip()
        height = unpacker.unpack()
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    return height if messages.is_uint(height, messages.U63) else None


def _block_header(raw_block: bytes) -> bytes | None:
    """The raw header of a raw `[header, txs]` block, or None if it lacks that shape."""
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(raw_block), 1))
    unpacker.feed(raw_block)
    try:
        if unpacker.read_array_header() < 1:
            return None
        start = unpacker.tell()
        unpacker.skip()
        return raw_block[start : unpacker.tell()]
    except (ValueError, TypeError, msgpack.UnpackException):
        return None


def decode_block(payload: bytes) -> WireObject:
    """`block [block]`: the block's exact bytes and peeked height. Raises ProtocolViolation."""
    (raw,) = _exactly_one(payload, "block")
    header = _block_header(raw)
    return WireObject(raw, peek_height(header) if header is not None else None)


def decode_tx(payload: bytes) -> WireObject:
    """`tx [tx]`: the transaction's exact bytes. Raises ProtocolViolation."""
    (raw,) = _exactly_one(payload, "tx")
    return WireObject(raw, None)


def _exactly_one(payload: bytes, what: str) -> list[bytes]:
    raws = _split_objects(payload, what, 1)
    if len(raws) != 1:
        raise ProtocolViolation(f"malformed {what}: expected an array of 1")
    return raws


def decode_headers(payload: bytes) -> Headers:
    """`headers [[header, ...]]` (≤ 2000): each header's bytes. Raises ProtocolViolation."""
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(payload), 1))
    unpacker.feed(payload)
    try:
        outer = unpacker.read_array_header()
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolViolation(f"malformed headers: {exc.__class__.__name__}: {exc}") from None
    if outer != 1:
        raise ProtocolViolation("malformed headers: expected an array of 1")
    raws = _split_objects(payload[unpacker.tell() :], "headers", MAX_HEADERS)
    for raw in raws:
        if len(raw) > MAX_HEADER_BYTES:
            raise ProtocolViolation(f"over-limit header: {len(raw)} bytes")
    return Headers(raws, peek_height(raws[-1]) if raws else None)


def _small(what: str, parse: Callable[[object], object], *, array: int, bin_len: int,
           str_len: int) -> Callable[[bytes], object]:
    def decode(payload: bytes) -> object:
        return parse(_unpack_small(payload, what, array=array, bin_len=bin_len, str_len=str_len))

    decode.__doc__ = f"Bounded decode of a `{what}` payload. Raises ProtocolViolation."
    return decode


DECODERS: dict[str, Callable[[bytes], object]] = {
    "hello": _small("hello", messages.parse_hello, array=7, bin_len=HASH_BYTES,
                    str_len=MAX_USER_AGENT_LEN),
    "ping": _small("ping", messages.parse_nonce, array=1, bin_len=0, str_len=0),
    "pong": _small("pong", messages.parse_nonce, array=1, bin_len=0, str_len=0),
    "inv": _small("inv", messages.parse_inv, array=MAX_INV_ITEMS, bin_len=HASH_BYTES,
                  str_len=5),
    "getdata": _small("getdata", messages.parse_inv, array=MAX_INV_ITEMS,
                      bin_len=HASH_BYTES, str_len=5),
    "notfound": _small("notfound", messages.parse_inv, array=MAX_INV_ITEMS,
                       bin_len=HASH_BYTES, str_len=5),
    "block": decode_block,
    "tx": decode_tx,
    "getheaders": _small("getheaders", messages.parse_getheaders, array=MAX_LOCATOR_HASHES,
                         bin_len=HASH_BYTES, str_len=0),
    "headers": decode_headers,
    "getaddr": _small("getaddr", messages.parse_getaddr, array=0, bin_len=0, str_len=0),
    "addr": _small("addr", messages.parse_addr, array=MAX_ADDRS, bin_len=0,
                   str_len=MAX_HOST_LEN),
    "watch": _small("watch", messages.parse_watch, array=MAX_WATCH_ESCROWS,
                    bin_len=HASH_BYTES, str_len=0),
    "tktann": _small("tktann", messages.parse_tktann, array=MAX_TKTANN_TICKETS,
                     bin_len=TICKET_BYTES, str_len=0),
}


def decode_payload(msg_type: str, payload: bytes) -> object:
    """Decode the payload of a known `msg_type` under its own limits.

    Returns the typed value of `p2p.messages` (Hello, list of InvItem, WireObject,
    Headers...). Raises ProtocolViolation; KeyError for an unknown msg_type.
    """
    return DECODERS[msg_type](payload)

"""SPEC §11 message payloads: shape checks, limits and frame builders.

Parsers take the (bounded) decoded payload object of one small message and return a
typed value, or raise ProtocolViolation (malformed or over-limit: the peer gets banned);
`p2p.decode` calls them and handles `block`, `tx` and `headers` without building objects.
Builders return complete frames ready for a send queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from p2p.errors import ProtocolViolation
from p2p.framing import MAX_FRAME_BYTES, encode_message, encode_raw_message, msgpack_array_header

PROTOCOL_VERSION = 1
HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)
MAX_INV_ITEMS = 1000  # inv / getdata / notfound
MAX_LOCATOR_HASHES = 64
MAX_HEADERS = 2000
MAX_ADDRS = 1000
MAX_USER_AGENT_LEN = 256
MAX_HOST_LEN = 255
# Relay policy, not consensus (SPEC §11 gives `tx` no limit): the largest valid tx, a REDEEM
# of 256 tickets, is ≈ 36 kB; like Bitcoin Core's standard-size rule, bigger ones are
# neither relayed nor pooled (a block may still carry one), so a hostile `tx` costs at
# most a 100 kB decode on the event loop.
MAX_TX_BYTES = 100_000
INV_KINDS = ("block", "tx")
U63 = 2**63
U64 = 2**64

InvItem = tuple[str, bytes]  # (kind "block" | "tx", 32-byte hash)


@dataclass(frozen=True)
class Hello:
    """The first message both ways (SPEC §11)."""

    protocol_version: int  # 1
    genesis_hash: bytes  # 32 bytes
    best_height: int
    best_hash: bytes  # 32 bytes
    listen_port: int  # 0 = not listening
    node_nonce: int  # < 2^64, fixed per node run
    user_agent: str


@dataclass(frozen=True)
class GetHeaders:
    """Request for headers after the fork point with `locator` (SPEC §11)."""

    locator: list[bytes]  # ≤ 64 hashes, newest first
    stop_hash: bytes  # 32 bytes; zero = no stop


@dataclass(frozen=True)
class WireObject:
    """An embedded block or transaction, re-packed for the node."""

    raw: bytes  # msgpack bytes of the embedded object
    height: int | None  # header height peeked from a block (SPEC §10 field 1), else None


@dataclass(frozen=True)
class Headers:
    """A `headers` message, re-packed for the node."""

    items: list[bytes]  # msgpack bytes of each header, in the order received
    last_height: int | None  # height field of the last header, if it has the §10 shape


def is_uint(value: object, bound: int) -> bool:
    """True for a non-bool int in [0, bound)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < bound


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_BYTES


def _fields(payload: object, count: int, what: str) -> list:
    if not isinstance(payload, list) or len(payload) != count:
        raise ProtocolViolation(f"malformed {what}: expected an array of {count}")
    return payload


def _bounded_list(value: object, limit: int, what: str) -> list:
    if not isinstance(value, list):
        raise ProtocolViolation(f"malformed {what}: expected an array")
    if len(value) > limit:
        raise ProtocolViolation(f"over-limit {what}: {len(value)} > {limit}")
    return value


def parse_hello(payload: object) -> Hello:
    """Check a `hello` payload. Raises ProtocolViolation."""
    version, genesis, height, best, port, nonce, agent = _fields(payload, 7, "hello")
    if not is_uint(version, U64):
        raise ProtocolViolation("malformed hello: protocol_version")
    if not _is_hash(genesis) or not _is_hash(best):
        raise ProtocolViolation("malformed hello: hash fields")
    if not is_uint(height, U63):
        raise ProtocolViolation("malformed hello: best_height")
    if not is_uint(port, 65536):
        raise ProtocolViolation("malformed hello: listen_port")
    if not is_uint(nonce, U64):
        raise ProtocolViolation("malformed hello: node_nonce")
    if not isinstance(agent, str) or len(agent) > MAX_USER_AGENT_LEN:
        raise ProtocolViolation("malformed hello: user_agent")
    return Hello(version, genesis, height, best, port, nonce, agent)


def parse_nonce(payload: object) -> int:
    """Check a `ping` / `pong` payload `[nonce]`. Raises ProtocolViolation."""
    (nonce,) = _fields(payload, 1, "ping/pong")
    if not is_uint(nonce, U64):
        raise ProtocolViolation("malformed ping/pong: nonce")
    return nonce


def parse_inv(payload: object) -> list[InvItem]:
    """Check an `inv` / `getdata` / `notfound` payload (≤ 1000 items).

    Raises ProtocolViolation.
    """
    items = _bounded_list(payload, MAX_INV_ITEMS, "inventory")
    result = []
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or item[0] not in INV_KINDS
            or not _is_hash(item[1])
        ):
            raise ProtocolViolation("malformed inventory item")
        result.append((item[0], item[1]))
    return result


def parse_getheaders(payload: object) -> GetHeaders:
    """Check a `getheaders` payload (≤ 64 locator hashes). Raises ProtocolViolation."""
    locator, stop_hash = _fields(payload, 2, "getheaders")
    hashes = _bounded_list(locator, MAX_LOCATOR_HASHES, "getheaders locator")
    if not all(_is_hash(h) for h in hashes) or not _is_hash(stop_hash):
        raise ProtocolViolation("malformed getheaders: hashes")
    return GetHeaders(list(hashes), stop_hash)


def parse_getaddr(payload: object) -> None:
    """Check a `getaddr` payload `[]`. Raises ProtocolViolation."""
    _fields(payload, 0, "getaddr")


def parse_addr(payload: object) -> list[tuple[str, int]]:
    """Check an `addr` payload (≤ 1000 `[host, port]`). Raises ProtocolViolation."""
    items = _bounded_list(payload, MAX_ADDRS, "addr")
    result = []
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not 0 < len(item[0]) <= MAX_HOST_LEN
            or not is_uint(item[1], 65536)
        ):
            raise ProtocolViolation("malformed addr item")
        result.append((item[0], item[1]))
    return result


def build_hello(hello: Hello) -> bytes:
    """Frame for a `hello` message."""
    return encode_message(
        "hello",
        [
            hello.protocol_version,
            hello.genesis_hash,
            hello.best_height,
            hello.best_hash,
            hello.listen_port,
            hello.node_nonce,
            hello.user_agent,
        ],
    )


def build_ping(nonce: int) -> bytes:
    """Frame for `ping [nonce]`."""
    return encode_message("ping", [nonce])


def build_pong(nonce: int) -> bytes:
    """Frame for `pong [nonce]`."""
    return encode_message("pong", [nonce])


def build_inventory(msg_type: str, items: Iterable[InvItem]) -> bytes:
    """Frame for `inv` / `getdata` / `notfound`; caller keeps ≤ 1000 items."""
    return encode_message(msg_type, [[kind, item_hash] for kind, item_hash in items])


def build_block(raw_block: bytes) -> bytes:
    """Frame for `block [block]`, splicing the node's canonical bytes. Raises FrameTooLarge."""
    return encode_raw_message("block", msgpack_array_header(1) + raw_block)


def build_tx(raw_tx: bytes) -> bytes:
    """Frame for `tx [tx]`, splicing the node's canonical bytes. Raises FrameTooLarge."""
    return encode_raw_message("tx", msgpack_array_header(1) + raw_tx)


def build_getheaders(locator: list[bytes], stop_hash: bytes = ZERO_HASH) -> bytes:
    """Frame for `getheaders [[locator...], stop_hash]` (locator truncated to 64)."""
    return encode_message("getheaders", [list(locator[:MAX_LOCATOR_HASHES]), stop_hash])


def build_headers(raw_headers: list[bytes]) -> bytes:
    """Frame for `headers [[header...]]`, splicing raw headers.

    Keeps at most 2000 headers and drops trailing ones that would not fit in a frame.
    """
    budget = MAX_FRAME_BYTES - 64  # envelope, msg_type and array headers
    kept: list[bytes] = []
    for raw in raw_headers[:MAX_HEADERS]:
        if len(raw) > budget:
            break
        budget -= len(raw)
        kept.append(raw)
    payload = msgpack_array_header(1) + msgpack_array_header(len(kept)) + b"".join(kept)
    return encode_raw_message("headers", payload)


def build_getaddr() -> bytes:
    """Frame for `getaddr []`."""
    return encode_message("getaddr", [])


def build_addr(addresses: Iterable[tuple[str, int]]) -> bytes:
    """Frame for `addr [[host, port]...]` (first 1000 addresses)."""
    items = [[host, port] for host, port in addresses][:MAX_ADDRS]
    return encode_message("addr", items)


# --- ticket watch between merchants (DESIGN "Ticket watch"; issue 8 point 2) ----------

TICKET_BYTES = 107  # SPEC §4 ticket layout
TICKET_ESCROW = slice(3, 35)  # the escrow_id field of a ticket
MAX_WATCH_ESCROWS = 256  # entries of one `watch`
MAX_WATCH_HOPS = 8  # a subscription travels at most this many links from its merchant
MAX_TKTANN_TICKETS = 1000  # tickets of one `tktann`


@dataclass(frozen=True)
class TicketAnnouncement:
    """A `tktann` payload: tickets a merchant accepted, all of one escrow."""

    escrow_id: bytes  # 32 bytes
    tickets: list[bytes]  # 107-byte SPEC §4 tickets naming `escrow_id`, ≤ 1000


def parse_watch(payload: object) -> dict[bytes, int]:
    """Check a `watch` payload `[[escrow_id, hops], ...]` (≤ 256 distinct escrow ids,
    hops ≤ MAX_WATCH_HOPS); ``{escrow_id: hops}``. Raises ProtocolViolation."""
    items = _bounded_list(payload, MAX_WATCH_ESCROWS, "watch")
    result: dict[bytes, int] = {}
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not _is_hash(item[0])
            or not is_uint(item[1], MAX_WATCH_HOPS + 1)
        ):
            raise ProtocolViolation("malformed watch item")
        if item[0] in result:
            raise ProtocolViolation("malformed watch: escrow_id repeated")
        result[item[0]] = item[1]
    return result


def parse_tktann(payload: object) -> TicketAnnouncement:
    """Check a `tktann` payload `[escrow_id, [ticket, ...]]` (≤ 1000 tickets of 107
    bytes, version 1, each naming escrow_id). Signatures are the node's to check.
    Raises ProtocolViolation."""
    escrow_id, tickets = _fields(payload, 2, "tktann")
    if not _is_hash(escrow_id):
        raise ProtocolViolation("malformed tktann: escrow_id")
    items = _bounded_list(tickets, MAX_TKTANN_TICKETS, "tktann tickets")
    for ticket in items:
        if (
            not isinstance(ticket, bytes)
            or len(ticket) != TICKET_BYTES
            or ticket[0] != 1
            or ticket[TICKET_ESCROW] != escrow_id
        ):
            raise ProtocolViolation("malformed tktann ticket")
    return TicketAnnouncement(escrow_id, list(items))


def build_watch(entries: dict[bytes, int]) -> bytes:
    """Frame for `watch [[escrow_id, hops]...]`; caller keeps ≤ 256 entries."""
    return encode_message("watch", [[eid, hops] for eid, hops in sorted(entries.items())])


def build_tktann(escrow_id: bytes, tickets: list[bytes]) -> bytes:
    """Frame for `tktann [escrow_id, [ticket...]]`; caller keeps ≤ 1000 tickets."""
    return encode_message("tktann", [escrow_id, list(tickets)])

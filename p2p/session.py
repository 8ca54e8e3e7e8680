"""One peer's SPEC §11 protocol: handshake, keepalive, headers-first sync, serving, relay."""

from __future__ import annotations

import logging
import secrets
from typing import Protocol

import trio

from p2p import messages
from p2p.errors import PeerDisconnect, ProtocolViolation, SelfConnection
from p2p.decode import PAYLOAD_LIMITS, decode_payload
from p2p.framing import FrameReader, FrameTooLarge
from p2p.interface import BlockStatus, ChainAccess
from p2p.messages import (
    MAX_HEADERS,
    MAX_LOCATOR_HASHES,
    PROTOCOL_VERSION,
    GetHeaders,
    Headers,
    Hello,
    InvItem,
    TicketAnnouncement,
    WireObject,
)
from p2p.download import BlockDownload
from p2p.peer import Peer

logger = logging.getLogger("p2p")

STALL_FACTOR = 2  # a getheaders/getdata unanswered for this many idle_timeouts drops the peer
HELLO_ONLY = {"hello": PAYLOAD_LIMITS["hello"]}  # what a peer may send before its hello
SYNC_CHECK_SECONDS = 2.0  # how often an idle session checks whether the peer is ahead of us
SEND_STALL_SECONDS = 20.0  # a peer whose send buffer stays full this long is dropped
GETHEADERS_RATE = 20.0  # getheaders served per second per peer (token bucket)...
GETHEADERS_BURST = 100.0  # ...with this burst
SCORE_FLOOD = 10  # misbehaviour points: a request over the rate or before reading our reply
SCORE_NOT_READING = 50  # misbehaviour points: send buffer full for SEND_STALL_SECONDS
ADDR_RATE = 0.1  # addresses accepted per second per peer (token bucket, as Bitcoin Core)...
ADDR_BURST = 1000.0  # ...with this burst; the rest of an `addr` is ignored
WATCH_RATE = 1.0  # `watch` messages per second per peer (token bucket)...
WATCH_BURST = 10.0  # ...with this burst; beyond it: SCORE_FLOOD, message ignored
TKTANN_RATE = 2000.0  # tickets per second per peer in `tktann` (token bucket)...
TKTANN_BURST = 20000.0  # ...with this burst; the rest of a `tktann` is ignored


class SessionHost(Protocol):
    """What a session needs from the Network that owns it."""

    chain: ChainAccess
    node_nonce: int
    listen_port: int
    user_agent: str
    handshake_timeout: float
    idle_timeout: float
    download: BlockDownload

    def register_peer(self, peer: Peer) -> None:
        """Record a peer that finished its handshake; raises PeerDisconnect for duplicates."""
        ...

    def known_addresses(self) -> list[tuple[str, int]]:
        """Listen addresses of connected peers, for `addr` replies."""
        ...

    def addresses_received(self, peer: Peer, addresses: list[tuple[str, int]]) -> None:
        """Remember addresses a peer sent in `addr` (for discovery and `addr` replies)."""
        ...

    def misbehaving(self, peer: Peer, points: int, reason: str) -> None:
        """Add misbehaviour points to the peer's IP; at the ban score it is banned."""
        ...

    def headers_reply(self, request: GetHeaders) -> bytes:
        """The framed `headers` reply to `request` (cached while the tip is unchanged)."""
        ...

    def watch_received(self, peer: Peer, entries: dict[bytes, int]) -> None:
        """The peer's `watch` subscription set (DESIGN "Ticket watch between merchants")."""
        ...

    async def tickets_received(self, peer: Peer, escrow_id: bytes, tickets: list[bytes]) -> int:
        """The peer's `tktann` tickets; returns how many had a bad signature."""
        ...


class PeerSession:
    """Runs the protocol on one connection until it ends.

    `run` returns only by raising: PeerDisconnect (close, no ban), ProtocolViolation
    (close and ban), or a transport error from trio. SPEC §11.
    """

    def __init__(self, host: SessionHost, peer: Peer) -> None:
        self._host = host
        self._chain = host.chain
        self._peer = peer
        self._reader = FrameReader(peer.stream)
        self._download = host.download
        self._stall_timeout = STALL_FACTOR * host.idle_timeout
        self._headers_asked_at: float | None = None
        self._caught_up_height = -1  # peer height at which its headers gave us nothing new
        self._headers_reply_end = 0  # peer.total_queued just after our last headers reply
        self._getheaders_tokens = GETHEADERS_BURST
        self._tokens_at = trio.current_time()
        self._answered_getaddr = False
        self._addr_tokens = ADDR_BURST
        self._addr_tokens_at = trio.current_time()
        self._watch_tokens = WATCH_BURST
        self._tktann_tokens = TKTANN_BURST
        self._watch_tokens_at = self._tktann_tokens_at = trio.current_time()
        self._ping_nonce: int | None = None
        self._ping_sent_at = 0.0
        self._handlers = {
            "hello": self._on_hello,
            "ping": self._on_ping,
            "pong": self._on_pong,
            "inv": self._on_inv,
            "getdata": self._on_getdata,
            "notfound": self._on_notfound,
            "block": self._on_block,
            "tx": self._on_tx,
            "getheaders": self._on_getheaders,
            "headers": self._on_headers,
            "getaddr": self._on_getaddr,
            "addr": self._on_addr,
            "watch": self._on_watch,
            "tktann": self._on_tktann,
        }

    async def run(self) -> None:
        """Handshake, then serve messages until the connection ends (see class doc)."""
        self._peer.send_frame(messages.build_hello(self._our_hello()))
        hello = await self._receive_hello()
        self._check_hello(hello)
        self._peer.hello = hello
        self._peer.height = hello.best_height
        self._host.register_peer(self._peer)
        logger.info(
            "peer %s connected (%s, height %d, %s)",
            self._peer.address,
            "inbound" if self._peer.inbound else "outbound",
            hello.best_height,
            hello.user_agent,
        )
        self._request_headers()
        self._send_ping()  # measures the round trip (eviction keeps the fastest peers)
        if not self._peer.inbound:  # ask outbound peers for more (as Bitcoin Core)
            self._peer.send_frame(messages.build_getaddr())
        await self._message_loop()

    def _our_hello(self) -> Hello:
        return Hello(
            protocol_version=PROTOCOL_VERSION,
            genesis_hash=self._chain.genesis_hash,
            best_height=self._chain.best_height(),
            best_hash=self._chain.best_hash(),
            listen_port=self._host.listen_port,
            node_nonce=self._host.node_nonce,
            user_agent=self._host.user_agent,
        )

    async def _receive_hello(self) -> Hello:
        message = None
        with trio.move_on_after(self._host.handshake_timeout):
            message = await self._reader.read_message(HELLO_ONLY, only_known=True)
        if message is None:
            raise PeerDisconnect("handshake timed out")
        _, payload = message
        return decode_payload("hello", payload)

    def _check_hello(self, hello: Hello) -> None:
        if hello.node_nonce == self._host.node_nonce:
            raise SelfConnection("connected to ourselves")
        if hello.genesis_hash != self._chain.genesis_hash:
            raise PeerDisconnect(f"genesis mismatch ({hello.genesis_hash.hex()[:16]}...)")
        if hello.protocol_version != PROTOCOL_VERSION:
            raise PeerDisconnect(f"unsupported protocol version {hello.protocol_version}")

    async def _message_loop(self) -> None:
        idle = self._host.idle_timeout
        last_heard = trio.current_time()
        next_sync_check = last_heard + SYNC_CHECK_SECONDS
        pinged = False
        while True:
            # One message per turn: every peer (and RPC) gets the loop between messages,
            # and a peer closed meanwhile (banned, evicted) stops here (Cancelled).
            await trio.lowlevel.checkpoint()
            idle_deadline = last_heard + (idle if pinged else idle / 2)
            stall_deadline = self._stall_deadline()
            message = None
            with trio.move_on_at(min(idle_deadline, stall_deadline, next_sync_check)):
                message = await self._reader.read_message(PAYLOAD_LIMITS)
            now = trio.current_time()
            if now >= next_sync_check:
                next_sync_check = now + SYNC_CHECK_SECONDS
                self._check_sync()
            if message is None:
                if now >= stall_deadline:
                    raise PeerDisconnect("sync stalled: requested data not delivered")
                if now >= idle_deadline:
                    if pinged:
                        raise PeerDisconnect(f"silent for {idle:g} s")
                    self._send_ping()
                    pinged = True
                continue
            msg_type, payload = message
            if payload is None:
                logger.debug("peer %s: ignoring unknown message %r", self._peer.address, msg_type)
            else:
                await self._handlers[msg_type](decode_payload(msg_type, payload))
            last_heard = trio.current_time()
            pinged = False

    # --- sync helpers -------------------------------------------------------------

    def _stall_deadline(self) -> float:
        deadline = self._download.stall_deadline(self._peer, self._stall_timeout)
        if self._headers_asked_at is not None:
            deadline = min(deadline, self._headers_asked_at + self._stall_timeout)
        return deadline

    def _request_headers(self, start: bytes | None = None) -> None:
        """Send getheaders with our locator (after `start`, if given), one at a time."""
        if self._headers_asked_at is not None:
            return
        locator = self._chain.get_locator()
        if start is not None:
            locator = [start] + [h for h in locator if h != start]
        self._peer.send_frame(messages.build_getheaders(locator[:MAX_LOCATOR_HASHES]))
        self._headers_asked_at = trio.current_time()

    def _check_sync(self) -> None:
        """Safety net: a peer ahead of us with nothing to fetch from it gets a getheaders
        (not again at the same height once its headers gave us nothing new)."""
        height = self._peer.height
        if (height > max(self._chain.best_height(), self._caught_up_height)
                and self._download.is_idle(self._peer)):
            self._request_headers()

    def _note_height(self, height: int | None) -> None:
        if height is not None and height > self._peer.height:
            self._peer.height = height

    # --- handlers -------------------------------------------------------------------

    async def _on_hello(self, hello: Hello) -> None:
        logger.debug("peer %s: ignoring repeated hello", self._peer.address)

    async def _on_ping(self, nonce: int) -> None:
        self._peer.send_frame(messages.build_pong(nonce))

    def _send_ping(self) -> None:
        self._ping_nonce = secrets.randbits(64)
        self._ping_sent_at = trio.current_time()
        self._peer.send_frame(messages.build_ping(self._ping_nonce))

    async def _on_pong(self, nonce: int) -> None:
        """Any message counts as liveness; a matching pong measures the round trip."""
        if nonce == self._ping_nonce:
            self._ping_nonce = None
            rtt = trio.current_time() - self._ping_sent_at
            self._peer.ping_rtt = min(self._peer.ping_rtt, rtt)

    async def _on_inv(self, items: list[InvItem]) -> None:
        unknown_block = False
        wanted_txs: list[InvItem] = []
        for kind, item_hash in items:
            self._peer.known.add(item_hash)
            if kind == "block":
                if not self._chain.has_block(item_hash) and not self._download.is_tracked(
                    item_hash
                ):
                    unknown_block = True
            elif not self._chain.has_tx(item_hash):
                wanted_txs.append(("tx", item_hash))
        if unknown_block:
            self._request_headers()
        if wanted_txs:
            self._peer.send_frame(messages.build_inventory("getdata", wanted_txs))

    async def _wait_drained(self) -> None:
        """Pause serving this peer until its send buffer drains (Bitcoin Core fPauseSend)."""
        if not await self._peer.wait_send_drained(SEND_STALL_SECONDS):
            self._host.misbehaving(self._peer, SCORE_NOT_READING, "not reading its data")
            raise PeerDisconnect(f"send buffer full for {SEND_STALL_SECONDS:g} s")

    async def _on_getdata(self, items: list[InvItem]) -> None:
        missing: list[InvItem] = []
        for kind, item_hash in items:
            await self._wait_drained()
            if kind == "block":
                raw = self._chain.get_block(item_hash)
                build = messages.build_block
            else:
                raw = self._chain.get_mempool_tx(item_hash)
                build = messages.build_tx
            if raw is None:
                missing.append((kind, item_hash))
                continue
            try:
                frame = build(raw)
            except FrameTooLarge:
                logger.warning("%s %s does not fit in a frame", kind, item_hash.hex())
                missing.append((kind, item_hash))
                continue
            self._peer.known.add(item_hash)
            if not self._peer.send_frame(frame):
                return
        if missing:
            self._peer.send_frame(messages.build_inventory("notfound", missing))

    async def _on_notfound(self, items: list[InvItem]) -> None:
        for kind, item_hash in items:
            if kind == "block":
                self._download.not_found(self._peer, item_hash)

    async def _on_block(self, block: WireObject) -> None:
        self._note_height(block.height)
        self._download.block_message(self._peer)
        result = await self._chain.submit_block(block.raw)
        if result.block_hash:
            self._peer.known.add(result.block_hash)
            self._download.block_received(self._peer, result.block_hash)
        if result.status is BlockStatus.INVALID:
            raise ProtocolViolation(f"invalid block: {result.reason}")
        if result.status in (BlockStatus.CONNECTED, BlockStatus.SIDE):
            self._peer.last_block_at = trio.current_time()
        if result.status is BlockStatus.ORPHAN:
            self._request_headers()

    async def _on_tx(self, tx: WireObject) -> None:
        result = await self._chain.submit_tx(tx.raw)
        if result.txid:
            self._peer.known.add(result.txid)
        if result.invalid:
            raise ProtocolViolation(f"invalid transaction: {result.reason}")
        if result.accepted:
            self._peer.last_tx_at = trio.current_time()
        else:
            logger.debug("peer %s: tx not accepted: %s", self._peer.address, result.reason)

    def _take_getheaders_token(self) -> bool:
        now = trio.current_time()
        self._getheaders_tokens = min(
            GETHEADERS_BURST, self._getheaders_tokens + (now - self._tokens_at) * GETHEADERS_RATE
        )
        self._tokens_at = now
        if self._getheaders_tokens < 1:
            return False
        self._getheaders_tokens -= 1
        return True

    async def _on_getheaders(self, request: GetHeaders) -> None:
        if self._peer.total_dequeued < self._headers_reply_end:  # reply not even being sent
            self._host.misbehaving(self._peer, SCORE_FLOOD, "getheaders before reading headers")
            return
        if not self._take_getheaders_token():
            self._host.misbehaving(self._peer, SCORE_FLOOD, "getheaders flood")
            return
        await self._wait_drained()
        if self._peer.send_frame(self._host.headers_reply(request)):
            self._headers_reply_end = self._peer.total_queued

    async def _on_headers(self, headers: Headers) -> None:
        self._headers_asked_at = None
        if not headers.items:
            self._caught_up_height = self._peer.height  # it has nothing more for us
            return
        self._note_height(headers.last_height)
        result = await self._chain.submit_headers(headers.items)
        if result.invalid_reason:
            raise ProtocolViolation(f"invalid headers: {result.invalid_reason}")
        if not result.wanted:
            self._caught_up_height = self._peer.height  # e.g. a longer chain with less work
        for block_hash in result.wanted:
            self._peer.known.add(block_hash)
        self._download.add_wanted(self._peer, result.wanted, headers.items[-1])
        if len(headers.items) == MAX_HEADERS and result.last_hash:
            self._request_headers(start=result.last_hash)

    async def _on_getaddr(self, _: None) -> None:
        if self._answered_getaddr:  # one answer per connection, as Bitcoin Core
            return
        self._answered_getaddr = True
        self._peer.send_frame(messages.build_addr(self._host.known_addresses()))

    async def _on_addr(self, addresses: list[tuple[str, int]]) -> None:
        now = trio.current_time()
        self._addr_tokens = min(ADDR_BURST,
                                self._addr_tokens + (now - self._addr_tokens_at) * ADDR_RATE)
        self._addr_tokens_at = now
        accepted = addresses[: int(self._addr_tokens)]
        self._addr_tokens -= len(accepted)
        if accepted:
            self._host.addresses_received(self._peer, accepted)

    # --- ticket watch (DESIGN "Ticket watch between merchants") ------------------------

    async def _on_watch(self, entries: dict[bytes, int]) -> None:
        now = trio.current_time()
        self._watch_tokens = min(WATCH_BURST, self._watch_tokens
                                 + (now - self._watch_tokens_at) * WATCH_RATE)
        self._watch_tokens_at = now
        if self._watch_tokens < 1:
            self._host.misbehaving(self._peer, SCORE_FLOOD, "watch flood")
            return
        self._watch_tokens -= 1
        self._host.watch_received(self._peer, entries)

    async def _on_tktann(self, announcement: TicketAnnouncement) -> None:
        now = trio.current_time()
        self._tktann_tokens = min(TKTANN_BURST, self._tktann_tokens
                                  + (now - self._tktann_tokens_at) * TKTANN_RATE)
        self._tktann_tokens_at = now
        tickets = announcement.tickets[: int(self._tktann_tokens)]
        self._tktann_tokens -= len(tickets)
        if len(tickets) < len(announcement.tickets):
            logger.debug("peer %s: tktann over its rate, %d tickets ignored", self._peer.address,
                         len(announcement.tickets) - len(tickets))
        if not tickets:
            return
        invalid = await self._host.tickets_received(self._peer, announcement.escrow_id, tickets)
        if invalid:
            raise ProtocolViolation(f"tktann: {invalid} tickets with a bad signature")

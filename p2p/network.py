"""The node's peer-to-peer service: listener, outbound dialers, bans, gossip (SPEC §11)."""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Protocol

import trio

from p2p import messages
from p2p.addrbook import AddressBook
from p2p.bans import BanList
from p2p.download import BlockDownload
from p2p.eviction import Candidate, select_victim
from p2p.errors import PeerDisconnect, ProtocolViolation, SelfConnection
from p2p.interface import ChainAccess
from p2p.messages import MAX_ADDRS
from p2p.peer import Peer, format_address
from p2p.session import PeerSession

logger = logging.getLogger("p2p")

RECONNECT_MIN = 0.5  # seconds before the first redial of a lost or failed target
RECONNECT_MAX = 30.0  # cap of the doubling redial delay
BAN_SCORE = 100  # misbehaviour points that get an IP banned (Bitcoin Core's threshold)
SCORE_HALF_LIFE = 600.0  # seconds for an IP's misbehaviour score to halve
HEADERS_CACHE_ENTRIES = 16  # framed headers replies kept (per tip, locator, stop)
MAX_PENDING = 32  # inbound sockets not yet handshaken (the oldest is dropped beyond)
MAX_PENDING_PER_IP = 8  # of those, from one IP
MAX_INBOUND_PER_IP = 16  # inbound connections (any state) from one IP; devnets use 127.0.0.1
MAX_DISCOVERED_OUTBOUND = 8  # outbound connections to addresses learned from `addr`
DISCOVERY_TICK = 1.0  # seconds between looks for addresses to dial


class TicketRelay(Protocol):
    """The node's ticket watch as the network sees it (node.ticketwatch.TicketWatch;
    DESIGN "Ticket watch between merchants"). Peers are named by ``peer_id``."""

    def peer_connected(self, peer_id: int) -> None: ...

    def peer_disconnected(self, peer_id: int) -> None: ...

    def watch_received(self, peer_id: int, entries: dict[bytes, int]) -> None: ...

    async def tickets_received(self, peer_id: int, escrow_id: bytes,
                               tickets: list[bytes]) -> object:
        """Returns a result whose ``invalid`` counts badly signed tickets."""
        ...


def _remote_address(stream: trio.SocketStream) -> tuple[str, int]:
    """(ip, port) of the far end; raises OSError if the socket is already gone."""
    name = stream.socket.getpeername()
    return str(name[0]), int(name[1])


class Network:
    """Peer-to-peer networking for one node: run it in the node's nursery.

    Accepts inbound peers on (host, port), keeps each `connect` target connected
    (redialling with a doubling delay capped at 30 s), runs one task per peer plus its
    writer, bans misbehaving IPs for `ban_seconds`, and relays inventory announced by
    the node. SPEC §11.
    """

    def __init__(
        self,
        chain: ChainAccess,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect: Sequence[tuple[str, int]] = (),
        ban_seconds: int = 600,
        user_agent: str = "microcash/0.1",
        max_peers: int = 64,
        handshake_timeout: float = 10,
        idle_timeout: float = 120,
        discover: bool = True,
        external: tuple[str, int] | None = None,
    ) -> None:
        self.chain = chain
        self.host = host  # listen address: an IP literal or name; 0.0.0.0 / :: = every one
        self.port = port  # requested listen port; 0 = any free port
        self.bound_port = 0  # the port actually bound, once `run` has started
        # The port peers should dial, announced in `hello`: the --externalip port when one
        # is given (e.g. a relay or NAT in front of the node), else the bound port.
        self.listen_port = 0
        # (host, port) announced in `addr` as ours (port 0 = the bound port); None = none.
        self.external = external
        self.node_nonce = secrets.randbits(64)
        self.ban_seconds = ban_seconds
        self.user_agent = user_agent
        self.max_peers = max_peers  # handshaken inbound peers; outbound are never counted
        self.handshake_timeout = handshake_timeout  # seconds, dial + hello
        self.idle_timeout = idle_timeout  # seconds a peer may stay silent
        self.bans = BanList()
        self.discover = discover  # dial addresses learned from `addr` (up to 8)
        self.addresses = AddressBook()
        self._discovered: set[tuple[str, int]] = set()  # being dialled or connected
        self._discovery_wake = trio.Event()
        self.download = BlockDownload(chain)  # shared block download scheduler
        self._targets: list[tuple[str, int]] = []
        self._target_nonce: dict[tuple[str, int], int] = {}
        self._peers: dict[int, Peer] = {}  # handshaken peers by id
        self._by_nonce: dict[int, Peer] = {}
        self._connections = 0  # open sockets, handshaken or not
        self._pending: dict[int, Peer] = {}  # inbound sockets before their hello, oldest first
        self._next_peer_id = 0
        self._scores: dict[str, tuple[float, float]] = {}  # ip -> (score, trio time)
        self._headers_cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        self.ticket_relay: TicketRelay | None = None  # set by the node (ticket watch)
        for target_host, target_port in connect:
            self.add_node(target_host, target_port)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the port via `task_status.started(port)`, serve until cancelled.

        Raises OSError if the listen address cannot be bound.
        """
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.bound_port = listeners[0].socket.getsockname()[1]
        if self.external is not None and self.external[1] == 0:
            self.external = (self.external[0], self.bound_port)
        self.listen_port = self.external[1] if self.external is not None else self.bound_port
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(
                    partial(
                        trio.serve_listeners,
                        self._handle_inbound,
                        listeners,
                        handler_nursery=nursery,
                    )
                )
                nursery.start_soon(self.download.run)
                if self.discover:
                    nursery.start_soon(self._discover)
                for target in self._targets:
                    nursery.start_soon(self._maintain_outbound, target)
                logger.info("p2p listening on %s%s", format_address(self.host, self.bound_port),
                            f" (announced as {format_address(*self.external)})"
                            if self.external is not None else "")
                task_status.started(self.bound_port)
        finally:
            self._nursery = None

    # --- public API for the node ---------------------------------------------------

    def announce_block(self, block_hash: bytes) -> None:
        """Send `inv` of a block to every peer not known to have it (non-blocking)."""
        self._announce("block", block_hash)

    def announce_tx(self, txid: bytes) -> None:
        """Send `inv` of a transaction to every peer not known to have it (non-blocking)."""
        self._announce("tx", txid)

    def add_node(self, host: str, port: int) -> None:
        """Keep (host, port) connected from now on, like `--connect` (RPC addnode)."""
        target = (host, port)
        if target in self._targets:
            return
        self._targets.append(target)
        if self._nursery is not None:
            self._nursery.start_soon(self._maintain_outbound, target)

    def peer_info(self) -> list[dict]:
        """`[{"address": "host:port", "height": int, "inbound": bool}]` for handshaken peers."""
        return [
            {"address": peer.address, "height": peer.height, "inbound": peer.inbound}
            for peer in self._peers.values()
        ]

    def peer_count(self) -> int:
        """Number of handshaken peers."""
        return len(self._peers)

    def send_to_peer(self, peer_id: int, frame: bytes) -> bool:
        """Queue ``frame`` to the handshaken peer ``peer_id``; False if it is gone or its
        send buffer overflowed (it is then closed). For the ticket watch."""
        peer = self._peers.get(peer_id)
        return peer is not None and peer.send_frame(frame)

    # --- SessionHost ----------------------------------------------------------------

    def register_peer(self, peer: Peer) -> None:
        """Record a handshaken peer; close one of two connections to the same node.

        Of two connections to one node_nonce we keep the one dialled by the node with
        the smaller nonce (both ends agree), else the older one. Raises PeerDisconnect
        when `peer` is the one to drop.
        """
        nonce = peer.node_nonce
        if nonce is None:
            raise PeerDisconnect("registering a peer before its hello")
        if peer.target is not None:
            self._target_nonce[peer.target] = nonce
        old = self._by_nonce.get(nonce)
        if old is not None and old is not peer:
            if self._dialer_nonce(peer) < self._dialer_nonce(old):
                old.close("duplicate connection (replaced)")
            else:
                raise PeerDisconnect("duplicate connection")
        if peer.inbound:
            self._make_inbound_room()
        self._pending.pop(peer.peer_id, None)
        self._peers[peer.peer_id] = peer
        self._by_nonce[nonce] = peer
        self.download.add_peer(peer)
        if self.ticket_relay is not None:
            self.ticket_relay.peer_connected(peer.peer_id)
        if self.external is not None:  # advertise ourselves, as Bitcoin Core's AdvertiseLocal
            peer.send_frame(messages.build_addr([self.external]))

    def own_addresses(self) -> set[tuple[str, int]]:
        """(host, port) pairs that reach this very node: the listen and --externalip ones."""
        ours = {(self.host, self.listen_port), (self.host, self.bound_port)}
        if self.external is not None:
            ours.add(self.external)
        return ours

    def known_addresses(self) -> list[tuple[str, int]]:
        """Our --externalip (if any), listen addresses of handshaken peers, then learned ones
        (at most 1000 in all), for `addr`."""
        seen: dict[tuple[str, int], None] = {}
        if self.external is not None:
            seen[self.external] = None
        for peer in self._peers.values():
            address = peer.listen_address
            if address is not None:
                seen[address] = None
        for address in self.addresses.sample(MAX_ADDRS):
            seen[address] = None
        return list(seen)[:MAX_ADDRS]

    def addresses_received(self, peer: Peer, addresses: list[tuple[str, int]]) -> None:
        """Remember addresses a peer sent in `addr`; wake discovery if any were new."""
        ours = self.own_addresses()
        addresses = [a for a in addresses if a not in ours]
        if self.addresses.add(addresses, trio.current_time()):
            self._discovery_wake.set()

    def watch_received(self, peer: Peer, entries: dict[bytes, int]) -> None:
        """A peer's `watch` subscription set (DESIGN "Ticket watch between merchants")."""
        if self.ticket_relay is not None and peer.peer_id in self._peers:
            self.ticket_relay.watch_received(peer.peer_id, entries)

    async def tickets_received(self, peer: Peer, escrow_id: bytes, tickets: list[bytes]) -> int:
        """A peer's `tktann`: handed to the ticket watch; the number of tickets whose
        signature failed against a known escrow (the session bans for any)."""
        if self.ticket_relay is None or peer.peer_id not in self._peers:
            return 0
        result = await self.ticket_relay.tickets_received(peer.peer_id, escrow_id, tickets)
        return int(getattr(result, "invalid", 0))

    def misbehaving(self, peer: Peer, points: int, reason: str) -> None:
        """Add `points` to the score of `peer`'s IP (halving every 10 min); ban at 100.

        A banned peer is closed with "banned: <reason>".
        """
        now = trio.current_time()
        score, at = self._scores.get(peer.ip, (0.0, now))
        score = score * 0.5 ** ((now - at) / SCORE_HALF_LIFE) + points
        if len(self._scores) >= 4096:  # forget the least suspicious IPs
            self._scores = dict(sorted(self._scores.items(), key=lambda kv: -kv[1][0])[:2048])
        if score < BAN_SCORE:
            self._scores[peer.ip] = (score, now)
            logger.debug("peer %s: %s (+%d, score %.0f)", peer.address, reason, points, score)
            return
        self._scores.pop(peer.ip, None)
        self.bans.ban(peer.ip, self.ban_seconds)
        logger.warning("peer %s misbehaved (%s): banning %s for %d s", peer.address, reason,
                       peer.ip, self.ban_seconds)
        for other in list(self._peers.values()) + [peer]:
            if other.ip == peer.ip:
                other.close(f"banned: {reason}")

    def headers_reply(self, request: messages.GetHeaders) -> bytes:
        """The framed `headers` reply to `request`, from a small cache keyed by our tip.

        Identical requests (a flood, or many peers syncing) share one encoding.
        """
        key = (self.chain.best_hash(), tuple(request.locator), request.stop_hash)
        frame = self._headers_cache.get(key)
        if frame is None:
            headers = self.chain.get_headers_after(request.locator, request.stop_hash,
                                                   messages.MAX_HEADERS)
            frame = messages.build_headers(headers)
            self._headers_cache[key] = frame
            while len(self._headers_cache) > HEADERS_CACHE_ENTRIES:
                self._headers_cache.popitem(last=False)
        else:
            self._headers_cache.move_to_end(key)
        return frame

    # --- internals ------------------------------------------------------------------

    def _dialer_nonce(self, peer: Peer) -> int:
        if peer.inbound:
            return peer.node_nonce if peer.node_nonce is not None else 2**64
        return self.node_nonce

    def _announce(self, kind: str, item_hash: bytes) -> None:
        frame: bytes | None = None
        for peer in list(self._peers.values()):
            if item_hash in peer.known:
                continue
            peer.known.add(item_hash)
            if frame is None:
                frame = messages.build_inventory("inv", [(kind, item_hash)])
            peer.send_frame(frame)

    def _make_inbound_room(self) -> None:
        """Evict one inbound peer if every inbound slot is taken; PeerDisconnect if none can go."""
        inbound = [p for p in self._peers.values() if p.inbound]
        if len(inbound) < self.max_peers:
            return
        victim_id = select_victim([
            Candidate(p.peer_id, p.ip, p.connected_at, p.ping_rtt, p.last_block_at, p.last_tx_at)
            for p in inbound
        ])
        if victim_id is None:
            raise PeerDisconnect(f"all {self.max_peers} inbound slots are taken")
        victim = self._peers[victim_id]
        logger.info("evicting inbound peer %s to make room", victim.address)
        victim.close("evicted for a new inbound peer")
        self._unregister(victim)

    def _admit_inbound(self, ip: str) -> str:
        """Why an inbound socket from `ip` is refused now ("" = admitted)."""
        if self.bans.is_banned(ip):
            return "banned"
        pending_here = sum(1 for p in self._pending.values() if p.ip == ip)
        if pending_here >= MAX_PENDING_PER_IP:
            return f"{pending_here} handshakes pending from this address"
        from_ip = pending_here + sum(1 for p in self._peers.values() if p.inbound and p.ip == ip)
        if from_ip >= MAX_INBOUND_PER_IP:
            return f"{from_ip} connections from this address"
        if len(self._pending) >= MAX_PENDING:  # reclaim the oldest half-open slot
            oldest = next(iter(self._pending.values()))
            oldest.close("handshake slot reclaimed")
            self._pending.pop(oldest.peer_id, None)
        return ""

    def _unregister(self, peer: Peer) -> None:
        self._pending.pop(peer.peer_id, None)
        if self._peers.pop(peer.peer_id, None) is not None and self.ticket_relay is not None:
            self.ticket_relay.peer_disconnected(peer.peer_id)
        self.download.remove_peer(peer)
        nonce = peer.node_nonce
        if nonce is not None and self._by_nonce.get(nonce) is peer:
            del self._by_nonce[nonce]

    def _peer_for_target(self, target: tuple[str, int]) -> Peer | None:
        nonce = self._target_nonce.get(target)
        for peer in self._peers.values():
            if peer.listen_address == target or (nonce is not None and peer.node_nonce == nonce):
                return peer
        return None

    async def _handle_inbound(self, stream: trio.SocketStream) -> None:
        try:
            ip, port = _remote_address(stream)
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        refusal = self._admit_inbound(ip)
        if refusal:
            logger.debug("refusing %s: %s", format_address(ip, port), refusal)
            await trio.aclose_forcefully(stream)
            return
        await self._run_connection(stream, ip, port, inbound=True, target=None)

    async def _discover(self) -> None:
        """Keep up to MAX_DISCOVERED_OUTBOUND connections to addresses learned from `addr`."""
        while True:
            with trio.move_on_after(DISCOVERY_TICK):
                await self._discovery_wake.wait()
            self._discovery_wake = trio.Event()
            room = MAX_DISCOVERED_OUTBOUND - len(self._discovered)
            if room <= 0 or self._nursery is None:
                continue
            busy = {p.listen_address for p in self._peers.values() if p.listen_address}
            busy |= set(self._targets) | self._discovered | self.own_addresses()
            now = trio.current_time()
            for address in self.addresses.candidates(now, busy)[:room]:
                if self.bans.is_banned(address[0]):
                    continue
                self._discovered.add(address)
                self.addresses.attempt(address, now)
                self._nursery.start_soon(self._dial_discovered, address)

    async def _dial_discovered(self, address: tuple[str, int]) -> None:
        try:
            peer = await self._dial(*address)
            if peer is not None and peer.self_connection:
                self.addresses.mark_ours(address)
            else:
                self.addresses.result(address, peer is not None and peer.hello is not None)
        finally:
            self._discovered.discard(address)

    async def _maintain_outbound(self, target: tuple[str, int]) -> None:
        host, port = target
        delay = RECONNECT_MIN
        while True:
            existing = self._peer_for_target(target)
            if existing is not None:
                await existing.closed.wait()
                continue
            banned_for = self.bans.remaining(host)
            if banned_for > 0:
                await trio.sleep(min(banned_for, RECONNECT_MAX))
                continue
            peer = await self._dial(host, port)
            if peer is not None and peer.self_connection:
                logger.info("%s is this node; no longer dialling it", format_address(host, port))
                self._targets.remove(target)
                return
            if peer is not None and peer.hello is not None:
                delay = RECONNECT_MIN
            await trio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _dial(self, host: str, port: int) -> Peer | None:
        try:
            with trio.fail_after(self.handshake_timeout):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            logger.debug("dial %s failed: %r", format_address(host, port), exc)
            return None
        try:
            ip, remote_port = _remote_address(stream)
        except OSError:
            await trio.aclose_forcefully(stream)
            return None
        if self.bans.is_banned(ip):
            await trio.aclose_forcefully(stream)
            return None
        return await self._run_connection(
            stream, ip, remote_port, inbound=False, target=(host, port)
        )

    async def _run_connection(
        self,
        stream: trio.SocketStream,
        ip: str,
        port: int,
        *,
        inbound: bool,
        target: tuple[str, int] | None,
    ) -> Peer:
        self._next_peer_id += 1
        peer = Peer(self._next_peer_id, stream, ip, port, inbound=inbound, target=target)
        self._connections += 1
        if inbound:
            self._pending[peer.peer_id] = peer
        try:
            with peer.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(peer.run_writer)
                    await self._run_session(peer)
                    nursery.cancel_scope.cancel()
        finally:
            self._connections -= 1
            self._unregister(peer)
            peer.closed.set()
            await trio.aclose_forcefully(stream)
            logger.info("peer %s disconnected: %s", peer.address, peer.close_reason or "closed")
        return peer

    async def _run_session(self, peer: Peer) -> None:
        try:
            await PeerSession(self, peer).run()
        except ProtocolViolation as exc:
            self.bans.ban(peer.ip, self.ban_seconds)
            logger.warning(
                "peer %s misbehaved (%s): banning %s for %d s",
                peer.address,
                exc.reason,
                peer.ip,
                self.ban_seconds,
            )
            peer.close(f"banned: {exc.reason}")
        except SelfConnection as exc:
            peer.self_connection = True
            peer.close(exc.reason)
        except PeerDisconnect as exc:
            peer.close(exc.reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            peer.close(f"connection error: {exc!r}")
        except Exception:
            # A bug (ours or the node's) ends this peer only, never the node (SPEC §11).
            logger.exception("peer %s: unexpected error, closing the connection", peer.address)
            peer.close("internal error")

"""The node's JSON-RPC server: HTTP POST to `/` with cookie Basic auth (SPEC §12).

HTTP is hypercorn's (trio worker) serving a minimal ASGI callable; the JSON-RPC
envelope lives in node/jsonrpc.py. At start-up the server writes
`__cookie__:<random password>` to the cookie file (mode 0600), as bitcoind does, and
removes it when it stops.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from node.jsonrpc import Dispatcher, RpcError

__all__ = ["RpcError", "RpcServer", "COOKIE_USER", "MAX_BODY_BYTES", "LOOPBACK_ONLY",
           "parse_allow_ip"]

log = logging.getLogger("rpc")

COOKIE_USER = "__cookie__"
MAX_BODY_BYTES = 16 * 1024 * 1024  # largest accepted request body
_GRACEFUL_SECONDS = 3.0  # in-flight requests may finish this long after close()

# Who may call when no --rpc-allow-ip is given: this host only (as bitcoind's default).
LOOPBACK_ONLY = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Scope = dict[str, Any]


def parse_allow_ip(text: str) -> IpNetwork:
    """An --rpc-allow-ip value: a CIDR (``10.0.0.0/24``, ``fd00::/8``) or one address.

    Raises ValueError with a readable message for anything else.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or CIDR (e.g. 192.168.1.0/24)") from None


def client_allowed(client: Any, allowed: tuple[IpNetwork, ...]) -> bool:
    """Whether an ASGI ``scope["client"]`` ``(host, port)`` lies in one of ``allowed``.

    An IPv4-mapped IPv6 peer (``::ffff:a.b.c.d``, from a dual-stack ``::`` listener) is
    judged by its IPv4 address; a client with no address (a UNIX socket) is refused.
    """
    try:
        address = ipaddress.ip_address(str(client[0]).split("%", 1)[0])
    except (TypeError, IndexError, ValueError):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in allowed if network.version == address.version)
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RpcServer:
    """JSON-RPC 2.0 over HTTP on a loopback port, authenticated by a cookie file.

    methods: name -> callable taking positional JSON params (sync or `async def`);
    host/port: where to listen (port 0 = any free port, reported by `serve`);
    cookie_path: usually `<datadir>/.cookie`; max_body_bytes: larger bodies get 413;
    allow_ip: client networks served (default loopback only); others get HTTP 403.
    Errors a method raises map to JSON-RPC errors as described in node/jsonrpc.py.
    SPEC §12.
    """

    def __init__(
        self,
        methods: Mapping[str, Callable[..., Any]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cookie_path: Path,
        max_body_bytes: int = MAX_BODY_BYTES,
        batch_hook: Callable[[list], Any] | None = None,
        allow_ip: tuple[IpNetwork, ...] = LOOPBACK_ONLY,
    ) -> None:
        self.host = host
        self.allow_ip = tuple(allow_ip)
        self.port: int | None = None  # the bound port, once serving
        self._requested_port = port
        self.cookie_path = Path(cookie_path)
        self._dispatcher = Dispatcher(methods, batch_hook)
        self.max_body_bytes = max_body_bytes
        self._credentials = b""
        self._shutdown = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Write the cookie, listen, report the bound port, serve until cancelled or closed.

        `task_status.started(port)` is called once connections are accepted. The cookie
        file is removed on every exit path. Raises OSError if the port cannot be bound
        or the cookie cannot be written.
        """
        password = secrets.token_hex(32)
        cookie = f"{COOKIE_USER}:{password}"
        self._credentials = cookie.encode()
        _write_cookie(self.cookie_path, cookie)
        try:
            config = Config()
            host = f"[{self.host}]" if ":" in self.host else self.host
            config.bind = [f"{host}:{self._requested_port}"]
            config.accesslog = None
            config.errorlog = logging.getLogger("rpc.http")
            config.graceful_timeout = _GRACEFUL_SECONDS
            config.include_server_header = False
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(
                    partial(
                        hypercorn_serve,
                        _RpcApp(self),
                        config,
                        shutdown_trigger=self._shutdown.wait,
                        mode="asgi",
                    )
                )
                self.port = _port_of(binds[0])
                log.info("JSON-RPC listening on %s:%d", self.host, self.port)
                task_status.started(self.port)
        finally:
            _remove_cookie(self.cookie_path, cookie)
            log.info("JSON-RPC stopped")

    def close(self) -> None:
        """Stop accepting requests; `serve` returns once in-flight ones are answered.

        Call from the trio thread (e.g. from the `stop` method, whose reply still goes
        out). Idempotent.
        """
        self._shutdown.set()

    def is_authorized(self, header: bytes | None) -> bool:
        """Whether an `Authorization` header value carries the cookie credentials."""
        if not header or not self._credentials:
            return False
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self._credentials)

    async def handle_body(self, body: bytes) -> bytes | None:
        """Run a JSON-RPC request body; None when nothing is to be sent back."""
        return await self._dispatcher.handle_body(body)


class _RpcApp:
    """The ASGI callable: client address, auth, method/path checks, body limit, then the dispatcher."""

    def __init__(self, server: RpcServer) -> None:
        self._server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not served; hypercorn refuses the handshake
        if not client_allowed(scope.get("client"), self._server.allow_ip):
            log.info("refused RPC request from %s: not in --rpc-allow-ip", scope.get("client"))
            await _respond(send, 403, b"forbidden: your address is not in --rpc-allow-ip\n",
                           b"text/plain")
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.lower(), value)
        if not self._server.is_authorized(headers.get(b"authorization")):
            client = scope.get("client")
            log.info("rejected RPC request from %s: bad or missing credentials", client)
            await _respond(send, 401, b"unauthorized\n", b"text/plain",
                           [(b"www-authenticate", b'Basic realm="jsonrpc"')])
            return
        if scope["method"] != "POST":
            await _respond(send, 405, b"only POST is served\n", b"text/plain",
                           [(b"allow", b"POST")])
            return
        if scope["path"] != "/":
            await _respond(send, 404, b"not found\n", b"text/plain")
            return
        try:
            body = await _read_body(headers, receive, self._server.max_body_bytes)
        except _ClientGone:
            return
        if body is None:
            await _respond(send, 413, b"request body too large\n", b"text/plain")
            return
        reply = await self._server.handle_body(body)
        if reply is None:
            await _respond(send, 204, b"", None)
        else:
            await _respond(send, 200, reply, b"application/json")


class _ClientGone(Exception):
    """The client disconnected before sending its whole request body."""


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge ASGI lifespan startup and shutdown; the app holds no resources."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(headers: dict[bytes, bytes], receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it exceeds `limit` bytes.

    Raises _ClientGone if the client disconnects first.
    """
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes | None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    headers.extend(extra_headers or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _port_of(bind: str) -> int:
    """The port of hypercorn's bind report, e.g. 'http://127.0.0.1:8332' -> 8332."""
    return int(bind.rsplit(":", 1)[1])


def _write_cookie(path: Path, cookie: str) -> None:
    """Create or replace the cookie file with mode 0600 (never readable by others)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file keeps its mode through O_TRUNC
        os.write(fd, cookie.encode())
    finally:
        os.close(fd)


def _remove_cookie(path: Path, cookie: str) -> None:
    """Delete the cookie file if it still holds our credentials."""
    try:
        if path.read_text() == cookie:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove RPC cookie %s: %s", path, exc)

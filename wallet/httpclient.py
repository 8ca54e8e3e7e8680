"""Keep-alive HTTP/1.1 client connections on the standard library's ``http.client``.

The wallet's synchronous HTTP: JSON-RPC to the node (``wallet.rpcclient``), tickets to a
merchant service (``wallet.customer.issuer``) and its status page. Importing it costs a few
milliseconds (``http.client`` itself is loaded with the first connection), which keeps
every ``microcash-wallet`` command quick to start.
"""

from __future__ import annotations

import select
import threading
import urllib.parse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import http.client


class HttpError(OSError):
    """The server's answer was not HTTP (``http.client.HTTPException``, as an OSError)."""


class HttpConnections:
    """Keep-alive HTTP/1.1 connections to one ``http(s)://host:port/path`` URL.

    ``post(body, headers) -> (status, body bytes)``, or ``request`` for another method or
    a path below the URL's. Thread-safe: each call takes an idle connection (or opens
    one) and gives it back after a complete answer. A connection the server closed while
    idle is noticed before reuse and dropped. Raises ``OSError``: ``TimeoutError`` after
    ``timeout`` seconds without progress, ``HttpError`` for an answer that is not HTTP,
    ``wallet.tlsconfig.TlsError`` for an https server whose certificate is not trusted
    (verified against ``wallet.tlsconfig.client_context``);
    ``ValueError`` at construction for a URL that is not http(s).
    """

    def __init__(self, url: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        import http.client

        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                sock = conn.sock
                # An idle keep-alive socket that is readable was closed by the server.
                if sock is not None and not select.select([sock], [], [], 0)[0]:
                    return conn
                conn.close()
        if self._scheme == "https":
            from wallet.tlsconfig import client_context

            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                               context=client_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST ``body`` to the URL's path; the status code and the whole answer body."""
        return self.request("POST", "", body, headers)

    def request(self, method: str, subpath: str = "", body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """``method`` on the URL's path + ``subpath``; the status code and answer body."""
        import http.client

        conn = self._connection()
        try:
            conn.request(method, self._path.rstrip("/") + subpath if subpath else self._path,
                         body=body, headers=headers or {})
            response = conn.getresponse()
            content = response.read()
        except http.client.HTTPException as exc:
            conn.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException as exc:
            conn.close()
            if self._scheme == "https":  # a certificate not trusted: say what to do
                from wallet.tlsconfig import explain_tls_error

                explained = explain_tls_error(exc, self._host, self._port)
                if explained is not exc:
                    raise explained from exc
            raise
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append(conn)
        return response.status, content

    def close(self) -> None:
        """Close the idle connections (ones in use close when their call ends)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

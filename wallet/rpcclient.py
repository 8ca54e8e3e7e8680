"""Synchronous JSON-RPC 2.0 client for a MicroCash node (SPEC §12).

The wallet talks to a node only through this. Credentials come from the node's cookie
file `<datadir>/.cookie` (`__cookie__:<password>`), the port from `<datadir>/ports.json`.

HTTP goes through ``wallet.httpclient`` (the standard library's ``http.client`` with
keep-alive connections, safe to share between threads): a wallet command starts in a
fraction of the time an async-capable HTTP stack needs to import.
"""

from __future__ import annotations

import base64
import itertools
import json
from functools import partial
from pathlib import Path
from typing import Any, Callable

from consensus.params import ChainParams, get_params
from wallet.httpclient import HttpConnections

RPC_VERIFY_REJECTED = -26  # the node's code for "a consensus rule rejected it"


class RpcError(Exception):
    """The node answered with a JSON-RPC error.

    `.code` (int), `.message` (str: the SPEC reject reason for code -26), `.data`
    (optional extra detail). str(e) reads like "node rejected: bad-nonce".
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        text = f"node rejected: {message}"
        if data:
            text += f" ({data})"
        super().__init__(text)
        self.code = code
        self.message = message
        self.data = data


class RpcConnectionError(Exception):
    """The node could not be reached, or did not answer like a JSON-RPC server."""


class RpcAuthError(RpcConnectionError):
    """The node refused the credentials (HTTP 401): a stale or wrong cookie."""


class RpcClient:
    """Calls a node's JSON-RPC methods over HTTP with Basic auth.

    url: e.g. "http://127.0.0.1:18443/"; timeout: seconds per call.
    `client.call("getblockhash", 5)` and `client.getblockhash(5)` are the same.
    Usable as a context manager; `close()` releases the connection pool.
    """

    def __init__(self, url: str, user: str, password: str, timeout: float = 30) -> None:
        self.url = url
        self.timeout = timeout
        self._ids = itertools.count(1)
        try:
            self._http = HttpConnections(url, timeout)
        except ValueError as exc:
            raise RpcConnectionError(str(exc)) from None
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}",
                         "Content-Type": "application/json"}

    @classmethod
    def from_cookie(cls, url: str, cookie_path: Path, timeout: float = 30) -> RpcClient:
        """A client authenticating with a cookie file (`__cookie__:<password>`).

        Raises RpcConnectionError("node not running? <path> not found") when the file
        is missing, or when it is not in the cookie format.
        """
        cookie_path = Path(cookie_path)
        try:
            text = cookie_path.read_text().strip()
        except FileNotFoundError:
            raise RpcConnectionError(f"node not running? {cookie_path} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RpcConnectionError(f"cannot read RPC cookie {cookie_path}: {exc}") from None
        user, sep, password = text.partition(":")
        if not sep or not user or not password:
            raise RpcConnectionError(f"{cookie_path} is not an RPC cookie (user:password)")
        return cls(url, user, password, timeout=timeout)

    @classmethod
    def from_datadir(cls, datadir: Path, timeout: float = 30) -> RpcClient:
        """A client for the node running on `datadir` (reads ports.json and .cookie; the
        node's `rpc_host` there, else 127.0.0.1).

        Raises RpcConnectionError naming the missing or malformed file.
        """
        datadir = Path(datadir)
        ports_path = datadir / "ports.json"
        try:
            ports = json.loads(ports_path.read_text())
            port = ports["rpc"]
        except FileNotFoundError:
            raise RpcConnectionError(f"node not running? {ports_path} not found") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RpcConnectionError(
                f"cannot read the RPC port from {ports_path}: {exc!r}"
            ) from None
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise RpcConnectionError(f"{ports_path} holds no valid rpc port: {port!r}")
        host = ports.get("rpc_host") or "127.0.0.1"  # the node's --rpc-bind address
        if not isinstance(host, str):
            raise RpcConnectionError(f"{ports_path} holds no valid rpc_host: {host!r}")
        host = f"[{host}]" if ":" in host else host
        return cls.from_cookie(f"http://{host}:{port}/", datadir / ".cookie", timeout=timeout)

    def call(self, method: str, *params: Any) -> Any:
        """Call `method` with positional params; return its result.

        Raises RpcError for an error answer, RpcAuthError for HTTP 401, and
        RpcConnectionError when the node is unreachable, too slow or answers nonsense.
        """
        req_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": list(params)}
        try:
            status, content = self._http.post(json.dumps(payload).encode(), self._headers)
        except TimeoutError:
            raise RpcConnectionError(
                f"no answer from node at {self.url} within {self.timeout} s ({method})"
            ) from None
        except (OSError) as exc:
            raise RpcConnectionError(f"cannot reach node at {self.url}: {exc}") from None
        if status == 401:
            raise RpcAuthError(
                f"node at {self.url} refused the credentials (HTTP 401): "
                "wrong or stale cookie? (the node writes a new one each start)"
            )
        try:
            reply = json.loads(content)
        except ValueError:
            raise RpcConnectionError(
                f"node at {self.url} answered HTTP {status} without JSON"
            ) from None
        if not isinstance(reply, dict) or reply.get("id") != req_id:
            raise RpcConnectionError(f"node at {self.url} sent a malformed JSON-RPC reply")
        error = reply.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            if not isinstance(code, int) or isinstance(code, bool):
                raise RpcConnectionError(f"node at {self.url} sent a malformed error: {error!r}")
            raise RpcError(code, str(error.get("message", "")), error.get("data"))
        return reply.get("result")

    def __getattr__(self, name: str) -> Callable[..., Any]:
        """`client.getinfo()` sugar for `client.call("getinfo")`."""
        if name.startswith("_"):
            raise AttributeError(name)
        return partial(self.call, name)

    def close(self) -> None:
        """Close the underlying HTTP connections."""
        self._http.close()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def resolve_params(chain: str) -> ChainParams:
    """The ``ChainParams`` profile named by ``getinfo``'s ``chain`` field.

    Accepts a profile name (``devnet``) or a chain id (``microcash-devnet``); raises
    ``ValueError`` for anything else. Only the schedule fields (``d_draw``, ``d_redeem``,
    ``confirm_depth``...) are used, which a custom genesis does not change (SPEC §1, §12.1).
    """
    candidates = [chain]
    if chain.startswith("microcash-"):
        candidates.append(chain[len("microcash-"):])
    for name in candidates:
        try:
            return get_params(name)
        except (KeyError, ValueError):
            continue
    raise ValueError(f"node reports unknown chain {chain!r}")

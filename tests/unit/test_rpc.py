"""JSON-RPC server (node/rpc.py) and client (wallet/rpcclient.py) together (SPEC §12).

Each test runs a real RpcServer on a free loopback port inside trio.run and talks to
it from a worker thread with the synchronous client or raw httpx.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import httpx
import pytest
import trio

from consensus.errors import ConsensusError
from node.rpc import RpcError as ServerRpcError
from node.rpc import RpcServer
from wallet.rpcclient import RpcAuthError, RpcClient, RpcConnectionError, RpcError

pytestmark = pytest.mark.timeout(20)


class Toy:
    """A few methods standing in for the node's."""

    def __init__(self) -> None:
        self.recorded: list[object] = []
        self.server: RpcServer | None = None

    def methods(self) -> dict:
        return {
            "echo": self.echo, "add": self.add, "async_add": self.async_add,
            "reject": self.reject, "custom": self.custom, "badvalue": self.badvalue,
            "boom": self.boom, "notjson": self.notjson, "record": self.record,
            "stop": self.stop, "maybe": self.maybe,
        }

    def echo(self, *args):
        return list(args)

    def add(self, a: int, b: int) -> int:
        return a + b

    async def async_add(self, a: int, b: int) -> int:
        await trio.sleep(0)
        return a + b

    def maybe(self, x: str | None = None) -> str:
        return repr(x)

    def reject(self, reason: str):
        raise ConsensusError(reason, "nonce 3, expected 4")

    def custom(self):
        raise ServerRpcError(-5, "draw-not-ready")

    def badvalue(self, text: str):
        raise ValueError(f"not a MicroCash address: {text}")

    def boom(self):
        raise RuntimeError("kaboom")

    def notjson(self):
        return object()

    def record(self, value):
        self.recorded.append(value)
        return True

    def stop(self) -> bool:
        assert self.server is not None
        self.server.close()
        return True


def run_server(tmp_path: Path, client_fn, toy: Toy | None = None, **server_kwargs):
    """Serve `toy`'s methods; run client_fn(url, cookie_path) in a thread; return its result.

    The server is cancelled when client_fn returns (unless it already stopped).
    """
    toy = toy or Toy()
    cookie = tmp_path / ".cookie"
    out: dict[str, object] = {}

    async def main() -> None:
        server = RpcServer(toy.methods(), cookie_path=cookie, **server_kwargs)
        toy.server = server
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(server.serve)
                assert port == server.port and port > 0
                url = f"http://127.0.0.1:{port}/"
                out["result"] = await trio.to_thread.run_sync(client_fn, url, cookie)
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert not cookie.exists(), "cookie must be removed on shutdown"
    return out["result"]


def client(url: str, cookie: Path) -> RpcClient:
    return RpcClient.from_cookie(url, cookie, timeout=5)


def raw_post(url: str, cookie: Path, body: bytes, **kwargs) -> httpx.Response:
    user, _, password = cookie.read_text().partition(":")
    return httpx.post(url, content=body, auth=(user, password), timeout=5, **kwargs)


def test_cookie_written_0600_and_removed(tmp_path):
    def check(url, cookie):
        mode = stat.S_IMODE(os.stat(cookie).st_mode)
        text = cookie.read_text()
        return mode, text

    mode, text = run_server(tmp_path, check)
    assert mode == 0o600
    user, _, password = text.partition(":")
    assert user == "__cookie__" and len(password) == 64
    int(password, 16)


def test_old_cookie_replaced_with_private_mode(tmp_path):
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:stale")
    os.chmod(cookie, 0o644)
    mode, text = run_server(tmp_path, lambda url, c: (stat.S_IMODE(os.stat(c).st_mode),
                                                      c.read_text()))
    assert mode == 0o600 and text != "__cookie__:stale"


def test_calls_sync_and_async_methods(tmp_path):
    def calls(url, cookie):
        with client(url, cookie) as rpc:
            return rpc.add(2, 3), rpc.call("async_add", 4, 5), rpc.echo(), rpc.maybe(None)

    assert run_server(tmp_path, calls) == (5, 9, [], "None")


def test_invalid_auth_rejected(tmp_path):
    def calls(url, cookie):
        with RpcClient(url, "__cookie__", "wrong", timeout=5) as rpc:
            with pytest.raises(RpcAuthError, match="HTTP 401"):
                rpc.echo()
        bare = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "echo"}, timeout=5)
        garbled = httpx.post(url, content=b"{}", headers={"authorization": "Basic !!!"},
                             timeout=5)
        return bare.status_code, bare.headers.get("www-authenticate"), garbled.status_code

    status, challenge, garbled = run_server(tmp_path, calls)
    assert status == 401 and challenge.startswith("Basic") and garbled == 401


def test_invalid_unknown_method(tmp_path):
    def calls(url, cookie):
        with client(url, cookie) as rpc, pytest.raises(RpcError) as info:
            rpc.call("nosuchmethod")
        return info.value

    err = run_server(tmp_path, calls)
    assert err.code == -32601 and "nosuchmethod" in err.message


def test_invalid_params_arity_and_type(tmp_path):
    def calls(url, cookie):
        errors = []
        with client(url, cookie) as rpc:
            for params in [(1,), (1, 2, 3), ("1", 2), (True, 2), (1.5, 2)]:
                with pytest.raises(RpcError) as info:
                    rpc.add(*params)
                errors.append(info.value)
            with pytest.raises(RpcError) as info:
                rpc.maybe(5)
            errors.append(info.value)
        return errors

    errors = run_server(tmp_path, calls)
    assert all(e.code == -32602 for e in errors)
    assert "add(a, b)" in errors[0].message
    assert "a must be an integer, got a string" in errors[2].message
    assert "x must be a string or null" in errors[5].message


def test_invalid_consensus_error_maps_to_reject_reason(tmp_path):
    def calls(url, cookie):
        with client(url, cookie) as rpc, pytest.raises(RpcError) as info:
            rpc.reject("bad-nonce")
        return info.value

    err = run_server(tmp_path, calls)
    assert err.code == -26 and err.message == "bad-nonce"
    assert str(err).startswith("node rejected: bad-nonce")
    assert err.data == "nonce 3, expected 4"


def test_method_errors_mapped_and_server_survives(tmp_path):
    def calls(url, cookie):
        seen = []
        with client(url, cookie) as rpc:
            for name in ["custom", "boom", "notjson"]:
                with pytest.raises(RpcError) as info:
                    rpc.call(name)
                seen.append((info.value.code, info.value.message))
            with pytest.raises(RpcError) as info:
                rpc.badvalue("xyz")
            seen.append((info.value.code, info.value.message))
            seen.append(rpc.add(1, 1))
        return seen

    assert run_server(tmp_path, calls) == [
        (-5, "draw-not-ready"),
        (-32603, "internal error"),
        (-32603, "internal error"),
        (-8, "not a MicroCash address: xyz"),
        2,
    ]


def test_batch_with_notification(tmp_path):
    toy = Toy()
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "add", "params": [1, 2]},
        {"jsonrpc": "2.0", "method": "record", "params": ["note"]},
        {"jsonrpc": "2.0", "id": "b", "method": "nosuch"},
        {"jsonrpc": "2.0", "method": "nosuch"},
        42,
        {"jsonrpc": "2.0", "id": 3, "method": "echo", "params": {"a": 1}},
        {"jsonrpc": "1.0", "id": 4, "method": "echo"},
    ]

    def calls(url, cookie):
        return raw_post(url, cookie, json.dumps(batch).encode()).json()

    replies = run_server(tmp_path, calls, toy)
    assert toy.recorded == ["note"]
    assert replies[0] == {"jsonrpc": "2.0", "id": 1, "result": 3}
    assert [(r["id"], r["error"]["code"]) for r in replies[1:]] == [
        ("b", -32601), (None, -32600), (3, -32602), (4, -32600)
    ]


def test_notifications_only_get_no_body(tmp_path):
    toy = Toy()

    def calls(url, cookie):
        single = raw_post(url, cookie, b'{"jsonrpc": "2.0", "method": "record", "params": [1]}')
        batch = raw_post(url, cookie, b'[{"jsonrpc": "2.0", "method": "record", "params": [2]}]')
        return single.status_code, single.content, batch.status_code, batch.content

    assert run_server(tmp_path, calls, toy) == (204, b"", 204, b"")
    assert toy.recorded == [1, 2]


@pytest.mark.parametrize(
    "body, code",
    [
        (b"{not json", -32700),
        (b"\xff\xfe", -32700),
        (b"[" * 100_000, -32700),
        (b'{"id": 1, "method": "echo", "params": [NaN]}', -32700),
        (b"[]", -32600),
        (b'"just a string"', -32600),
        (b'{"id": 1}', -32600),
        (b'{"id": [1], "method": "echo"}', -32600),
        (b'{"id": 1, "method": "echo", "params": "x"}', -32600),
    ],
)
def test_invalid_envelopes(tmp_path, body, code):
    def calls(url, cookie):
        first = raw_post(url, cookie, body)
        good = b'{"jsonrpc": "2.0", "id": 9, "method": "add", "params": [1, 2]}'
        after = raw_post(url, cookie, good)
        return first.status_code, first.json(), after.json()

    status, reply, after = run_server(tmp_path, calls)
    assert status == 200 and reply["error"]["code"] == code
    assert after["result"] == 3


def test_http_method_path_and_size_limits(tmp_path):
    def calls(url, cookie):
        user, _, password = cookie.read_text().partition(":")
        auth = (user, password)
        get = httpx.get(url, auth=auth, timeout=5)
        path = httpx.post(url + "other", content=b"{}", auth=auth, timeout=5)
        big = raw_post(url, cookie, b" " * 5000)
        return get.status_code, get.headers.get("allow"), path.status_code, big.status_code

    assert run_server(tmp_path, calls, max_body_bytes=4096) == (405, "POST", 404, 413)


def test_stop_answers_then_serve_returns(tmp_path):
    toy = Toy()
    cookie = tmp_path / ".cookie"
    answers: list[object] = []

    async def main() -> None:
        server = RpcServer(toy.methods(), cookie_path=cookie)
        toy.server = server
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(server.serve)

                def stop() -> None:
                    with RpcClient.from_cookie(f"http://127.0.0.1:{port}/", cookie) as rpc:
                        answers.append(rpc.stop())

                nursery.start_soon(trio.to_thread.run_sync, stop)
            # the nursery closed by itself: serve returned after close()

    trio.run(main)
    assert answers == [True]
    assert not cookie.exists()


def test_client_from_datadir(tmp_path):
    def calls(url, cookie):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        (tmp_path / "ports.json").write_text(json.dumps({"p2p": 1, "rpc": port}))
        with RpcClient.from_datadir(tmp_path, timeout=5) as rpc:
            return rpc.echo("x", 1)

    assert run_server(tmp_path, calls) == ["x", 1]


def test_invalid_client_missing_files(tmp_path):
    with pytest.raises(RpcConnectionError, match="node not running\\? .*ports.json not found"):
        RpcClient.from_datadir(tmp_path)
    (tmp_path / "ports.json").write_text('{"p2p": 1, "rpc": 5}')
    with pytest.raises(RpcConnectionError, match="node not running\\? .*\\.cookie not found"):
        RpcClient.from_datadir(tmp_path)
    (tmp_path / "ports.json").write_text('{"p2p": 1}')
    with pytest.raises(RpcConnectionError, match="cannot read the RPC port"):
        RpcClient.from_datadir(tmp_path)


def test_invalid_client_node_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with RpcClient(url, "u", "p", timeout=2) as rpc:
        with pytest.raises(RpcConnectionError, match=f"cannot reach node at {url}"):
            rpc.getinfo()

"""Fuzz the JSON-RPC request body through ``node.jsonrpc.Dispatcher`` (SPEC §12) over a
small method table shaped like the node's: never an exception, always a JSON-RPC
reply (or nothing, for notifications), never "internal error"."""

import json

import trio

from consensus.errors import ConsensusError
from node.jsonrpc import Dispatcher, RpcError

EXPECTED: tuple[type[BaseException], ...] = ()


def getblockhash(height: int) -> str:
    if height < 0:
        raise RpcError(-8, "height out of range")
    return f"{height:064x}"


def sendrawtransaction(hex_tx: str) -> str:
    raw = bytes.fromhex(hex_tx)  # ValueError -> -8
    raise ConsensusError("bad-encoding", f"{len(raw)} bytes")


async def generate(n: int, address: str) -> list[str]:
    await trio.lowlevel.checkpoint()
    return [address] * min(n, 3)


def getinfo() -> dict:
    return {"height": 0, "chain": "regtest"}


def getbalance(address: str, minconf: int | None = None) -> dict:
    return {"address": address, "minconf": minconf}


_DISPATCHER = Dispatcher({"getblockhash": getblockhash, "sendrawtransaction": sendrawtransaction,
                          "generate": generate, "getinfo": getinfo, "getbalance": getbalance})
SEEDS = [json.dumps(r).encode() for r in (
    {"jsonrpc": "2.0", "id": 1, "method": "getinfo", "params": []},
    {"jsonrpc": "2.0", "id": "a", "method": "getblockhash", "params": [5]},
    {"jsonrpc": "2.0", "id": 2, "method": "sendrawtransaction", "params": ["00ff"]},
    {"jsonrpc": "2.0", "id": 3, "method": "generate", "params": [2, "mc1qqq"]},
    {"jsonrpc": "2.0", "method": "getinfo"},
    [{"id": 4, "method": "getbalance", "params": ["x", 1]}, {"id": 5, "method": "nosuch"}],
)]


def target(data: bytes) -> None:
    reply = trio.run(_DISPATCHER.handle_body, data)
    if reply is None:
        return
    decoded = json.loads(reply)
    items = decoded if isinstance(decoded, list) else [decoded]
    for item in items:
        assert item["jsonrpc"] == "2.0" and ("result" in item) != ("error" in item), item
        if "error" in item:
            assert item["error"]["code"] != -32603, item  # internal error

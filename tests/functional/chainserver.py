"""An idle SPEC §11 peer that serves a fixed, pre-built chain, for sync tests.

It listens on 127.0.0.x, answers `hello`, `getheaders` (locator → up to 2000 headers),
`getdata` (blocks), `ping`, and never mines or announces anything: exactly the idle peer
a fresh node must still sync everything from. Built on `RawPeer` (independent of p2p/).
Each connection runs in its own thread; every wait is bounded by socket timeouts and
the server's stop flag.
"""

from __future__ import annotations

import socket
import threading
import time

import msgpack

from consensus.block import Block
from tests.functional.chaindata import compute_genesis_hash, make_block
from tests.functional.rawpeer import RawPeer

MAX_HEADERS = 2000
GENESIS_TIME = 1_700_000_000


def build_chain(count: int, genesis_hash: bytes | None = None) -> list[Block]:
    """`count` valid empty regtest blocks on the framework's genesis, one second apart."""
    parent = {
        "height": 0,
        "hash": (genesis_hash or compute_genesis_hash()).hex(),
        "timestamp": GENESIS_TIME,
    }
    blocks = []
    for height in range(1, count + 1):
        block = make_block(parent, timestamp=GENESIS_TIME + height)
        blocks.append(block)
        parent = {"height": height, "hash": block.hash().hex(), "timestamp": GENESIS_TIME + height}
    return blocks


class ChainServer:
    """Serves `blocks` (heights 1..n on `genesis_hash`) to whoever connects."""

    def __init__(self, genesis_hash: bytes, blocks: list[Block], host: str = "127.0.0.5") -> None:
        self.genesis_hash = genesis_hash
        self.hashes = [genesis_hash] + [b.hash() for b in blocks]
        self.height_of = {h: i for i, h in enumerate(self.hashes)}
        self.headers = [None] + [b.header.to_obj() for b in blocks]
        self.blocks = {b.hash(): b.to_obj() for b in blocks}
        self.blocks_served = 0
        self.getheaders_served = 0
        self._stop = threading.Event()
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.address = f"{host}:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        """Stop serving and join the threads (bounded)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> ChainServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        peer = RawPeer(sock, timeout=10)
        try:
            peer.send_hello(self.genesis_hash, len(self.hashes) - 1, self.hashes[-1])
            while not self._stop.is_set():
                try:
                    msg_type, payload = peer.recv_msg(0.2)
                except TimeoutError:
                    continue
                self._answer(peer, msg_type, payload)
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            peer.close()

    def _answer(self, peer: RawPeer, msg_type: str, payload: object) -> None:
        if msg_type == "ping":
            peer.send_msg("pong", payload)
        elif msg_type == "getheaders":
            locator, _stop = payload
            start = next((self.height_of[h] for h in locator if h in self.height_of), 0)
            headers = self.headers[start + 1 : start + 1 + MAX_HEADERS]
            self.getheaders_served += 1
            peer.send_msg("headers", [headers])
        elif msg_type == "getdata":
            frames = []
            missing = []
            for kind, item_hash in payload:
                block = self.blocks.get(item_hash) if kind == "block" else None
                if block is None:
                    missing.append([kind, item_hash])
                else:
                    frames.append(msgpack.packb(["block", [block]]))
            for body in frames:
                peer.send_raw_frame(body)
            self.blocks_served += len(frames)
            if missing:
                peer.send_msg("notfound", missing)


def wait_height(node, height: int, timeout: float) -> float:
    """Wait until `node` reaches `height`; return the seconds it took. Bounded polls."""
    start = time.monotonic()
    for _ in range(int(timeout / 0.1) + 2):
        if node.getinfo()["height"] >= height:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            break
        time.sleep(0.1)
    raise AssertionError(f"node at height {node.getinfo()['height']}, wanted {height}")

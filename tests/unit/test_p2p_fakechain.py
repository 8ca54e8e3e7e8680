"""An in-memory `ChainAccess` for p2p unit tests, plus checks of the fake itself.

The fake chain is deliberately tiny: a header is `[1, height, prev_hash, salt]` (the
height in the SPEC §10 position, which p2p peeks for peer heights), a block
is `[header, txs]`, and a hash is blake3 of the packed header. Salt 666 marks an
invalid block; a transaction `["bad", ...]` is a consensus failure. When a block is
CONNECTED or a tx accepted, the fake calls `network.announce_*` as the node would.
"""

from __future__ import annotations

import msgpack
import trio
from blake3 import blake3

from p2p.interface import BlockResult, BlockStatus, HeadersResult, TxResult
from p2p.network import Network

ZERO = bytes(32)
INVALID_SALT = 666
MAX_WANTED = 2000  # the node's cap on the blocks one submit_headers returns


def header_hash(header_obj: list) -> bytes:
    """blake3 of the packed header: the fake's block hash."""
    return blake3(msgpack.packb(header_obj)).digest()


def make_block(height: int, prev: bytes, salt: int = 0, txs: list | None = None) -> bytes:
    """Packed fake block `[[1, height, prev, salt], txs]`."""
    return msgpack.packb([[1, height, prev, salt], txs or []])


def is_fake_header(obj: object) -> bool:
    """True for `[1, height, prev_hash(32), salt]` with integer height and salt."""
    return (
        isinstance(obj, list)
        and len(obj) == 4
        and obj[0] == 1
        and isinstance(obj[1], int)
        and isinstance(obj[2], bytes)
        and len(obj[2]) == 32
        and isinstance(obj[3], int)
    )


class FakeChain:
    """A best chain plus side blocks and a mempool, enough for p2p behaviour."""

    def __init__(self, genesis_salt: int = 0) -> None:
        genesis = [1, 0, ZERO, genesis_salt]
        self.genesis_hash = header_hash(genesis)
        self.headers: dict[bytes, list] = {self.genesis_hash: genesis}
        self.blocks: dict[bytes, bytes] = {self.genesis_hash: msgpack.packb([genesis, []])}
        self.best: list[bytes] = [self.genesis_hash]
        self.children: dict[bytes, list[bytes]] = {}  # parent hash -> child hashes
        self.txs: dict[bytes, bytes] = {}
        self.network = None  # set by tests: receives announce_block / announce_tx
        self.submitted_blocks = 0
        self.served = 0  # blocks handed out by get_block

    # --- building -------------------------------------------------------------------

    def mine(self, count: int = 1, salt: int = 0) -> list[bytes]:
        """Extend the best chain by `count` blocks (no announcement)."""
        hashes = []
        for _ in range(count):
            header = [1, len(self.best), self.best[-1], salt]
            block_hash = header_hash(header)
            self.headers[block_hash] = header
            self.blocks[block_hash] = msgpack.packb([header, []])
            self.children.setdefault(header[2], []).append(block_hash)
            self.best.append(block_hash)
            hashes.append(block_hash)
        return hashes

    # --- ChainAccess ------------------------------------------------------------------

    def best_height(self) -> int:
        return len(self.best) - 1

    def best_hash(self) -> bytes:
        return self.best[-1]

    def get_locator(self) -> list[bytes]:
        heights, step, height = [], 1, self.best_height()
        while height > 0 and len(heights) < 63:
            heights.append(height)
            if len(heights) >= 10:
                step *= 2
            height -= step
        return [self.best[h] for h in heights] + [self.genesis_hash]

    def get_headers_after(self, locator: list[bytes], stop_hash: bytes, limit: int) -> list[bytes]:
        index = {h: i for i, h in enumerate(self.best)}
        start = next((index[h] + 1 for h in locator if h in index), 1)
        result = []
        for block_hash in self.best[start : start + limit]:
            result.append(msgpack.packb(self.headers[block_hash]))
            if block_hash == stop_hash:
                break
        return result

    def has_block(self, block_hash: bytes) -> bool:
        return block_hash in self.blocks

    def get_block(self, block_hash: bytes) -> bytes | None:
        if block_hash in self.blocks:
            self.served += 1
        return self.blocks.get(block_hash)

    def has_tx(self, txid: bytes) -> bool:
        return txid in self.txs

    def get_mempool_tx(self, txid: bytes) -> bytes | None:
        return self.txs.get(txid)

    async def submit_headers(self, headers: list[bytes]) -> HeadersResult:
        """As the node: index the headers, then return the blocks still missing on the
        path genesis -> last header, oldest first, at most MAX_WANTED (known headers are
        accepted again, so one known header asks "what is still missing below it")."""
        await trio.lowlevel.checkpoint()
        last = None
        for raw in headers:
            header = msgpack.unpackb(raw)
            if not is_fake_header(header):
                return HeadersResult([], None, "bad-header")
            if header[2] not in self.headers:
                return HeadersResult([], None, "prev-unknown")
            last = header_hash(header)
            self.headers[last] = header
        return HeadersResult(self.missing_blocks(last), last)

    def missing_blocks(self, block_hash: bytes | None) -> list[bytes]:
        """Hashes without a block on the path to `block_hash`, oldest first, ≤ MAX_WANTED."""
        missing = []
        while block_hash is not None and block_hash not in self.blocks:
            missing.append(block_hash)
            block_hash = self.headers[block_hash][2]
        return missing[::-1][:MAX_WANTED]

    async def submit_block(self, block: bytes) -> BlockResult:
        await trio.lowlevel.checkpoint()
        self.submitted_blocks += 1
        obj = msgpack.unpackb(block)
        if not (isinstance(obj, list) and len(obj) == 2 and is_fake_header(obj[0])):
            return BlockResult(BlockStatus.INVALID, b"", "bad-encoding")
        header = obj[0]
        block_hash = header_hash(header)
        if block_hash in self.blocks:
            return BlockResult(BlockStatus.KNOWN, block_hash)
        if header[3] == INVALID_SALT:
            return BlockResult(BlockStatus.INVALID, block_hash, "bad-fake-block")
        if header[2] not in self.headers:
            return BlockResult(BlockStatus.ORPHAN, block_hash)
        self.headers[block_hash] = header
        self.blocks[block_hash] = block
        self.children.setdefault(header[2], []).append(block_hash)
        connected = False
        while True:  # as the node: connect every stored block that now extends the tip
            nxt = [h for h in self.children.get(self.best[-1], ()) if h in self.blocks]
            if not nxt:
                break
            self.best.append(nxt[0])
            connected = True
        if connected and self.network is not None:
            self.network.announce_block(self.best[-1])
        if len(self.best) > header[1] and self.best[header[1]] == block_hash:
            return BlockResult(BlockStatus.CONNECTED, block_hash)
        return BlockResult(BlockStatus.SIDE, block_hash)

    async def submit_tx(self, tx: bytes) -> TxResult:
        await trio.lowlevel.checkpoint()
        txid = blake3(tx).digest()
        obj = msgpack.unpackb(tx)
        if obj and obj[0] == "bad":
            return TxResult(False, txid, "bad-fake-tx", invalid=True)
        if txid in self.txs:
            return TxResult(False, txid, "txn-already-known")
        self.txs[txid] = tx
        if self.network is not None:
            self.network.announce_tx(txid)
        return TxResult(True, txid)


def test_fake_locator_is_newest_first_and_ends_with_genesis():
    chain = FakeChain()
    chain.mine(100)
    locator = chain.get_locator()
    assert locator[0] == chain.best_hash()
    assert locator[-1] == chain.genesis_hash
    assert len(locator) <= 64
    assert len(set(locator)) == len(locator)


def test_fake_headers_after_fork_point():
    chain = FakeChain()
    hashes = chain.mine(30)
    headers = chain.get_headers_after([hashes[9], chain.genesis_hash], ZERO, 5)
    assert [header_hash(msgpack.unpackb(h)) for h in headers] == hashes[10:15]
    assert chain.get_headers_after([b"\x01" * 32], hashes[2], 100) == [
        msgpack.packb(chain.headers[h]) for h in hashes[:3]
    ]


def test_fake_block_statuses():
    async def main():
        chain = FakeChain()
        other = FakeChain()
        new = other.mine(2)
        assert (await chain.submit_block(other.blocks[new[1]])).status is BlockStatus.ORPHAN
        assert (await chain.submit_block(other.blocks[new[0]])).status is BlockStatus.CONNECTED
        assert (await chain.submit_block(other.blocks[new[0]])).status is BlockStatus.KNOWN
        bad = make_block(2, new[0], INVALID_SALT)
        assert (await chain.submit_block(bad)).status is BlockStatus.INVALID

    trio.run(main)


async def wait_until(predicate, timeout: float = 10.0) -> None:
    """Poll `predicate` every 20 ms until true; raises trio.TooSlowError after `timeout` s."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def start_network(nursery: trio.Nursery, chain: FakeChain, **kwargs) -> Network:
    """Start a p2p Network for `chain` in `nursery`; the chain announces through it.

    Address discovery is off unless asked for (`discover=True`), so topologies stay as
    the test builds them.
    """
    kwargs.setdefault("discover", False)
    network = Network(chain, **kwargs)
    chain.network = network
    await nursery.start(network.run)
    return network

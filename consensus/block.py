"""Blocks and headers: encoding, hash, tx_root, proof of work, targets, time (SPEC §10)."""

from dataclasses import dataclass, field
from typing import Callable

from consensus.encoding import expect_bytes, expect_int, expect_list, packb, unpackb_canonical
from consensus.errors import ConsensusError
from consensus.hashing import ZERO_HASH, tagged_hash
from consensus.params import ChainParams
from consensus.tx import Tx, make_coinbase

BLOCK_VERSION = 1
MEDIAN_TIME_SPAN = 11


@dataclass(frozen=True)
class Header:
    """A block header (SPEC §10)."""

    version: int                # always 1
    height: int                 # parent height + 1
    prev_hash: bytes            # 32 bytes
    timestamp: int              # Unix seconds
    target: int                 # 256-bit integer, encoded as 32-byte big-endian bin
    nonce: int                  # < 2^64
    tx_root: bytes              # 32 bytes, SPEC §10 tree over txids
    vdf: bytes                  # 32 bytes, vdf(prev_hash) (SPEC §5)
    vdf_checkpoints: tuple[bytes, ...] = field(default=())  # C - 1 values of 32 bytes

    def to_obj(self) -> list:
        """The msgpack array of the header."""
        return [self.version, self.height, self.prev_hash, self.timestamp,
                self.target.to_bytes(32, "big"), self.nonce, self.tx_root, self.vdf,
                list(self.vdf_checkpoints)]

    def encode(self) -> bytes:
        """Canonical bytes (computed once per object, then cached)."""
        raw = self.__dict__.get("_raw")
        if raw is None:
            raw = packb(self.to_obj())
            object.__setattr__(self, "_raw", raw)
        return raw

    @classmethod
    def decode(cls, data: bytes) -> "Header":
        """Strictly decode; raises ``DecodeError``. Canonical decoding means ``data`` is
        the encoding, so it is kept as the cached ``encode()``."""
        header = cls.from_obj(unpackb_canonical(data, peer=True))
        object.__setattr__(header, "_raw", bytes(data))
        return header

    @classmethod
    def from_obj(cls, obj) -> "Header":
        """Check field types of a decoded array (SPEC §10); raises ``DecodeError``."""
        version, height, prev, ts, target, nonce, root, vdf, cps = expect_list(obj, 9, "header")
        expect_int(version, "header.version")
        expect_int(height, "header.height")
        expect_bytes(prev, 32, "header.prev_hash")
        expect_int(ts, "header.timestamp")
        expect_bytes(target, 32, "header.target")
        expect_int(nonce, "header.nonce", hi=2**64)
        expect_bytes(root, 32, "header.tx_root")
        expect_bytes(vdf, 32, "header.vdf")
        checkpoints = tuple(expect_bytes(c, 32, "checkpoint")
                            for c in expect_list(cps, None, "vdf_checkpoints"))
        return cls(version, height, prev, ts, int.from_bytes(target, "big"), nonce, root, vdf,
                   checkpoints)

    def hash(self) -> bytes:
        """``block_hash = H(b"block", packb(header))``; computed once, then cached."""
        digest = self.__dict__.get("_hash")
        if digest is None:
            digest = tagged_hash(b"block", self.encode())
            object.__setattr__(self, "_hash", digest)
        return digest


@dataclass(frozen=True)
class Block:
    """``block = [header, txs]`` (SPEC §10)."""

    header: Header
    txs: tuple[Tx, ...]

    def to_obj(self) -> list:
        """The msgpack array of the block."""
        return [self.header.to_obj(), [tx.to_obj() for tx in self.txs]]

    def encode(self) -> bytes:
        """Canonical bytes: the bytes the block was decoded from, else packed once."""
        raw = self.__dict__.get("_raw")
        if raw is None:
            raw = packb(self.to_obj())
            object.__setattr__(self, "_raw", raw)
        return raw

    @classmethod
    def decode(cls, data: bytes) -> "Block":
        """Strictly decode; raises ``ConsensusError`` (bad-encoding, bad-version, bad-kind).

        Decoding is canonical, so ``data`` is kept as the cached ``encode()``."""
        header, txs = expect_list(unpackb_canonical(data, peer=True), 2, "block")
        block = cls(Header.from_obj(header),
                    tuple(Tx.from_obj(t) for t in expect_list(txs, None, "txs")))
        object.__setattr__(block, "_raw", bytes(data))
        return block

    def txids(self) -> list[bytes]:
        """The txids of ``txs`` in order (each computed once per ``Tx``)."""
        return [tx.txid() for tx in self.txs]

    def computed_tx_root(self) -> bytes:
        """``compute_tx_root`` of this block's txids, computed once per object."""
        root = self.__dict__.get("_tx_root")
        if root is None:
            root = compute_tx_root(self.txids())
            object.__setattr__(self, "_tx_root", root)
        return root

    def hash(self) -> bytes:
        """The header's hash."""
        return self.header.hash()


def compute_tx_root(txids: list[bytes]) -> bytes:
    """Pairwise ``H(b"node", left || right)`` tree; an odd last node moves up unchanged;
    an empty list gives 32 zero bytes (SPEC §10)."""
    level = list(txids)
    if not level:
        return ZERO_HASH
    while len(level) > 1:
        nxt = [tagged_hash(b"node", level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def compute_work(target: int) -> int:
    """Expected hashes for a block at ``target``: ``2^256 // (target + 1)``."""
    return 2**256 // (target + 1)


def is_pow_valid(block_hash: bytes, target: int) -> bool:
    """``int(block_hash) <= target``."""
    return int.from_bytes(block_hash, "big") <= target


def compute_next_target(params: ChainParams, height: int, parent_target: int,
                        timestamp_at: Callable[[int], int]) -> int:
    """The required target of the block at ``height`` (SPEC §10 "Target").

    ``timestamp_at(h)`` returns the timestamp of the ancestor at height ``h``.
    """
    n = params.retarget_interval
    if n == 0:
        return params.genesis_target
    if height % n != 0 or height < n:
        return parent_target
    span = timestamp_at(height - 1) - timestamp_at(height - n)
    expected = (n - 1) * params.block_time
    span = max(expected // 4, min(span, expected * 4))
    return min(params.pow_limit, parent_target * span // expected)


def compute_median_time_past(timestamps: list[int]) -> int:
    """Median of the previous ``min(11, height)`` timestamps: sorted, index ``(n-1)//2``."""
    ordered = sorted(timestamps)
    return ordered[(len(ordered) - 1) // 2]


@dataclass(frozen=True)
class HeaderContext:
    """What header checks need to know of the chain below the block (SPEC §10)."""

    parent_hash: bytes
    parent_height: int
    expected_target: int        # compute_next_target for this height
    median_time_past: int       # of the previous min(11, height) blocks
    now: int                    # local clock, Unix seconds


def verify_header(params: ChainParams, header: Header, ctx: HeaderContext) -> None:
    """Header fields and PoW (SPEC §10 order). Raises ``ConsensusError``: bad-version,
    bad-prevblk, bad-height, bad-diffbits, time-too-old, time-too-new, high-hash."""
    if header.version != BLOCK_VERSION:
        raise ConsensusError("bad-version", f"block version {header.version}")
    if header.prev_hash != ctx.parent_hash:
        raise ConsensusError("bad-prevblk")
    if header.height != ctx.parent_height + 1:
        raise ConsensusError("bad-height")
    if header.target != ctx.expected_target:
        raise ConsensusError("bad-diffbits", "target does not follow the retarget rule")
    if header.timestamp <= ctx.median_time_past:
        raise ConsensusError("time-too-old")
    if header.timestamp > ctx.now + params.max_future_time:
        raise ConsensusError("time-too-new")
    if not is_pow_valid(header.hash(), header.target):
        raise ConsensusError("high-hash", "proof of work above target")


def make_genesis(params: ChainParams) -> Block:
    """The genesis block of ``params`` (SPEC §10 "Genesis")."""
    coinbase = make_coinbase(0, list(params.premine))
    header = Header(BLOCK_VERSION, 0, ZERO_HASH, params.genesis_time, params.genesis_target,
                    0, compute_tx_root([coinbase.txid()]), ZERO_HASH, ())
    return Block(header, (coinbase,))

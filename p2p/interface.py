"""The contract between p2p and the node: what p2p may ask of the chain (SPEC §11).

Blocks, headers and transactions cross this boundary as canonical msgpack bytes
(SPEC §0); the node does the strict decode and every consensus check.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class BlockStatus(enum.Enum):
    """Outcome of handing a block to the node (the node's own result type too)."""

    CONNECTED = "connected"  # now on the best chain (tip advanced or reorganised to it)
    SIDE = "side"  # valid so far, stored on a side chain
    ORPHAN = "orphan"  # parent unknown: p2p asks the peer for headers
    KNOWN = "known"  # already had it
    INVALID = "invalid"  # consensus failure: p2p bans the sender
    NOT_YET = "not-yet"  # acceptable later (timestamp too far ahead): dropped, no ban


@dataclass(frozen=True)
class BlockResult:
    """What `ChainAccess.submit_block` decided about one block."""

    status: BlockStatus
    block_hash: bytes  # 32 bytes, H(b"block", packb(header)); may be empty if undecodable
    reason: str = ""  # SPEC reject reason when status is INVALID


@dataclass(frozen=True)
class TxResult:
    """What `ChainAccess.submit_tx` decided about one transaction."""

    accepted: bool  # entered the mempool
    txid: bytes  # 32 bytes; may be empty if undecodable
    reason: str = ""  # reject reason when not accepted
    invalid: bool = False  # True: consensus failure -> ban; False: policy/duplicate -> no ban


@dataclass(frozen=True)
class HeadersResult:
    """What `ChainAccess.submit_headers` decided about a batch of headers."""

    wanted: list[bytes]  # block hashes to fetch, in chain order
    last_hash: bytes | None  # hash of the last header received (to continue getheaders)
    invalid_reason: str = ""  # non-empty: the peer sent invalid headers -> ban


class ChainAccess(Protocol):
    """The node as p2p sees it; implemented by node/ (SPEC §11).

    Synchronous methods must be quick reads; the async `submit_*` methods do the
    validation work and may take time. None of them may raise on hostile input:
    bad data is reported through the result objects.
    """

    genesis_hash: bytes  # 32 bytes, identifies the chain

    def best_height(self) -> int:
        """Height of our best block."""
        ...

    def best_hash(self) -> bytes:
        """Hash (32 bytes) of our best block."""
        ...

    def get_locator(self) -> list[bytes]:
        """At most 64 hashes of our best chain, newest first, ending with genesis."""
        ...

    def get_headers_after(self, locator: list[bytes], stop_hash: bytes, limit: int) -> list[bytes]:
        """Canonical header encodings on our best chain after the fork point with `locator`.

        Stops after `stop_hash` (zero hash: no stop) or `limit` headers.
        """
        ...

    def has_block(self, block_hash: bytes) -> bool:
        """True if the block (any chain) is stored or being processed."""
        ...

    def get_block(self, block_hash: bytes) -> bytes | None:
        """Canonical block encoding, or None if unknown."""
        ...

    def has_tx(self, txid: bytes) -> bool:
        """True if the transaction is in the mempool or confirmed."""
        ...

    def get_mempool_tx(self, txid: bytes) -> bytes | None:
        """Canonical encoding of a mempool transaction, or None."""
        ...

    async def submit_headers(self, headers: list[bytes]) -> HeadersResult:
        """Validate and store a batch of headers received from a peer.

        `wanted` lists blocks still missing on the path to the last header, oldest first
        (the node may cap it, e.g. at 2000). Headers already known are accepted again, so
        p2p re-submits one known header to ask which blocks below it are still missing:
        that is how block download continues past the cap (p2p.download).
        """
        ...

    async def submit_block(self, block: bytes) -> BlockResult:
        """Validate a block received from a peer and connect it if it extends the best chain."""
        ...

    async def submit_tx(self, tx: bytes) -> TxResult:
        """Validate a transaction received from a peer and add it to the mempool."""
        ...

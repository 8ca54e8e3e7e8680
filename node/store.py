"""The node's LevelDB store (plyvel): blocks, block index, consensus state, undo data.

Layout (one DB, ``<datadir>/chain``), key prefixes:

- ``s`` + state key  -> consensus state value (see ``consensus.state``)
- ``b`` + hash       -> canonical block bytes
- ``i`` + hash       -> index entry ``[header_bytes, status, seq]``
- ``u`` + hash       -> undo record of a connected block
- ``n`` + height     -> hash of the main-chain block at that height
- ``x`` + txid       -> height of the main-chain block that includes it
- ``T``              -> hash of the tip

Every connect or disconnect is ONE write batch holding the state changes, the undo
record, the height and tx indexes and the tip marker (STYLE "State and storage"): after
a crash the store is at some tip, never between two.
"""

from pathlib import Path
from typing import Iterator

import plyvel

from consensus.encoding import packb, unpackb_canonical
from consensus.state import decode_undo, encode_undo

_STATE, _BLOCK, _INDEX, _UNDO, _HEIGHT, _TXINDEX, _TIP = b"s", b"b", b"i", b"u", b"n", b"x", b"T"


class StateBase:
    """Read-only ``StateView`` of the committed consensus state (the tip's)."""

    def __init__(self, db: plyvel.DB) -> None:
        self._db = db

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(_STATE + key)

    def put(self, key: bytes, value: bytes) -> None:
        raise TypeError("the committed state changes only through ChainStore batches")

    delete = put

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.iterator(prefix=_STATE + prefix):
            yield key[1:], value


class ChainStore:
    """All persistent chain data of one node; raises ``plyvel.Error`` on I/O failure."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.db = plyvel.DB(str(path), create_if_missing=True)
        self.state = StateBase(self.db)

    def close(self) -> None:
        """Close the database (idempotent)."""
        if not self.db.closed:
            self.db.close()

    # -- blocks and index ----------------------------------------------------------------
    def put_block(self, block_hash: bytes, block_bytes: bytes) -> None:
        """Store a block's bytes (before it is connected)."""
        self.db.put(_BLOCK + block_hash, block_bytes, sync=True)

    def get_block(self, block_hash: bytes) -> bytes | None:
        """Canonical bytes of a stored block."""
        return self.db.get(_BLOCK + block_hash)

    def has_block(self, block_hash: bytes) -> bool:
        """Whether the block's bytes are stored."""
        return self.db.get(_BLOCK + block_hash) is not None

    def put_index(self, block_hash: bytes, header_bytes: bytes, status: int, seq: int) -> None:
        """Store or update a block index entry."""
        self.db.put(_INDEX + block_hash, packb([header_bytes, status, seq]), sync=True)

    def iter_index(self) -> Iterator[tuple[bytes, bytes, int, int]]:
        """Every index entry as ``(hash, header_bytes, status, seq)``."""
        for key, value in self.db.iterator(prefix=_INDEX):
            header_bytes, status, seq = unpackb_canonical(value)
            yield key[1:], header_bytes, status, seq

    # -- main chain ----------------------------------------------------------------------
    def get_tip(self) -> bytes | None:
        """Hash of the connected tip, or ``None`` for a new store."""
        return self.db.get(_TIP)

    def get_hash_at(self, height: int) -> bytes | None:
        """Main-chain block hash at ``height``."""
        return self.db.get(_HEIGHT + height.to_bytes(8, "big"))

    def get_tx_height(self, txid: bytes) -> int | None:
        """Height of the main-chain block including ``txid``."""
        raw = self.db.get(_TXINDEX + txid)
        return None if raw is None else int.from_bytes(raw, "big")

    def get_undo(self, block_hash: bytes) -> dict[bytes, bytes | None] | None:
        """Undo record of a connected block."""
        raw = self.db.get(_UNDO + block_hash)
        return None if raw is None else decode_undo(raw)

    def commit_connect(self, block_hash: bytes, height: int, changes: dict[bytes, bytes | None],
                       undo: dict[bytes, bytes | None], txids: list[bytes]) -> None:
        """Connect a block as the new tip: one atomic, synced write batch."""
        with self.db.write_batch(transaction=True, sync=True) as batch:
            _write_state(batch, changes)
            batch.put(_UNDO + block_hash, encode_undo(undo))
            batch.put(_HEIGHT + height.to_bytes(8, "big"), block_hash)
            for txid in txids:
                batch.put(_TXINDEX + txid, height.to_bytes(8, "big"))
            batch.put(_TIP, block_hash)

    def commit_disconnect(self, block_hash: bytes, height: int, parent_hash: bytes,
                          undo: dict[bytes, bytes | None], txids: list[bytes]) -> None:
        """Disconnect the tip back to ``parent_hash``: one atomic, synced write batch."""
        with self.db.write_batch(transaction=True, sync=True) as batch:
            _write_state(batch, undo)
            batch.delete(_UNDO + block_hash)
            batch.delete(_HEIGHT + height.to_bytes(8, "big"))
            for txid in txids:
                batch.delete(_TXINDEX + txid)
            batch.put(_TIP, parent_hash)


def _write_state(batch, changes: dict[bytes, bytes | None]) -> None:
    for key, value in changes.items():
        if value is None:
            batch.delete(_STATE + key)
        else:
            batch.put(_STATE + key, value)

"""The node's LevelDB store (plyvel): blocks, block index, consensus state, undo data.

Layout (one DB, ``<datadir>/chain``), key prefixes:

- ``s`` + state key  -> consensus state value (see ``consensus.state``)
- ``b`` + hash       -> canonical block bytes
- ``i`` + hash       -> index entry ``[header_bytes, status, seq]``
- ``u`` + hash       -> undo record of a connected block
- ``n`` + height     -> hash of the main-chain block at that height
- ``x`` + txid       -> height of the main-chain block that includes it
- ``T``              -> hash of the tip
- ``F``              -> empty; rewritten by each ``flush`` (a synced write)

Every connect or disconnect is ONE write batch holding the state changes, the undo
record, the height and tx indexes and the tip marker (STYLE "State and storage"): after
a crash the store is at some tip, never between two.

Durability (see DESIGN.md "Node core at chain scale"): every batch goes through
``_write``, the one place batches reach LevelDB. Batches are written to LevelDB's log
without fsync; at most every ``sync_seconds`` (and on ``flush``/``close``) a batch is
written with ``sync=True``, which makes it and every batch before it durable. LevelDB
replays its log in order and keeps each batch atomic, so after a SIGKILL (the OS still
holds every written batch) nothing is lost, and after a power failure the store is at
the tip of some earlier batch: a valid tip, from which the node re-downloads.
"""

import logging
import time
from pathlib import Path
from typing import Callable, Iterator

import plyvel

from consensus.encoding import packb, unpackb_canonical
from consensus.state import decode_undo, encode_undo
from node.jsonrpc import RpcError

_STATE, _BLOCK, _INDEX, _UNDO, _HEIGHT, _TXINDEX, _TIP = b"s", b"b", b"i", b"u", b"n", b"x", b"T"
_REINDEXING = b"R"  # present while ``--reindex`` rebuilds the chainstate (node/storecheck.py)

RPC_DATABASE_ERROR = -20
log = logging.getLogger("node.store")


class StoreError(Exception):
    """The store cannot be used: locked, unreadable, corrupt, or a write failed.

    ``str(exc)`` is one line for the operator, naming the remedy where there is one.
    """


class StoreCorruption(StoreError):
    """The store's files are damaged or its chainstate is inconsistent; ``--reindex``
    is the remedy (node/storecheck.py)."""


class StoreWriteError(StoreError, RpcError):
    """A write to the store failed (disk full, I/O error). Nothing of that write is
    committed; the node must stop (DESIGN "Storage faults"). An RPC method hit by it
    answers error -20 (bitcoind's RPC_DATABASE_ERROR) with this message."""

    def __init__(self, message: str) -> None:
        RpcError.__init__(self, RPC_DATABASE_ERROR, message)

    def __str__(self) -> str:
        return self.message


class StoreReadError(StoreCorruption, RpcError):
    """A read found the store damaged (LevelDB checksum or I/O error). The node stops
    like after a failed write; ``--reindex`` is the remedy. An RPC method hit by it
    answers error -20 with this message."""

    def __init__(self, message: str) -> None:
        RpcError.__init__(self, RPC_DATABASE_ERROR, message)

    def __str__(self) -> str:
        return self.message


# LevelDB's memtable size (its default is 4 MiB): Bitcoin Core gives a quarter of its
# LevelDB cache, ≈ 30 MiB at the default -dbcache; two may be in memory at once.
WRITE_BUFFER_BYTES = 16 << 20

_FLUSHED = b"F"  # written with sync=True by ``flush``; its value carries nothing


class StateBase:
    """Read-only ``StateView`` of the committed consensus state (the tip's); reads
    raise ``StoreReadError`` (through ``on_error``) when the store is damaged."""

    def __init__(self, db: plyvel.DB, on_error: Callable[[str, BaseException], None]) -> None:
        self._db = db
        self._on_error = on_error

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._db.get(_STATE + key, verify_checksums=True)
        except (plyvel.Error, OSError) as exc:
            self._on_error("state", exc)
            raise  # not reached: on_error raises

    def put(self, key: bytes, value: bytes) -> None:
        raise TypeError("the committed state changes only through ChainStore batches")

    delete = put

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        try:
            for key, value in self._db.iterator(prefix=_STATE + prefix, verify_checksums=True):
                yield key[1:], value
        except (plyvel.Error, OSError) as exc:
            self._on_error("state", exc)


class ChainStore:
    """All persistent chain data of one node.

    Opening raises ``StoreError`` (locked by another process, corrupt, unreadable);
    every write goes through ``_write`` and raises ``StoreWriteError`` on failure, after
    calling ``on_fatal(reason)`` once so the node can stop cleanly. ``sync_seconds``:
    longest time between two synced (fsync'd) batches; 0 syncs every batch.
    """

    def __init__(self, path: Path, sync_seconds: float = 1.0) -> None:
        self.path = path
        self.on_fatal: Callable[[str], None] | None = None  # set by the node
        self.failed: str | None = None  # why writes are refused, after a failed write
        try:
            path.mkdir(parents=True, exist_ok=True)
            # paranoid_checks: a damaged log or table fails the open (or the read)
            # instead of being skipped silently (DESIGN "Storage faults").
            # bloom_filter_bits: a lookup of a missing key (a ticket not yet redeemed, an
            # escrow not yet seen) skips tables without reading them; a 16 MiB write
            # buffer and no compression spend less CPU flushing and compacting. All three
            # as Bitcoin Core opens its LevelDB (DESIGN "Node store layout").
            self.db = plyvel.DB(str(path), create_if_missing=True, paranoid_checks=True,
                                bloom_filter_bits=10, write_buffer_size=WRITE_BUFFER_BYTES,
                                compression=None)
        except plyvel.CorruptionError as exc:
            raise StoreCorruption(f"the store {path} is corrupt ({_first_line(exc)}); "
                                  "restart with --reindex to rebuild it") from None
        except plyvel.IOError as exc:
            if "lock" in str(exc).lower():
                raise StoreError(f"the store {path} is in use by another process "
                                 "(is another node running on this --datadir?)") from None
            raise StoreError(f"cannot open the store {path}: {_first_line(exc)}") from None
        except (plyvel.Error, OSError) as exc:
            raise StoreError(f"cannot open the store {path}: {_first_line(exc)}") from None
        self.state = StateBase(self.db, self._read_failed)
        self.sync_seconds = sync_seconds
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Make every batch durable, then close the database (idempotent)."""
        if not self.db.closed:
            if self.failed is None:
                try:
                    self.flush()
                except StoreWriteError:
                    pass  # already logged; what was written before stays as LevelDB has it
            self.db.close()

    def snapshot_state(self) -> "StateBase":
        """A read-only ``StateView`` of the committed state as of now (LevelDB snapshot)."""
        return StateBase(self.db.snapshot(), self._read_failed)

    # -- reads: every one verifies LevelDB's checksums ----------------------------------
    def _get(self, what: str, key: bytes) -> bytes | None:
        try:
            return self.db.get(key, verify_checksums=True)
        except (plyvel.Error, OSError) as exc:
            self._read_failed(what, exc)
            raise  # not reached

    def _read_failed(self, what: str, exc: BaseException) -> None:
        """A read hit damage: refuse later writes, ask the node to stop (once), raise
        ``StoreReadError`` naming the remedy."""
        reason = (f"store read failed ({what}): {_first_line(exc)}; the store is damaged, "
                  "restart with --reindex to rebuild it")
        first = self.failed is None
        if first:
            self.failed = reason
            log.critical("%s; shutting down", reason)
            self._fatal(reason)
        raise StoreReadError(reason) from None

    def _fatal(self, reason: str) -> None:
        if self.on_fatal is not None:
            try:
                self.on_fatal(reason)
            except Exception as hook_exc:  # e.g. a node not yet fully constructed
                log.warning("stop request after the store failure failed: %r", hook_exc)

    # -- the one place batches are written -----------------------------------------------
    def _write(self, what: str, puts: dict[bytes, bytes | None] | list[tuple[bytes, bytes | None]],
               *, sync: bool = False) -> None:
        """Write ``puts`` (``None`` = delete) as ONE atomic LevelDB batch, synced when
        ``sync`` or when the last synced batch is ``sync_seconds`` old.

        On any LevelDB error nothing of the batch is committed; the store refuses every
        later write, ``on_fatal`` is called once and ``StoreWriteError`` is raised.
        ``what`` names the write in that message.
        """
        if self.failed is not None:
            raise StoreWriteError(self.failed)
        items = puts.items() if isinstance(puts, dict) else puts
        now = time.monotonic()
        sync = sync or now - self._last_sync >= self.sync_seconds
        try:
            with self.db.write_batch(transaction=True, sync=sync) as batch:
                for key, value in items:
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)
        except (plyvel.Error, OSError) as exc:
            self.failed = f"store write failed ({what}): {_first_line(exc)}"
            log.critical("%s; shutting down to keep the store consistent", self.failed)
            self._fatal(self.failed)
            raise StoreWriteError(self.failed) from None
        if sync:
            self._last_sync = now

    def flush(self) -> None:
        """Make every batch written so far durable (one synced write)."""
        self._write("flush", {_FLUSHED: b""}, sync=True)

    # -- blocks and index ----------------------------------------------------------------
    def put_block(self, block_hash: bytes, block_bytes: bytes,
                  index_row: tuple[bytes, int, int] | None = None) -> None:
        """Store a block's bytes as they arrived (before it is connected), with its index
        row ``(header_bytes, status, seq)`` in the same batch when given."""
        puts = {_BLOCK + block_hash: block_bytes}
        if index_row is not None:
            puts[_INDEX + block_hash] = packb(list(index_row))
        self._write("block", puts)

    def get_block(self, block_hash: bytes) -> bytes | None:
        """Canonical bytes of a stored block."""
        return self._get("block", _BLOCK + block_hash)

    def has_block(self, block_hash: bytes) -> bool:
        """Whether the block's bytes are stored."""
        return self._get("block", _BLOCK + block_hash) is not None

    def put_index(self, block_hash: bytes, header_bytes: bytes, status: int, seq: int) -> None:
        """Store or update a block index entry."""
        self._write("index", {_INDEX + block_hash: packb([header_bytes, status, seq])})

    def put_index_rows(self, rows: list[tuple[bytes, bytes, int, int]]) -> None:
        """Store or update many index entries ``(hash, header_bytes, status, seq)`` in one
        batch (headers-first sync indexes up to 2000 headers at a time)."""
        self._write("index", {_INDEX + h: packb([hb, st, sq]) for h, hb, st, sq in rows})

    def iter_index(self) -> Iterator[tuple[bytes, bytes, int, int]]:
        """Every index entry as ``(hash, header_bytes, status, seq)``."""
        try:
            for key, value in self.db.iterator(prefix=_INDEX, verify_checksums=True):
                header_bytes, status, seq = unpackb_canonical(value)
                yield key[1:], header_bytes, status, seq
        except (plyvel.Error, OSError) as exc:
            self._read_failed("index", exc)

    # -- main chain ----------------------------------------------------------------------
    def get_tip(self) -> bytes | None:
        """Hash of the connected tip, or ``None`` for a new store."""
        return self._get("tip", _TIP)

    def get_hash_at(self, height: int) -> bytes | None:
        """Main-chain block hash at ``height``."""
        return self._get("height index", _HEIGHT + height.to_bytes(8, "big"))

    def get_tx_height(self, txid: bytes) -> int | None:
        """Height of the main-chain block including ``txid``."""
        raw = self._get("tx index", _TXINDEX + txid)
        return None if raw is None else int.from_bytes(raw, "big")

    def get_undo(self, block_hash: bytes) -> dict[bytes, bytes | None] | None:
        """Undo record of a connected block."""
        raw = self._get("undo", _UNDO + block_hash)
        return None if raw is None else decode_undo(raw)

    def commit_connect(self, block_hash: bytes, height: int, changes: dict[bytes, bytes | None],
                       undo: dict[bytes, bytes | None], txids: list[bytes]) -> None:
        """Connect a block as the new tip: one atomic write batch."""
        puts = {_STATE + k: v for k, v in changes.items()}
        puts[_UNDO + block_hash] = encode_undo(undo)
        puts[_HEIGHT + height.to_bytes(8, "big")] = block_hash
        h = height.to_bytes(8, "big")
        for txid in txids:
            puts[_TXINDEX + txid] = h
        puts[_TIP] = block_hash
        self._write("connect", puts)

    def commit_disconnect(self, block_hash: bytes, height: int, parent_hash: bytes,
                          undo: dict[bytes, bytes | None], txids: list[bytes]) -> None:
        """Disconnect the tip back to ``parent_hash``: one atomic write batch."""
        puts: dict[bytes, bytes | None] = {_STATE + k: v for k, v in undo.items()}
        puts[_UNDO + block_hash] = None
        puts[_HEIGHT + height.to_bytes(8, "big")] = None
        for txid in txids:
            puts[_TXINDEX + txid] = None
        puts[_TIP] = parent_hash
        self._write("disconnect", puts)


def _first_line(exc: BaseException) -> str:
    """LevelDB's message of ``exc`` (plyvel passes it as bytes), one line."""
    text = exc.args[0] if exc.args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return (str(text).strip().splitlines() or [type(exc).__name__])[0]

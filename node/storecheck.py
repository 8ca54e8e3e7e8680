"""Start-up checks of the chain store and the ``--reindex`` remedy (DESIGN "Storage faults").

``check_store`` runs before the node starts: LevelDB's own checks (the store is opened
with ``paranoid_checks``) plus a consistency check of the tip marker, the index entry,
block bytes, undo record and height index of the tip and its ``CHECK_DEPTH - 1``
ancestors (read with checksum verification), like Bitcoin Core's ``-checkblocks``.
A damaged store is refused with ``StoreCorruption`` naming the remedy.

``prepare_reindex`` keeps the stored blocks and drops everything else (state, index,
undo, height and tx indexes, tip); the node then replays the kept blocks through its
normal block path (full validation) and ``finish_reindex`` clears the in-progress
marker. Blocks LevelDB cannot read even after ``plyvel.repair_db`` mean the whole store
is wiped and the node re-syncs from its peers.
"""

import logging
import shutil
from pathlib import Path

import plyvel

from consensus.block import Block, Header
from consensus.encoding import expect_bytes, expect_int, expect_list, unpackb_canonical
from consensus.errors import ConsensusError
from consensus.state import decode_undo
from node.store import (_BLOCK, _HEIGHT, _INDEX, _REINDEXING, _STATE, _TIP, _UNDO,
                        ChainStore, StoreCorruption, _first_line)

log = logging.getLogger("node.store")

CHECK_DEPTH = 6            # blocks checked back from the tip at every start
_HAVE_DATA, _FAILED = 2, 4  # node.chain status bits of an index entry
_DELETE_CHUNK = 10_000     # keys per delete batch during --reindex
REMEDY = "restart the node with --reindex to rebuild the chainstate from its stored blocks"


def check_store(path: Path) -> None:
    """Open the store at ``path``, check it, close it.

    Raises ``StoreCorruption`` (damaged files, inconsistent tip, interrupted reindex)
    or ``StoreError`` (locked, unreadable). A missing or empty store passes.
    """
    store = ChainStore(path)
    try:
        verify_chainstate(store)
    finally:
        store.close()


def verify_chainstate(store: ChainStore, depth: int = CHECK_DEPTH) -> None:
    """The consistency check of the tip and ``depth - 1`` ancestors; raises ``StoreCorruption``."""
    try:
        problem = _find_problem(store.db, depth)
    except plyvel.Error as exc:
        problem = f"LevelDB: {_first_line(exc)}"
    except ConsensusError as exc:
        problem = f"undecodable record ({exc})"
    if problem is not None:
        raise StoreCorruption(f"the store {store.path} is damaged: {problem}; {REMEDY}")


def _get(db: plyvel.DB, key: bytes) -> bytes | None:
    return db.get(key, verify_checksums=True)


def _find_problem(db: plyvel.DB, depth: int) -> str | None:
    if _get(db, _REINDEXING) is not None:
        return "an earlier --reindex was interrupted"
    tip = _get(db, _TIP)
    if tip is None:
        for prefix in (_INDEX, _BLOCK, _HEIGHT, _STATE):
            for _ in db.iterator(prefix=prefix, include_value=False, verify_checksums=True):
                return "blocks are stored but the tip marker is missing"
        return None  # a new store
    if _get(db, _STATE + b"issued") is None:
        return "the consensus state is missing"
    block_hash = tip
    for i in range(depth):
        what = "tip" if i == 0 else f"tip-{i}"
        raw = _get(db, _INDEX + block_hash)
        if raw is None:
            return f"the {what} block {block_hash.hex()[:16]} has no index entry"
        header_bytes, status, _ = expect_list(unpackb_canonical(raw), 3, "index entry")
        header = Header.decode(expect_bytes(header_bytes))
        expect_int(status)
        if header.hash() != block_hash:
            return f"the index entry of the {what} block {block_hash.hex()[:16]} is for another header"
        if not status & _HAVE_DATA or status & _FAILED:
            return f"the {what} block {block_hash.hex()[:16]} is connected but indexed as {status}"
        raw = _get(db, _BLOCK + block_hash)
        if raw is None or Block.decode(raw).hash() != block_hash:
            return f"the bytes of the {what} block {block_hash.hex()[:16]} are missing or wrong"
        raw = _get(db, _UNDO + block_hash)
        if raw is None:
            return f"the {what} block {block_hash.hex()[:16]} has no undo record"
        decode_undo(raw)
        height_key = header.height.to_bytes(8, "big")
        if _get(db, _HEIGHT + height_key) != block_hash:
            return f"the height index at {header.height} does not name the {what} block"
        if i == 0 and _get(db, _HEIGHT + (header.height + 1).to_bytes(8, "big")) is not None:
            return f"the height index goes past the tip at height {header.height}"
        if header.height == 0:
            break
        block_hash = header.prev_hash
    return None


def prepare_reindex(path: Path) -> list[bytes]:
    """Drop all but the stored blocks; return their hashes in (height, hash) order.

    Marks the store "reindexing" first, so an interruption is caught by the next
    start. Corrupt LevelDB files are repaired (``plyvel.repair_db``) first; blocks
    that do not decode or hash to their key are dropped. When the blocks cannot be
    read at all, the store is deleted and ``[]`` returned: the node re-syncs from its
    peers. Raises ``StoreError`` (e.g. locked by another process, disk full).
    """
    store = _open_repairing(path)
    if store is None:
        return _wipe(path)
    try:
        order, bad = _scan_blocks(store.db)
    except plyvel.Error as exc:
        log.warning("stored blocks unreadable (%s)", _first_line(exc))
        store.close()
        store = _open_repairing(path, force_repair=True)
        if store is None:
            return _wipe(path)
        try:
            order, bad = _scan_blocks(store.db)
        except plyvel.Error:
            store.close()
            return _wipe(path)
    try:
        store._write("reindex start", [(_REINDEXING, b"")])
        doomed = [key for key in store.db.iterator(include_value=False)
                  if key != _REINDEXING and not key.startswith(_BLOCK)] + bad
        for start in range(0, len(doomed), _DELETE_CHUNK):
            store._write("reindex drop", [(key, None) for key in doomed[start:start + _DELETE_CHUNK]])
        log.info("reindex: %d stored blocks kept (%d unusable dropped); chainstate cleared",
                 len(order), len(bad))
        return [block_hash for _, block_hash in sorted(order)]
    finally:
        store.close()


def _open_repairing(path: Path, force_repair: bool = False) -> ChainStore | None:
    """Open the store, running ``plyvel.repair_db`` first if needed; None if hopeless."""
    if not force_repair:
        try:
            return ChainStore(path)
        except StoreCorruption as exc:
            log.warning("%s", exc)
    log.warning("repairing the LevelDB files of %s", path)
    try:
        plyvel.repair_db(str(path), paranoid_checks=True)
    except plyvel.Error as exc:
        log.warning("repair failed: %s", _first_line(exc))
    try:
        return ChainStore(path)
    except StoreCorruption:
        return None


def _scan_blocks(db: plyvel.DB) -> tuple[list[tuple[int, bytes]], list[bytes]]:
    order, bad = [], []
    for key, raw in db.iterator(prefix=_BLOCK, verify_checksums=True):
        try:
            block = Block.decode(raw)
        except ConsensusError:
            bad.append(key)
            continue
        if block.hash() != key[1:]:
            bad.append(key)
            continue
        order.append((block.header.height, key[1:]))
    return order, bad


def _wipe(path: Path) -> list[bytes]:
    log.warning("the stored blocks cannot be read: deleting the store %s; "
                "the node will download the chain again from its peers", path)
    shutil.rmtree(path, ignore_errors=True)
    return []


def finish_reindex(store: ChainStore) -> None:
    """Clear the in-progress marker once every kept block was offered again."""
    store._write("reindex done", [(_REINDEXING, None)])

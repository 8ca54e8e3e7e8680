"""ChainStore's write chokepoint and decode_undo's error contract (DESIGN "Storage faults")."""

import plyvel
import pytest

from consensus.encoding import packb
from consensus.errors import DecodeError
from consensus.state import decode_undo, encode_undo
from node.jsonrpc import RpcError
from node.store import ChainStore, StoreCorruption, StoreError, StoreWriteError
from node.storecheck import verify_chainstate


class _FailingBatches:
    """A LevelDB handle whose batches fail as on a full disk; reads pass through."""

    def __init__(self, db):
        self._db = db

    def __getattr__(self, name):
        return getattr(self._db, name)

    def write_batch(self, **kwargs):
        raise plyvel.IOError(b"IO error: /x/000005.log: No space left on device")


def test_invalid_write_failure_is_fatal_once_and_refuses_later_writes(tmp_path):
    store = ChainStore(tmp_path / "chain")
    reasons = []
    store.on_fatal = reasons.append
    store.put_block(b"\x01" * 32, b"block")
    real = store.db
    store.db = _FailingBatches(real)
    with pytest.raises(StoreWriteError) as caught:
        store.put_block(b"\x02" * 32, b"block")
    assert str(caught.value) == "store write failed (block): IO error: /x/000005.log: No space left on device"
    assert isinstance(caught.value, RpcError) and caught.value.code == -20
    store.db = real  # even with a working disk again, nothing more is written
    with pytest.raises(StoreWriteError):
        store.put_index(b"\x01" * 32, b"h", 3, 0)
    assert reasons == [str(caught.value)]
    assert store.get_block(b"\x02" * 32) is None and store.get_block(b"\x01" * 32) == b"block"
    store.close()


def test_invalid_store_locked(tmp_path):
    first = ChainStore(tmp_path / "chain")
    with pytest.raises(StoreError, match="is in use by another process"):
        ChainStore(tmp_path / "chain")
    first.close()


def test_empty_store_passes_the_check_and_blocks_without_tip_do_not(tmp_path):
    store = ChainStore(tmp_path / "chain")
    verify_chainstate(store)
    store.put_block(b"\x01" * 32, b"block")
    with pytest.raises(StoreCorruption, match="blocks are stored but the tip marker is missing"):
        verify_chainstate(store)
    store.close()


@pytest.mark.parametrize("obj, detail", [
    ([[b"k"]], "undo entry: expected 2 fields, got 1"),
    ([1.5], "undo entry: expected an array"),
    ({"a": 1}, "undo record: expected an array"),
    ([[5, None]], "undo key: expected bin"),
    ([[b"k", 7]], "undo value: expected bin"),
    ([[b"k", None], [b"a", None]], "undo record: keys not in ascending order"),
    ([[b"k", None], [b"k", b"v"]], "undo record: keys not in ascending order"),
])
def test_invalid_undo_record(obj, detail):
    with pytest.raises(DecodeError) as caught:
        decode_undo(packb(obj))
    assert caught.value.reason == "bad-encoding" and caught.value.detail == detail


def test_undo_round_trip():
    undo = {b"b": None, b"a": b"\x01", b"c": b""}
    assert decode_undo(encode_undo(undo)) == undo


def _damage_the_tables(path) -> None:
    """Flip bytes in the middle of every table file (the log was turned into tables by
    the reopen), as a bad disk sector would."""
    tables = list(path.glob("*.ldb"))
    assert tables, "expected LevelDB table files"
    for table in tables:
        data = bytearray(table.read_bytes())
        middle = len(data) // 2
        for i in range(middle, middle + 64):
            data[i] ^= 0xFF
        table.write_bytes(bytes(data))


def test_invalid_read_of_a_damaged_table_is_fatal_with_the_remedy(tmp_path):
    """Regression (issue 6, left last session): a read error during a run answered
    "internal error" until the next start. Now the read raises StoreReadError (RPC -20,
    naming --reindex), asks the node to stop once and refuses later writes."""
    import os

    from node.store import StoreReadError
    path = tmp_path / "chain"
    store = ChainStore(path)
    blobs = {i.to_bytes(32, "big"): os.urandom(1000) for i in range(2000)}
    for block_hash, blob in blobs.items():
        store.put_block(block_hash, blob)
    store.close()
    ChainStore(path).close()  # reopening turns the log into table files
    _damage_the_tables(path)
    store = ChainStore(path)
    reasons = []
    store.on_fatal = reasons.append
    errors = []
    for block_hash in blobs:
        try:
            store.get_block(block_hash)
        except StoreReadError as exc:
            errors.append(exc)
    assert errors, "no read hit the damaged block"
    assert isinstance(errors[0], RpcError) and errors[0].code == -20
    assert "store read failed (block)" in str(errors[0]) and "--reindex" in str(errors[0])
    assert len(reasons) == 1 and reasons[0] == str(errors[0])
    with pytest.raises(StoreWriteError, match="store read failed"):
        store.put_block(b"\x09" * 32, b"block")
    store.close()

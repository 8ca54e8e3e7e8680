"""The state map and its overlays (undo records), accounts and totals (SPEC §2, §9, §10)."""

from consensus.state import (Account, MemoryState, Overlay, add_refund_entry,
                             compute_money_total, compute_state_hash, credit, decode_undo,
                             encode_undo, get_account, get_refunds_at, iter_redeemed,
                             put_account, put_redeemed)
from tests.consensus_helpers import ALICE, BOB


def _base() -> MemoryState:
    return MemoryState({b"a1": b"x", b"a2": b"y", b"b1": b"z"})


def test_overlay_reads_through_and_shadows():
    view = Overlay(_base())
    view.put(b"a3", b"new")
    view.delete(b"a1")
    assert view.get(b"a1") is None
    assert view.get(b"a2") == b"y"
    assert view.get(b"a3") == b"new"
    assert list(view.iter_prefix(b"a")) == [(b"a2", b"y"), (b"a3", b"new")]
    assert view.base.get(b"a1") == b"x"  # nothing written before commit


def test_changes_and_undo_only_keys_that_really_changed():
    view = Overlay(_base())
    view.put(b"a1", b"x")          # same value: no change
    view.put(b"a2", b"tmp")
    view.put(b"a2", b"y")          # back to the old value: no change
    view.put(b"c1", b"t")
    view.delete(b"c1")             # created and deleted: no change
    view.delete(b"zz")             # deleting an absent key: no change
    assert view.changes() == {}
    assert view.undo_record() == {}
    view.put(b"b1", b"Z")
    view.delete(b"a2")
    view.put(b"c2", b"w")
    assert view.changes() == {b"b1": b"Z", b"a2": None, b"c2": b"w"}
    assert view.undo_record() == {b"b1": b"z", b"a2": b"y", b"c2": None}


def test_undo_record_written_back_restores_base():
    base = _base()
    before = dict(base.items)
    view = Overlay(base)
    view.put(b"a1", b"changed")
    view.delete(b"b1")
    view.put(b"n", b"new")
    undo = view.undo_record()
    view.commit()
    assert base.items == {b"a1": b"changed", b"a2": b"y", b"n": b"new"}
    for key, value in decode_undo(encode_undo(undo)).items():
        base.delete(key) if value is None else base.put(key, value)
    assert base.items == before


def test_nested_overlay_commit_and_drop():
    base = _base()
    outer = Overlay(base)
    inner = outer.child()
    inner.put(b"a1", b"inner")
    inner.delete(b"a2")
    assert outer.get(b"a1") == b"x"
    inner.commit()
    assert outer.get(b"a1") == b"inner" and outer.get(b"a2") is None
    assert outer.undo_record() == {b"a1": b"x", b"a2": b"y"}
    dropped = outer.child()
    dropped.put(b"a1", b"never")
    assert outer.get(b"a1") == b"inner"
    assert base.items == _base().items


def test_accounts_default_zero_and_zero_account_not_stored():
    view = MemoryState()
    assert get_account(view, ALICE) == Account(0, 0)
    credit(view, ALICE, 0)
    assert view.items == {}  # the state never depends on a zero credit
    credit(view, ALICE, 5)
    assert get_account(view, ALICE) == Account(5, 0)
    put_account(view, ALICE, Account(0, 1))
    assert get_account(view, ALICE) == Account(0, 1)  # a used nonce is kept
    put_account(view, ALICE, Account(0, 0))
    assert view.items == {}


def test_redeemed_records_and_refund_index_are_per_escrow():
    view = MemoryState()
    e1, e2 = b"\x01" * 32, b"\x02" * 32
    put_redeemed(view, e1, 5, 1, 10)
    put_redeemed(view, e1, 5, 0, 9)
    put_redeemed(view, e1, 2**40, 3, 11)
    put_redeemed(view, e2, 5, 0, 12)
    assert iter_redeemed(view, e1) == [(5, 0, 9), (5, 1, 10), (2**40, 3, 11)]
    assert iter_redeemed(view, e2) == [(5, 0, 12)]
    add_refund_entry(view, 300, e2)
    add_refund_entry(view, 300, e1)
    add_refund_entry(view, 301, e1)
    assert get_refunds_at(view, 300) == [e1, e2]
    assert get_refunds_at(view, 299) == []


def test_state_hash_covers_every_key_and_value():
    a = MemoryState({b"k1": b"v", b"k2": b"w"})
    b = MemoryState({b"k2": b"w", b"k1": b"v"})
    assert compute_state_hash(a) == compute_state_hash(b)
    assert compute_state_hash(a) != compute_state_hash(MemoryState({b"k1": b"v"}))
    assert compute_state_hash(a) != compute_state_hash(MemoryState({b"k1": b"vk", b"2": b"w"}))
    credit(a, BOB, 3)
    assert compute_money_total(a) == 3

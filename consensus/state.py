"""The consensus state as a key/value map, with typed accessors (SPEC §2, §3.2, §7, §9).

Keys (all bytes):

- ``a`` + address(32)                          -> ``[balance, nonce]``
- ``e`` + escrow_id(32)                        -> ``EscrowState``
- ``r`` + escrow_id + seqno(u64)                -> ``[[merchant_index, height], ...]`` of
  the redemptions of that ticket, by merchant index (one point lookup per ticket)
- ``f`` + t_refund(u64) + escrow_id            -> ``b""`` (escrows refunded at that height)
- ``v`` + height(u64)                          -> the ``vdf`` field of the block at height
- ``burned``, ``issued``                       -> totals in units

``Overlay`` records writes over a base view and, for each key first touched, its old
value: that map *is* the undo record of a block (``None`` = key was absent).
"""

import bisect
from dataclasses import dataclass
from typing import Iterator, Protocol

from consensus.encoding import expect_bytes, expect_int, expect_list, packb, unpackb_canonical
from consensus.errors import DecodeError
from consensus.escrow import EscrowState
from consensus.hashing import tagged_hash
from consensus.errors import ConsensusError  # for debit_account (SPEC §15-§16 section)

_ACCOUNT, _ESCROW, _REDEEMED, _REFUND, _VDF = b"a", b"e", b"r", b"f", b"v"
_BURNED, _ISSUED = b"burned", b"issued"


class StateView(Protocol):
    """Read/write access to consensus state; iteration is in key order."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...


class MemoryState:
    """A dict-backed ``StateView`` (tests, tools)."""

    def __init__(self, items: dict[bytes, bytes] | None = None) -> None:
        self.items: dict[bytes, bytes] = dict(items or {})

    def get(self, key: bytes) -> bytes | None:
        return self.items.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.items[key] = value

    def delete(self, key: bytes) -> None:
        self.items.pop(key, None)

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(k for k in self.items if k.startswith(prefix)):
            yield key, self.items[key]


class Overlay:
    """Pending writes over ``base``; ``undo`` maps each touched key to its base value.

    Written keys are also kept sorted (new ones are sorted in at the next
    ``iter_prefix``, one timsort merge), so ``iter_prefix`` costs ``O(log writes +
    matches)`` rather than a scan of every pending write, and a put costs ``O(1)``."""

    def __init__(self, base: StateView) -> None:
        self.base = base
        self.writes: dict[bytes, bytes | None] = {}
        self.undo: dict[bytes, bytes | None] = {}
        self._sorted: list[bytes] = []
        self._unsorted: list[bytes] = []  # written keys not yet merged into ``_sorted``
        # base values read so far: the undo of a key read before it is written needs no
        # second read (the base does not change under a live overlay; ``commit`` clears)
        self._base_reads: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        value = self._base_reads[key] = self.base.get(key)
        return value

    def put(self, key: bytes, value: bytes | None) -> None:
        # the undo value is the base's (read once, or remembered from a get); a key new to
        # ``writes`` waits in ``_unsorted`` for the next ``iter_prefix``. Inline, not a
        # helper: a REDEEM block puts ~8 000 keys.
        if key not in self.undo:
            reads = self._base_reads
            self.undo[key] = reads[key] if key in reads else self.base.get(key)
        writes = self.writes
        if key not in writes:
            self._unsorted.append(key)
        writes[key] = value

    def delete(self, key: bytes) -> None:
        self.put(key, None)

    def iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        merged = dict(self.base.iter_prefix(prefix))
        if self._unsorted:
            self._sorted.extend(self._unsorted)
            self._sorted.sort()
            self._unsorted.clear()
        keys, start = self._sorted, bisect.bisect_left(self._sorted, prefix)
        for i in range(start, len(keys)):
            key = keys[i]
            if not key.startswith(prefix):
                break
            value = self.writes[key]
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        for key in sorted(merged):
            yield key, merged[key]

    def child(self) -> "Overlay":
        """A nested overlay whose writes can be merged back with ``commit``."""
        return Overlay(self)

    def commit(self) -> None:
        """Apply this overlay's writes to its base (which must be writable)."""
        for key, value in self.writes.items():
            if value is None:
                self.base.delete(key)
            else:
                self.base.put(key, value)
        self.writes.clear()
        self.undo.clear()
        self._sorted.clear()
        self._unsorted.clear()
        self._base_reads.clear()

    def changes(self) -> dict[bytes, bytes | None]:
        """Net writes (``None`` = delete), only keys whose value really changed."""
        return {k: v for k, v in self.writes.items() if self.undo.get(k) != v}

    def undo_record(self, changes: dict[bytes, bytes | None] | None = None
                    ) -> dict[bytes, bytes | None]:
        """Old values of the keys in ``changes()`` (pass it if already computed): writing
        them back undoes the block."""
        undo = self.undo
        return {k: undo[k] for k in (self.changes() if changes is None else changes)}


def encode_undo(undo: dict[bytes, bytes | None]) -> bytes:
    """Serialise an undo record as ``[[key, old_value_or_nil], ...]`` in key order."""
    return packb([[k, undo[k]] for k in sorted(undo)])


def decode_undo(data: bytes) -> dict[bytes, bytes | None]:
    """Inverse of ``encode_undo``: ``{key: old_value_or_None}``.

    Raises ``DecodeError`` (and nothing else) unless ``data`` is an array of
    ``[bin key, bin-or-nil value]`` pairs with strictly ascending keys.
    """
    undo: dict[bytes, bytes | None] = {}
    previous = None
    for item in expect_list(unpackb_canonical(data), what="undo record"):
        key, value = expect_list(item, 2, "undo entry")
        expect_bytes(key, what="undo key")
        if value is not None:
            expect_bytes(value, what="undo value")
        if previous is not None and key <= previous:
            raise DecodeError("undo record: keys not in ascending order")
        undo[key] = value
        previous = key
    return undo


# ---- accounts --------------------------------------------------------------------------

@dataclass(frozen=True)
class Account:
    """``{balance, nonce}`` (SPEC §2); an unknown address is ``Account(0, 0)``."""

    balance: int  # units
    nonce: int    # next expected TRANSFER/ESCROW_CREATE nonce


def get_account(view: StateView, address: bytes) -> Account:
    """The account of ``address`` (zero if never credited)."""
    raw = view.get(_ACCOUNT + address)
    if raw is None:
        return Account(0, 0)
    known = _RECENT_ACCOUNTS.get(raw)
    if known is not None:
        return known
    balance, nonce = expect_list(unpackb_canonical(raw), 2)
    return Account(expect_int(balance), expect_int(nonce))


# Encodings made lately -> their (frozen) Account: a transaction reads back the account it
# just wrote several times (nonce check, fee, amount), and the mempool re-reads them.
_RECENT_ACCOUNTS: dict[bytes, Account] = {}
_RECENT_ACCOUNTS_MAX = 8192


def put_account(view: StateView, address: bytes, account: Account) -> None:
    """Store ``account``; an all-zero account is deleted so state never depends on history."""
    if account.balance == 0 and account.nonce == 0:
        view.delete(_ACCOUNT + address)
    else:
        raw = packb([account.balance, account.nonce])
        if len(_RECENT_ACCOUNTS) >= _RECENT_ACCOUNTS_MAX:
            _RECENT_ACCOUNTS.clear()
        _RECENT_ACCOUNTS[raw] = account
        view.put(_ACCOUNT + address, raw)


def credit(view: StateView, address: bytes, amount: int) -> None:
    """Add ``amount`` units to ``address``."""
    acct = get_account(view, address)
    put_account(view, address, Account(acct.balance + amount, acct.nonce))


def iter_accounts(view: StateView) -> Iterator[tuple[bytes, Account]]:
    """Every account in address order."""
    for key, _ in view.iter_prefix(_ACCOUNT):
        yield key[1:], get_account(view, key[1:])


# ---- escrows ---------------------------------------------------------------------------

def get_escrow(view: StateView, escrow_id: bytes) -> EscrowState | None:
    """The escrow ``escrow_id`` or ``None``."""
    raw = view.get(_ESCROW + escrow_id)
    return None if raw is None else EscrowState.decode(raw)


def put_escrow(view: StateView, escrow_id: bytes, escrow: EscrowState) -> None:
    """Store an escrow's state."""
    view.put(_ESCROW + escrow_id, escrow.encode())


def iter_escrows(view: StateView) -> Iterator[tuple[bytes, EscrowState]]:
    """Every live escrow in id order."""
    for key, raw in view.iter_prefix(_ESCROW):
        yield key[1:], EscrowState.decode(raw)


# ---- height indexes: "object X is due at height h" ------------------------------------

def put_height_entry(view: StateView, prefix: bytes, height: int, object_id: bytes) -> None:
    """Index ``object_id`` under ``prefix + height(u64)`` (refunds, expiries due at a height)."""
    view.put(prefix + height.to_bytes(8, "big") + object_id, b"")


def delete_height_entry(view: StateView, prefix: bytes, height: int, object_id: bytes) -> None:
    """Remove the entry ``put_height_entry`` made."""
    view.delete(prefix + height.to_bytes(8, "big") + object_id)


def get_height_entries(view: StateView, prefix: bytes, height: int) -> list[bytes]:
    """Ids indexed under ``prefix`` at ``height``, in id order (one prefix scan of them only)."""
    key_prefix = prefix + height.to_bytes(8, "big")
    return [key[len(key_prefix):] for key, _ in view.iter_prefix(key_prefix)]


def add_refund_entry(view: StateView, t_refund: int, escrow_id: bytes) -> None:
    """Index ``escrow_id`` under the height that refunds it."""
    put_height_entry(view, _REFUND, t_refund, escrow_id)


def get_refunds_at(view: StateView, height: int) -> list[bytes]:
    """Ids of escrows with ``t_refund == height``, in id order."""
    return get_height_entries(view, _REFUND, height)


def delete_escrow(view: StateView, escrow_id: bytes) -> None:
    """Remove an escrow, its refund index entry and all its redeemed records (SPEC §9)."""
    escrow = get_escrow(view, escrow_id)
    if escrow is not None:
        delete_height_entry(view, _REFUND, escrow.t_refund, escrow_id)
    view.delete(_ESCROW + escrow_id)
    for key, _ in list(view.iter_prefix(_REDEEMED + escrow_id)):
        view.delete(key)


# ---- redeemed records ------------------------------------------------------------------

def redeemed_prefix(escrow_id: bytes) -> bytes:
    """The common start of ``escrow_id``'s redeemed-record keys: ``redeemed_key(escrow_id,
    seqno) == redeemed_prefix(escrow_id) + seqno.to_bytes(8, "big")``."""
    return _REDEEMED + escrow_id


def _decode_redemptions(raw: bytes | None) -> list[tuple[int, int]]:
    if raw is None:
        return []
    pairs = expect_list(unpackb_canonical(raw))
    return [(expect_int(m), expect_int(h)) for m, h in (expect_list(p, 2) for p in pairs)]


def get_redeemed_indices(view: StateView, escrow_id: bytes, seqno: int) -> set[int]:
    """Merchant indices that already redeemed ``(escrow_id, seqno)`` (one point read)."""
    return {m for m, _ in _decode_redemptions(view.get(redeemed_key(escrow_id, seqno)))}


def redeemed_key(escrow_id: bytes, seqno: int) -> bytes:
    """The state key of the redeemed record of ``(escrow_id, seqno)``."""
    return redeemed_prefix(escrow_id) + seqno.to_bytes(8, "big")


def get_redemptions_at(view: StateView, key: bytes) -> dict[int, int]:
    """``{merchant_index: height}`` of the redeemed record at ``key`` (``redeemed_key``)."""
    raw = view.get(key)
    return {} if raw is None else dict(_decode_redemptions(raw))


def put_redemptions_at(view: StateView, key: bytes, pairs: dict[int, int]) -> None:
    """Store the whole ``{merchant_index: height}`` record at ``key`` (``redeemed_key``)."""
    view.put(key, packb([[m, pairs[m]] for m in sorted(pairs)]))


def get_redemptions(view: StateView, escrow_id: bytes, seqno: int) -> dict[int, int]:
    """``{merchant_index: height}`` of the redemptions of ``(escrow_id, seqno)``."""
    return get_redemptions_at(view, redeemed_key(escrow_id, seqno))


def put_redemptions(view: StateView, escrow_id: bytes, seqno: int,
                    pairs: dict[int, int]) -> None:
    """Store the whole ``{merchant_index: height}`` record of ``(escrow_id, seqno)``."""
    put_redemptions_at(view, redeemed_key(escrow_id, seqno), pairs)


def put_redeemed(view: StateView, escrow_id: bytes, seqno: int, merchant_index: int,
                 height: int) -> None:
    """Record that ``merchant_index`` redeemed ``(escrow_id, seqno)`` at ``height``."""
    pairs = get_redemptions(view, escrow_id, seqno)
    pairs[merchant_index] = height
    put_redemptions(view, escrow_id, seqno, pairs)


def iter_redeemed(view: StateView, escrow_id: bytes) -> list[tuple[int, int, int]]:
    """``[(seqno, merchant_index, height), ...]`` for ``escrow_id`` in seqno order."""
    prefix = _REDEEMED + escrow_id
    out = []
    for key, raw in view.iter_prefix(prefix):
        seqno = int.from_bytes(key[len(prefix):], "big")
        out.extend((seqno, m, h) for m, h in _decode_redemptions(raw))
    return out


# ---- per-block VDF values and totals ---------------------------------------------------

def put_block_vdf(view: StateView, height: int, vdf: bytes) -> None:
    """Remember the ``vdf`` field of the block at ``height`` (= vdf of block height-1)."""
    view.put(_VDF + height.to_bytes(8, "big"), vdf)


def get_block_vdf(view: StateView, height: int) -> bytes | None:
    """The ``vdf`` field of the block at ``height`` on this chain, if connected."""
    return view.get(_VDF + height.to_bytes(8, "big"))


def _get_total(view: StateView, key: bytes) -> int:
    raw = view.get(key)
    return 0 if raw is None else expect_int(unpackb_canonical(raw))


def get_burned(view: StateView) -> int:
    """Units burned by broken escrows (SPEC §8)."""
    return _get_total(view, _BURNED)


def add_burned(view: StateView, amount: int) -> None:
    """Add to the burned total."""
    view.put(_BURNED, packb(get_burned(view) + amount))


def get_issued(view: StateView) -> int:
    """Units ever created: premine plus every block's minted amount (SPEC §10 invariant)."""
    return _get_total(view, _ISSUED)


def add_issued(view: StateView, amount: int) -> None:
    """Add newly minted units to the issued total."""
    view.put(_ISSUED, packb(get_issued(view) + amount))


def compute_state_hash(view: StateView) -> bytes:
    """``H(b"state", ...)`` over every key/value of the state in key order (SPEC §12)."""
    parts = []
    for key, value in view.iter_prefix(b""):
        parts.append(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
    return tagged_hash(b"state", b"".join(parts))


def compute_money_total(view: StateView) -> int:
    """``sum(accounts) + sum(escrow + penalty balances) + sum(MP escrow amounts) +
    sum(channel deposit + penalty) + burned`` — equals ``get_issued`` (SPEC §10 invariant)."""
    # The scheme modules import this one, so their iterators are imported here.
    from consensus.channel import iter_channels
    from consensus.micropay import iter_mp_escrows
    total = sum(acct.balance for _, acct in iter_accounts(view))
    total += sum(e.escrow_balance + e.penalty_balance for _, e in iter_escrows(view))
    total += sum(e.amount for _, e in iter_mp_escrows(view))
    total += sum(c.deposit + c.penalty for _, c in iter_channels(view))
    return total + get_burned(view)


# ---- shared by the comparison schemes (SPEC §15, §16) ----------------------------------

def debit_account(view: StateView, address: bytes, amount: int, *,
                  bump_nonce: bool = False) -> None:
    """Take ``amount`` units from ``address`` (``insufficient-funds``), optionally
    nonce += 1 (SPEC §2 rules 4–5); ``consensus.transition.debit`` is this function."""
    acct = get_account(view, address)
    if amount > acct.balance:
        raise ConsensusError("insufficient-funds",
                             f"needs {amount} units, balance {acct.balance}")
    put_account(view, address, Account(acct.balance - amount, acct.nonce + int(bump_nonce)))

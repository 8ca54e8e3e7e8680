"""An in-memory index of live escrows by owner and by merchant, for RPC ``listescrows``.

The consensus state keys escrows by id only (SPEC §3.2, ``e`` + escrow_id), so finding
"the escrows of owner X" would scan every live escrow. ``EscrowIndex`` keeps
``owner -> {escrow_id}`` and ``merchant -> {escrow_id}`` and brings itself up to date
lazily, when queried, from the main chain:

- first use, or the main chain no longer holds the last indexed block (a reorg), or more
  than ``REBUILD_GAP`` blocks to catch up: rebuild with one pass over the live escrows;
- otherwise read the ESCROW_CREATEs of the blocks connected since (escrow id =
  ``H(b"escrow", block_hash || txid)``, SPEC §3.2) and index those still live.

Refunded escrows (deleted by SPEC §9) are dropped when a query finds their state gone; a
reorg that undoes a refund triggers a rebuild, so nothing live is ever missed. Nothing is
persisted: the index is rebuilt at the first query after a start. DESIGN "listescrows".
"""

from __future__ import annotations

from collections.abc import Iterable

from consensus.escrow import EscrowState, compute_escrow_id
from consensus.state import StateView, get_escrow, iter_escrows
from consensus.tx import ESCROW_CREATE

REBUILD_GAP = 1_000  # blocks behind beyond which a full rebuild is cheaper than catching up


class EscrowIndex:
    """Live escrow ids by owner and by merchant (32-byte keys); see the module docstring."""

    def __init__(self) -> None:
        self.by_owner: dict[bytes, set[bytes]] = {}
        self.by_merchant: dict[bytes, set[bytes]] = {}
        self._keys: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}  # id -> (owner, merchants)
        self._height = -1          # last indexed main-chain height (-1: never built)
        self._hash = b""           # its block hash
        self.rebuilds = 0          # full passes over the state so far (for tests)

    def _add(self, escrow_id: bytes, escrow: EscrowState) -> None:
        self._keys[escrow_id] = (escrow.owner, escrow.merchants)
        self.by_owner.setdefault(escrow.owner, set()).add(escrow_id)
        for merchant in escrow.merchants:
            self.by_merchant.setdefault(merchant, set()).add(escrow_id)

    def _rebuild(self, state: StateView) -> None:
        self.by_owner, self.by_merchant, self._keys = {}, {}, {}
        for escrow_id, escrow in iter_escrows(state):
            self._add(escrow_id, escrow)
        self.rebuilds += 1

    def sync(self, main: list[bytes], get_block, state: StateView) -> None:
        """Catch up with the main chain ``main`` (hashes by height); ``get_block(hash)``
        returns a decoded ``Block``; ``state`` is the tip state."""
        tip = len(main) - 1
        if (self._height < 0 or self._height > tip or main[self._height] != self._hash
                or tip - self._height > REBUILD_GAP):
            self._rebuild(state)
        else:
            for height in range(self._height + 1, tip + 1):
                block = get_block(main[height])
                for tx in block.txs:
                    if tx.kind != ESCROW_CREATE:
                        continue
                    escrow_id = compute_escrow_id(main[height], tx.txid())
                    escrow = get_escrow(state, escrow_id)
                    if escrow is not None:
                        self._add(escrow_id, escrow)
        self._height, self._hash = tip, main[tip]

    def lookup(self, state: StateView, *, owner: bytes | None = None,
               merchant: bytes | None = None) -> list[tuple[bytes, EscrowState]]:
        """``[(escrow_id, state), ...]`` of the live escrows of ``owner`` or naming
        ``merchant`` (exactly one of them), by ``created_height`` then id. Call ``sync``
        first."""
        if (owner is None) == (merchant is None):
            raise ValueError("give exactly one of owner, merchant")
        table = self.by_owner if owner is not None else self.by_merchant
        key = owner if owner is not None else merchant
        ids = list(table.get(key, ()))
        found, gone = [], []
        for escrow_id in ids:
            escrow = get_escrow(state, escrow_id)
            if escrow is None:
                gone.append(escrow_id)
            else:
                found.append((escrow_id, escrow))
        self._forget(gone)
        return sorted(found, key=lambda item: (item[1].created_height, item[0]))

    def _forget(self, escrow_ids: Iterable[bytes]) -> None:
        """Drop refunded escrows from both tables."""
        for escrow_id in escrow_ids:
            owner, merchants = self._keys.pop(escrow_id, (None, ()))
            for table, keys in ((self.by_owner, (owner,)), (self.by_merchant, merchants)):
                for key in keys:
                    ids = table.get(key)
                    if ids is not None:
                        ids.discard(escrow_id)
                        if not ids:
                            del table[key]

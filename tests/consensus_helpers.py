"""Shared builders for the consensus tests: a regtest chain held in a ``MemoryState``.

``Chain`` owns a genesis with a premine, mines blocks by hand (coinbase, VDF, nonce
grinding on the regtest target) and connects them with ``connect_block`` exactly as a
node would, keeping each block's undo record. Escrow helpers create escrows, sign
tickets and find draw winners so that REDEEM and CHEAT_PROOF tests read as scenarios.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgpack
import pytest

from consensus import keys
from consensus.block import (Block, Header, HeaderContext, compute_median_time_past,
                             compute_next_target, compute_tx_root, is_pow_valid,
                             make_genesis)
from consensus.errors import ConsensusError
from consensus.escrow import (EscrowState, compute_escrow_amount, compute_escrow_id,
                              compute_min_penalty, compute_t_draw)
from consensus.hashing import ZERO_HASH
from consensus.lottery import winner_set
from consensus.params import REGTEST, ChainParams
from consensus.state import MemoryState, Overlay, get_account, get_escrow, put_block_vdf
from consensus.ticket import Ticket, sign_ticket
from consensus.transition import (TxContext, apply_genesis, apply_tx, compute_draw,
                                  connect_block)
from consensus.tx import Tx, make_coinbase, make_escrow_create, make_redeem
from consensus.vdf import compute_vdf

GENESIS_TIME = 1_700_000_000
PREMINE_EACH = 10**12


def seed_of(n: int) -> bytes:
    """A fixed, readable 32-byte test seed."""
    return bytes([n]) * 32


ALICE_SEED, BOB_SEED, CAROL_SEED, DAVE_SEED, EVE_SEED, MINER_SEED = (
    seed_of(i) for i in (1, 2, 3, 4, 5, 6))
ALICE, BOB, CAROL, DAVE, EVE, MINER = (
    keys.public_key(s) for s in (ALICE_SEED, BOB_SEED, CAROL_SEED, DAVE_SEED, EVE_SEED,
                                 MINER_SEED))
SEEDS = {ALICE: ALICE_SEED, BOB: BOB_SEED, CAROL: CAROL_SEED, DAVE: DAVE_SEED,
         EVE: EVE_SEED, MINER: MINER_SEED}


def regtest_params(premine=((ALICE, PREMINE_EACH), (BOB, PREMINE_EACH))) -> ChainParams:
    """Regtest with the test genesis time and a premine (ALICE and BOB by default)."""
    return REGTEST.with_genesis(GENESIS_TIME, premine)


def sign_tx(seed: bytes, genesis_hash: bytes, kind: int, nonce: int, fee: int, body: Any,
            version: int = 1) -> Tx:
    """A transaction with any field values, correctly signed by ``seed``."""
    unsigned = Tx(version, kind, keys.public_key(seed), nonce, fee, body, bytes(64))
    return replace(unsigned, sig=keys.sign(seed, unsigned.signing_message(genesis_hash)))


def grind(header: Header, want_valid: bool = True) -> Header:
    """The first nonce from ``header.nonce`` whose PoW validity is ``want_valid``."""
    while is_pow_valid(header.hash(), header.target) != want_valid:
        header = replace(header, nonce=header.nonce + 1)
    return header


class Chain:
    """A chain of connected blocks over a ``MemoryState`` (regtest unless told)."""

    def __init__(self, params: ChainParams | None = None) -> None:
        self.params = params or regtest_params()
        self.genesis = make_genesis(self.params)
        self.genesis_hash = self.genesis.hash()
        self.state = MemoryState()
        apply_genesis(self.params, self.state, self.genesis)
        self.blocks: list[Block] = [self.genesis]
        self.undos: list[dict[bytes, bytes | None]] = []      # undo record per block
        self.last_changes: dict[bytes, bytes | None] = {}     # net writes of the tip block

    # ---- chain shape ---------------------------------------------------------------

    @property
    def tip(self) -> Block:
        return self.blocks[-1]

    @property
    def height(self) -> int:
        return self.tip.header.height

    def header_context(self, now: int | None = None) -> HeaderContext:
        """What ``connect_block`` needs for the block at ``height + 1``."""
        h = self.height + 1
        times = [b.header.timestamp for b in self.blocks[max(0, h - 11):h]]
        target = compute_next_target(self.params, h, self.tip.header.target,
                                     lambda i: self.blocks[i].header.timestamp)
        mtp = compute_median_time_past(times)
        ts_default = self.tip.header.timestamp + self.params.block_time
        return HeaderContext(self.tip.hash(), self.height, target, mtp,
                             ts_default if now is None else now)

    def tx_context(self, height: int | None = None) -> TxContext:
        """A mempool-style context: the next block, zero block hash."""
        return TxContext(self.params, self.genesis_hash,
                         self.height + 1 if height is None else height, ZERO_HASH)

    # ---- building blocks -----------------------------------------------------------

    def coinbase(self, txs=(), height: int | None = None, extra: int = 0) -> Tx:
        """The coinbase paying MINER the full reward plus fees (plus ``extra``)."""
        h = self.height + 1 if height is None else height
        fees = sum(t.fee for t in txs)
        return make_coinbase(h, [(MINER, self.params.block_reward + fees + extra)])

    def build_block(self, txs=(), *, coinbase: Tx | None = None, all_txs=None,
                    pow_valid: bool = True, **fields) -> Block:
        """A block on the tip; ``fields`` override any header field (before grinding)."""
        parent = self.tip
        ph = parent.hash()
        if all_txs is None:
            all_txs = (coinbase or self.coinbase(txs),) + tuple(txs)
        vdf, cps = compute_vdf(ph, self.params.vdf_iterations, self.params.vdf_checkpoints)
        header = Header(
            version=1, height=self.height + 1, prev_hash=ph,
            timestamp=parent.header.timestamp + self.params.block_time,
            target=self.header_context().expected_target, nonce=0,
            tx_root=compute_tx_root([t.txid() for t in all_txs]), vdf=vdf,
            vdf_checkpoints=tuple(cps))
        header = grind(replace(header, **fields), pow_valid)
        return Block(header, tuple(all_txs))

    def try_connect(self, block: Block, now: int | None = None,
                    params: ChainParams | None = None) -> Overlay:
        """Connect ``block`` into a fresh overlay (not committed); raises on failure."""
        view = Overlay(self.state)
        connect_block(params or self.params, view, block, self.header_context(now),
                      self.genesis_hash)
        return view

    def connect(self, block: Block, now: int | None = None) -> Block:
        """Connect and commit ``block``, keeping its undo record."""
        view = self.try_connect(block, now)
        self.undos.append(view.undo_record())
        self.last_changes = view.changes()
        view.commit()
        self.blocks.append(block)
        return block

    def mine(self, txs=(), **kw) -> Block:
        """Build, connect and return a block holding ``txs``."""
        return self.connect(self.build_block(txs, **kw))

    def mine_to(self, height: int) -> None:
        """Mine empty blocks until the tip is at ``height``."""
        assert height >= self.height, (height, self.height)
        while self.height < height:
            self.mine()

    def disconnect(self) -> Block:
        """Undo the tip block by writing its undo record back."""
        undo = self.undos.pop()
        for key, value in undo.items():
            if value is None:
                self.state.delete(key)
            else:
                self.state.put(key, value)
        return self.blocks.pop()

    def check_tx(self, tx: Tx) -> Overlay:
        """Apply ``tx`` as if in the next block, into a throwaway overlay; raises.

        Like a node's mempool check (SPEC §2), the overlay first records the ``vdf`` field
        the next block will carry, ``vdf(tip hash)``, so a draw revealed by that very
        block is visible (``apply_block`` does the same before its transactions)."""
        view = Overlay(self.state)
        vdf, _ = compute_vdf(self.tip.hash(), self.params.vdf_iterations,
                             self.params.vdf_checkpoints)
        put_block_vdf(view, self.height + 1, vdf)
        apply_tx(self.tx_context(), view, tx)
        return view

    # ---- accounts and escrows ------------------------------------------------------

    def balance(self, address: bytes) -> int:
        return get_account(self.state, address).balance

    def nonce(self, address: bytes) -> int:
        return get_account(self.state, address).nonce

    def escrow(self, escrow_id: bytes) -> EscrowState | None:
        return get_escrow(self.state, escrow_id)

    def escrow_tx(self, owner_seed: bytes, merchants, *, win_num=1, win_den=2, beta=2,
                  tkt_rate=2, draw_len=1, l_esc=4, penalty=None, fee=0,
                  nonce=None) -> Tx:
        """A valid ESCROW_CREATE (least valid penalty unless ``penalty`` is given)."""
        owner = keys.public_key(owner_seed)
        if penalty is None:
            penalty = compute_min_penalty(self.params, len(merchants), win_num, win_den,
                                          beta, tkt_rate, draw_len)
        amount = compute_escrow_amount(win_num, win_den, beta, tkt_rate, l_esc)
        return make_escrow_create(owner_seed, self.genesis_hash,
                                  self.nonce(owner) if nonce is None else nonce, fee,
                                  amount, penalty, win_num, win_den, beta, tkt_rate,
                                  draw_len, list(merchants))

    def create_escrow(self, owner_seed: bytes = ALICE_SEED, merchants=(BOB, CAROL),
                      **kw) -> bytes:
        """Mine a block with a valid ESCROW_CREATE; returns the escrow id."""
        tx = self.escrow_tx(owner_seed, merchants, **kw)
        block = self.mine([tx])
        return compute_escrow_id(block.hash(), tx.txid())

    def ticket(self, escrow_id: bytes, merchant_index: int, seqno: int,
               owner_seed: bytes = ALICE_SEED) -> Ticket:
        return sign_ticket(owner_seed, self.genesis_hash, escrow_id, merchant_index, seqno)

    def redeem(self, merchant_seed: bytes, tickets, fee: int = 0) -> Tx:
        return make_redeem(merchant_seed, self.genesis_hash, fee, list(tickets))

    def t_draw(self, escrow_id: bytes, g: int) -> int:
        return compute_t_draw(self.params, self.escrow(escrow_id), g)

    def winners(self, escrow_id: bytes, g: int) -> list[int]:
        """Sorted winners of group ``g``: from the state once block ``t_draw + 1`` is
        connected, or from the tip's VDF when the tip *is* block ``t_draw``."""
        escrow = self.escrow(escrow_id)
        t_draw = compute_t_draw(self.params, escrow, g)
        if self.height >= t_draw + 1:
            won = compute_draw(self.state, self.params, escrow_id, escrow, g)
        elif self.height == t_draw:
            v, _ = compute_vdf(self.tip.hash(), self.params.vdf_iterations,
                               self.params.vdf_checkpoints)
            won = winner_set(v, escrow_id, g, escrow.draw_size, escrow.winners_per_draw)
        else:
            raise AssertionError(f"draw of group {g} not known at height {self.height}")
        return sorted(won)

    def losers(self, escrow_id: bytes, g: int) -> list[int]:
        escrow = self.escrow(escrow_id)
        a = escrow.draw_size
        won = set(self.winners(escrow_id, g))
        return [s for s in range(g * a, (g + 1) * a) if s not in won]

    def mine_to_redeemable(self, escrow_id: bytes, g: int = 0) -> None:
        """Mine until the next block is ``t_draw(g) + 1``, the first that may redeem."""
        self.mine_to(self.t_draw(escrow_id, g))


def assert_rejects(reason: str, fn, *args, **kwargs) -> ConsensusError:
    """Call ``fn`` and check it raises ``ConsensusError`` with exactly ``reason``."""
    with pytest.raises(ConsensusError) as info:
        fn(*args, **kwargs)
    assert info.value.reason == reason, f"expected {reason!r}, got {info.value!r}"
    return info.value


# ---- a msgpack writer that can emit non-canonical forms ------------------------------

class WideEncoder:
    """Encode like ``msgpack.packb`` but write node number ``widen`` (pre-order) in a
    wider, non-canonical form: ints as uint64/int64, bin8 as bin16, short arrays as
    array16. ``count`` is the number of nodes that have a wider form."""

    def __init__(self, widen: int | None = None) -> None:
        self.widen = widen
        self.count = 0

    def encode(self, obj: Any) -> bytes:
        if obj is None or obj is True or obj is False:
            return msgpack.packb(obj)
        if isinstance(obj, int):
            if not -(2**63) <= obj < 2**63 or not self._take():  # no wider form, or not this node
                return msgpack.packb(obj)
            if 0 <= obj < 2**32:
                return b"\xcf" + obj.to_bytes(8, "big")
            return b"\xd3" + obj.to_bytes(8, "big", signed=True)
        if isinstance(obj, bytes):
            if len(obj) >= 2**16 or not self._take():
                return msgpack.packb(obj, use_bin_type=True)
            if len(obj) < 256:
                return b"\xc5" + len(obj).to_bytes(2, "big") + obj
            return b"\xc6" + len(obj).to_bytes(4, "big") + obj
        if isinstance(obj, (list, tuple)):
            n = len(obj)
            if n < 2**16 and self._take():  # fixarray -> array16, array16 -> array32
                head = b"\xdc" + n.to_bytes(2, "big") if n < 16 else b"\xdd" + n.to_bytes(4, "big")
            else:
                head = _array_head(n)
            return head + b"".join(self.encode(x) for x in obj)
        return msgpack.packb(obj, use_bin_type=True)

    def _take(self) -> bool:
        """Count a widenable node; True if it is the one to widen."""
        wide = self.count == self.widen
        self.count += 1
        return wide


def _array_head(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 2**16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def widened(obj: Any, index: int) -> bytes:
    """``obj`` encoded with its node number ``index`` in a wider form."""
    return WideEncoder(index).encode(obj)


def widenable_count(obj: Any) -> int:
    """How many nodes of ``obj`` have a wider msgpack form."""
    enc = WideEncoder()
    enc.encode(obj)
    return enc.count

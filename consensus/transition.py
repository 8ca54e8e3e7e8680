"""State transitions: transactions, draws, refunds and whole blocks (SPEC §2–§10).

``connect_block`` is the sequence of SPEC §10 "Order of checks"; each step is one small
function named after the spec's words. Every failure raises ``ConsensusError`` with the
spec's reject reason. State changes go into an ``Overlay`` whose undo map is the block's
undo record.
"""

from collections.abc import Container
from dataclasses import dataclass

from consensus import keys
from consensus.block import Block, HeaderContext, compute_tx_root, verify_header
from consensus.channel import (process_channel_cheat, process_channel_close,
                               process_channel_expiries, process_channel_open)
from consensus.errors import ConsensusError
from consensus.escrow import (EscrowState, compute_escrow_id, compute_start, compute_t_draw,
                              compute_t_refund, verify_escrow_params)
from consensus.lottery import winner_set
from consensus.micropay import process_mp_claim, process_mp_escrow, process_mp_refunds
from consensus.params import ChainParams
from consensus.state import (Overlay, StateView, add_burned, add_issued,
                             add_refund_entry, credit, debit_account, delete_escrow, get_account,
                             get_block_vdf, get_escrow, get_redemptions_at, get_refunds_at,
                             put_block_vdf, put_escrow, put_redemptions_at, redeemed_prefix)
from consensus.ticket import Ticket, verify_ticket_signature
from consensus.tx import (CHANNEL_CHEAT, CHANNEL_CLOSE, CHANNEL_OPEN, CHEAT_PROOF, COINBASE,
                          ESCROW_CREATE, MP_CLAIM, MP_ESCROW, NONCE_KINDS, REDEEM, TRANSFER, Tx,
                          ZERO_SENDER, ZERO_SIG)
from consensus.vdf import verify_vdf

MAX_COINBASE_OUTPUTS = 16


@dataclass(frozen=True)
class TxContext:
    """Where a transaction is applied: the block at ``height`` with hash ``block_hash``."""

    params: ChainParams
    genesis_hash: bytes
    height: int
    block_hash: bytes  # the including block (zero bytes for mempool checks)
    # Facts already checked by the caller: ``(pubkey, msg, sig)`` triples of valid
    # signatures (and VDF segments, see ``consensus.vdf``). Never changes what is valid,
    # only skips recomputing it.
    verified: Container = frozenset()


def check_signature(ctx: TxContext, pubkey: bytes, msg: bytes, sig: bytes) -> bool:
    """Ed25519 verify, skipped when ``(pubkey, msg, sig)`` is in ``ctx.verified``."""
    return (pubkey, msg, sig) in ctx.verified or keys.verify(pubkey, msg, sig)


# ---- common rules (SPEC §2) ------------------------------------------------------------

def verify_tx_signature(ctx: TxContext, tx: Tx) -> None:
    """Rule 3: the sender's signature over the signing message (``bad-signature``)."""
    if not check_signature(ctx, tx.sender, tx.signing_message(ctx.genesis_hash), tx.sig):
        raise ConsensusError("bad-signature")


def verify_tx_nonce(view: StateView, tx: Tx) -> None:
    """Rule 4: account nonce for TRANSFER/ESCROW_CREATE, zero for REDEEM/CHEAT_PROOF."""
    if tx.kind in NONCE_KINDS:
        expected = get_account(view, tx.sender).nonce
        if tx.nonce != expected:
            raise ConsensusError("bad-nonce", f"expected nonce {expected}, got {tx.nonce}")
    elif tx.nonce != 0:
        raise ConsensusError("bad-nonce", "REDEEM and CHEAT_PROOF carry nonce 0")


# Take units from an account (``insufficient-funds``), optionally nonce += 1 (SPEC §2).
debit = debit_account


# ---- kinds -----------------------------------------------------------------------------

def process_transfer(ctx: TxContext, view: StateView, tx: Tx) -> None:
    """TRANSFER ``[to, amount]``: amount > 0, amount + fee <= balance (SPEC §2)."""
    to, amount = tx.body
    debit(view, tx.sender, tx.fee)
    if amount <= 0:
        raise ConsensusError("bad-amount")
    debit(view, tx.sender, amount, bump_nonce=True)
    credit(view, to, amount)


def process_escrow_create(ctx: TxContext, view: StateView, tx: Tx) -> bytes:
    """ESCROW_CREATE (SPEC §3.1–3.2, paper §4.1); returns the new ``escrow_id``."""
    debit(view, tx.sender, tx.fee)
    (escrow_amount, penalty_amount, win_num, win_den, beta, tkt_rate, draw_len,
     merchants) = tx.body
    l_esc = verify_escrow_params(ctx.params, escrow_amount, penalty_amount, win_num, win_den,
                                 beta, tkt_rate, draw_len, merchants)
    debit(view, tx.sender, escrow_amount + penalty_amount, bump_nonce=True)
    start = compute_start(ctx.params, ctx.height)
    escrow = EscrowState(
        owner=tx.sender, escrow_balance=escrow_amount, penalty_balance=penalty_amount,
        win_num=win_num, win_den=win_den, beta=beta, tkt_rate=tkt_rate, draw_len=draw_len,
        l_esc=l_esc, merchants=tuple(merchants), created_height=ctx.height, start=start,
        t_refund=compute_t_refund(ctx.params, start, l_esc, draw_len), broken=False)
    escrow_id = compute_escrow_id(ctx.block_hash, tx.txid())
    put_escrow(view, escrow_id, escrow)
    add_refund_entry(view, escrow.t_refund, escrow_id)
    return escrow_id


def get_draw_value(view: StateView, params: ChainParams, escrow: EscrowState, g: int) -> bytes | None:
    """``v`` of group ``g``: the ``vdf`` field of block ``t_draw(g) + 1``, if connected."""
    return get_block_vdf(view, compute_t_draw(params, escrow, g) + 1)


def compute_draw(view: StateView, params: ChainParams, escrow_id: bytes, escrow: EscrowState,
                 g: int) -> frozenset[int] | None:
    """Winning seqnos of group ``g`` (SPEC §6), or ``None`` before block ``t_draw + 1``."""
    v = get_draw_value(view, params, escrow, g)
    if v is None:
        return None
    return winner_set(v, escrow_id, g, escrow.draw_size, escrow.winners_per_draw)


def break_escrow(view: StateView, escrow_id: bytes, escrow: EscrowState) -> EscrowState:
    """Burn ``penalty_balance`` and mark the escrow broken (SPEC §8)."""
    add_burned(view, escrow.penalty_balance)
    broken = escrow.replace(penalty_balance=0, broken=True)
    put_escrow(view, escrow_id, broken)
    return broken


class RedeemEscrow:
    """One escrow as a REDEEM transaction works on it (SPEC §7): read once, its balances
    updated in place ticket after ticket, written back once (``RedeemBatch.finish``).

    The fields a REDEEM never changes (owner, merchants, the schedule) are read from
    ``escrow``; ``escrow_balance``, ``penalty_balance`` and ``broken`` are the running
    values. ``groups`` caches, per draw group, ``(t_draw + 1, t_expire, winners)``."""

    __slots__ = ("escrow", "escrow_balance", "penalty_balance", "broken", "groups", "dirty",
                 "n", "draw_size")

    def __init__(self, escrow: EscrowState) -> None:
        self.escrow = escrow
        self.n = escrow.N                  # constant while a REDEEM runs
        self.draw_size = escrow.draw_size
        self.escrow_balance = escrow.escrow_balance
        self.penalty_balance = escrow.penalty_balance
        self.broken = escrow.broken
        self.groups: dict[int, tuple[int, int, frozenset[int] | None]] = {}
        self.dirty = False

    def state(self) -> EscrowState:
        """The escrow with the running balances."""
        return self.escrow.replace(escrow_balance=self.escrow_balance,
                                   penalty_balance=self.penalty_balance, broken=self.broken)


class RedeemBatch:
    """The state one REDEEM transaction reads and writes (SPEC §7), held in memory while
    its tickets are checked and paid, then written to ``view`` once by ``finish``.

    Reads go through the batch (an escrow paid by an earlier ticket of the same REDEEM
    shows its new balance; a ticket recorded earlier in it counts as redeemed), so the
    outcome, the reject reasons and their order are those of applying the tickets one by
    one; only the number of encodes and writes changes (one per escrow and per record)."""

    def __init__(self, ctx: TxContext, view: StateView) -> None:
        self.ctx = ctx
        self.view = view
        self.escrows: dict[bytes, RedeemEscrow | None] = {}
        self.redeemed: dict[bytes, dict[int, int]] = {}  # redeemed_key -> record so far
        self.recorded: dict[bytes, None] = {}  # keys of the records this REDEEM added to
        self.burned = 0

    def get_escrow(self, escrow_id: bytes) -> RedeemEscrow | None:
        """The escrow ``escrow_id`` with this REDEEM's changes so far, or ``None``."""
        try:
            return self.escrows[escrow_id]
        except KeyError:
            escrow = get_escrow(self.view, escrow_id)
            work = self.escrows[escrow_id] = None if escrow is None else RedeemEscrow(escrow)
            return work

    def get_group(self, escrow_id: bytes, work: RedeemEscrow, g: int
                  ) -> tuple[int, int, frozenset[int] | None]:
        """``(t_draw(g) + 1, t_expire(g), winners or None)`` of group ``g`` (SPEC §6)."""
        known = work.groups.get(g)
        if known is None:
            params, escrow = self.ctx.params, work.escrow
            t_draw = compute_t_draw(params, escrow, g)
            known = work.groups[g] = (t_draw + 1, t_draw + params.d_redeem,
                                      compute_draw(self.view, params, escrow_id, escrow, g))
        return known

    def get_redemptions(self, key: bytes) -> dict[int, int]:
        """``{merchant_index: height}`` of the record at ``key`` (``redeemed_key``) so
        far (a live dict)."""
        pairs = self.redeemed.get(key)
        if pairs is None:
            pairs = self.redeemed[key] = get_redemptions_at(self.view, key)
        return pairs

    def finish(self) -> None:
        """Write the changed escrows, the new redeemed records and the burned total."""
        for escrow_id, work in self.escrows.items():
            if work is not None and work.dirty:
                put_escrow(self.view, escrow_id, work.state())
        for key in self.recorded:
            put_redemptions_at(self.view, key, self.redeemed[key])
        if self.burned:
            add_burned(self.view, self.burned)


def process_redeem(ctx: TxContext, view: StateView, tx: Tx) -> None:
    """REDEEM (SPEC §7, paper §4.4): all tickets or none; fee comes out of the payout.

    Each ticket in order: SPEC §7 steps 1–3 (escrow known, owner's signature, merchant,
    seqno range, drawn and not expired, winning), then not yet redeemed by this merchant,
    then paid (a duplicate's beta from the penalty first, D2, breaking the escrow). The
    tickets are applied to one ``RedeemBatch`` written back once at the end (on a failure
    ``view`` may hold partial writes, as ``apply_tx`` says). One loop over the tickets with
    the current escrow's fields held in locals: this runs up to 256 times per
    transaction, and the reasons and their order are exactly those of the steps above."""
    batch = RedeemBatch(ctx, view)
    sender, height, genesis_hash = tx.sender, ctx.height, ctx.genesis_hash
    recorded, redeemed = batch.recorded, batch.redeemed
    payout, eid, work = 0, None, None
    for ticket in tx.tickets():
        if ticket.escrow_id != eid:
            eid = ticket.escrow_id
            work = batch.get_escrow(eid)
            if work is None:
                raise ConsensusError("unknown-escrow")
            escrow = work.escrow
            owner, merchants, n, draw_size = escrow.owner, escrow.merchants, work.n, work.draw_size
            key_prefix = redeemed_prefix(eid)
        if not check_signature(ctx, owner, ticket.signing_message(genesis_hash), ticket.sig):
            raise ConsensusError("bad-ticket-signature")
        index, seqno = ticket.merchant_index, ticket.seqno
        if index >= len(merchants) or merchants[index] != sender:
            raise ConsensusError("wrong-merchant")
        if seqno >= n:
            raise ConsensusError("seqno-out-of-range")
        group = work.groups.get(seqno // draw_size)  # compute_group_of_seqno
        if group is None:
            group = batch.get_group(eid, work, seqno // draw_size)
        drawn_at, t_expire, winners = group
        if height < drawn_at:
            raise ConsensusError("ticket-not-drawn")
        if height > t_expire:
            raise ConsensusError("ticket-expired")
        if winners is None:  # unreachable on a consistent chain: block t_draw+1 is connected
            raise ConsensusError("ticket-not-drawn", "draw value missing")
        if seqno not in winners:
            raise ConsensusError("ticket-not-winning")
        key = key_prefix + seqno.to_bytes(8, "big")  # redeemed_key(eid, seqno)
        earlier = redeemed.get(key)
        if earlier is None:
            earlier = batch.get_redemptions(key)
        if index in earlier:
            raise ConsensusError("ticket-already-redeemed")
        beta = escrow.beta
        if earlier:  # D2: the duplicate's beta comes from the penalty first
            from_penalty = min(beta, work.penalty_balance)
            from_escrow = min(beta - from_penalty, work.escrow_balance)
        else:
            from_penalty, from_escrow = 0, min(beta, work.escrow_balance)
        paid = from_penalty + from_escrow
        if paid == 0:
            raise ConsensusError("escrow-exhausted")
        work.penalty_balance -= from_penalty
        work.escrow_balance -= from_escrow
        work.dirty = True
        if earlier and not work.broken:  # break_escrow (SPEC §8), on the batch
            batch.burned += work.penalty_balance
            work.penalty_balance = 0
            work.broken = True
        recorded[key] = None
        earlier[index] = height
        payout += paid
    if tx.fee > payout:
        raise ConsensusError("fee-exceeds-payout")
    batch.finish()
    credit(view, tx.sender, payout - tx.fee)


def is_cheat_proof_valid(ctx: TxContext, escrow: EscrowState, tickets: list[Ticket]) -> bool:
    """SPEC §8: a signed duplicate pair, or one signed out-of-range ticket."""
    if not all(check_signature(ctx, escrow.owner, t.signing_message(ctx.genesis_hash), t.sig)
               for t in tickets):
        return False
    if len(tickets) == 1:
        return tickets[0].seqno >= escrow.N
    a, b = tickets
    return (a.escrow_id == b.escrow_id and a.seqno == b.seqno
            and a.merchant_index != b.merchant_index)


def process_cheat_proof(ctx: TxContext, view: StateView, tx: Tx) -> None:
    """CHEAT_PROOF (SPEC §8, paper §4.5): burn the penalty and break the escrow."""
    debit(view, tx.sender, tx.fee)
    tickets = tx.tickets()
    escrow = get_escrow(view, tickets[0].escrow_id)
    if escrow is None:
        raise ConsensusError("unknown-escrow")
    if escrow.broken:
        raise ConsensusError("escrow-broken")
    if not is_cheat_proof_valid(ctx, escrow, tickets):
        raise ConsensusError("bad-cheat-proof")
    break_escrow(view, tickets[0].escrow_id, escrow)


_PROCESS = {TRANSFER: process_transfer, ESCROW_CREATE: process_escrow_create,
            REDEEM: process_redeem, CHEAT_PROOF: process_cheat_proof,
            MP_ESCROW: process_mp_escrow, MP_CLAIM: process_mp_claim,           # SPEC §15
            CHANNEL_OPEN: process_channel_open, CHANNEL_CLOSE: process_channel_close,
            CHANNEL_CHEAT: process_channel_cheat}                              # SPEC §16


def apply_tx(ctx: TxContext, view: StateView, tx: Tx) -> None:
    """Common rules 2–5 then the kind's rules for a non-coinbase transaction (SPEC §2).

    Raises ``ConsensusError``; on failure ``view`` may hold partial writes, so callers
    apply into a child ``Overlay`` they can drop.
    """
    if tx.kind == COINBASE:
        raise ConsensusError("bad-coinbase", "coinbase only as the first transaction")
    verify_tx_signature(ctx, tx)
    verify_tx_nonce(view, tx)
    _PROCESS[tx.kind](ctx, view, tx)


def process_coinbase(ctx: TxContext, view: StateView, tx: Tx, fees: int) -> int:
    """The block's COINBASE (SPEC §2 rule 2); returns the units it mints."""
    if (tx.kind != COINBASE or tx.sender != ZERO_SENDER or tx.sig != ZERO_SIG
            or tx.nonce != ctx.height or tx.fee != 0
            or not 1 <= len(tx.body) <= MAX_COINBASE_OUTPUTS):
        raise ConsensusError("bad-coinbase")
    total = sum(amount for _, amount in tx.body)
    if total > ctx.params.block_reward + fees:
        raise ConsensusError("bad-cb-amount", f"pays {total}, allowed {ctx.params.block_reward + fees}")
    for address, amount in tx.body:
        credit(view, address, amount)
    return total - fees


def process_refunds(ctx: TxContext, view: StateView) -> None:
    """SPEC §9: escrows with ``t_refund == height`` pay their residue to the owner."""
    for escrow_id in get_refunds_at(view, ctx.height):
        escrow = get_escrow(view, escrow_id)
        credit(view, escrow.owner, escrow.escrow_balance + escrow.penalty_balance)
        delete_escrow(view, escrow_id)


# ---- blocks (SPEC §10) -----------------------------------------------------------------

def verify_block_size(params: ChainParams, size: int) -> None:
    """SPEC §10's first check: the encoded block is at most ``max_block_bytes``
    (``bad-blk-length``)."""
    if size > params.max_block_bytes:
        raise ConsensusError("bad-blk-length", f"{size} bytes")


def verify_block_body(params: ChainParams, block: Block, block_hash: bytes,
                      verified: Container = frozenset()) -> None:
    """VDF, tx_root and unique txids (SPEC §10, after the header checks). Raises
    bad-vdf, bad-txnmrklroot, bad-txns-duplicate, bad-coinbase (no transactions).
    ``verified`` holds VDF segments already checked (see ``consensus.vdf``)."""
    header = block.header
    verify_vdf(header.prev_hash, header.vdf, list(header.vdf_checkpoints),
               params.vdf_iterations, params.vdf_checkpoints, verified)
    txids = block.txids()
    if header.tx_root != block.computed_tx_root():
        raise ConsensusError("bad-txnmrklroot")
    if len(set(txids)) != len(txids):
        raise ConsensusError("bad-txns-duplicate")
    if not block.txs:
        raise ConsensusError("bad-coinbase", "block has no coinbase")


def apply_block(params: ChainParams, view: StateView, block: Block, block_hash: bytes,
                genesis_hash: bytes, verified: Container = frozenset()) -> None:
    """Apply the transactions, then the refunds, of a block whose header is already
    checked (SPEC §10). Raises ``ConsensusError`` on the first failing transaction.
    ``verified``: signature triples already checked (``TxContext.verified``)."""
    ctx = TxContext(params, genesis_hash, block.header.height, block_hash, verified)
    put_block_vdf(view, ctx.height, block.header.vdf)
    fees = sum(tx.fee for tx in block.txs[1:])
    minted = process_coinbase(ctx, view, block.txs[0], fees)
    add_issued(view, minted)
    for tx in block.txs[1:]:
        apply_tx(ctx, view, tx)
    process_refunds(ctx, view)
    process_mp_refunds(ctx, view)        # SPEC §15, after §9
    process_channel_expiries(ctx, view)  # SPEC §16, after §9 and §15


def connect_block(params: ChainParams, view: StateView, block: Block,
                  header_ctx: HeaderContext, genesis_hash: bytes,
                  verified: Container = frozenset()) -> None:
    """All checks of SPEC §10 in order, applying the block into ``view``: size, header
    fields and PoW, VDF, tx_root, transactions against the parent's state, refunds.

    The one §10 sequence of the code base (the node connects every block through it).
    ``verified`` holds facts the caller already checked (signature triples, VDF
    segments, e.g. in worker processes); they are skipped, nothing else changes.
    Raises ``ConsensusError`` with the first failing check's reason."""
    verify_block_size(params, len(block.encode()))
    verify_header(params, block.header, header_ctx)
    block_hash = block.hash()
    verify_block_body(params, block, block_hash, verified)
    apply_block(params, view, block, block_hash, genesis_hash, verified)


def apply_genesis(params: ChainParams, view: StateView, genesis: Block) -> None:
    """Credit the premine of genesis (exempt from the coinbase limits, SPEC §10)."""
    for address, amount in genesis.txs[0].body:
        credit(view, address, amount)
    add_issued(view, sum(amount for _, amount in genesis.txs[0].body))
    put_block_vdf(view, 0, genesis.header.vdf)

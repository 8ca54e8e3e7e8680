"""The scheme drivers of `microcash-devnet compare`: one honest and one cheating run each.

Every run has its own payer and merchants (development keys ``compare/<run>/...``), so
the chain counter attributes each transaction to its run by its sender. The off-chain
work — signing and checking tickets or vouchers, the winner lookup — runs in this
process with the consensus and wallet functions, timed with ``time.process_time`` into
``customer_cpu`` and ``merchant_cpu`` (seconds). On-chain steps are built with
``consensus.tx`` and sent with ``sendrawtransaction``; nothing here goes through the
wallet CLI.

The driver calls, per run: ``setup`` (before the setup block), then for every tip ``t``
``on_tip(t)`` (payments of round ``t + 1`` and the transactions they lead to), and
``after_block(h, block)`` once block ``h`` is mined; ``finished(t)`` says when the run
has nothing left on chain.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict, deque
from dataclasses import dataclass, field
from fractions import Fraction
from time import process_time

from consensus import keys
from consensus.block import Block
from consensus.channel import (ChannelState, Voucher, compute_channel_id,
                               compute_channel_penalty_guidance, sign_voucher,
                               verify_voucher_for_payee)
from consensus.encoding import packb
from consensus.errors import ConsensusError
from consensus.escrow import (EscrowState, compute_escrow_amount, compute_escrow_id,
                              compute_min_penalty, compute_seqno_range, compute_t_draw)
from consensus.hashing import tagged_hash
from consensus.lottery import compute_winners
from consensus.micropay import (MpEscrowState, compute_mp_commitment, compute_mp_escrow_id,
                                is_mp_winning, sign_mp_ticket, verify_mp_ticket_for_payee)
from consensus.params import ChainParams
from consensus.ticket import Ticket, sign_ticket, verify_ticket_signature
from consensus.tx import (MAX_REDEEM_TICKETS, REDEEM, Tx, make_channel_cheat, make_channel_close,
                          make_channel_open, make_cheat_proof, make_mp_claim, make_mp_escrow,
                          make_escrow_create, make_redeem)
from devnet.compare_workload import PAYER_PREMINE, Party, Workload
from wallet.merchant.service import check_ticket
from wallet.rpcclient import RpcError


@dataclass
class Context:
    """What every run shares: the node, the chain, the workload and the schedule."""

    rpc: object
    params: ChainParams
    genesis_hash: bytes
    workload: Workload
    start: int          # first payment round (the MicroCash escrows' ``start``)
    end: int            # last payment round
    rng: random.Random  # r1 / r2 of MICROPAY (a measurement, not key material)
    nonces: dict[bytes, int] = field(default_factory=dict)

    def next_nonce(self, party: Party) -> int:
        """The payer's next account nonce (tracked here: one sender per run)."""
        n = self.nonces.get(party.address, 0)
        self.nonces[party.address] = n + 1
        return n

    def submit(self, tx: Tx) -> str | None:
        """``sendrawtransaction``; the reject reason, or None when pooled."""
        try:
            self.rpc.sendrawtransaction(tx.encode().hex())
            return None
        except RpcError as exc:
            return exc.message


class Run:
    """Common bookkeeping of one run (see module docstring)."""

    scheme = ""          # microcash / micropay / spilman / penalised
    cheat_kind = ""      # what the cheating payer does (cheat runs only)

    def __init__(self, label: str, workload: Workload, merchants: int, cheat: bool) -> None:
        self.label = label
        self.w = workload
        self.cheat = cheat
        self.payer = Party(f"{label}/payer")
        self.merchants = [Party(f"{label}/merchant{j}") for j in range(merchants)]
        self.customer_cpu = 0.0
        self.merchant_cpu = 0.0
        self.accepted = 0            # payments the merchants accepted
        self.refused: dict[str, int] = defaultdict(int)
        self.problems: list[str] = []
        self.caught_round: int | None = None
        self.first_cheat_round: int | None = None
        self.caught_how = ""

    def parties(self) -> list[Party]:
        return [self.payer, *self.merchants]

    def premine(self) -> list[tuple[bytes, int]]:
        return [(self.payer.address, PAYER_PREMINE)]

    def owners(self) -> dict[bytes, str]:
        return {p.address: self.label for p in self.parties()}

    def balance(self, ctx: Context, party: Party) -> int:
        return ctx.rpc.getaccount(party.address.hex())["balance"]

    def settle(self, ctx: Context) -> dict:
        """Final balances and the cheat figures (units): the payer's cost is what left
        its account; ``gain`` is the value of the payments accepted minus that cost."""
        payer = self.balance(ctx, self.payer)
        received = sum(self.balance(ctx, m) for m in self.merchants)
        cost = PAYER_PREMINE - payer
        return {"payer_cost": cost, "merchants_received": received,
                "service_value": self.accepted * self.w.value,
                "gain": self.accepted * self.w.value - cost}

    # hooks -------------------------------------------------------------------------
    def setup(self, ctx: Context) -> None:
        """Send the run's escrow / MP escrow / channel transactions (setup block)."""

    def on_tip(self, ctx: Context, t: int) -> None:
        """At best height ``t``: the payments of round ``t + 1`` and what they cause."""

    def after_block(self, ctx: Context, h: int, block: Block) -> None:
        """Learn what block ``h`` confirmed (ids, states, other merchants' REDEEMs)."""

    def finished(self, ctx: Context, t: int) -> bool:
        """True once nothing of this run is left to happen on chain."""
        return True

    def winners(self, counts) -> dict:
        """Winner / channel outcome figures for the report, from the chain's counts."""
        return {}


def _send(ctx: Context, run: Run, tx: Tx, what: str, expect_ok: bool = True) -> str | None:
    reason = ctx.submit(tx)
    if reason is not None and expect_ok:
        run.problems.append(f"{what} rejected: {reason}")
    return reason


# ---- MicroCash (SPEC §3–§8) ------------------------------------------------------------

class MicroCashRun(Run):
    """One escrow for all merchants. Honest: seqno ``s`` goes to merchant ``s % m``.
    Cheat: every seqno goes to two merchants; merchant 0 redeems at ``t_draw + 1``,
    merchant 1 a block later, after reading merchant 0's REDEEM on chain, so it sees the
    duplicate and proves it with CHEAT_PROOF (the penalty is burned)."""

    scheme = "microcash"
    cheat_kind = "same seqno to two merchants"

    def __init__(self, label: str, w: Workload, cheat: bool = False) -> None:
        super().__init__(label, w, 2 if cheat else w.merchants, cheat)
        self.tkt_rate = (1 << w.win_bits) if cheat else w.payments_per_block
        self.draw_len = 1 if cheat else w.draw_len
        self.txid: bytes | None = None
        self.escrow_id: bytes | None = None
        self.escrow: EscrowState | None = None
        self.held: list[dict[int, Ticket]] = [dict() for _ in self.merchants]
        self.drawn: dict[int, list[int]] = {}
        self.pending: list[list[tuple[int, Ticket]]] = [[] for _ in self.merchants]  # (ready_at, t)
        self.chain_tickets: dict[int, tuple[int, bytes]] = {}   # seqno -> (index, ticket) seen in REDEEMs
        self.proof_sent = False
        self.stopped = False

    def setup(self, ctx: Context) -> None:
        w, den = self.w, 1 << self.w.win_bits
        amount = compute_escrow_amount(1, den, w.beta, self.tkt_rate, w.blocks)
        penalty = compute_min_penalty(ctx.params, len(self.merchants), 1, den, w.beta,
                                      self.tkt_rate, self.draw_len)
        tx = make_escrow_create(self.payer.seed, ctx.genesis_hash, ctx.next_nonce(self.payer),
                                0, amount, penalty, 1, den, w.beta, self.tkt_rate,
                                self.draw_len, [m.address for m in self.merchants])
        self.txid = tx.txid()
        _send(ctx, self, tx, "ESCROW_CREATE")

    def after_block(self, ctx: Context, h: int, block: Block) -> None:
        if self.escrow_id is None and self.txid in block.txids():
            self.escrow_id = compute_escrow_id(block.hash(), self.txid)
            self.escrow = EscrowState.from_rpc(ctx.rpc.getescrow(self.escrow_id.hex()))
            if self.escrow.start != ctx.start:
                self.problems.append(f"escrow start {self.escrow.start} != {ctx.start}")
        for tx in block.txs:
            if tx.kind == REDEEM:  # what merchants learn from the chain
                for ticket in tx.tickets():
                    if ticket.escrow_id == self.escrow_id:
                        self.chain_tickets.setdefault(ticket.seqno,
                                                      (ticket.merchant_index, ticket))

    def on_tip(self, ctx: Context, t: int) -> None:
        if self.escrow is None:
            return
        if self.cheat:  # merchants re-read the escrow each block (a broken one is refused)
            state = ctx.rpc.getescrow(self.escrow_id.hex())
            if state is not None:
                self.escrow = EscrowState.from_rpc(state)
        self._issue(ctx, t)
        self._draws(ctx, t)
        self._redeem(ctx, t)

    def _issue(self, ctx: Context, t: int) -> None:
        r = t + 1
        lo, hi = compute_seqno_range(self.escrow, r)
        if lo == hi or self.stopped:
            return
        m = len(self.merchants)
        targets = ([(s, 0) for s in range(lo, hi)] + [(s, 1) for s in range(lo, hi)]
                   if self.cheat else [(s, s % m) for s in range(lo, hi)])
        if self.cheat and self.first_cheat_round is None:
            self.first_cheat_round = r
        c0 = process_time()
        tickets = [sign_ticket(self.payer.seed, ctx.genesis_hash, self.escrow_id, j, s)
                   for s, j in targets]
        c1 = process_time()
        owner = self.escrow.owner
        for ticket in tickets:
            j = ticket.merchant_index
            held = self.held[j]
            reason = check_ticket(ctx.params, self.escrow, self.merchants[j].address, ticket,
                                  t, ticket.seqno in held)
            if reason is None and not verify_ticket_signature(ticket, owner, ctx.genesis_hash):
                reason = "bad-ticket-signature"
            if reason is None:
                held[ticket.seqno] = ticket
                self.accepted += 1
            else:
                self.refused[reason] += 1
        c2 = process_time()
        self.customer_cpu += c1 - c0
        self.merchant_cpu += c2 - c1
        if self.refused and not self.cheat:
            self.problems.append(f"round {r}: merchants refused tickets {dict(self.refused)}")
        if self.cheat and self.refused.get("escrow-broken"):
            self.stopped = True

    def _draws(self, ctx: Context, t: int) -> None:
        e = self.escrow
        for g in range(e.groups):
            if g in self.drawn or t < compute_t_draw(ctx.params, e, g) + 1:
                continue
            draw = ctx.rpc.getdraw(self.escrow_id.hex(), g)
            v = bytes.fromhex(draw["vdf"])
            for j, held in enumerate(self.held):
                c0 = process_time()
                winners = compute_winners(v, self.escrow_id, g, e.draw_size, e.winners_per_draw)
                lookup = frozenset(winners)
                mine = [held[s] for s in range(g * e.draw_size, (g + 1) * e.draw_size)
                        if s in held and s in lookup]
                self.merchant_cpu += process_time() - c0
                lag = 1 if self.cheat and j == 1 else 0
                self.pending[j].extend((t + lag, ticket) for ticket in mine)
            if winners != draw["winners"]:
                self.problems.append(f"draw {g}: own winners differ from getdraw")
            self.drawn[g] = winners

    def _redeem(self, ctx: Context, t: int) -> None:
        for j, pending in enumerate(self.pending):
            due = [ticket for ready_at, ticket in pending if ready_at <= t]
            if not due:
                continue
            self.pending[j] = [(a, tk) for a, tk in pending if a > t]
            if self.cheat and not self.proof_sent and not self.escrow.broken:
                for ticket in due:
                    seen = self.chain_tickets.get(ticket.seqno)
                    if seen is not None and seen[0] != j:
                        proof = make_cheat_proof(self.merchants[j].seed, ctx.genesis_hash, 0,
                                                 seen[1], ticket)
                        _send(ctx, self, proof, "CHEAT_PROOF")
                        self.proof_sent = True
                        self.caught_round = t + 1
                        self.caught_how = "CHEAT_PROOF (duplicate seqno found in a REDEEM)"
                        break
            for i in range(0, len(due), MAX_REDEEM_TICKETS):
                tx = make_redeem(self.merchants[j].seed, ctx.genesis_hash, 0,
                                 due[i:i + MAX_REDEEM_TICKETS])
                _send(ctx, self, tx, f"REDEEM by merchant {j}")

    def finished(self, ctx: Context, t: int) -> bool:
        return self.escrow is not None and t >= self.escrow.t_refund

    def winners(self, counts) -> dict:
        """Held winners paid (a REDEEM on chain) or expired (window closed, not paid)."""
        e, paid, expired = self.escrow, 0, 0
        for g, winners in self.drawn.items():
            for j, held in enumerate(self.held):
                for s in winners:
                    if s not in held:
                        continue
                    if (self.escrow_id, s, j) in counts.redeemed:
                        paid += 1
                    else:
                        expired += 1
        return {"winners_held": paid + expired, "winners_paid": paid,
                "winners_expired": expired, "beta": e.beta if e else 0}


# ---- MICROPAY (SPEC §14, §15) ----------------------------------------------------------

def release_message(genesis_hash: bytes, mp_escrow_id: bytes, payee: bytes) -> bytes:
    """What σ1 signs: the release of the escrow to the payee (SPEC §14's second signature;
    off chain here, since MP_CLAIM is signed by the payee)."""
    return tagged_hash(b"mp-release", genesis_hash + mp_escrow_id + payee)


class MicropayRun(Run):
    """Honest: one escrow per merchant at a time (one MP escrow pays one winner); after a
    win the payer funds a fresh escrow, with a pool of ready escrows per merchant so
    paying rarely stalls (a stalled payment waits for the next block).
    Cheat: one escrow shared by three payees within a round; after the first claim of an
    escrow every other winner of it finds ``unknown-mp-escrow``."""

    scheme = "micropay"
    cheat_kind = "one escrow's tickets to three payees"

    def __init__(self, label: str, w: Workload, cheat: bool = False) -> None:
        super().__init__(label, w, 3 if cheat else w.merchants, cheat)
        self.rate = ([max(1, (1 << w.win_bits) // 2)] * 3 if cheat
                     else [w.per_merchant(j) for j in range(w.merchants)])
        lanes = 1 if cheat else len(self.merchants)
        expected_wins = max(self.rate) * (len(self.rate) if cheat else 1) / (1 << w.win_bits)
        self.pool = max(2, math.ceil(3 * expected_wins) + 1)
        self.ready: list[deque] = [deque() for _ in range(lanes)]
        self.waiting: dict[bytes, int] = {}       # mp_escrow_id -> lane, not yet in a block
        self.current: list[tuple[bytes, MpEscrowState] | None] = [None] * lanes
        self.backlog = [0] * lanes
        self.stalled = 0                          # payment-blocks spent waiting for an escrow
        self.won: list[tuple[bytes, int]] = []    # (mp_escrow_id, payee index) of winners
        self.unpaid_winners = 0
        self.refund_height = 0

    def _fund(self, ctx: Context, lane: int) -> None:
        tx = make_mp_escrow(self.payer.seed, ctx.genesis_hash, ctx.next_nonce(self.payer), 0,
                            self.w.beta, self.w.win_bits, self.refund_height)
        self.waiting[compute_mp_escrow_id(tx.txid())] = lane
        _send(ctx, self, tx, "MP_ESCROW")

    def setup(self, ctx: Context) -> None:
        self.refund_height = ctx.end + 6
        for lane in range(len(self.ready)):
            for _ in range(self.pool + 1):
                self._fund(ctx, lane)

    def after_block(self, ctx: Context, h: int, block: Block) -> None:
        for txid in block.txids():
            lane = self.waiting.pop(compute_mp_escrow_id(txid), None)
            if lane is not None:
                eid = compute_mp_escrow_id(txid)
                state = MpEscrowState.from_rpc(ctx.rpc.getmpescrow(eid.hex()))
                self.ready[lane].append((eid, state))

    def _escrow(self, lane: int) -> tuple[bytes, MpEscrowState] | None:
        if self.current[lane] is None and self.ready[lane]:
            self.current[lane] = self.ready[lane].popleft()
        return self.current[lane]

    def _pay(self, ctx: Context, r: int, lane: int, j: int) -> tuple[bytes, bytes, object] | None:
        """One interactive exchange (SPEC §15) on the lane's escrow; (r1, r2, ticket) if
        it wins, None otherwise. Raises ConsensusError if the payee refuses it."""
        eid, state = self.current[lane]
        payee = self.merchants[j].address
        c0 = process_time()
        r1 = ctx.rng.randbytes(16)
        c = compute_mp_commitment(r1)
        c1 = process_time()
        r2 = ctx.rng.randbytes(16)
        ticket = sign_mp_ticket(self.payer.seed, ctx.genesis_hash, eid, c, r2, payee)
        sigma1 = keys.sign(self.payer.seed, release_message(ctx.genesis_hash, eid, payee))
        c2 = process_time()
        try:
            verify_mp_ticket_for_payee(ctx.genesis_hash, state, ticket, payee, c, r, margin=1)
            if not keys.verify(state.owner, release_message(ctx.genesis_hash, eid, payee), sigma1):
                raise ConsensusError("bad-release-signature")
            win = is_mp_winning(r1, r2, state.win_bits)
        finally:
            c3 = process_time()
            self.merchant_cpu += (c1 - c0) + (c3 - c2)
            self.customer_cpu += c2 - c1
        self.accepted += 1
        return (r1, r2, ticket) if win else None

    def _claim(self, ctx: Context, j: int, eid: bytes, r1: bytes, r2: bytes, ticket) -> str | None:
        tx = make_mp_claim(self.merchants[j].seed, ctx.genesis_hash, 0, eid, r1, r2,
                           ticket.ticket_sig)
        self.won.append((eid, j))
        return _send(ctx, self, tx, "MP_CLAIM", expect_ok=not self.cheat)

    def on_tip(self, ctx: Context, t: int) -> None:
        r = t + 1
        if not ctx.start <= r <= ctx.end + 4:
            return
        if self.cheat:
            self._cheat_round(ctx, r)
            return
        for j in range(len(self.merchants)):
            due = (self.rate[j] if r <= ctx.end else 0) + self.backlog[j]
            done = 0
            while done < due and self._escrow(j) is not None:
                eid = self.current[j][0]
                try:
                    won = self._pay(ctx, r, j, j)
                except ConsensusError as exc:
                    self.problems.append(f"round {r}: merchant {j} refused: {exc.reason}")
                    self.current[j] = None
                    continue
                done += 1
                if won is not None:
                    self._claim(ctx, j, eid, *won)
                    self.current[j] = None
                    self._fund(ctx, j)
            self.backlog[j] = due - done
            self.stalled += self.backlog[j]

    def _cheat_round(self, ctx: Context, r: int) -> None:
        if self.caught_round is not None or r > ctx.end or self._escrow(0) is None:
            return
        if self.first_cheat_round is None:
            self.first_cheat_round = r
        eid = self.current[0][0]
        wins = []
        for j, rate in enumerate(self.rate):      # the same escrow to every payee, at once
            for _ in range(rate):
                try:
                    won = self._pay(ctx, r, 0, j)
                except ConsensusError as exc:
                    self.refused[exc.reason] += 1
                    continue
                if won is not None:
                    wins.append((j, won))
        for j, won in wins:
            reason = self._claim(ctx, j, eid, *won)
            if reason is not None:
                self.unpaid_winners += 1
                if self.caught_round is None:
                    self.caught_round = r
                    self.caught_how = f"a second winner's MP_CLAIM refused ({reason})"
        if wins:
            self.current[0] = None
            self._fund(ctx, 0)

    def finished(self, ctx: Context, t: int) -> bool:
        return t >= self.refund_height

    def winners(self, counts) -> dict:
        paid = sum(1 for eid, j in self.won
                   if counts.mp_claims.get(eid, (None,))[0] == self.merchants[j].address)
        return {"winners_held": len(self.won), "winners_paid": paid,
                "winners_expired": len(self.won) - paid - self.unpaid_winners,
                "winners_unpaid_by_cheat": self.unpaid_winners, "beta": self.w.beta,
                "stalled_payment_blocks": self.stalled,
                "undelivered_payments": sum(self.backlog)}


# ---- payment channels (SPEC §16) -------------------------------------------------------

def receipt_message(genesis_hash: bytes, channel_id: bytes, k: int, cumulative: int) -> bytes:
    """What a point of sale signs as a receipt of the state ``(k, cumulative)`` (wallet
    level, SPEC §16: points of sale pass the last state to the payer as a receipt)."""
    return tagged_hash(b"pos-receipt", genesis_hash + channel_id + packb([k, cumulative]))


@dataclass
class Receipt:
    k: int
    cumulative: int
    pos: int
    sig: bytes


@dataclass
class Channel:
    """Both ends of one channel: the payer's state and the payee's points of sale."""

    payee: int
    deposit: int
    txid: bytes
    channel_id: bytes
    state: ChannelState | None = None
    k: int = 0                      # payer: last voucher
    cumulative: int = 0
    receipt: Receipt | None = None  # payer: newest receipt it holds
    pos_known: list = field(default_factory=list)   # per point of sale: (k, cumulative)
    best: Voucher | None = None     # payee: highest voucher (all points of sale, synced)
    round_vouchers: list = field(default_factory=list)  # (pos, voucher) since the last sync
    closed: str = ""                # "", "close" or "cheat"


class ChannelRun(Run):
    """One channel per merchant, deposit = everything the payer will pay it. ``pos``
    points of sale per merchant, synchronised once per block; with ``pos > 1`` the payer
    shows the newest receipt (signed by the point of sale that issued it) with each
    voucher. Penalty 0 (Spilman) or seed 003's guidance.

    Cheats: Spilman — the payer re-uses its last voucher number for one more service and
    then walks away; penalised — in one round the payer starts, at every point of sale,
    its own voucher chain from the same stale receipt (``identical=False``: the chains'
    cumulatives differ by a unit, an equivocation proven with CHANNEL_CHEAT;
    ``identical=True``: the same vouchers everywhere, which §16 does not call an
    equivocation — the payee can only close)."""

    def __init__(self, label: str, w: Workload, penalised: bool, cheat: bool = False,
                 identical: bool = False) -> None:
        super().__init__(label, w, 1 if cheat else w.merchants, cheat)
        self.scheme = "penalised" if penalised else "spilman"
        self.pos_count = w.points_of_sale if penalised else 1
        if cheat:
            self.rate = [2 * self.pos_count * 2]
        else:
            self.rate = [w.per_merchant(j) for j in range(w.merchants)]
        self.identical = identical
        self.cheat_kind = ("re-used voucher number, then walks away" if not penalised else
                           "identical vouchers at every point of sale" if identical else
                           "equivocation across points of sale")
        self.pos = [[Party(f"{label}/merchant{j}/pos{x}") for x in range(self.pos_count)]
                    for j in range(len(self.merchants))]
        self.channels: list[Channel] = []
        self.penalty = 0
        self.expiry = 0
        self.cheat_round = 0

    def setup(self, ctx: Context) -> None:
        w = self.w
        self.expiry = ctx.end + 4
        self.cheat_round = ctx.start + 1
        if self.pos_count > 1:  # T̂ = one block between syncs, Ť = block / payments per POS
            per_pos = Fraction(max(self.rate), self.pos_count)
            self.penalty = compute_channel_penalty_guidance(
                ctx.params.block_time, Fraction(ctx.params.block_time) / per_pos, w.value)
        for j, rate in enumerate(self.rate):
            deposit = w.value * rate * w.blocks
            tx = make_channel_open(self.payer.seed, ctx.genesis_hash, ctx.next_nonce(self.payer),
                                   0, self.merchants[j].address, deposit, self.penalty,
                                   self.expiry)
            self.channels.append(Channel(j, deposit, tx.txid(), compute_channel_id(tx.txid()),
                                         pos_known=[(0, 0)] * self.pos_count))
            _send(ctx, self, tx, "CHANNEL_OPEN")

    def after_block(self, ctx: Context, h: int, block: Block) -> None:
        txids = set(block.txids())
        for ch in self.channels:
            if ch.state is None and ch.txid in txids:
                ch.state = ChannelState.from_rpc(ctx.rpc.getchannel(ch.channel_id.hex()))

    # one payment ----------------------------------------------------------------------
    def _pay(self, ctx: Context, r: int, ch: Channel, x: int, k: int, cumulative: int,
             receipt: Receipt | None) -> Voucher | None:
        """Voucher ``(k, cumulative)`` at point of sale ``x`` with ``receipt``; the
        voucher if accepted (then the POS's receipt replaces the payer's), else None."""
        c0 = process_time()
        voucher = sign_voucher(self.payer.seed, ctx.genesis_hash, ch.channel_id, k, cumulative)
        c1 = process_time()
        last_k, last_cum = ch.pos_known[x]
        reason = None
        if receipt is not None and receipt.k > last_k:
            issuer = self.pos[ch.payee][receipt.pos].address
            if keys.verify(issuer, receipt_message(ctx.genesis_hash, ch.channel_id, receipt.k,
                                                   receipt.cumulative), receipt.sig):
                last_k, last_cum = receipt.k, receipt.cumulative
            else:
                reason = "bad-receipt"
        if reason is None:
            try:
                verify_voucher_for_payee(ctx.genesis_hash, ch.channel_id, ch.state, voucher,
                                         last_k, last_cum, self.w.value, r, margin=1)
            except ConsensusError as exc:
                reason = exc.reason
        new_receipt = None
        if reason is None and self.pos_count > 1:
            sig = keys.sign(self.pos[ch.payee][x].seed,
                            receipt_message(ctx.genesis_hash, ch.channel_id, k, cumulative))
            new_receipt = Receipt(k, cumulative, x, sig)
        c2 = process_time()
        self.customer_cpu += c1 - c0
        self.merchant_cpu += c2 - c1
        if reason is not None:
            self.refused[reason] += 1
            if not self.cheat:
                self.problems.append(f"round {r}: point of sale refused a voucher: {reason}")
            return None
        self.accepted += 1
        ch.pos_known[x] = (k, cumulative)
        ch.round_vouchers.append((x, voucher))
        if new_receipt is not None:
            ch.receipt = new_receipt
        return voucher

    def _honest_payments(self, ctx: Context, r: int, ch: Channel, n: int) -> None:
        for i in range(n):
            x = i % self.pos_count
            v = self._pay(ctx, r, ch, x, ch.k + 1, ch.cumulative + self.w.value, ch.receipt)
            if v is not None:
                ch.k, ch.cumulative = v.k, v.cumulative

    def _cheat_payments(self, ctx: Context, r: int, ch: Channel, n: int) -> None:
        self.first_cheat_round = r
        if self.pos_count == 1:   # Spilman: pay, then try the last voucher number again
            self._honest_payments(ctx, r, ch, n)
            if self._pay(ctx, r, ch, 0, ch.k, ch.cumulative + 1, None) is None:
                self.caught_round = r
                self.caught_how = (f"refused at once ({', '.join(self.refused)}): one "
                                   "point of sale always knows the last voucher")
            return
        stale, k0, c0 = ch.receipt, ch.k, ch.cumulative
        for x in range(self.pos_count):   # one chain per point of sale, all from `stale`
            receipt, k, cum = stale, k0, c0
            for _ in range(n // self.pos_count):
                k, cum = k + 1, cum + self.w.value
                v = self._pay(ctx, r, ch, x, k, cum + (0 if self.identical else x), receipt)
                if v is None:
                    break
                receipt = ch.receipt
                ch.k, ch.cumulative = max(ch.k, v.k), max(ch.cumulative, v.cumulative)

    def _sync(self, ctx: Context, r: int, ch: Channel) -> None:
        """End of a block: points of sale share what they accepted; equivocations
        (same k, other cumulative) are proven, double uses close the channel."""
        by_k: dict[int, list[tuple[int, Voucher]]] = defaultdict(list)
        for x, v in ch.round_vouchers:
            by_k[v.k].append((x, v))
            if ch.best is None or v.k > ch.best.k or (v.k == ch.best.k and v.cumulative > ch.best.cumulative):
                ch.best = v
        ch.round_vouchers = []
        if ch.best is not None:
            ch.pos_known = [(ch.best.k, ch.best.cumulative)] * self.pos_count
        for k, seen in sorted(by_k.items()):
            cums = {v.cumulative: v for _, v in seen}
            if len(cums) > 1 and self.pos_count > 1:
                a, b = list(cums.values())[:2]
                tx = make_channel_cheat(self.merchants[ch.payee].seed, ctx.genesis_hash, 0,
                                        ch.channel_id, a, b)
                _send(ctx, self, tx, "CHANNEL_CHEAT")
                ch.closed = "cheat"
                self.caught_round = r
                self.caught_how = "CHANNEL_CHEAT at the next synchronisation"
                return
            if len(seen) > 1:     # the same voucher at several points of sale
                self._close(ctx, ch)
                self.caught_round = r
                self.caught_how = ("double use seen at the next synchronisation; no "
                                   "equivocation proof (same k, same cumulative): payee closes")
                return

    def _close(self, ctx: Context, ch: Channel) -> None:
        if ch.closed or ch.best is None:
            return
        tx = make_channel_close(self.merchants[ch.payee].seed, ctx.genesis_hash, 0,
                                ch.channel_id, ch.best)
        _send(ctx, self, tx, "CHANNEL_CLOSE")
        ch.closed = "close"

    def on_tip(self, ctx: Context, t: int) -> None:
        r = t + 1
        for ch in self.channels:
            if ch.state is None or ch.closed:
                continue
            if ctx.start <= r <= ctx.end:
                n = self.rate[ch.payee]
                if self.cheat and r > self.cheat_round and self.pos_count == 1:
                    pass                                 # the Spilman cheater walked away
                elif self.cheat and r == self.cheat_round:
                    self._cheat_payments(ctx, r, ch, n)
                else:
                    self._honest_payments(ctx, r, ch, n)
                self._sync(ctx, r, ch)
            elif r > ctx.end:
                self._close(ctx, ch)

    def finished(self, ctx: Context, t: int) -> bool:
        return all(ch.closed for ch in self.channels) and t > ctx.end + 1

    def winners(self, counts) -> dict:
        closed = sum(1 for ch in self.channels if ch.channel_id in counts.closes)
        return {"channels_closed": closed, "channels_expired": len(self.channels) - closed,
                "penalty": self.penalty}

"""State-transition properties over random chains (SPEC §2–§10):

- money conservation: ``compute_money_total(state) == get_issued(state)`` after every block;
- connect-then-disconnect: writing a block's ``undo_record()`` back restores the exact
  key/value map;
- connecting blocks one by one (with disconnects and reconnects) equals replaying the
  chain from genesis.

A scenario is a regtest chain of 14–30 blocks whose transactions are drawn at random from
transfers, escrow creations, redeems of real winners (found with ``compute_draw``),
duplicate redeems, cheat proofs and, as blocks pass ``t_refund``, refunds — and the
comparison schemes: MP escrows, MP claims (winners and losers), MP refunds, channel opens,
closes, equivocation proofs and expiries (SPEC §15–§16). Each drawn
transaction is kept only if it is valid against the block's pending state, so every block
connects.
"""

from dataclasses import dataclass, field

from hypothesis import event, given, settings
from hypothesis import strategies as st

from consensus.channel import iter_channels, sign_voucher
from consensus.errors import ConsensusError
from consensus.escrow import (compute_escrow_amount, compute_min_penalty, compute_t_draw,
                              compute_t_expire)
from consensus.hashing import ZERO_HASH
from consensus.micropay import compute_mp_commitment, iter_mp_escrows, sign_mp_ticket
from consensus.state import (Overlay, compute_money_total, decode_undo, encode_undo,
                             get_account, get_burned, get_issued, get_redeemed_indices,
                             iter_escrows,
                             put_block_vdf)
from consensus.transition import TxContext, apply_tx, compute_draw
from consensus.tx import (Tx, make_channel_cheat, make_channel_close, make_channel_open,
                          make_cheat_proof, make_coinbase, make_escrow_create, make_mp_claim,
                          make_mp_escrow, make_redeem, make_transfer)
from consensus.vdf import compute_vdf
from tests.consensus_helpers import (ALICE, BOB, CAROL, DAVE, MINER, SEEDS, Chain,
                                     regtest_params)

SETTINGS = settings(max_examples=30, deadline=None)
ACTORS = [ALICE, BOB, CAROL, DAVE]
# (win_num, win_den, beta, tkt_rate, draw_len, l_esc): a = tkt_rate * draw_len, k = p * a
PRESETS = [(1, 2, 2, 2, 1, 4), (1, 2, 3, 2, 2, 4), (1, 1, 1, 1, 1, 2), (1, 4, 4, 4, 1, 3),
           (2, 3, 3, 3, 1, 3), (1, 3, 5, 3, 2, 2)]


@dataclass
class Scenario:
    chain: Chain
    snapshots: list[dict] = field(default_factory=list)  # state items after each height
    kinds: set = field(default_factory=set)


class _Builder:
    """Draws the transactions of one block against the chain's pending state."""

    def __init__(self, chain: Chain, data) -> None:
        self.chain = chain
        self.data = data
        self.height = chain.height + 1
        self.view = Overlay(chain.state)
        vdf, _ = compute_vdf(chain.tip.hash(), chain.params.vdf_iterations,
                             chain.params.vdf_checkpoints)
        put_block_vdf(self.view, self.height, vdf)
        self.ctx = TxContext(chain.params, chain.genesis_hash, self.height, ZERO_HASH)
        self.txs: list[Tx] = []
        self.labels: list[str] = []

    def draw(self, strategy):
        return self.data.draw(strategy)

    def offer(self, tx: Tx | None, label: str) -> None:
        """Keep ``tx`` if it is valid after the block's earlier transactions."""
        if tx is None:
            return
        trial = Overlay(self.view)
        try:
            apply_tx(self.ctx, trial, tx)
        except ConsensusError as exc:
            event(f"dropped {label}: {exc.reason}")
            return
        trial.commit()
        self.txs.append(tx)
        self.labels.append(label)

    def nonce(self, address: bytes) -> int:
        return get_account(self.view, address).nonce

    def balance(self, address: bytes) -> int:
        return get_account(self.view, address).balance

    # ---- actions ---------------------------------------------------------------------

    def transfer(self) -> None:
        sender = self.draw(st.sampled_from(ACTORS + [MINER]))
        to = self.draw(st.sampled_from(ACTORS + [MINER]))
        bal = self.balance(sender)
        amount = self.draw(st.sampled_from([1, max(1, bal // 3), max(1, bal - 1), bal + 1]))
        fee = self.draw(st.integers(0, 5))
        self.offer(make_transfer(SEEDS[sender], self.chain.genesis_hash, self.nonce(sender),
                                 fee, to, amount), "transfer")

    def escrow(self) -> None:
        owner = self.draw(st.sampled_from([ALICE, BOB, CAROL]))
        num, den, beta, rate, dlen, l_esc = self.draw(st.sampled_from(PRESETS))
        merchants = self.draw(st.lists(st.sampled_from(ACTORS), min_size=1, max_size=3,
                                       unique=True))
        least = compute_min_penalty(self.chain.params, len(merchants), num, den, beta, rate,
                                    dlen)
        penalty = least + self.draw(st.sampled_from([0, 0, 1, 50]))
        amount = compute_escrow_amount(num, den, beta, rate, l_esc)
        self.offer(make_escrow_create(SEEDS[owner], self.chain.genesis_hash,
                                      self.nonce(owner), self.draw(st.integers(0, 3)), amount,
                                      penalty, num, den, beta, rate, dlen, merchants),
                   "escrow")

    def _pick_escrow(self):
        live = list(iter_escrows(self.chain.state))  # escrows made in this block: unknown id
        if not live:
            return None
        return self.draw(st.sampled_from(live))

    def redeem(self) -> None:
        picked = self._pick_escrow()
        if picked is None:
            return
        eid, e = picked
        params = self.chain.params
        open_groups = [g for g in range(e.groups)
                       if compute_t_draw(params, e, g) + 1 <= self.height
                       <= compute_t_expire(params, e, g)]
        if not open_groups:
            event("redeem: no open group")
            return
        tickets, sender = [], None
        for _ in range(self.draw(st.integers(1, 3))):
            g = self.draw(st.sampled_from(open_groups))
            winners = sorted(compute_draw(self.view, params, eid, e, g))
            seq = self.draw(st.sampled_from(winners))
            index = self.draw(st.integers(0, len(e.merchants) - 1))
            if sender not in (None, e.merchants[index]):
                continue
            sender = e.merchants[index]
            tickets.append(self.chain.ticket(eid, index, seq, owner_seed=SEEDS[e.owner]))
        fee = self.draw(st.integers(0, e.beta))
        duplicate = any(get_redeemed_indices(self.view, eid, t.seqno) - {t.merchant_index}
                        for t in tickets)
        self.offer(make_redeem(SEEDS[sender], self.chain.genesis_hash, fee, tickets),
                   "duplicate redeem" if duplicate else "redeem")

    def cheat(self) -> None:
        picked = self._pick_escrow()
        if picked is None:
            return
        eid, e = picked
        sender = self.draw(st.sampled_from(ACTORS))
        owner_seed = SEEDS[e.owner]
        if len(e.merchants) >= 2 and self.draw(st.booleans()):
            seq = self.draw(st.integers(0, e.N - 1))
            a = self.chain.ticket(eid, 0, seq, owner_seed=owner_seed)
            b = self.chain.ticket(eid, 1, seq, owner_seed=owner_seed)
        else:
            seq = e.N + self.draw(st.integers(0, 5))
            a, b = self.chain.ticket(eid, 0, seq, owner_seed=owner_seed), None
        self.offer(make_cheat_proof(SEEDS[sender], self.chain.genesis_hash,
                                    self.draw(st.integers(0, 2)), a, b), "cheat")

    # ---- MICROPAY escrows (SPEC §15) ---------------------------------------------------

    def mp_escrow(self) -> None:
        owner = self.draw(st.sampled_from([ALICE, BOB, CAROL]))
        amount = self.draw(st.sampled_from([1, 7, 1_000, self.balance(owner) + 1]))
        win_bits = self.draw(st.sampled_from([1, 2, 32, 0, 33]))
        refund_height = self.height + self.draw(st.integers(0, 12))
        self.offer(make_mp_escrow(SEEDS[owner], self.chain.genesis_hash, self.nonce(owner),
                                  self.draw(st.integers(0, 3)), amount, win_bits,
                                  refund_height), "mp escrow")

    def mp_claim(self) -> None:
        live = list(iter_mp_escrows(self.view))
        if not live:
            return
        eid, e = self.draw(st.sampled_from(live))
        payee = self.draw(st.sampled_from(ACTORS + [e.owner]))
        r1 = self.draw(st.binary(min_size=16, max_size=16))
        r2 = self.draw(st.one_of(st.just(r1), st.binary(min_size=16, max_size=16)))
        ticket = sign_mp_ticket(SEEDS[e.owner], self.chain.genesis_hash, eid,
                                compute_mp_commitment(r1), r2, payee)
        fee = self.draw(st.integers(0, e.amount + 1))
        self.offer(make_mp_claim(SEEDS[payee], self.chain.genesis_hash, fee, eid, r1, r2,
                                 ticket.ticket_sig), "mp claim")

    # ---- payment channels (SPEC §16) ------------------------------------------------

    def channel_open(self) -> None:
        payer = self.draw(st.sampled_from([ALICE, BOB, CAROL]))
        payee = self.draw(st.sampled_from(ACTORS))
        deposit = self.draw(st.sampled_from([1, 50, 10_000, 0]))
        penalty = self.draw(st.sampled_from([0, 0, 3, 500]))
        expiry = self.height + self.draw(st.integers(1, 12))
        self.offer(make_channel_open(SEEDS[payer], self.chain.genesis_hash, self.nonce(payer),
                                     self.draw(st.integers(0, 3)), payee, deposit, penalty,
                                     expiry), "channel open")

    def _pick_channel(self):
        live = list(iter_channels(self.view))
        return self.draw(st.sampled_from(live)) if live else None

    def channel_close(self) -> None:
        picked = self._pick_channel()
        if picked is None:
            return
        cid, c = picked
        k = self.draw(st.integers(0, 3))
        cumulative = self.draw(st.integers(0, c.deposit + 1))
        voucher = sign_voucher(SEEDS[c.payer], self.chain.genesis_hash, cid, k, cumulative)
        sender = self.draw(st.sampled_from([c.payee, c.payee, c.payer]))
        fee = self.draw(st.integers(0, 3))
        self.offer(make_channel_close(SEEDS[sender], self.chain.genesis_hash, fee, cid,
                                      voucher), "channel close")

    def channel_cheat(self) -> None:
        picked = self._pick_channel()
        if picked is None:
            return
        cid, c = picked
        k = self.draw(st.integers(1, 3))
        a, b = self.draw(st.lists(st.integers(0, c.deposit), min_size=2, max_size=2))
        va = sign_voucher(SEEDS[c.payer], self.chain.genesis_hash, cid, k, a)
        vb = sign_voucher(SEEDS[c.payer], self.chain.genesis_hash, cid, k, b)
        fee = self.draw(st.integers(0, 3))
        self.offer(make_channel_cheat(SEEDS[c.payee], self.chain.genesis_hash, fee, cid, va,
                                      vb), "channel cheat")

    def coinbase(self) -> Tx:
        total = self.chain.params.block_reward + sum(t.fee for t in self.txs)
        total -= self.draw(st.sampled_from([0, 0, 1, total]))  # sometimes leave fees unclaimed
        outs = self.draw(st.integers(1, 3))
        split = [total // outs] * (outs - 1)
        split.append(total - sum(split))
        payees = self.draw(st.lists(st.sampled_from([MINER] + ACTORS), min_size=outs,
                                    max_size=outs))
        return make_coinbase(self.height, list(zip(payees, split)))


ACTIONS = ["transfer", "escrow", "redeem", "redeem", "redeem", "cheat",
           "mp_escrow", "mp_claim", "mp_claim", "channel_open", "channel_close",
           "channel_cheat"]


def build_scenario(data, check_each_block=None) -> Scenario:
    """Mine a random chain; ``check_each_block(chain, undo, before)`` runs after each block."""
    chain = Chain(regtest_params())
    scenario = Scenario(chain, [dict(chain.state.items)])
    n_blocks = data.draw(st.integers(14, 30), label="blocks")
    for _ in range(n_blocks):
        builder = _Builder(chain, data)
        if chain.height < 3:
            builder.escrow()
            builder.mp_escrow()
            builder.channel_open()
        for action in data.draw(st.lists(st.sampled_from(ACTIONS), max_size=4)):
            getattr(builder, action)()
        before = dict(chain.state.items)
        escrows_before = {eid for eid, _ in iter_escrows(chain.state)}
        mp_due = {eid for eid, e in iter_mp_escrows(chain.state)
                  if e.refund_height == builder.height}
        ch_due = {cid for cid, c in iter_channels(chain.state)
                  if c.expiry_height == builder.height}
        chain.mine(builder.txs, coinbase=builder.coinbase())
        scenario.kinds.update(builder.labels)
        if escrows_before - {eid for eid, _ in iter_escrows(chain.state)}:
            scenario.kinds.add("refund")
        if mp_due:
            scenario.kinds.add("mp refund")
        if ch_due:
            scenario.kinds.add("channel expiry")
        if check_each_block is not None:
            check_each_block(chain, chain.undos[-1], before)
        scenario.snapshots.append(dict(chain.state.items))
    for kind in sorted(scenario.kinds):
        event(f"chain has {kind}")
    if get_burned(chain.state):
        event("chain has burned units")
    return scenario


def _write_back(items: dict, undo: dict) -> dict:
    restored = dict(items)
    for key, value in undo.items():
        if value is None:
            restored.pop(key, None)
        else:
            restored[key] = value
    return restored


# ---- properties ----------------------------------------------------------------------------

@SETTINGS
@given(st.data())
def test_money_is_conserved(data):
    def check(chain, undo, before):
        assert compute_money_total(chain.state) == get_issued(chain.state)

    scenario = build_scenario(data, check)
    chain = scenario.chain
    premine = sum(a for _, a in chain.params.premine)
    minted = sum(sum(amount for _, amount in b.txs[0].body) - sum(t.fee for t in b.txs[1:])
                 for b in chain.blocks[1:])
    assert get_issued(chain.state) == premine + minted


@SETTINGS
@given(st.data())
def test_connect_then_disconnect_restores_state(data):
    def check(chain, undo, before):
        after = dict(chain.state.items)
        assert set(undo) == set(chain.last_changes)
        assert _write_back(before, chain.last_changes) == after
        assert _write_back(after, undo) == before
        assert decode_undo(encode_undo(undo)) == undo

    build_scenario(data, check)


@SETTINGS
@given(st.data())
def test_incremental_equals_replay_and_reorg_round_trip(data):
    scenario = build_scenario(data)
    chain = scenario.chain
    final = dict(chain.state.items)

    replay = Chain(chain.params)
    for block in chain.blocks[1:]:
        replay.connect(block)
    assert replay.state.items == final

    fork = data.draw(st.integers(0, chain.height - 1), label="fork height")
    undone = []
    while chain.height > fork:
        undone.append(chain.disconnect())
        assert chain.state.items == scenario.snapshots[chain.height]
    for block in reversed(undone):
        chain.connect(block)
    assert chain.state.items == final


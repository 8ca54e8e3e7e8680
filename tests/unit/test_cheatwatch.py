"""The merchant's cheat watch (wallet.merchant.cheatwatch) against a fake chain: evidence
from the service becomes a CHEAT_PROOF that is followed to confirmed, moot or resent
(issue 8 point 1; SPEC §8)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio

from consensus.keys import public_key
from consensus.tx import CHEAT_PROOF
from tests.unit.test_merchant_service import (EID, MERCHANT, FakeChain, body, make_escrow,
                                              tickets)
from wallet.merchant.cheatwatch import (CONFIRMED, EVIDENCE_DUPLICATE_PAIR, MOOT, PENDING,
                                        SENT, CheatWatch, check_conflict)
from wallet.merchant.service import MerchantService
from wallet.merchant.ticketstore import TicketStore


@pytest.fixture
def setup(tmp_path):
    chain = FakeChain()
    with TicketStore(tmp_path / "store") as store:
        service = MerchantService(public_key(MERCHANT), store, chain)
        watch = CheatWatch(MERCHANT, store, chain)
        service.cheatwatch = watch
        yield chain, store, service, watch


def step(watch: CheatWatch, chain: FakeChain) -> None:
    async def go():
        watch._load_evidence()
        await watch.step(chain.tip)
    trio.run(go)


def test_out_of_range_ticket_is_proven_and_followed_to_confirmed(setup):
    chain, store, service, watch = setup
    result = trio.run(service.submit, body(tickets([60])))  # N = 60
    assert result["rejected"] == [{"index": 0, "reason": "seqno-out-of-range"}]
    step(watch, chain)
    (proof,) = watch.proofs.values()
    assert (proof.kind, proof.seqno, proof.status) == ("out-of-range", 60, SENT)
    (tx,) = chain.accepted
    assert tx.kind == CHEAT_PROOF and tx.sender == public_key(MERCHANT)
    step(watch, chain)  # still in the mempool: not sent again
    assert len(chain.accepted) == 1
    chain.mine()
    chain.escrows[EID] = replace(chain.escrows[EID], broken=True)
    step(watch, chain)
    assert (proof.status, proof.height) == (CONFIRMED, chain.tip)
    assert watch.status()["proofs"][0]["status"] == "confirmed"


def test_seqno_given_to_two_indexes_of_one_merchant_is_a_proof(setup):
    chain, store, service, watch = setup
    twice = make_escrow(merchants=(public_key(MERCHANT), public_key(MERCHANT)))
    chain.escrows[EID] = twice
    assert trio.run(service.submit, body(tickets([3], merchant_index=0)))["accepted"] == 1
    result = trio.run(service.submit, body(tickets([3], merchant_index=1)))
    assert result["rejected"] == [{"index": 0, "reason": "duplicate-ticket"}]
    (ev,) = store.evidence()
    assert ev.kind == EVIDENCE_DUPLICATE_PAIR and len(ev.tickets) == 2
    step(watch, chain)
    (proof,) = watch.proofs.values()
    assert proof.kind == "duplicate" and proof.status == SENT


def test_moot_resent_and_retried(setup):
    chain, store, service, watch = setup
    trio.run(service.submit, body(tickets([61])))
    chain.reject = lambda tx: "escrow-broken"  # another proof is in the pool
    step(watch, chain)
    (proof,) = watch.proofs.values()
    assert (proof.status, proof.reason) == (PENDING, "escrow-broken")
    chain.reject = lambda tx: None
    chain.tip += 1
    step(watch, chain)
    assert proof.status == SENT
    chain.txs.clear()  # evicted / reorged away: sent again while the escrow is live
    chain.tip += 1
    step(watch, chain)
    assert proof.status == SENT and proof.attempts == 3 and len(chain.accepted) == 2
    chain.txs.clear()
    chain.escrows[EID] = replace(chain.escrows[EID], broken=True)  # someone else's proof
    chain.tip += 1
    step(watch, chain)
    assert proof.status == MOOT
    chain.reject = lambda tx: "bad-cheat-proof"
    del chain.escrows[EID]
    store.add_evidence("out-of-range", EID, 62, [tickets([62])[0].encode()])
    step(watch, chain)
    assert watch.proofs[(EID, 62, "out-of-range")].status == MOOT  # refunded


def test_check_conflict_accepts_only_real_proofs() -> None:
    escrow = make_escrow()
    a, b = tickets([5], merchant_index=0)[0], tickets([5], merchant_index=1)[0]
    assert check_conflict([a.encode(), b.encode()], escrow, FakeChain().genesis_hash) == (a, b)
    assert check_conflict([a.encode(), a.encode()], escrow, FakeChain().genesis_hash) is None
    forged = tickets([5], merchant_index=1, seed=bytes([9]) * 32)[0]
    assert check_conflict([a.encode(), forged.encode()], escrow,
                          FakeChain().genesis_hash) is None
    assert check_conflict([a.encode()], escrow, FakeChain().genesis_hash) is None  # in range
    far = tickets([60])[0]
    assert check_conflict([far.encode()], escrow, FakeChain().genesis_hash) == (far, None)
    assert check_conflict([b"junk"], escrow, FakeChain().genesis_hash) is None

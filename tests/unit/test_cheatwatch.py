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


# --- announcements to the node's ticket watch ------------------------------------------------

def _news(eid: bytes, seqnos) -> list:
    from wallet.merchant.ticketstore import NewTicket
    return [NewTicket(eid, s, 1, 14, s, 17, 23, eid[:1] * 35 + s.to_bytes(8, "big") + bytes(64))
            for s in seqnos]


def test_announcement_queue_takes_one_escrow_per_call_in_order(setup, monkeypatch):
    """Runs of one escrow go out together (≤ the batch), first queued first; other
    escrows keep their place; beyond MAX_QUEUED the oldest tickets are dropped."""
    import wallet.merchant.cheatwatch as cw
    chain, store, service, watch = setup
    watch._rpc = object()  # announcements on (no call is made here)
    other = bytes([7]) * 32
    watch._batch = 5
    watch.tickets_accepted(_news(EID, range(3)) + _news(other, range(2)))
    watch.tickets_accepted(_news(EID, range(3, 9)))
    eid, batch = watch._next_batch()
    assert eid == EID and [b[35:43] for b in batch] == [s.to_bytes(8, "big") for s in range(5)]
    eid, batch = watch._next_batch()
    assert eid == other and len(batch) == 2
    eid, batch = watch._next_batch()
    assert eid == EID and len(batch) == 4 and watch._queued_tickets == 0
    monkeypatch.setattr(cw, "MAX_QUEUED", 4)
    watch.tickets_accepted(_news(EID, range(6)))
    assert watch._queued_tickets == 4
    eid, batch = watch._next_batch()
    assert [int.from_bytes(b[35:43], "big") for b in batch] == [2, 3, 4, 5]


def test_announcer_falls_back_to_1000_per_call_for_an_older_node(setup):
    """A node that refuses a 10 000-ticket announcement (-8, its old limit) gets the same
    tickets again in calls of ≤ 1000; nothing is lost."""
    from wallet.merchant.cheatwatch import OLD_ANNOUNCE_BATCH
    from wallet.rpcclient import RpcError
    chain, store, service, watch = setup
    sizes = []

    class OldNode:
        def call(self, method, eid, raws):
            assert method == "announcetickets"
            if len(raws) > OLD_ANNOUNCE_BATCH:
                raise RpcError(-8, "tickets must be a list of at most 1000")
            sizes.append(len(raws))
            return {"new": len(raws), "conflicts": []}

    watch._rpc = OldNode()
    watch.tickets_accepted(_news(EID, range(2500)))

    async def go():
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch._announcer)
                while watch.announced < 2500:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    trio.run(go)
    assert sizes == [1000, 1000, 500] and watch.announced == 2500

"""Merchant ticket service (SPEC §4.1, §13) and auto-redeemer (SPEC §6, §7) on a fake chain.

The fake chain stands in for ``wallet.merchant.chainview.RpcChainView``: escrow states,
the tip, draws, a mempool and confirmed REDEEMs are plain attributes a test sets.
"""

from dataclasses import replace

import httpx
import pytest
import trio

from consensus.escrow import EscrowState
from consensus.keys import public_key
from consensus.params import get_params
from consensus.ticket import TICKET_SIZE, Ticket, sign_ticket
from consensus.tx import Tx
from wallet.merchant.chainview import NodeRejected, NodeUnavailable, RpcChainView
from wallet.customer.issuer import send_tickets
from wallet.merchant.service import (MAX_TICKETS_PER_REQUEST, MerchantService, RequestError,
                                     run_merchant)
from wallet.merchant.redeemer import Redeemer
from wallet.merchant.ticketverify import MIN_PROCESS_CHUNK, TicketVerifier
from wallet.rpcclient import RpcConnectionError, RpcError
from wallet.merchant.ticketstore import (EVIDENCE_DUPLICATE, EVIDENCE_OUT_OF_RANGE, EXPIRED,
                                         FAILED, HELD, LOSING, REDEEMED, WINNING, TicketStore)

PARAMS = get_params("regtest")  # confirm_depth 2, d_draw 3, d_redeem 6
GENESIS = bytes([0x42]) * 32
OWNER = bytes([1]) * 32
MERCHANT = bytes([2]) * 32
OTHER_MERCHANT = bytes([0xEE]) * 32
EID = bytes([5]) * 32
BIG = bytes([6]) * 32  # an escrow with 300 winners per group


def make_escrow(**changes) -> EscrowState:
    """start 13, tkt_rate 10, draw_len 2, l_esc 6: N 60, group 0 = seqnos 0..19,
    t_draw(0) = 17, t_expire(0) = 23; our merchant index is 1."""
    fields = dict(owner=public_key(OWNER), escrow_balance=120, penalty_balance=500,
                  win_num=1, win_den=2, beta=2, tkt_rate=10, draw_len=2, l_esc=6,
                  merchants=(OTHER_MERCHANT, public_key(MERCHANT)), created_height=10,
                  start=13, t_refund=27, broken=False)
    fields.update(changes)
    return EscrowState(**fields)


class FakeChain:
    """Just enough of a node for the merchant side (the ``ChainView`` protocol)."""

    def __init__(self, tip=13, params=PARAMS):
        self.params = params
        self.genesis_hash = GENESIS
        self.tip = tip
        self.escrows = {EID: make_escrow(), BIG: make_escrow(tkt_rate=200, l_esc=2)}
        self.draws: dict[tuple[bytes, int], list[int]] = {}
        self.records: dict[bytes, list[tuple[int, int, int]]] = {}
        self.txs: dict[bytes, tuple[str, int | None]] = {}
        self.accepted: list[Tx] = []
        self.reject = lambda tx: None  # -> reject reason or None
        self.down = False

    async def height(self, fresh=False):
        return self.tip

    async def escrow(self, escrow_id):
        return self.escrows.get(escrow_id)

    async def draw(self, escrow_id, group):
        return self.draws.get((escrow_id, group))

    async def redeemed(self, escrow_id):
        return list(self.records.get(escrow_id, []))

    async def send_raw_transaction(self, raw):
        if self.down:
            raise NodeUnavailable("node down")
        tx = Tx.decode(raw)
        reason = self.reject(tx)
        if reason:
            raise NodeRejected(reason)
        self.accepted.append(tx)
        self.txs[tx.txid()] = ("mempool", None)
        return tx.txid()

    async def transaction_status(self, txid):
        return self.txs.get(txid)

    def mine(self):
        """Next block includes every mempool transaction."""
        self.tip += 1
        for txid, (status, _) in list(self.txs.items()):
            if status == "mempool":
                self.txs[txid] = ("confirmed", self.tip)
        for tx in self.accepted:
            if self.txs.get(tx.txid()) == ("confirmed", self.tip):
                for t in tx.tickets():
                    self.records.setdefault(t.escrow_id, []).append(
                        (t.seqno, t.merchant_index, self.tip))


def tickets(seqnos, eid=EID, merchant_index=1, seed=OWNER):
    return [sign_ticket(seed, GENESIS, eid, merchant_index, s) for s in seqnos]


def body(ts):
    return b"".join(t.encode() for t in ts)


def submit(service, ts):
    return trio.run(service.submit, body(ts))


@pytest.fixture
def chain():
    return FakeChain()


@pytest.fixture
def store(tmp_path):
    with TicketStore(tmp_path / "store") as s:
        yield s


@pytest.fixture
def service(chain, store):
    return MerchantService(public_key(MERCHANT), store, chain)


OCTETS = {"Content-Type": "application/octet-stream"}


def reasons(result):
    return {r["index"]: r["reason"] for r in result["rejected"]}


# --- SPEC §4.1 / §13 acceptance ----------------------------------------------------------

def test_accepts_valid_tickets_durably(service, store):
    result = submit(service, tickets(range(10, 15)))
    assert result == {"accepted": 5, "rejected": []}
    assert all(store.get(EID, s).status == HELD for s in range(10, 15))
    assert service.status() == {EID.hex(): {"held": 5, "winning": 0, "redeemed": 0,
                                            "expired": 0, "losing": 0, "failed": 0,
                                            "evidence": 0}}


def test_invalid_body_length_and_size(service):
    with pytest.raises(RequestError) as info:
        trio.run(service.submit, b"\x01" * (TICKET_SIZE + 1))
    assert info.value.status == 400
    with pytest.raises(RequestError) as info:
        trio.run(service.submit, bytes(TICKET_SIZE * (MAX_TICKETS_PER_REQUEST + 1)))
    assert info.value.status == 413


def test_invalid_bad_encoding(service):
    good, bad = tickets([10, 11])
    result = trio.run(service.submit, good.encode() + b"\x02" + bad.encode()[1:])
    assert result["accepted"] == 1 and reasons(result) == {1: "bad-encoding"}


def test_invalid_unknown_escrow_and_broken(service, chain):
    chain.escrows[EID] = make_escrow(broken=True)
    result = submit(service, tickets([10], eid=bytes(32)) + tickets([11]))
    assert reasons(result) == {0: "unknown-escrow", 1: "escrow-broken"}


def test_invalid_wrong_merchant(service):
    result = submit(service, tickets([10], merchant_index=0) + tickets([11], merchant_index=9))
    assert reasons(result) == {0: "wrong-merchant", 1: "wrong-merchant"}


def test_invalid_duplicate_ticket_across_and_within_requests(service):
    assert submit(service, tickets([10]))["accepted"] == 1
    result = submit(service, tickets([10, 11, 11]))
    assert result["accepted"] == 1 and reasons(result) == {0: "duplicate-ticket",
                                                          2: "duplicate-ticket"}


def test_within_request_duplicate_after_bad_signature_is_accepted(service):
    forged = Ticket(1, 1, EID, 12, bytes(64))
    result = submit(service, [forged] + tickets([12]))
    assert result["accepted"] == 1 and reasons(result) == {0: "bad-ticket-signature"}


def test_invalid_seqno_out_of_range_keeps_signed_evidence(service, store):
    forged = Ticket(1, 1, EID, 61, bytes(64))
    result = submit(service, tickets([60]) + [forged])
    assert reasons(result) == {0: "seqno-out-of-range", 1: "seqno-out-of-range"}
    [ev] = store.evidence()
    assert (ev.kind, ev.seqno, ev.tickets) == (EVIDENCE_OUT_OF_RANGE, 60,
                                               (tickets([60])[0].encode(),))


def test_invalid_wrong_round(service, chain):
    # tip 13: current round 14, rounds 13..15 (seqnos 0..29) acceptable
    result = submit(service, tickets([29, 30]))
    assert result["accepted"] == 1 and reasons(result) == {1: "wrong-round"}
    chain.tip = 15  # current round 16: round 13 (seqnos 0..9) is too old
    assert reasons(submit(service, tickets([9]))) == {0: "wrong-round"}


def test_invalid_draw_revealed(store):
    # With d_draw >= 2 the round check already refuses such tickets; the draw check is
    # the last line of defence, so exercise it with a (non-SPEC) d_draw of -1.
    chain = FakeChain(tip=14, params=replace(PARAMS, d_draw=-1))  # t_draw(0) = 13
    service = MerchantService(public_key(MERCHANT), store, chain)
    assert reasons(submit(service, tickets([10]))) == {0: "draw-revealed"}


def test_invalid_bad_ticket_signature(service):
    wrong_key = tickets([10], seed=bytes([9]) * 32)
    tampered = replace(tickets([11])[0], seqno=12)
    assert reasons(submit(service, wrong_key + [tampered])) == {0: "bad-ticket-signature",
                                                                 1: "bad-ticket-signature"}


def test_first_failing_check_names_the_reason(service):
    unsigned_other = Ticket(1, 0, EID, 70, bytes(64))  # wrong merchant, out of range, unsigned
    unsigned_late = Ticket(1, 1, EID, 45, bytes(64))  # wrong round and unsigned
    assert reasons(submit(service, [unsigned_other, unsigned_late])) == {
        0: "wrong-merchant", 1: "wrong-round"}


def test_concurrent_requests_accept_each_ticket_once(service, store):
    batch = body(tickets(range(0, 30)))
    results = []

    async def main():
        async def one():
            results.append(await service.submit(batch))
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)

    trio.run(main)
    assert sum(r["accepted"] for r in results) == 30
    assert store.summary(EID)["held"] == 30


# --- HTTP (SPEC §13) -----------------------------------------------------------------------

def test_http_service_end_to_end(service):
    async def main():
        async with trio.open_nursery() as nursery:
            port = await nursery.start(service.serve, "127.0.0.1", 0)
            url = f"http://127.0.0.1:{port}"

            def client_calls():
                sent = send_tickets(url, tickets([10, 11]) + tickets([40]))
                bad = httpx.post(url + "/v1/tickets", content=b"x" * 5, headers=OCTETS)
                huge = httpx.post(url + "/v1/tickets", headers=OCTETS,
                                  content=bytes(TICKET_SIZE * (MAX_TICKETS_PER_REQUEST + 1)))
                status = httpx.get(url + "/v1/status").json()
                return sent, bad, huge, status

            sent, bad, huge, status = await trio.to_thread.run_sync(client_calls)
            nursery.cancel_scope.cancel()
        return sent, bad, huge, status

    sent, bad, huge, status = trio.run(main)
    assert sent == {"accepted": 2, "rejected": [{"index": 2, "reason": "wrong-round"}]}
    assert bad.status_code == 400 and "107" in bad.json()["error"]
    assert huge.status_code == 413 and "error" in huge.json()
    assert status[EID.hex()]["held"] == 2


def test_invalid_http_content_type(service, store):
    """SPEC §13: POST /v1/tickets carries application/octet-stream; anything else is 415."""
    ticket_body = body(tickets([10]))

    async def main():
        async with trio.open_nursery() as nursery:
            port = await nursery.start(service.serve, "127.0.0.1", 0)
            url = f"http://127.0.0.1:{port}/v1/tickets"

            def client_calls():
                return [httpx.post(url, content=ticket_body, headers=headers)
                        for headers in ({"Content-Type": "application/json"}, {},
                                        {"Content-Type": "text/plain; charset=utf-8"},
                                        {"Content-Type": "Application/Octet-Stream; x=1"})]

            answers = await trio.to_thread.run_sync(client_calls)
            nursery.cancel_scope.cancel()
        return answers

    as_json, missing, text, ok = trio.run(main)
    assert as_json.status_code == 415
    assert as_json.json() == {"error": "Content-Type must be application/octet-stream "
                                       "(SPEC §13), got 'application/json'"}
    assert missing.status_code == 415 and missing.json()["error"].endswith("got none")
    assert text.status_code == 415
    assert ok.status_code == 200 and ok.json() == {"accepted": 1, "rejected": []}
    assert store.summary(EID)["held"] == 1  # only the well-labelled request was stored


# --- auto-redeemer (SPEC §6, §7) -----------------------------------------------------------

def make_redeemer(store, chain):
    return Redeemer(MERCHANT, store, chain)


def statuses(store, seqnos, eid=EID):
    return [store.get(eid, s).status for s in seqnos]


def test_redeemer_draws_redeems_and_confirms(service, store, chain):
    submit(service, tickets(range(10)))
    chain.draws[(EID, 0)] = [0, 2, 4, 6, 8, 11, 13, 15, 17, 19]
    red = make_redeemer(store, chain)
    chain.tip = 17  # t_draw(0) = 17: its VDF appears only in block 18
    trio.run(red.step, chain.tip)
    assert statuses(store, range(10)) == [HELD] * 10 and chain.accepted == []
    chain.tip = 18
    trio.run(red.step, chain.tip)
    assert statuses(store, range(10)) == [WINNING, LOSING] * 5
    [tx] = chain.accepted
    assert [t.seqno for t in tx.tickets()] == [0, 2, 4, 6, 8] and tx.sender == public_key(MERCHANT)
    chain.mine()  # confirmed at 19, depth 1
    trio.run(red.step, chain.tip)
    assert statuses(store, [0]) == [WINNING]
    chain.tip += 1  # depth 2 = confirm_depth
    trio.run(red.step, chain.tip)
    assert statuses(store, range(0, 10, 2)) == [REDEEMED] * 5
    assert store.open_groups() == [] and store.pending_redeems() == []
    counts = store.summary(EID)
    assert (counts["redeemed"], counts["losing"]) == (5, 5)


def test_redeemer_batches_at_most_256(store, chain):
    service = MerchantService(public_key(MERCHANT), store, chain)
    submit(service, tickets(range(300), eid=BIG))  # group 0 of BIG: t_draw 17
    chain.draws[(BIG, 0)] = list(range(300))
    chain.tip = 18
    trio.run(make_redeemer(store, chain).step, 18)
    assert [len(tx.tickets()) for tx in chain.accepted] == [256, 44]


def test_redeemer_resends_a_vanished_redeem(service, store, chain):
    submit(service, tickets([0, 1]))
    chain.draws[(EID, 0)] = [0, 1]
    red = make_redeemer(store, chain)
    chain.tip = 18
    trio.run(red.step, 18)
    chain.txs.clear()  # evicted, or lost in a reorg
    chain.tip = 19
    trio.run(red.step, 19)
    first, again = chain.accepted
    assert first.tickets() == again.tickets()
    assert (first.fee, again.fee) == (0, 3)  # it missed a block: raised, capped at payout - 1
    assert [p.txid for p in store.pending_redeems()] == [again.txid()]


def test_redeemer_fee_from_estimatefee_and_replaced_while_pooled(service, store, chain):
    """A pooled REDEEM that missed a block is replaced by one of the same tickets at a
    raised fee (DESIGN "Replace-by-fee and escrow roll-over")."""
    chain.escrows[EID] = make_escrow(beta=10**6, escrow_balance=10**8)
    submit(service, tickets([0, 1]))
    chain.draws[(EID, 0)] = [0, 1]
    targets = []

    async def estimate_feerate(target):
        targets.append(target)
        return 3
    chain.estimate_feerate = estimate_feerate
    red = make_redeemer(store, chain)
    trio.run(red.step, 18)
    [first] = chain.accepted
    size = len(first.encode())
    assert targets == [5] and 3 * size <= first.fee <= 3 * (size + 8)  # 23 - 18 blocks left
    trio.run(red.step, 19)  # block 19's template may predate it: not yet a miss
    assert len(chain.accepted) == 1
    trio.run(red.step, 20)  # still in the pool two blocks on: replaced
    old, new = chain.accepted
    assert new.tickets() == old.tickets() and red.replacements == 1
    assert new.fee >= max(2 * old.fee, (2 * 10**6 - 1) >> 2)  # doubling, deadline floor
    assert [(p.txid, p.fee) for p in store.pending_redeems()] == [(new.txid(), new.fee)]
    assert {store.get(EID, s).txid for s in (0, 1)} == {new.txid()}
    trio.run(red.step, 21)
    assert len(chain.accepted) == 2
    chain.reject = lambda tx: "insufficient-fee"  # a refused replacement keeps the old one
    trio.run(red.step, 22)  # the last block of the window is next: try again at once
    assert [p.txid for p in store.pending_redeems()] == [new.txid()]
    assert {store.get(EID, s).txid for s in (0, 1)} == {new.txid()}
    chain.reject = lambda tx: None
    trio.run(red.step, 22)
    last = chain.accepted[-1]
    assert last.fee == 2 * 10**6 - 1  # the last block of the window is offered the cap
    chain.tip = 22
    chain.mine()
    chain.tip += 1
    trio.run(red.step, chain.tip)
    assert statuses(store, [0, 1]) == [REDEEMED, REDEEMED]


def test_redeemer_retries_after_node_outage(service, store, chain):
    submit(service, tickets([0]))
    chain.draws[(EID, 0)] = [0]
    red = make_redeemer(store, chain)
    chain.tip, chain.down = 18, True
    with pytest.raises(NodeUnavailable):
        trio.run(red.step, 18)
    chain.down = False
    trio.run(red.step, 18)  # ``run`` repeats a step cut short
    assert len(chain.accepted) == 1 and len(store.pending_redeems()) == 1


def test_redeemer_already_redeemed_marks_redeemed(service, store, chain):
    submit(service, tickets([0]))
    chain.draws[(EID, 0)] = [0]
    chain.reject = lambda tx: "ticket-already-redeemed"
    chain.tip = 18
    trio.run(make_redeemer(store, chain).step, 18)
    assert statuses(store, [0]) == [REDEEMED] and store.open_groups() == []


def test_redeemer_splits_batch_to_isolate_a_bad_ticket(service, store, chain):
    submit(service, tickets(range(4)))
    chain.draws[(EID, 0)] = [0, 1, 2, 3]
    chain.reject = lambda tx: ("ticket-not-winning"
                               if 2 in [t.seqno for t in tx.tickets()] else None)
    chain.tip = 18
    trio.run(make_redeemer(store, chain).step, 18)
    assert sorted(len(tx.tickets()) for tx in chain.accepted) == [1, 2]
    assert statuses(store, range(4)) == [WINNING, WINNING, FAILED, WINNING]
    assert store.get(EID, 2).reason == "ticket-not-winning"


def test_redeemer_expires_winners_after_the_window(service, store, chain):
    submit(service, tickets([0, 1]))
    chain.draws[(EID, 0)] = [0, 1]
    chain.reject = lambda tx: "ticket-not-drawn"  # transient: retried each block
    red = make_redeemer(store, chain)
    for tip in range(18, 23):
        trio.run(red.step, tip)
        assert statuses(store, [0, 1]) == [WINNING, WINNING]
    trio.run(red.step, 23)  # t_expire(0) = 23: no next block may include a redeem
    assert statuses(store, [0, 1]) == [EXPIRED, EXPIRED]
    assert store.open_groups() == []


def test_redeemer_unmined_redeem_expires_but_paid_one_counts(service, store, chain):
    submit(service, tickets([0, 1]))
    chain.draws[(EID, 0)] = [0, 1]
    red = make_redeemer(store, chain)
    trio.run(red.step, 18)
    chain.records[EID] = [(0, 1, 20), (1, 0, 21)]  # seqno 1 was also issued to merchant 0
    trio.run(red.step, 23)  # still in the mempool at t_expire
    assert statuses(store, [0, 1]) == [REDEEMED, EXPIRED]
    assert [(e.kind, e.seqno) for e in store.evidence()] == [(EVIDENCE_DUPLICATE, 1)]


def test_run_service_and_redeemer_together(service, store, chain):
    red = Redeemer(MERCHANT, store, chain, poll_interval=0.01)

    async def main():
        async with trio.open_nursery() as nursery:
            port = await nursery.start(service.run, red, "127.0.0.1", 0)
            sent = await trio.to_thread.run_sync(
                send_tickets, f"http://127.0.0.1:{port}", tickets([0, 1]))
            assert sent["accepted"] == 2
            chain.draws[(EID, 0)] = [1]
            chain.tip = 18
            with trio.fail_after(5):
                while not chain.accepted:
                    await trio.sleep(0.01)
                chain.mine()
                chain.mine()
                while store.summary(EID)["redeemed"] != 1:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert statuses(store, [0, 1]) == [LOSING, REDEEMED]


# --- RpcChainView over a scripted RPC client ------------------------------------------------

class ScriptedRpc:
    """Answers ``call(method, *params)`` from a dict of callables; counts calls."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def call(self, method, *params):
        self.calls.append(method)
        return self.answers[method](*params)


def test_rpc_chain_view_reads_and_caches():
    info = {"chain": "microcash-regtest", "height": 13, "genesis_hash": GENESIS.hex()}
    escrow_json = make_escrow().to_json()

    def getdraw(eid, g):
        if g == 1:
            raise RpcError(-5, "draw-not-ready")
        return {"t_draw": 17, "vdf": "00" * 32, "winners": [3, 1]}

    def gettransaction(txid):
        return {"status": "confirmed", "height": 19} if txid == "aa" * 32 else None

    def sendraw(raw_hex):
        if raw_hex == "00":
            raise RpcError(-26, "ticket-expired")
        raise RpcConnectionError("refused")

    rpc = ScriptedRpc({
        "getinfo": lambda: dict(info),
        "getescrow": lambda eid: escrow_json if eid == EID.hex() else None,
        "getdraw": getdraw,
        "getredeemed": lambda eid: [[3, 1, 19]],
        "gettransaction": gettransaction,
        "sendrawtransaction": sendraw,
    })

    async def main():
        view = await RpcChainView.create(rpc)
        assert view.genesis_hash == GENESIS and view.params == PARAMS
        view._height_ttl = 3600.0
        assert await view.height() == 13 and rpc.calls == ["getinfo"]
        assert await view.escrow(EID) == make_escrow()
        assert await view.escrow(EID) == make_escrow() and rpc.calls.count("getescrow") == 1
        assert await view.escrow(bytes(32)) is None
        view._height_ttl = 0.0
        info["height"] = 14
        assert await view.height() == 14
        await view.escrow(EID)  # a new block may have broken it: read again
        assert rpc.calls.count("getescrow") == 3
        assert await view.draw(EID, 0) == [3, 1]
        assert await view.draw(EID, 1) is None
        assert await view.redeemed(EID) == [(3, 1, 19)]
        assert await view.transaction_status(bytes([0xAA]) * 32) == ("confirmed", 19)
        assert await view.transaction_status(bytes(32)) is None
        with pytest.raises(NodeRejected) as info_exc:
            await view.send_raw_transaction(b"\x00")
        assert info_exc.value.reason == "ticket-expired"
        with pytest.raises(NodeUnavailable):
            await view.send_raw_transaction(b"\x01")
        rpc.answers["getredeemed"] = lambda eid: [[1, 2]]
        with pytest.raises(NodeUnavailable, match="malformed"):
            await view.redeemed(EID)

    trio.run(main)


def test_invalid_rpc_chain_view_unknown_chain():
    rpc = ScriptedRpc({"getinfo": lambda: {"chain": "mainnet", "height": 1,
                                           "genesis_hash": GENESIS.hex()}})
    with pytest.raises(NodeUnavailable, match="unknown chain"):
        trio.run(RpcChainView.create, rpc)


def test_invalid_run_merchant_key_mismatch(tmp_path):
    rpc = ScriptedRpc({})
    with pytest.raises(ValueError, match="does not match"):
        trio.run(run_merchant, MERCHANT, public_key(OWNER), tmp_path / "m", rpc)
    assert rpc.calls == []


# --- signature checks across worker processes ------------------------------------------------

def test_worker_processes_check_signatures_like_the_thread(chain, store):
    """``--workers 2``: the same verdicts from spawned processes, chunk by chunk."""
    good = tickets(range(0, 25))
    forged = [replace(t, sig=bytes(64)) for t in tickets(range(25, 30))]
    wrong_key = tickets([30], eid=BIG, seed=bytes([9]) * 32)
    assert TicketVerifier(2).chunk_size(31) == MIN_PROCESS_CHUNK
    assert TicketVerifier(2).chunk_size(10_000) == 1000
    with TicketVerifier(2, chunk=4, min_chunk=1) as verifier:  # 8 process tasks
        assert verifier.chunk_size(31) == 4
        service = MerchantService(public_key(MERCHANT), store, chain, verifier)
        result = submit(service, good[:20] + forged + wrong_key)
    assert result["accepted"] == 20
    assert reasons(result) == {i: "bad-ticket-signature" for i in range(20, 26)}



def test_worker_process_killed_is_replaced(chain, store):
    """A worker process that dies costs only the batch in flight, checked in the service
    instead; later batches go to a fresh pool (DESIGN "Worker processes")."""
    import os
    import signal
    with TicketVerifier(2, chunk=4, min_chunk=1) as verifier:
        service = MerchantService(public_key(MERCHANT), store, chain, verifier)
        assert submit(service, tickets(range(0, 8)))["accepted"] == 8
        for pid in verifier.pids():
            os.kill(pid, signal.SIGKILL)
        assert submit(service, tickets(range(8, 16)))["accepted"] == 8
        assert submit(service, tickets(range(16, 24)))["accepted"] == 8
        assert verifier.restarts >= 1

def test_invalid_verifier_workers():
    with pytest.raises(ValueError, match="at least 1"):
        TicketVerifier(0)

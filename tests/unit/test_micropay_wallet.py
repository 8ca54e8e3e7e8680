"""MICROPAY in the wallet (SPEC §15): the payee's LevelDB store, the ticket checks of
``MpService``, the claimer, and the payer's book (one ticket of unknown outcome per
escrow)."""

from __future__ import annotations

import json

import pytest
import trio

from consensus.keys import public_key
from consensus.micropay import MpEscrowState, is_mp_winning, sign_mp_ticket
from consensus.params import get_params
from consensus.tx import MP_CLAIM, Tx
from wallet.customer.micropaybook import (CLAIMED, LOST, READY, RETIRED, UNKNOWN, WINNER, WON,
                                          MicropayBook, MpEscrowRecord)
from wallet.merchant.chainview import NodeRejected
from wallet.merchant.mp_claimer import MpClaimer
from wallet.merchant.mp_service import (MpRequestError, MpService, parse_ticket_request,
                                        status_lines, ticket_json)
from wallet.merchant.mp_store import CLAIMING, MOOT, MpStore, MpStoreError

PARAMS = get_params("regtest")  # confirm_depth 2
GENESIS = bytes([0x42]) * 32
PAYER, PAYEE = bytes([1]) * 32, bytes([2]) * 32
EID, EID2 = bytes([7]) * 32, bytes([8]) * 32
REFUND = 30


class FakeChain:
    """Just enough of a node for the MICROPAY side (the ``ChainView`` protocol)."""

    def __init__(self, tip=10, win_bits=1):
        self.params = PARAMS
        self.genesis_hash = GENESIS
        self.tip = tip
        self.escrows = {eid: MpEscrowState(public_key(PAYER), 4000, win_bits, REFUND)
                        for eid in (EID, EID2)}
        self.txs: dict[bytes, tuple[str, int | None]] = {}
        self.sent: list[Tx] = []

    async def height(self, fresh=False):
        return self.tip

    async def mp_escrow(self, eid):
        return self.escrows.get(eid)

    async def send_raw_transaction(self, raw):
        tx = Tx.decode(raw)
        self.sent.append(tx)
        if tx.body.mp_escrow_id not in self.escrows:
            raise NodeRejected("unknown-mp-escrow")
        self.txs[tx.txid()] = ("mempool", None)
        return tx.txid()

    async def transaction_status(self, txid):
        return self.txs.get(txid)

    def mine(self):
        self.tip += 1
        for txid, (status, _) in list(self.txs.items()):
            if status == "mempool":
                self.txs[txid] = ("confirmed", self.tip)
                tx = next(t for t in self.sent if t.txid() == txid)
                self.escrows.pop(tx.body.mp_escrow_id, None)


@pytest.fixture
def store(tmp_path):
    with MpStore(tmp_path / "micropay") as s:
        yield s


def commitments(service, n=4):
    return [bytes.fromhex(c) for c in trio.run(service.commitments, n)["commitments"]]


def ticket(c, r2=bytes(16), eid=EID, payee=PAYEE):
    return sign_mp_ticket(PAYER, GENESIS, eid, c, r2, public_key(payee))


def results(service, tickets):
    return trio.run(service.submit, tickets)["results"]


def losing_r2(store, c, win_bits=1):
    """An r2 that makes the ticket for ``c`` lose (or win, below)."""
    r1 = store.commitment_secret(c)
    return next(bytes(15) + bytes([i]) for i in range(256)
                if not is_mp_winning(r1, bytes(15) + bytes([i]), win_bits))


def winning_r2(store, c, win_bits=1):
    r1 = store.commitment_secret(c)
    return next(bytes(15) + bytes([i]) for i in range(256)
                if is_mp_winning(r1, bytes(15) + bytes([i]), win_bits))


def test_commitment_secrets_are_stored_before_they_are_handed_out(tmp_path):
    chain = FakeChain()
    with MpStore(tmp_path / "s") as store:
        cs = commitments(MpService(public_key(PAYEE), store, chain), 3)
        assert store.open_commitments == 3
    with MpStore(tmp_path / "s") as store:  # reopened: every secret is there
        assert all(store.commitment_secret(c) is not None for c in cs)
        assert store.open_commitments == 3
        assert store.prune_commitments(older_than=2**40) == 3 and store.open_commitments == 0


def test_store_in_use_is_a_clear_error(tmp_path):
    with MpStore(tmp_path / "s"):
        with pytest.raises(MpStoreError, match="cannot open MICROPAY store"):
            MpStore(tmp_path / "s")


def test_tickets_accepted_revealed_and_duplicates_answered_again(store):
    chain = FakeChain()
    service = MpService(public_key(PAYEE), store, chain)
    c1, c2, c3, _ = commitments(service)
    lose = ticket(c1, losing_r2(store, c1))
    [a] = results(service, [lose])
    assert a["accepted"] and a["won"] is False and a["r1"] == store.ticket(c1).r1.hex()
    assert store.commitment_secret(c1) is None  # used up
    [again] = results(service, [lose])
    assert again == {**a, "duplicate": True}
    other = ticket(c1, bytes([0xEE]) * 16)  # another ticket for a used commitment
    assert results(service, [other])[0]["reason"] == "commitment-used"
    win = ticket(c2, winning_r2(store, c2))
    [w] = results(service, [win])
    assert w["accepted"] and w["won"] is True and service.claims == 1
    # the escrow is spent for this payee: the next ticket on it is refused, r1 revealed
    [spent] = results(service, [ticket(c3, losing_r2(store, c3))])
    assert (spent["accepted"], spent["reason"]) == (False, "mp-escrow-spent")
    assert spent["r1"] is not None
    summary = store.summary()
    assert summary["totals"]["held"] == 2 and summary["totals"]["winning"] == 1
    assert [e.mp_escrow_id for e in store.claims()] == [EID]
    assert "2 tickets held, 1 winning" in status_lines(summary)[0]


def test_refusals_in_order(store):
    chain = FakeChain()
    service = MpService(public_key(PAYEE), store, chain, price=3000)  # EV 2000 < 3000
    c1, c2, c3, c4 = commitments(service)
    assert results(service, [ticket(bytes(32))])[0] == {
        "accepted": False, "reason": "unknown-commitment", "r1": None, "won": None,
        "duplicate": False}
    assert results(service, [ticket(c1)])[0]["reason"] == "ticket-underpriced"
    service.price = 0
    assert results(service, [ticket(c2, eid=bytes(32))])[0]["reason"] == "unknown-mp-escrow"
    forged = sign_mp_ticket(PAYEE, GENESIS, EID, c3, bytes(16), public_key(PAYEE))
    assert results(service, [forged])[0]["reason"] == "bad-ticket-signature"
    chain.tip = REFUND - 1 - service.margin  # current round + margin > refund - 1
    assert results(service, [ticket(c4)])[0]["reason"] == "mp-escrow-expired"
    assert store.summary()["totals"]["held"] == 0


def test_two_winners_of_one_escrow_in_one_request_only_first_taken(store):
    service = MpService(public_key(PAYEE), store, FakeChain(win_bits=1))
    c1, c2, _, _ = commitments(service)
    answers = results(service, [ticket(c1, winning_r2(store, c1)),
                                ticket(c2, winning_r2(store, c2))])
    assert answers[0]["won"] and answers[1]["reason"] == "mp-escrow-spent"


def test_parse_ticket_request_errors():
    with pytest.raises(MpRequestError, match="tickets must be a list"):
        parse_ticket_request(b'{"tickets": []}')
    with pytest.raises(MpRequestError, match="r2 must be 32 hex digits"):
        parse_ticket_request(json.dumps({"tickets": [{**ticket_json(ticket(bytes(32))),
                                                      "r2": "00"}]}).encode())
    with pytest.raises(MpRequestError, match="not JSON"):
        parse_ticket_request(b"\xff")


def test_claimer_claims_once_confirmed_or_moot(store):
    chain = FakeChain()
    service = MpService(public_key(PAYEE), store, chain)
    claimer = MpClaimer(PAYEE, service, chain, fee=10)
    c1, c2, _, _ = commitments(service)
    results(service, [ticket(c1, winning_r2(store, c1))])
    results(service, [ticket(c2, winning_r2(store, c2), eid=EID2)])
    chain.escrows.pop(EID2)  # another payee's winner took it first
    trio.run(claimer.step, chain.tip)
    assert [tx.kind for tx in chain.sent] == [MP_CLAIM, MP_CLAIM]
    assert store.escrow(EID).status == CLAIMING
    assert store.escrow(EID2).status == MOOT
    chain.mine()
    trio.run(claimer.step, chain.tip)  # depth 1 of 2
    assert store.escrow(EID).status == CLAIMING
    chain.tip += 1
    trio.run(claimer.step, chain.tip)
    assert store.escrow(EID).status == "claimed" and store.claims() == []
    assert chain.sent[0].body.mp_escrow_id == EID and chain.sent[0].fee == 10


def test_claimer_resends_a_vanished_claim(store):
    chain = FakeChain()
    service = MpService(public_key(PAYEE), store, chain)
    claimer = MpClaimer(PAYEE, service, chain)
    [c1] = commitments(service, 1)
    results(service, [ticket(c1, winning_r2(store, c1))])
    trio.run(claimer.step, chain.tip)
    chain.txs.clear()  # evicted
    trio.run(claimer.step, chain.tip)
    assert len(chain.sent) == 2 and chain.sent[0].encode() == chain.sent[1].encode()


def _record(eid: str, refund=100, status=READY) -> MpEscrowRecord:
    return MpEscrowRecord(eid, "00" * 32, "cust", "11" * 32, GENESIS.hex(), 4000, 2, refund,
                          1000, status=status)


def test_book_one_ticket_of_unknown_outcome_per_escrow(tmp_path):
    book = MicropayBook(tmp_path)
    book.add(_record("aa" * 32, refund=50))
    book.add(_record("bb" * 32, refund=60))
    first = book.reserve_ticket("cust", "01" * 32, "22" * 32, "u", "03" * 16, 40)
    second = book.reserve_ticket("cust", "02" * 32, "22" * 32, "u", "04" * 16, 40)
    assert (first.mp_escrow_id, second.mp_escrow_id) == ("aa" * 32, "bb" * 32)
    assert book.reserve_ticket("cust", "05" * 32, "22" * 32, "u", "06" * 16, 40) is None
    # a fresh process sees the same: the pending ticket survives
    assert MicropayBook(tmp_path).get("aa" * 32).pending["r2"] == "03" * 16
    book.resolve("aa" * 32, "01" * 32, LOST)
    third = book.reserve_ticket("cust", "05" * 32, "22" * 32, "u", "06" * 16, 40,
                                settle=("bb" * 32, "02" * 32, WINNER))
    assert third.mp_escrow_id == "aa" * 32 and third.tickets == 1
    won = book.get("bb" * 32)
    assert (won.status, won.tickets, won.won_c, won.pending) == (WON, 1, "02" * 32, None)
    book.resolve("aa" * 32, "05" * 32, UNKNOWN)
    assert book.get("aa" * 32).status == RETIRED  # never used again
    assert book.reserve_ticket("cust", "07" * 32, "22" * 32, "u", "08" * 16, 0) is None
    book.add(_record("cc" * 32, refund=45))
    assert book.reserve_ticket("cust", "07" * 32, "22" * 32, "u", "08" * 16, 46) is None


def test_book_chain_resolves_a_pending_ticket(tmp_path):
    book = MicropayBook(tmp_path)
    book.add(_record("aa" * 32))
    book.reserve_ticket("cust", "01" * 32, "22" * 32, "u", "03" * 16, 0)
    book.set_status("aa" * 32, CLAIMED)  # gone before refund_height: the pending one won
    rec = book.get("aa" * 32)
    assert (rec.status, rec.tickets, rec.won_c, rec.pending) == (CLAIMED, 1, "01" * 32, None)


# ---- the CLI: argument errors before anything is signed or sent ----------------------------

from tests.unit.test_wallet_cli import import_key, node, run  # noqa: E402,F401


def test_invalid_micropay_commands(run, node):  # noqa: F811
    import_key(run)
    bits = run("micropay", "escrow", "create", "cust", "--amount", "1", "--win-bits", "33",
               node=False)
    assert bits.exit_code == 2 and "--win-bits" in bits.output
    zero = run("micropay", "escrow", "create", "cust", "--amount", "0u", "--win-bits", "2",
               node=False)
    assert zero.exit_code == 2 and "must be positive" in zero.output
    assert run("micropay", "list", node=False).stdout.strip() == "no MP escrows"
    away = run("micropay", "pay", "cust", "--to", "http://127.0.0.1:9")
    assert away.exit_code == 1 and "error: cannot fetch commitments at" in away.stderr

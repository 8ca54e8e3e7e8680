"""Several points of sale of one payee (SPEC §16, docs/DESIGN.md "Several points of sale
of one payee"): receipts, the store's ``learn`` and outbox, the voucher service with a
receipt shown, a peer's push, the closer's roles, the gossip's sync rule and the
penalty guidance of ``channel open``."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
import trio

from consensus.keys import public_key
from consensus.tx import CHANNEL_CHEAT, CHANNEL_CLOSE
from tests.unit.test_channel_merchant import (CID, GENESIS, PAYEE, PAYER, FakeChain, store,  # noqa: F401
                                              voucher)
from wallet.customer.channel import compute_penalty_guidance, penalty_explanation
from wallet.merchant.channel_service import ChannelService
from wallet.merchant.channel_store import (EQUIVOCATION, KNOWN, NEW, OPEN, SETTLED,
                                           ChannelStore)
from wallet.merchant.closer import Closer
from wallet.merchant.pos_gossip import (MAX_OUTBOX, PosConfig, PosGossip, compute_peer_id,
                                        parse_receipts_request, receipts_request)
from wallet.receipts import (Receipt, ReceiptError, sign_receipt, verify_receipt)

PEER = "http://127.0.0.1:1"


def receipt(k, cumulative, pos=1, seed=PAYEE, payer_seed=PAYER):
    return sign_receipt(seed, GENESIS, CID, voucher(k, cumulative, payer_seed), pos)


def service_at(store, chain, index=0, peers=(PEER,), **options):  # noqa: F811
    return ChannelService(public_key(PAYEE), store, chain, payee_seed=PAYEE,
                          pos=PosConfig(index, peers, 10.0), **options)


# ---- receipts ----------------------------------------------------------------------------

def test_receipt_round_trip_and_verify():
    r = receipt(3, 30, pos=2)
    assert Receipt.decode(r.encode()) == r == Receipt.from_json(r.to_json())
    assert r.voucher == voucher(3, 30)
    assert verify_receipt(public_key(PAYEE), public_key(PAYER), GENESIS, r) is None


def test_invalid_receipt_signatures():
    payee, payer = public_key(PAYEE), public_key(PAYER)
    assert verify_receipt(payee, payer, GENESIS, receipt(1, 5, seed=PAYER)) == \
        "bad-receipt-signature"
    assert verify_receipt(payee, payer, GENESIS, receipt(1, 5, payer_seed=PAYEE)) == \
        "bad-voucher-signature"
    r = receipt(1, 5, pos=1)
    moved = Receipt(r.channel_id, r.k, r.cumulative, r.voucher_sig, 2, r.sig)  # pos changed
    assert verify_receipt(payee, payer, GENESIS, moved) == "bad-receipt-signature"
    assert verify_receipt(payee, payer, bytes(32), r) == "bad-receipt-signature"


@pytest.mark.parametrize("change", [{"k": 0}, {"k": True}, {"pos": 256}, {"sig": "00"},
                                    {"cumulative": 2**64}, {"channel_id": None}])
def test_invalid_receipt_json(change):
    with pytest.raises(ReceiptError):
        Receipt.from_json({**receipt(1, 5).to_json(), **change})


def test_invalid_receipt_encoding():
    raw = receipt(1, 5).encode()
    for bad in (raw + b"\x00", raw[:-1], b"\x90"):
        with pytest.raises(ReceiptError):
            Receipt.decode(bad)


# ---- store: learn and outbox ---------------------------------------------------------------

def test_store_learn_known_new_equivocation(store):  # noqa: F811
    channel = FakeChain().channels[CID]
    store.accept(CID, channel, voucher(1, 10))
    assert store.learn(CID, channel, voucher(1, 10)) == KNOWN
    assert store.learn(CID, channel, voucher(3, 40)) == NEW  # a gap is fine: best is k 3
    assert (store.get(CID).k, store.get(CID).cumulative) == (3, 40)
    assert store.learn(CID, channel, voucher(2, 20)) == NEW  # below the best: history only
    assert store.get(CID).k == 3 and store.voucher_at(CID, 2) == voucher(2, 20)
    assert store.learn(CID, channel, voucher(2, 25)) == EQUIVOCATION
    assert store.proof(CID) == (voucher(2, 20), voucher(2, 25))


def test_store_outbox_durable_and_drained(tmp_path):
    channel = FakeChain().channels[CID]
    a, b = compute_peer_id("http://a"), compute_peer_id("http://b/")
    with ChannelStore(tmp_path / "c") as s:
        for k in (1, 2, 3):
            s.accept(CID, channel, voucher(k, 10 * k), receipt=receipt(k, 10 * k).encode(),
                     peers=(a, b))
    with ChannelStore(tmp_path / "c") as s:  # reopened: the queue is still there
        assert (s.outbox_count(a), s.outbox_count(b)) == (3, 3)
        batch = s.outbox(a, 2)
        assert [Receipt.decode(v).k for _, v in batch] == [1, 2]
        s.outbox_done(a, [key for key, _ in batch])
        assert [Receipt.decode(v).k for _, v in s.outbox(a, 10)] == [3]
        s.accept(CID, channel, voucher(4, 40), receipt=receipt(4, 40).encode(), peers=(a,))
        assert [Receipt.decode(v).k for _, v in s.outbox(a, 10)] == [3, 4]
        assert s.outbox_count(a) == 2 and s.outbox_count(b) == 3


# ---- the voucher service with receipts -------------------------------------------------------

def test_service_answers_with_a_receipt_and_queues_it(store):  # noqa: F811
    service = service_at(store, FakeChain(), index=1)
    answer = trio.run(service.submit, CID, voucher(1, 10))
    got = Receipt.from_json(answer["receipt"])
    assert (got.k, got.cumulative, got.pos_index) == (1, 10, 1)
    assert verify_receipt(public_key(PAYEE), public_key(PAYER), GENESIS, got) is None
    assert store.outbox_count(compute_peer_id(PEER)) == 1
    again = trio.run(service.submit, CID, voucher(1, 10))  # re-delivery: same receipt
    assert again["duplicate"] and again["receipt"] == answer["receipt"]
    assert store.outbox_count(compute_peer_id(PEER)) == 1


def test_service_learns_the_cumulative_from_a_shown_receipt(store):  # noqa: F811
    service = service_at(store, FakeChain(), index=1, price=10)
    # paid k 1..3 at point 0; this point has heard nothing: k 4 needs the receipt
    assert trio.run(service.submit, CID, voucher(4, 310))["reason"] == "voucher-out-of-order"
    shown = receipt(3, 300, pos=0)
    assert trio.run(service.submit, CID, voucher(4, 305), shown)["reason"] == \
        "voucher-underpaid"  # 305 < 300 + price
    answer = trio.run(service.submit, CID, voucher(4, 310), shown)
    assert answer["accepted"] and (store.get(CID).k, store.get(CID).cumulative) == (4, 310)


def test_invalid_service_receipts(store):  # noqa: F811
    service = service_at(store, FakeChain(), index=1)
    forged = receipt(3, 300, seed=PAYER)  # not by the payee
    assert trio.run(service.submit, CID, voucher(4, 310), forged)["reason"] == \
        "bad-receipt-signature"
    other = sign_receipt(PAYEE, GENESIS, bytes(32), voucher(3, 300), 0)
    assert trio.run(service.submit, CID, voucher(4, 310), other)["reason"] == "bad-receipt"
    assert store.get(CID) is None  # nothing learned, nothing accepted


def test_service_receipt_reveals_equivocation(store):  # noqa: F811
    service = service_at(store, FakeChain(), index=1)
    trio.run(service.submit, CID, voucher(1, 10))  # the payer paid k 1 here ...
    # ... and k 1 for 50 at point 0, whose receipt it now shows
    answer = trio.run(service.submit, CID, voucher(2, 60), receipt(1, 50, pos=0))
    assert answer == {"accepted": False, "reason": "equivocation"}
    assert service.proofs == 1 and store.proof(CID) is not None


def test_service_takes_a_peer_push(store):  # noqa: F811
    chain = FakeChain()
    service = service_at(store, chain, index=0)
    trio.run(service.submit, CID, voucher(1, 10))
    other_cid = bytes([9]) * 32
    body = receipts_request(1, [receipt(1, 10).encode(), receipt(2, 20).encode(),
                                receipt(2, 25).encode(), receipt(3, 30, seed=PAYER).encode(),
                                sign_receipt(PAYEE, GENESIS, other_cid, voucher(1, 1), 1)
                                .encode()])
    pushed = parse_receipts_request(body[:-2] + b', {"k": 1}]}')
    answer = trio.run(service.take_receipts, pushed)
    assert (answer["learned"], answer["known"], answer["equivocations"]) == (1, 1, 1)
    assert answer["rejected"] == [{"index": 3, "reason": "bad-receipt-signature"},
                                  {"index": 4, "reason": "unknown-channel"},
                                  {"index": 5, "reason": "bad-encoding"}]
    assert store.proof(CID) == (voucher(2, 20), voucher(2, 25))


def test_invalid_push_bodies():
    for body in (b"nope", b"[]", b'{"receipts": 1}',
                 b'{"receipts": [' + b",".join([b"1"] * 257) + b"]}"):
        with pytest.raises(ValueError):
            parse_receipts_request(body)


# ---- gossip sync rule ------------------------------------------------------------------------

def test_gossip_unsynced_after_interval_or_full_outbox(tmp_path, monkeypatch):
    with ChannelStore(tmp_path / "c") as s:
        gossip = PosGossip(PosConfig(0, (PEER,), 5.0), s)
        assert gossip.unsynced() is None
        pid = compute_peer_id(PEER)
        gossip.last_sync[pid] = time.monotonic() - 6
        assert "no push acknowledged" in gossip.unsynced()
        gossip.last_sync[pid] = time.monotonic()
        monkeypatch.setitem(s._outbox_counts, pid, MAX_OUTBOX)
        assert "not yet delivered" in gossip.unsynced()


def test_service_refuses_when_unsynced(store):  # noqa: F811
    service = service_at(store, FakeChain())
    service.gossip.last_sync[compute_peer_id(PEER)] -= 60
    answer = trio.run(service.submit, CID, voucher(1, 10))
    assert answer["reason"] == "pos-unsynced" and store.get(CID) is None


def test_invalid_pos_config():
    with pytest.raises(ValueError):
        PosConfig(256)
    with pytest.raises(ValueError):
        PosConfig(0, ("ftp://x",))
    with pytest.raises(ValueError):
        ChannelService(public_key(PAYEE), None, FakeChain(), pos=PosConfig(0, (PEER,)))


# ---- closer roles --------------------------------------------------------------------------

def test_only_point_zero_closes_others_settle(tmp_path):
    chain = FakeChain(tip=25)
    with ChannelStore(tmp_path / "a") as sa, ChannelStore(tmp_path / "b") as sb:
        zero, one = service_at(sa, chain, 0), service_at(sb, chain, 1)
        for service in (zero, one):
            trio.run(service.submit, CID, voucher(1, 40))
        chain.tip = 26  # current round 27 = 29 - 2: point 1 stopped a round before point 0
        assert trio.run(one.submit, CID, voucher(2, 50))["reason"] == "channel-expired"
        assert trio.run(zero.submit, CID, voucher(2, 50))["accepted"]
        trio.run(Closer(PAYEE, one, chain).step, 26)  # close round, but point 1 never closes
        assert chain.sent == [] and sb.get(CID).status == OPEN
        trio.run(Closer(PAYEE, zero, chain).step, 26)
        assert [tx.kind for tx in chain.sent] == [CHANNEL_CLOSE]
        assert chain.sent[0].body.voucher == voucher(2, 50)
        del chain.channels[CID]  # closed on chain
        trio.run(Closer(PAYEE, one, chain).step, 27)
        assert sb.get(CID).status == SETTLED


def test_both_points_send_the_same_cheat(tmp_path):
    chain = FakeChain()
    with ChannelStore(tmp_path / "a") as sa, ChannelStore(tmp_path / "b") as sb:
        zero, one = service_at(sa, chain, 0), service_at(sb, chain, 1)
        trio.run(zero.submit, CID, voucher(1, 10))
        trio.run(one.submit, CID, voucher(1, 99))  # the same k at the other point
        for service, theirs in ((zero, voucher(1, 99)), (one, voucher(1, 10))):
            pushed = [sign_receipt(PAYEE, GENESIS, CID, theirs, 1 - service.pos.index)]
            assert trio.run(service.take_receipts, pushed)["equivocations"] == 1
            trio.run(Closer(PAYEE, service, chain).step, 10)
        a, b = chain.sent
        assert a.kind == CHANNEL_CHEAT and a.txid() == b.txid()
        assert (a.body.voucher_a.cumulative, a.body.voucher_b.cumulative) == (10, 99)


# ---- penalty guidance (channel open) --------------------------------------------------------

def test_penalty_guidance_per_point_and_points_of_sale():
    # seed 003: T^ 60 s, T~ 2 s, u2 50 units -> 1500 per other point of sale
    assert compute_penalty_guidance(Fraction(60), Fraction(2), 50, 2, 10**6) == (1500, 1500)
    assert compute_penalty_guidance(Fraction(60), Fraction(2), 50, 4, 10**6) == (1500, 4500)
    assert compute_penalty_guidance(Fraction(60), Fraction(2), 50, 1, 10**6) == (1500, 0)
    # a point never hands out more than the deposit
    assert compute_penalty_guidance(Fraction(60), Fraction(2), 50, 3, 1000) == (1000, 2000)
    text = penalty_explanation(Fraction(60), Fraction(2), 50, 4500, 4, 1500)
    assert "3 other points of sale x 1500" in text and "floor(T^ / T~ x u2)" in text
    with pytest.raises(ValueError):
        compute_penalty_guidance(Fraction(60), Fraction(2), 50, 0, 1000)


def test_refused_half_of_an_equivocation_goes_to_the_peers(store):  # noqa: F811
    service = service_at(store, FakeChain(), index=1)
    trio.run(service.take_receipts, [receipt(1, 10, pos=0)])  # point 0 took voucher 1
    assert trio.run(service.submit, CID, voucher(1, 99))["reason"] == "equivocation"
    (_, raw), = store.outbox(compute_peer_id(PEER), 10)
    sent = Receipt.decode(raw)
    assert (sent.k, sent.cumulative, sent.pos_index) == (1, 99, 1)  # point 0 gets the proof


def test_close_of_a_channel_gone_meanwhile_is_settled(store):  # noqa: F811
    from wallet.merchant.chainview import NodeRejected

    chain = FakeChain(tip=26)
    service = service_at(store, chain, 0)
    trio.run(service.submit, CID, voucher(1, 40))

    async def refuse(raw):
        raise NodeRejected("unknown-channel")
    chain.send_raw_transaction = refuse
    trio.run(Closer(PAYEE, service, chain).step, 26)
    assert store.get(CID).status == SETTLED


def test_channel_info_says_when_unsynced(store):  # noqa: F811
    service = service_at(store, FakeChain())
    assert "unsynced" not in service.channel_info(CID)
    service.gossip.last_sync[compute_peer_id(PEER)] -= 60
    assert "no push acknowledged" in service.channel_info(CID)["unsynced"]

"""The payee's side of payment channels (SPEC §16): the LevelDB channel store, the voucher
checks of ``ChannelService``, the closer, and the payer's voucher book."""

from __future__ import annotations

import json

import pytest
import trio

from consensus.channel import ChannelState, sign_voucher
from consensus.keys import public_key
from consensus.params import get_params
from consensus.tx import CHANNEL_CHEAT, CHANNEL_CLOSE, Tx
from wallet.customer.channelbook import ChannelBook, ChannelRecord
from wallet.merchant.channel_service import (ChannelService, VoucherRequestError,
                                             parse_voucher_request)
from wallet.merchant.channel_store import (CHEATED, CHEATING, CLOSED, CLOSING, EXPIRED, OPEN,
                                           ChannelStore, ChannelStoreError)
from wallet.merchant.closer import Closer
from wallet.walletdb import WalletDBError

PARAMS = get_params("regtest")  # confirm_depth 2
GENESIS = bytes([0x42]) * 32
PAYER, PAYEE = bytes([1]) * 32, bytes([2]) * 32
CID = bytes([7]) * 32
EXPIRY = 30


class FakeChain:
    """Just enough of a node for the channel side (the ``ChainView`` protocol)."""

    def __init__(self, tip=10):
        self.params = PARAMS
        self.genesis_hash = GENESIS
        self.tip = tip
        self.channels = {CID: ChannelState(public_key(PAYER), public_key(PAYEE), 1000, 50,
                                           EXPIRY)}
        self.txs: dict[bytes, tuple[str, int | None]] = {}
        self.sent: list[Tx] = []

    async def height(self, fresh=False):
        return self.tip

    async def channel(self, channel_id):
        return self.channels.get(channel_id)

    async def send_raw_transaction(self, raw):
        tx = Tx.decode(raw)
        self.sent.append(tx)
        self.txs[tx.txid()] = ("mempool", None)
        return tx.txid()

    async def transaction_status(self, txid):
        return self.txs.get(txid)

    def mine(self):
        self.tip += 1
        for txid, (status, _) in list(self.txs.items()):
            if status == "mempool":
                self.txs[txid] = ("confirmed", self.tip)


def voucher(k, cumulative, seed=PAYER):
    return sign_voucher(seed, GENESIS, CID, k, cumulative)


@pytest.fixture
def store(tmp_path):
    with ChannelStore(tmp_path / "channels") as s:
        yield s


def make_service(store, chain, **options):
    return ChannelService(public_key(PAYEE), store, chain, **options)


def submit(service, v, cid=CID):
    return trio.run(service.submit, cid, v)


# ---- store ---------------------------------------------------------------------------

def test_store_keeps_best_voucher_and_history_across_reopen(tmp_path):
    channel = FakeChain().channels[CID]
    with ChannelStore(tmp_path / "c") as s:
        s.accept(CID, channel, voucher(1, 10))
        s.accept(CID, channel, voucher(2, 30))
        s.set_status(CID, CLOSING, txid=bytes(32), sent_height=5)
    with ChannelStore(tmp_path / "c") as s:
        got = s.get(CID)
        assert (got.k, got.cumulative, got.status, got.txid, got.sent_height) == (
            2, 30, CLOSING, bytes(32), 5)
        assert got.voucher == voucher(2, 30)
        assert s.voucher_at(CID, 1) == voucher(1, 10) and s.voucher_at(CID, 3) is None
        assert [c.channel_id for c in s.live_channels()] == [CID]
        s.set_status(CID, CLOSED)
        assert s.live_channels() == [] and s.summaries()[0]["status"] == CLOSED


def test_store_proof_kept_once(store):
    assert store.add_proof(CID, voucher(1, 10), voucher(1, 20))
    assert not store.add_proof(CID, voucher(1, 10), voucher(1, 30))
    assert store.proof(CID) == (voucher(1, 10), voucher(1, 20))


def test_invalid_store_in_use(tmp_path, store):
    with pytest.raises(ChannelStoreError):
        ChannelStore(tmp_path / "channels")


# ---- request parsing -------------------------------------------------------------------

def test_parse_voucher_request_round_trip():
    v = voucher(3, 99)
    body = json.dumps({"channel_id": CID.hex(), "voucher": {"k": 3, "cumulative": 99,
                                                            "sig": v.sig.hex()}}).encode()
    assert parse_voucher_request(body) == (CID, v, None)


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"channel_id": "00"}',
                                  b'{"channel_id": "zz", "voucher": {}}'])
def test_invalid_voucher_request(body):
    with pytest.raises(VoucherRequestError):
        parse_voucher_request(body)


def test_invalid_voucher_request_bool_k():
    body = json.dumps({"channel_id": CID.hex(), "voucher": {"k": True, "cumulative": 1,
                                                            "sig": "00" * 64}}).encode()
    with pytest.raises(VoucherRequestError, match="voucher.k"):
        parse_voucher_request(body)


# ---- checks ----------------------------------------------------------------------------

def test_accepts_advancing_vouchers(store):
    service = make_service(store, FakeChain(), price=10)
    assert submit(service, voucher(1, 10)) == {"accepted": True, "k": 1, "cumulative": 10,
                                               "duplicate": False}
    assert submit(service, voucher(2, 25))["accepted"]
    assert service.channel_info(CID) == {"price": 10, "k": 2, "cumulative": 25,
                                         "status": OPEN, "pos": 0, "points_of_sale": 1,
                                         "sync_interval": None}
    # the same voucher again (a lost answer) is acknowledged, nothing changes
    assert submit(service, voucher(1, 10))["duplicate"] is True
    assert store.get(CID).k == 2


@pytest.mark.parametrize("v, reason", [
    (voucher(2, 10), "voucher-out-of-order"),
    (voucher(1, 9), "voucher-underpaid"),
    (voucher(1, 1001), "bad-voucher"),
    (voucher(1, 10, seed=PAYEE), "bad-voucher-signature"),
])
def test_invalid_voucher_reasons(store, v, reason):
    service = make_service(store, FakeChain(), price=10)
    assert submit(service, v) == {"accepted": False, "reason": reason}
    assert store.get(CID) is None


def test_invalid_voucher_unknown_channel_and_wrong_payee(store):
    chain = FakeChain()
    service = make_service(store, chain)
    assert submit(service, voucher(1, 1), cid=bytes(32))["reason"] == "unknown-channel"
    chain.channels[CID] = ChannelState(public_key(PAYER), public_key(PAYER), 1000, 0, EXPIRY)
    assert submit(service, voucher(1, 1))["reason"] == "wrong-payee"


def test_invalid_voucher_past_close_margin(store):
    # closable until 29; margin 2: accepted while current round + 2 <= 29
    service = make_service(store, FakeChain(tip=26), close_margin=2)
    assert submit(service, voucher(1, 1))["accepted"]
    service._view.tip = 27
    assert submit(service, voucher(2, 2)) == {"accepted": False, "reason": "channel-expired"}


def test_invalid_voucher_after_close_sent(store):
    service = make_service(store, FakeChain())
    submit(service, voucher(1, 1))
    store.set_status(CID, CLOSING, txid=bytes(32), sent_height=1)
    assert submit(service, voucher(2, 2)) == {"accepted": False, "reason": "channel-closing"}


def test_invalid_voucher_equivocation_kept(store):
    service = make_service(store, FakeChain())
    submit(service, voucher(1, 10))
    submit(service, voucher(2, 20))
    assert submit(service, voucher(1, 15)) == {"accepted": False, "reason": "equivocation"}
    assert store.proof(CID) == (voucher(1, 10), voucher(1, 15))
    assert service.proofs == 1
    # an unsigned one proves nothing
    assert submit(service, voucher(2, 21, seed=PAYEE))["reason"] == "bad-voucher-signature"


# ---- closer ----------------------------------------------------------------------------

def test_closer_closes_at_margin_and_confirms(store):
    chain = FakeChain(tip=25)
    service = make_service(store, chain, close_margin=2)
    closer = Closer(PAYEE, service, chain, fee=3)
    submit(service, voucher(1, 40))
    trio.run(closer.step, 25)  # current round 26 < 29 - 2
    assert chain.sent == []
    chain.tip = 26
    trio.run(closer.step, 26)  # current round 27 = 29 - 2: close with the best voucher
    (tx,) = chain.sent
    assert tx.kind == CHANNEL_CLOSE and tx.body.voucher == voucher(1, 40) and tx.fee == 3
    assert store.get(CID).status == CLOSING and store.get(CID).txid == tx.txid()
    chain.mine()
    trio.run(closer.step, chain.tip)  # depth 1 < confirm_depth 2
    assert store.get(CID).status == CLOSING
    chain.tip += 1
    trio.run(closer.step, chain.tip)
    assert store.get(CID).status == CLOSED


def test_closer_resends_vanished_close_then_expires(store):
    chain = FakeChain(tip=26)
    service = make_service(store, chain, close_margin=2)
    closer = Closer(PAYEE, service, chain)
    submit(service, voucher(1, 40))
    trio.run(closer.step, 26)
    chain.txs.clear()  # evicted
    trio.run(closer.step, 27)
    assert len(chain.sent) == 2 and chain.sent[0].txid() == chain.sent[1].txid()
    chain.txs.clear()
    trio.run(closer.step, EXPIRY)  # no block left that may include it
    assert store.get(CID).status == EXPIRED


def test_closer_closes_a_full_channel_early(store):
    chain = FakeChain()
    service = make_service(store, chain)
    submit(service, voucher(1, 1000))
    trio.run(Closer(PAYEE, service, chain).step, 10)
    assert [tx.kind for tx in chain.sent] == [CHANNEL_CLOSE]


def test_closer_proves_equivocation(store):
    chain = FakeChain()
    service = make_service(store, chain)
    closer = Closer(PAYEE, service, chain)
    submit(service, voucher(1, 10))
    submit(service, voucher(1, 11))
    trio.run(closer.step, 10)
    (tx,) = chain.sent
    assert tx.kind == CHANNEL_CHEAT
    assert (tx.body.voucher_a, tx.body.voucher_b) == (voucher(1, 10), voucher(1, 11))
    assert store.get(CID).status == CHEATING
    chain.mine()
    chain.tip += 1
    trio.run(closer.step, chain.tip)
    assert store.get(CID).status == CHEATED


def test_closer_replaces_pooled_close_after_equivocation(store):
    """An equivocation learned while the CHANNEL_CLOSE is still pooled: the service still
    takes the proof, and the closer sends a CHANNEL_CHEAT paying enough to replace it."""
    chain = FakeChain(tip=26)
    service = make_service(store, chain, close_margin=2)
    closer = Closer(PAYEE, service, chain, fee=5)
    submit(service, voucher(1, 40))
    submit(service, voucher(2, 80))
    trio.run(closer.step, 26)
    (close,) = chain.sent
    assert close.kind == CHANNEL_CLOSE and store.get(CID).status == CLOSING
    assert submit(service, voucher(3, 90)) == {"accepted": False, "reason": "channel-closing"}
    assert submit(service, voucher(1, 45)) == {"accepted": False, "reason": "equivocation"}
    trio.run(closer.step, 26)
    close_, cheat = chain.sent
    assert cheat.kind == CHANNEL_CHEAT and cheat.fee >= 2 * close.fee + len(cheat.encode())
    assert store.get(CID).status == CHEATING and store.get(CID).txid == cheat.txid()
    chain.mine()
    chain.tip += 1
    trio.run(closer.step, chain.tip)
    assert store.get(CID).status == CHEATED


def test_closer_keeps_close_when_the_replacement_is_refused(store):
    chain = FakeChain(tip=26)
    service = make_service(store, chain, close_margin=2)
    closer = Closer(PAYEE, service, chain)
    submit(service, voucher(1, 40))
    trio.run(closer.step, 26)
    close_txid = store.get(CID).txid
    store.add_proof(CID, voucher(1, 40), voucher(1, 41))
    chain.send_raw_transaction = _refusing("insufficient-fee")
    trio.run(closer.step, 27)
    assert store.get(CID).status == CLOSING and store.get(CID).txid == close_txid


def _refusing(reason):
    from wallet.merchant.chainview import NodeRejected

    async def send(raw):
        raise NodeRejected(reason)
    return send


# ---- the payer's voucher book ------------------------------------------------------------

def _record():
    return ChannelRecord(channel_id=CID.hex(), txid="00" * 32, payer_key="cust",
                         payer=public_key(PAYER).hex(), payee=public_key(PAYEE).hex(),
                         genesis_hash=GENESIS.hex(), deposit=100, penalty=0,
                         expiry_height=EXPIRY, fee=0)


def test_book_reserves_each_k_once(tmp_path):
    book = ChannelBook(tmp_path)
    book.add(_record())
    assert (book.reserve_voucher(CID.hex(), 30).k, book.get(CID.hex()).cumulative) == (1, 30)
    # unacknowledged: k 1 stays bound to 30, no second voucher until it is delivered
    with pytest.raises(WalletDBError, match="not acknowledged"):
        book.reserve_voucher(CID.hex(), 5)
    assert ChannelBook(tmp_path).get(CID.hex()).cumulative == 30
    book.acknowledge(CID.hex(), 1, "http://x")
    assert book.reserve_voucher(CID.hex(), 5).cumulative == 35


def test_invalid_book_over_deposit(tmp_path):
    book = ChannelBook(tmp_path)
    book.add(_record())
    with pytest.raises(WalletDBError, match="deposit"):
        book.reserve_voucher(CID.hex(), 101)
    assert book.get(CID.hex()).k == 0


def test_invalid_voucher_request_deeply_nested():
    with pytest.raises(VoucherRequestError, match="not JSON"):
        parse_voucher_request(b"[" * 4000)

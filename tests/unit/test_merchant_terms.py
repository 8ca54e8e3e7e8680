"""Merchant terms (docs/DESIGN.md, "Merchant terms and TLS"): the document, the rule, its
place among the SPEC §4.1 checks, the customer's pick, and the devnet CA's certificates."""

import ssl
from fractions import Fraction

import pytest
import trio

from consensus.escrow import (compute_escrow_amount, compute_min_penalty,
                              verify_escrow_params)
from consensus.keys import public_key
from consensus.params import get_params
from devnet.ca import make_local_ca
from tests.unit.test_merchant_service import (EID, GENESIS, MERCHANT, FakeChain, make_escrow,
                                              submit, tickets)
from wallet.customer.terms import MerchantOffer, TermsUnmet, pick_parameters
from wallet.merchant.service import MerchantService
from wallet.merchant.ticketstore import TicketStore
from wallet.terms import MerchantTerms, PublishedTerms, TermsError, parse_terms

PARAMS = get_params("regtest")


def unmet(terms, **changes):
    fields = dict(win_num=1, win_den=2, beta=20, tkt_rate=4, draw_len=2, l_esc=8,
                  penalty=10**6, merchants=2)
    fields.update(changes)
    return terms.unmet(PARAMS, **fields)


def test_default_terms_accept_every_valid_escrow():
    assert unmet(MerchantTerms()) is None
    assert unmet(MerchantTerms(), win_num=1, win_den=8, beta=1, l_esc=2, penalty=1) is None


def test_each_term_is_named():
    terms = MerchantTerms(price=10, p_min=Fraction(1, 4), p_max=Fraction(1, 2), beta_min=5,
                          beta_max=40, min_lifetime=8, min_penalty_margin=50).validate()
    assert unmet(terms) is None
    assert "below the least accepted p 1/4" in unmet(terms, win_den=8)
    assert "above the largest accepted p 1/2" in unmet(terms, win_num=3, win_den=4)
    assert "above the largest accepted beta 40" in unmet(terms, beta=41)
    assert "below the price 10 units" in unmet(terms, win_num=1, win_den=4, beta=39)
    assert "below the required 8 rounds" in unmet(terms, l_esc=6)
    least = compute_min_penalty(PARAMS, 2, 1, 2, 20, 4, 2)
    need = -(-least * 3 // 2)
    assert unmet(terms, penalty=need) is None
    assert unmet(terms, penalty=need - 1) == (
        f"penalty {need - 1} units is below the required {need} units (least valid {least} "
        "+ 50% margin, eq. (2))")


def test_contradictory_terms_refused():
    with pytest.raises(TermsError, match="empty"):
        MerchantTerms(beta_min=10, beta_max=5).validate()
    with pytest.raises(TermsError, match="no escrow fits"):
        MerchantTerms(price=10, p_max=Fraction(1, 10), beta_max=50).validate()
    with pytest.raises(TermsError, match="least p"):
        MerchantTerms(p_min=Fraction(1, 2), p_max=Fraction(1, 4)).validate()


def test_document_round_trip_and_bad_documents():
    terms = MerchantTerms(price=3, p_min=Fraction(1, 100), beta_max=900, min_lifetime=6,
                          min_penalty_margin=20)
    merchant = public_key(MERCHANT)
    from consensus.address import encode_address
    doc = terms.to_json(encode_address(merchant), PARAMS, GENESIS)
    read = parse_terms(doc)
    assert (read.merchant, read.chain, read.genesis_hash, read.terms) == (
        merchant, "regtest", GENESIS, terms)
    for key, value, message in (("version", 2, "version"), ("p_min", [2, 1], "p_min"),
                                ("price", -1, "price"), ("beta_max", "x", "beta_max"),
                                ("merchant", "nope", "not a MicroCash address")):
        with pytest.raises(TermsError, match=message):
            parse_terms({**doc, key: value})
    with pytest.raises(TermsError, match="lacks 'min_lifetime'"):
        parse_terms({k: v for k, v in doc.items() if k != "min_lifetime"})


def test_service_checks_terms_after_steps_1_and_2(tmp_path):
    chain = FakeChain()  # escrow EID: p 1/2, beta 2, l_esc 6; tip 13
    with TicketStore(tmp_path / "store") as store:
        service = MerchantService(public_key(MERCHANT), store, chain,
                                  terms=MerchantTerms(price=5))
        result = submit(service, tickets([10], merchant_index=0) + tickets([11, 59, 60]))
        assert result["accepted"] == 0
        assert result["rejected"] == [
            {"index": 0, "reason": "wrong-merchant"},
            {"index": 1, "reason": "terms-not-met",
             "detail": "p x beta = 1 units per ticket is below the price 5 units"},
            {"index": 2, "reason": "terms-not-met",  # wrong-round, but terms come first
             "detail": "p x beta = 1 units per ticket is below the price 5 units"},
            {"index": 3, "reason": "seqno-out-of-range"}]  # still kept as evidence
        assert len(store.evidence()) == 1
        chain.escrows[EID] = make_escrow(beta=10, escrow_balance=600)
        service = MerchantService(public_key(MERCHANT), store, chain,
                                  terms=MerchantTerms(price=5))
        assert submit(service, tickets([11]))["accepted"] == 1


def offer(url, **terms):
    return MerchantOffer(url, PublishedTerms(bytes(32), "regtest", bytes(32),
                                             MerchantTerms(**terms).validate()))


@pytest.mark.parametrize("offers,fixed", [
    ([offer("A", price=10, beta_max=30), offer("B", price=7, p_min=Fraction(1, 8))],
     dict(rounds=4)),
    ([offer("A", price=5, p_max=Fraction(1, 10), beta_max=60, min_lifetime=7,
            min_penalty_margin=25)], {}),
    ([offer("A", price=3, min_lifetime=2)], dict(beta=12, draw_len=2)),
])
def test_pick_meets_terms_and_consensus(offers, fixed):
    pick = pick_parameters(PARAMS, offers, 2, 4, **fixed)
    for o in offers:
        assert o.published.terms.unmet(
            PARAMS, win_num=pick.win_num, win_den=pick.win_den, beta=pick.beta,
            tkt_rate=4, draw_len=pick.draw_len, l_esc=pick.rounds, penalty=pick.penalty,
            merchants=2) is None
    amount = compute_escrow_amount(pick.win_num, pick.win_den, pick.beta, 4, pick.rounds)
    assert amount == pick.escrow_amount
    verify_escrow_params(PARAMS, amount, pick.penalty, pick.win_num, pick.win_den, pick.beta,
                         4, pick.draw_len, [bytes([1]) * 32, bytes([2]) * 32])
    for key, value in fixed.items():
        assert getattr(pick, key) == value


@pytest.mark.parametrize("offers,fixed,message", [
    ([offer("A", p_min=Fraction(1, 2)), offer("B", p_max=Fraction(1, 4))], dict(rounds=4),
     "A takes p >= 1/2 but B takes p <= 1/4"),
    ([offer("A", price=5, p_max=Fraction(1, 40))], dict(rounds=4),
     "the largest p 1/40 of A needs at least 40 tickets per draw, but tkt-rate 4 x draw-len "
     "<= 8 gives at most 32: use --tkt-rate >= 5"),
    ([offer("A", price=5)], dict(rounds=4, beta=4),
     "--beta 4: the price 5 units per ticket of A needs p >= 5/4, above the largest p 1"),
    ([offer("A", price=5)], {}, "give --rounds"),
    ([offer("A")], dict(rounds=4), "give --beta"),
])
def test_pick_names_the_term_it_cannot_meet(offers, fixed, message):
    with pytest.raises(TermsUnmet) as info:
        pick_parameters(PARAMS, offers, 2, 4, **fixed)
    assert message in str(info.value)


def test_local_ca_issues_a_verifiable_loopback_certificate(tmp_path):
    ca = make_local_ca(tmp_path)
    assert (ca.server_key.stat().st_mode & 0o777) == 0o600
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(ca.server_cert, ca.server_key)
    client = ssl.create_default_context(cafile=str(ca.cacert))

    async def serve_one(stream):
        await stream.do_handshake()
        await stream.aclose()

    async def handshake():
        listeners = await trio.open_ssl_over_tcp_listeners(0, server, host="127.0.0.1")
        port = listeners[0].transport_listener.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, serve_one, listeners)
            # the client checks the chain and that the IP 127.0.0.1 is in the certificate
            stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=client)
            await stream.do_handshake()
            await stream.aclose()
            nursery.cancel_scope.cancel()

    trio.run(handshake)

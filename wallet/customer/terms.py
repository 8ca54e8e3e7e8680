"""The customer's side of merchant terms: read ``GET /v1/terms`` of the merchants an
escrow is for and pick escrow parameters that meet all of them (``escrow create
--for-merchant URL``; docs/DESIGN.md, "Merchant terms and TLS").

The pick, given ``tkt_rate`` and whatever else the user fixed:
- the terms combine to the largest price, the narrowest ``p`` and ``β`` ranges, the
  longest lifetime and the largest penalty margin; an empty combination is reported with
  the two merchants whose terms clash;
- for each ``draw_len`` (the given one, or 1 … ``draw_len_max``; ``rounds`` a multiple of
  it) with ``a = tkt_rate·draw_len``, ``p = k/a`` with the least whole ``k`` (fewest
  winners, so fewest REDEEMs) that keeps ``p`` and ``β = max(β_min, ceil(price/p))`` in
  range; ``rounds`` = the given one or the least multiple of ``draw_len`` ≥ the required
  lifetime; the penalty = the least the margin allows over eq. (2);
- of these, the one with the least penalty deposit (the escrow amount is about
  ``price·tkt_rate·rounds`` for all), then the least ``p·β``, then the shortest draw.
``rounds`` must be given when no merchant requires a lifetime.
Every escrow this picks is checked against each merchant's ``MerchantTerms.unmet`` and
SPEC §3.1 before it is sent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from consensus.escrow import compute_min_penalty
from consensus.params import ChainParams
from wallet.terms import TERMS_PATH, PublishedTerms, TermsError, fraction_text, parse_terms

FETCH_TIMEOUT = 10.0  # seconds to wait for one merchant's terms


class TermsUnmet(Exception):
    """No escrow meets every merchant's terms (with what the user fixed); the message
    names the term and why."""


@dataclass(frozen=True)
class MerchantOffer:
    """One merchant's published terms and the URL they came from."""

    url: str
    published: PublishedTerms


@dataclass(frozen=True)
class Pick:
    """Escrow parameters meeting all terms: ``win_num/win_den`` (reduced), ``beta`` and
    ``penalty`` in units, ``rounds`` = ``l_esc``, plus ``least_penalty`` (floor(B)+1)."""

    win_num: int
    win_den: int
    beta: int
    tkt_rate: int
    draw_len: int
    rounds: int
    penalty: int
    least_penalty: int
    escrow_amount: int


def fetch_terms(url: str, timeout: float = FETCH_TIMEOUT) -> PublishedTerms:
    """``GET {url}/v1/terms``, parsed. Raises ``TermsError`` (bad answer or document)
    and ``OSError`` (unreachable; ``wallet.tlsconfig.TlsError`` for an untrusted
    certificate)."""
    from wallet.httpclient import HttpConnections

    connections = HttpConnections(url.rstrip("/") + TERMS_PATH, timeout)
    try:
        status, content = connections.request("GET")
    finally:
        connections.close()
    if status == 404:
        raise TermsError(f"{url} publishes no terms (GET {TERMS_PATH}: 404); is it a "
                         "MicroCash merchant service?")
    if status != 200:
        raise TermsError(f"{url}: GET {TERMS_PATH} answered HTTP {status}")
    try:
        doc = json.loads(content)
    except ValueError:
        raise TermsError(f"{url}: the terms are not JSON") from None
    try:
        return parse_terms(doc)
    except TermsError as exc:
        raise TermsError(f"{url}: {exc}") from None


def _bound(offers: Sequence[MerchantOffer], pick, largest: bool):
    """(value, url) of the tightest bound among the offers' ``pick(terms)`` (None = none)."""
    found = [(pick(o.published.terms), o.url) for o in offers
             if pick(o.published.terms) is not None]
    if not found:
        return None, None
    return (max if largest else min)(found, key=lambda item: item[0])


def pick_parameters(params: ChainParams, offers: Sequence[MerchantOffer], merchants: int,
                    tkt_rate: int, *, beta: int | None = None,
                    p: tuple[int, int] | None = None, rounds: int | None = None,
                    draw_len: int | None = None, penalty: int | None = None) -> Pick:
    """Escrow parameters for ``merchants`` beneficiaries that meet every offer's terms
    (see the module text for the rule); given values are kept. Raises ``TermsUnmet``
    naming the term (and merchant URL) that cannot be met, and why."""
    price, price_url = _bound(offers, lambda t: t.price or None, largest=True)
    price = price or 0
    p_lo, p_lo_url = _bound(offers, lambda t: t.p_min, largest=True)
    p_hi, p_hi_url = _bound(offers, lambda t: t.p_max, largest=False)
    b_lo, b_lo_url = _bound(offers, lambda t: t.beta_min, largest=True)
    b_hi, b_hi_url = _bound(offers, lambda t: t.beta_max, largest=False)
    life, life_url = _bound(offers, lambda t: t.min_lifetime or None, largest=True)
    margin_terms = max((o.published.terms for o in offers),
                       key=lambda t: t.min_penalty_margin)
    if p_lo is not None and p_lo > p_hi:
        raise TermsUnmet(f"{p_lo_url} takes p >= {fraction_text(p_lo)} but {p_hi_url} "
                         f"takes p <= {fraction_text(p_hi)}")
    if b_hi is not None and b_lo > b_hi:
        raise TermsUnmet(f"{b_lo_url} takes beta >= {b_lo} units but {b_hi_url} takes "
                         f"beta <= {b_hi}")
    if b_hi is not None and price > p_hi * b_hi:
        raise TermsUnmet(f"the price {price} units per ticket of {price_url} needs "
                         f"p x beta >= {price}, but p <= {fraction_text(p_hi)} ({p_hi_url})"
                         f" and beta <= {b_hi} ({b_hi_url}) give at most "
                         f"{fraction_text(p_hi * b_hi)}")
    if beta is not None:
        if beta < b_lo or (b_hi is not None and beta > b_hi):
            who = b_lo_url if beta < b_lo else b_hi_url
            raise TermsUnmet(f"--beta {beta}: {who} takes beta in {b_lo}..{b_hi or 'any'}")
        if Fraction(price, beta) > p_hi:
            raise TermsUnmet(f"--beta {beta}: the price {price} units per ticket of "
                             f"{price_url} needs p >= {fraction_text(Fraction(price, beta))}, "
                             f"above the largest p {fraction_text(p_hi)}"
                             f"{f' ({p_hi_url})' if p_hi_url else ''}")
    elif price == 0:
        raise TermsUnmet("no merchant sets a price, so nothing fixes beta: give --beta")
    given_p = None if p is None else Fraction(*p)
    if given_p is not None:
        if (p_lo is not None and given_p < p_lo) or given_p > p_hi:
            who = p_lo_url if p_lo is not None and given_p < p_lo else p_hi_url
            raise TermsUnmet(f"--p {fraction_text(given_p)}: {who} takes p in "
                             f"{fraction_text(p_lo) if p_lo else '0'}..{fraction_text(p_hi)}")
        if beta is not None and given_p * beta < price:
            raise TermsUnmet(f"--p x --beta = {fraction_text(given_p * beta)} units per "
                             f"ticket is below the price {price} of {price_url}")
    if rounds is None and life is None:
        raise TermsUnmet("no merchant requires a lifetime, so nothing fixes the rounds: "
                         "give --rounds")
    if rounds is not None and life is not None and rounds < life:
        raise TermsUnmet(f"--rounds {rounds} is below the lifetime {life} rounds that "
                         f"{life_url} requires")
    candidates: list[Pick] = []
    why: list[str] = []
    for d in ([draw_len] if draw_len is not None else range(1, params.draw_len_max + 1)):
        found = _pick_for_draw_len(params, d, tkt_rate, merchants, price, p_lo, p_hi, b_lo,
                                   b_hi, life, beta, given_p, rounds, margin_terms, why)
        if found is not None:
            candidates.append(found)
    if not candidates:
        raise TermsUnmet(_why_text(params, why, tkt_rate, p_hi, p_hi_url, price, price_url,
                                   b_hi, b_hi_url))
    best = min(candidates, key=lambda c: (c.penalty, c.beta * Fraction(c.win_num, c.win_den),
                                          c.draw_len))
    if penalty is not None:
        if penalty < best.penalty:
            raise TermsUnmet(f"--penalty {penalty} is below the {best.penalty} units the "
                             f"{margin_terms.min_penalty_margin}% margin asks (least valid "
                             f"{best.least_penalty})")
        best = Pick(**{**best.__dict__, "penalty": penalty})
    for offer in offers:  # the pick meets every merchant's own reading of its terms
        unmet = offer.published.terms.unmet(
            params, win_num=best.win_num, win_den=best.win_den, beta=best.beta,
            tkt_rate=best.tkt_rate, draw_len=best.draw_len, l_esc=best.rounds,
            penalty=best.penalty, merchants=merchants)
        if unmet is not None:
            raise TermsUnmet(f"{offer.url}: {unmet}")
    return best


def _pick_for_draw_len(params: ChainParams, d: int, tkt_rate: int, merchants: int,
                       price: int, p_lo, p_hi, b_lo: int, b_hi, life, beta, given_p, rounds,
                       margin_terms, why: list[str]) -> Pick | None:
    """The least-``k`` pick for draw length ``d``, or None (the reason added to ``why``)."""
    a = tkt_rate * d
    if a > params.max_draw_size:
        why.append(f"draw-len {d}: tkt-rate x draw-len = {a} > {params.max_draw_size}")
        return None
    if rounds is not None and rounds % d:
        why.append(f"draw-len {d}: --rounds {rounds} is not a multiple of it")
        return None
    l_esc = rounds if rounds is not None else d * max(1, math.ceil((life or 0) / d))
    if l_esc > params.max_escrow_rounds:
        why.append(f"lifetime {l_esc} rounds > the chain's {params.max_escrow_rounds}")
        return None
    if given_p is not None:
        k_frac = given_p * a
        if k_frac.denominator != 1:
            why.append(f"draw-len {d}: p x {a} tickets per draw is not whole")
            return None
        k_lo = k_hi = int(k_frac)
    else:
        k_lo = max(1, math.ceil((p_lo or 0) * a))
        k_hi = min(a, params.max_winners, math.floor(p_hi * a))
        if beta is not None:  # p·β >= price
            k_lo = max(k_lo, math.ceil(Fraction(price * a, beta)))
        elif b_hi is not None:  # ceil(price·a/k) <= β_max
            k_lo = max(k_lo, math.ceil(Fraction(price * a, b_hi)))
    if k_lo > k_hi or k_hi < 1:
        why.append(f"draw-len {d}: no whole number of winners k in {k_lo}..{k_hi} of "
                   f"{a} tickets per draw")
        return None
    k = k_lo
    if k > params.max_winners:
        why.append(f"draw-len {d}: {k} winners per draw > {params.max_winners}")
        return None
    b = beta if beta is not None else max(b_lo, math.ceil(Fraction(price * a, k)))
    if b_hi is not None and b > b_hi:
        why.append(f"draw-len {d}: beta {b} > {b_hi}")
        return None
    p = Fraction(k, a)
    least = compute_min_penalty(params, merchants, p.numerator, p.denominator, b, tkt_rate, d)
    return Pick(p.numerator, p.denominator, b, tkt_rate, d, l_esc,
                margin_terms.required_penalty(least), least, b * k * (l_esc // d))


def _why_text(params: ChainParams, why: list[str], tkt_rate: int, p_hi, p_hi_url, price,
              price_url, b_hi, b_hi_url) -> str:
    """Why no draw length works, naming the term where one is to blame."""
    most = tkt_rate * params.draw_len_max
    if p_hi * most < 1:
        need = math.ceil(1 / (p_hi * params.draw_len_max))
        return (f"the largest p {fraction_text(p_hi)} of {p_hi_url} needs at least "
                f"{math.ceil(1 / p_hi)} tickets per draw, but tkt-rate {tkt_rate} x draw-len "
                f"<= {params.draw_len_max} gives at most {most}: use --tkt-rate >= {need}")
    if b_hi is not None and price and Fraction(price, b_hi) > p_hi:
        return (f"the price {price} units of {price_url} needs p >= {price}/{b_hi} with "
                f"beta <= {b_hi} ({b_hi_url}), above the largest p {fraction_text(p_hi)}")
    return "no escrow meets all terms: " + "; ".join(why[:3]) + ("; …" if len(why) > 3 else "")


def plan_for_merchants(wallet, urls: Sequence[str], addresses: list[bytes], tkt_rate: int,
                       **fixed) -> tuple[list[bytes], Pick]:
    """For ``escrow create --for-merchant``: read each URL's terms, add its merchant to
    ``addresses`` (after the ``--merchant`` ones, in URL order, once each) and pick the
    parameters (``fixed``: the ``pick_parameters`` keywords the user gave).

    Returns ``(merchant addresses, Pick)``. Raises ``WalletError`` for an unreachable or
    untrusted service, a bad document, a merchant of another chain, or terms that cannot
    be met (the message names the term, the merchant URL and why).
    """
    from wallet.commands.common import WalletError, progress

    genesis = wallet.genesis_hash()
    offers = []
    merchants = list(addresses)
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise WalletError(f"--for-merchant {url!r} is not an http(s) URL of a merchant "
                              "service, e.g. http://127.0.0.1:8400")
        try:
            published = fetch_terms(url)
        except TermsError as exc:
            raise WalletError(str(exc)) from None
        except OSError as exc:
            raise WalletError(f"cannot read the terms of {url}: {exc}") from None
        if published.genesis_hash != genesis:
            raise WalletError(f"{url} serves chain {published.chain!r} (genesis "
                              f"{published.genesis_hash.hex()[:16]}…), not this node's")
        offers.append(MerchantOffer(url, published))
        if published.merchant not in merchants:
            merchants.append(published.merchant)
    if not 1 <= len(merchants) <= wallet.params().max_merchants:
        raise WalletError(f"need 1 to {wallet.params().max_merchants} merchants")
    try:
        pick = pick_parameters(wallet.params(), offers, len(merchants), tkt_rate, **fixed)
    except TermsUnmet as exc:
        raise WalletError(f"cannot meet the merchants' terms: {exc}") from None
    progress(f"terms of {len(offers)} merchant(s) met: p = {pick.win_num}/{pick.win_den}, "
             f"beta = {pick.beta} units, draw-len {pick.draw_len}, rounds {pick.rounds}, "
             f"penalty {pick.penalty} units (least valid {pick.least_penalty})")
    return merchants, pick

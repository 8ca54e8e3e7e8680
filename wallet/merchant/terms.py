"""The merchant's side of its terms: ``merchant serve`` options, the ``GET /v1/terms``
route and the per-escrow check behind the reject reason ``terms-not-met``.

The document and the rule itself live in ``wallet.terms`` (shared with the customer's
``escrow create --for-merchant``); docs/DESIGN.md, "Merchant terms and TLS", describes
them. An escrow's terms verdict depends only on its creation parameters, which never
change, so it is computed once per escrow and cached (bounded).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from fractions import Fraction
from typing import Any, Callable

import click

from consensus.address import encode_address
from consensus.escrow import EscrowState
from consensus.params import ChainParams
from wallet.terms import TERMS_PATH, MerchantTerms, TermsError

# Reasons of SPEC §4.1 that come before the terms check: an escrow that is not there, is
# broken or does not name this merchant says so first, and a signed out-of-range ticket
# stays evidence for a CHEAT_PROOF whatever the terms.
CHECKED_BEFORE_TERMS = frozenset({"unknown-escrow", "escrow-broken", "wrong-merchant",
                                  "seqno-out-of-range"})
CACHE_SIZE = 4096  # escrows whose verdict is remembered


class TermsChecker:
    """``unmet(escrow_id, escrow)``: the first term the escrow does not meet, or None."""

    def __init__(self, terms: MerchantTerms, params: ChainParams) -> None:
        self.terms = terms
        self._params = params
        self._verdicts: OrderedDict[bytes, str | None] = OrderedDict()

    def unmet(self, escrow_id: bytes, escrow: EscrowState) -> str | None:
        """The sentence naming the unmet term (``wallet.terms.MerchantTerms.unmet``), or
        None; cached per escrow id."""
        if escrow_id in self._verdicts:
            self._verdicts.move_to_end(escrow_id)
            return self._verdicts[escrow_id]
        verdict = self.terms.unmet(
            self._params, win_num=escrow.win_num, win_den=escrow.win_den, beta=escrow.beta,
            tkt_rate=escrow.tkt_rate, draw_len=escrow.draw_len, l_esc=escrow.l_esc,
            penalty=escrow.penalty_balance, merchants=len(escrow.merchants))
        self._verdicts[escrow_id] = verdict
        if len(self._verdicts) > CACHE_SIZE:
            self._verdicts.popitem(last=False)
        return verdict


def terms_route(terms: MerchantTerms, merchant_pubkey: bytes, params: ChainParams,
                genesis_hash: bytes) -> Any:
    """The Starlette ``Route`` of ``GET /v1/terms``: the terms document (docs/DESIGN.md)."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    document = terms.to_json(encode_address(merchant_pubkey), params, genesis_hash)

    async def get_terms(request: Any) -> Any:
        return JSONResponse(document)

    return Route(TERMS_PATH, get_terms, methods=["GET"])


# --------------------------------------------------------------------------- options


class _Probability(click.ParamType):
    name = "NUM/DEN"

    def convert(self, value: Any, param: Any, ctx: Any) -> Fraction:
        if isinstance(value, Fraction):
            return value
        try:
            num, _, den = str(value).partition("/")
            result = Fraction(int(num), int(den) if den else 1)
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r} is not a probability NUM/DEN such as 1/100", param, ctx)
        if not 0 < result <= 1:
            self.fail(f"{value} is not in (0, 1]", param, ctx)
        return result


def terms_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the terms options of ``merchant serve`` to ``command``; they reach it as one
    ``terms`` keyword: a validated ``MerchantTerms`` (all defaults: accept every valid
    escrow, as before terms existed). A contradiction is a click usage error."""
    from wallet.commands.common import UNITS

    names = ("price", "min_p", "max_p", "min_beta", "max_beta", "min_lifetime",
             "min_penalty_margin")

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in names}
        try:
            kwargs["terms"] = MerchantTerms(
                price=given["price"], p_min=given["min_p"],
                p_max=given["max_p"] or Fraction(1), beta_min=given["min_beta"],
                beta_max=given["max_beta"], min_lifetime=given["min_lifetime"],
                min_penalty_margin=given["min_penalty_margin"]).validate()
        except TermsError as exc:
            raise click.UsageError(f"terms: {exc}") from None
        return command(*args, **kwargs)

    options = [
        click.option("--price", type=UNITS, default=0, show_default=True,
                     help="Least value p x beta of one ticket, in UNITS; tickets of escrows "
                          "worth less per ticket are refused (terms-not-met)."),
        click.option("--min-p", type=_Probability(), default=None,
                     help="Least winning probability p accepted (NUM/DEN); default: any."),
        click.option("--max-p", type=_Probability(), default=None,
                     help="Largest winning probability p accepted; default 1."),
        click.option("--min-beta", type=UNITS, default=1, show_default=True,
                     help="Least payout beta per winning ticket accepted, in UNITS."),
        click.option("--max-beta", type=UNITS, default=None,
                     help="Largest payout beta accepted, in UNITS; default: any."),
        click.option("--min-lifetime", type=click.IntRange(min=0), default=0,
                     show_default=True,
                     help="Least escrow lifetime l_esc (issuing rounds = blocks) accepted."),
        click.option("--min-penalty-margin", type=click.IntRange(0, 100_000), default=0,
                     show_default=True, metavar="PERCENT",
                     help="Percent the penalty deposit must exceed the least valid one "
                          "(floor(B)+1 of SPEC eq. (2)) by, e.g. 50."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper

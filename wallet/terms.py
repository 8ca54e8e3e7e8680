"""A merchant's terms: the ``GET /v1/terms`` document and the check of an escrow against it.

A merchant publishes what escrows it takes tickets of (docs/DESIGN.md, "Merchant terms
and TLS"): the least value of a ticket ``p·β`` (its *price*), the accepted ranges of the
winning probability ``p`` and of the payout ``β``, the least lifetime ``l_esc`` and the
least margin of the penalty deposit over the least valid one, ``floor(B) + 1`` of SPEC
§3.1 eq. (2). The merchant's service rejects tickets of an escrow outside its terms with
the reason ``terms-not-met`` (``wallet.merchant.terms``); the customer's ``escrow create
--for-merchant`` reads the documents and picks parameters that meet all of them
(``wallet.customer.terms``). Both sides use this module, so they read the terms alike.

Default terms (``MerchantTerms()``) accept every escrow that is valid on chain: a
merchant started without terms options behaves as before terms existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from consensus.escrow import compute_min_penalty
from consensus.params import ChainParams

TERMS_VERSION = 1
TERMS_PATH = "/v1/terms"
TERMS_NOT_MET = "terms-not-met"  # the SPEC §13 reject reason this adds
MAX_MARGIN_PERCENT = 100_000  # a penalty margin above 1000 x is a typo, not a policy
MAX_WIN_DEN = 2**32 - 1  # SPEC §3.1: win_den < 2^32


class TermsError(ValueError):
    """A terms document or option that is malformed or contradicts itself."""


def fraction_text(value: Fraction) -> str:
    """``1/300`` (or ``1`` for whole numbers): how the wallet writes probabilities."""
    return str(value.numerator) if value.denominator == 1 else \
        f"{value.numerator}/{value.denominator}"


def _fraction_json(value: Fraction | None) -> list[int] | None:
    return None if value is None else [value.numerator, value.denominator]


def _fraction_from_json(value: Any, name: str) -> Fraction | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(type(v) is int for v in value) or not 0 < value[0] <= value[1]):
        raise TermsError(f"{name} must be [num, den] with 0 < num <= den, got {value!r}")
    return Fraction(value[0], value[1])


def _int_from_json(value: Any, name: str, minimum: int, nullable: bool = False) -> int | None:
    if value is None and nullable:
        return None
    if type(value) is not int or not minimum <= value < 2**63:
        raise TermsError(f"{name} must be an integer >= {minimum}"
                         f"{' or null' if nullable else ''}, got {value!r}")
    return value


@dataclass(frozen=True)
class MerchantTerms:
    """What escrow a merchant takes tickets of (amounts in units, lifetimes in rounds).

    ``price``: least ``p·β`` (expected value of one ticket); ``p_min``/``p_max``: accepted
    winning probabilities (``p_min`` None: any ``p > 0``); ``beta_min``/``beta_max``:
    accepted payouts (``beta_max`` None: no upper bound); ``min_lifetime``: least
    ``l_esc``; ``min_penalty_margin``: percent the penalty deposit must exceed the least
    valid penalty ``floor(B) + 1`` (SPEC §3.1 eq. (2), for the escrow's own merchant
    count) by. ``validate`` raises ``TermsError`` for a contradiction.
    """

    price: int = 0
    p_min: Fraction | None = None
    p_max: Fraction = Fraction(1)
    beta_min: int = 1
    beta_max: int | None = None
    min_lifetime: int = 0
    min_penalty_margin: int = 0

    def validate(self) -> MerchantTerms:
        """``self`` if consistent; raises ``TermsError`` naming the contradiction."""
        if not 0 <= self.price < 2**63:
            raise TermsError(f"price {self.price} must be a whole number of units >= 0")
        if not 0 < self.p_max <= 1:
            raise TermsError(f"the largest p {fraction_text(self.p_max)} must be in (0, 1]")
        if self.p_min is not None and not 0 < self.p_min <= self.p_max:
            raise TermsError(f"the least p {fraction_text(self.p_min)} must be in "
                             f"(0, {fraction_text(self.p_max)}] (the largest p)")
        if self.beta_min < 1 or (self.beta_max is not None and self.beta_max < self.beta_min):
            raise TermsError(f"the beta range {self.beta_min}..{self.beta_max} is empty")
        if self.beta_max is not None and self.price > self.p_max * self.beta_max:
            raise TermsError(f"price {self.price} units exceeds the largest p x beta "
                             f"{fraction_text(self.p_max)} x {self.beta_max}: no escrow fits")
        if self.min_lifetime < 0:
            raise TermsError("the required lifetime must be >= 0 rounds")
        if not 0 <= self.min_penalty_margin <= MAX_MARGIN_PERCENT:
            raise TermsError(f"the penalty margin must be 0..{MAX_MARGIN_PERCENT} percent")
        return self

    def required_penalty(self, least: int) -> int:
        """The least penalty deposit these terms take, given the least valid one ``least``
        (``floor(B) + 1``): ``ceil(least · (100 + margin) / 100)`` units."""
        return -(-least * (100 + self.min_penalty_margin) // 100)

    def unmet(self, params: ChainParams, *, win_num: int, win_den: int, beta: int,
              tkt_rate: int, draw_len: int, l_esc: int, penalty: int, merchants: int
              ) -> str | None:
        """The first term an escrow with these parameters does not meet, as a sentence
        naming the term and the numbers; ``None`` if it meets all of them.

        Order: p range, β range, price ``p·β``, lifetime, penalty margin (the last needs
        eq. (2), the costly one). ``merchants`` is the escrow's merchant count ``m``.
        """
        p = Fraction(win_num, win_den)
        if self.p_min is not None and p < self.p_min:
            return f"p = {fraction_text(p)} is below the least accepted p {fraction_text(self.p_min)}"
        if p > self.p_max:
            return f"p = {fraction_text(p)} is above the largest accepted p {fraction_text(self.p_max)}"
        if beta < self.beta_min:
            return f"beta = {beta} units is below the least accepted beta {self.beta_min}"
        if self.beta_max is not None and beta > self.beta_max:
            return f"beta = {beta} units is above the largest accepted beta {self.beta_max}"
        if p * beta < self.price:
            return (f"p x beta = {fraction_text(p * beta)} units per ticket is below the "
                    f"price {self.price} units")
        if l_esc < self.min_lifetime:
            return (f"lifetime l_esc = {l_esc} rounds is below the required "
                    f"{self.min_lifetime} rounds")
        if self.min_penalty_margin:
            least = compute_min_penalty(params, merchants, win_num, win_den, beta, tkt_rate,
                                        draw_len)
            need = self.required_penalty(least)
            if penalty < need:
                return (f"penalty {penalty} units is below the required {need} units "
                        f"(least valid {least} + {self.min_penalty_margin}% margin, eq. (2))")
        return None

    def to_json(self, merchant: str, params: ChainParams, genesis_hash: bytes) -> dict[str, Any]:
        """The ``GET /v1/terms`` document (docs/DESIGN.md) of merchant address ``merchant``
        (bech32m text) on the chain of ``params`` / ``genesis_hash``."""
        return {"version": TERMS_VERSION, "merchant": merchant, "chain": params.name,
                "genesis_hash": genesis_hash.hex(), "price": self.price,
                "p_min": _fraction_json(self.p_min), "p_max": _fraction_json(self.p_max),
                "beta_min": self.beta_min, "beta_max": self.beta_max,
                "min_lifetime": self.min_lifetime,
                "min_penalty_margin": self.min_penalty_margin}


@dataclass(frozen=True)
class PublishedTerms:
    """A terms document as read back: the merchant's address (32 bytes), its chain name
    and genesis hash, and its ``MerchantTerms``."""

    merchant: bytes
    chain: str
    genesis_hash: bytes
    terms: MerchantTerms


def parse_terms(doc: Any) -> PublishedTerms:
    """Read a ``GET /v1/terms`` document (a decoded JSON value).

    Raises ``TermsError`` naming the first bad field: unknown version, missing or
    mistyped field, or terms that contradict themselves.
    """
    from consensus.address import decode_address

    if not isinstance(doc, dict):
        raise TermsError("the terms document is not a JSON object")
    if doc.get("version") != TERMS_VERSION:
        raise TermsError(f"terms version {doc.get('version')!r} is not {TERMS_VERSION}")
    try:
        merchant = decode_address(str(doc["merchant"]))
        genesis = bytes.fromhex(str(doc["genesis_hash"]))
        if len(genesis) != 32 or not isinstance(doc["chain"], str):
            raise ValueError("genesis_hash must be 32 bytes of hex, chain a string")
        terms = MerchantTerms(
            price=_int_from_json(doc["price"], "price", 0),
            p_min=_fraction_from_json(doc["p_min"], "p_min"),
            p_max=_fraction_from_json(doc["p_max"], "p_max") or Fraction(1),
            beta_min=_int_from_json(doc["beta_min"], "beta_min", 1),
            beta_max=_int_from_json(doc["beta_max"], "beta_max", 1, nullable=True),
            min_lifetime=_int_from_json(doc["min_lifetime"], "min_lifetime", 0),
            min_penalty_margin=_int_from_json(doc["min_penalty_margin"],
                                              "min_penalty_margin", 0))
    except KeyError as exc:
        raise TermsError(f"the terms document lacks {exc.args[0]!r}") from None
    except TermsError:
        raise
    except ValueError as exc:
        raise TermsError(f"bad terms document: {exc}") from None
    return PublishedTerms(merchant, doc["chain"], genesis, terms.validate())

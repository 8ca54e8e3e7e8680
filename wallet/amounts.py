"""Amounts as people type and read them: MCASH decimals and base units (SPEC §0).

1 MCASH = 10^8 units. The wallet's one rule for typed amounts:

- a plain number is **MCASH**: ``1``, ``1.5``, ``0.00000001`` (at most 8 decimal places);
- a number with the suffix ``u`` is **units**: ``150000000u``, ``1u`` (whole numbers only).

Options whose help says UNITS (``--fee``, ``--beta``, ``--penalty``) take whole units and
accept the same ``u`` suffix, so ``--fee 1000`` and ``--fee 1000u`` mean the same.
Nothing else is accepted: no signs, exponents, thousands separators or spaces inside.
"""

from __future__ import annotations

import re

from consensus.params import COIN

DECIMALS = 8  # decimal places of one unit in MCASH
MAX_AMOUNT = 2**63 - 1  # units; every amount is below 2^63 (SPEC §0)

_MCASH = re.compile(r"(?P<whole>\d*)(?:\.(?P<frac>\d*))?")
_UNITS = re.compile(r"(?P<digits>\d+)u(?:nits?)?")
_PLAIN_UNITS = re.compile(r"\d+(?:u(?:nits?)?)?")


def parse_amount(text: str) -> int:
    """Parse an amount typed by a user into units.

    ``"1.5"`` (MCASH) -> 150000000; ``"150u"`` (units) -> 150. Surrounding whitespace and
    letter case are ignored; ``unit``/``units`` are accepted for ``u``. Raises ValueError
    with a readable message for anything else: empty text, a sign, more than 8 decimal
    places, a fractional unit count, or a value of 2^63 units or more. Zero is allowed
    (callers that need a positive amount check that themselves).
    """
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {type(text).__name__}")
    s = text.strip().lower()
    if not s:
        raise ValueError("empty amount")
    match = _UNITS.fullmatch(s)
    if match:
        return _checked(int(match["digits"]), text)
    if s.endswith(("u", "unit", "units")):
        raise ValueError(
            f"{text!r}: a unit count is a whole number followed by 'u', e.g. 150u"
        )
    match = _MCASH.fullmatch(s)
    if not match or not (match["whole"] or match["frac"]):
        raise ValueError(
            f"{text!r} is not an amount: write MCASH as a decimal (1.5) "
            "or units with a 'u' suffix (150000000u)"
        )
    frac = match["frac"] or ""
    if len(frac) > DECIMALS:
        raise ValueError(
            f"{text!r} has {len(frac)} decimal places; MCASH has {DECIMALS} "
            "(the smallest amount is 0.00000001, i.e. 1u)"
        )
    units = int(match["whole"] or "0") * COIN + int(frac.ljust(DECIMALS, "0") or "0")
    return _checked(units, text)


def parse_units(text: str) -> int:
    """Parse a whole number of units, with or without the ``u`` suffix (``"1000"``, ``"1000u"``).

    Raises ValueError for a sign, a decimal point, any other text, or 2^63 or more.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {type(text).__name__}")
    s = text.strip().lower()
    if not _PLAIN_UNITS.fullmatch(s):
        raise ValueError(
            f"{text!r} is not a whole number of units (e.g. 1000 or 1000u; "
            f"1 MCASH = {COIN} units)"
        )
    return _checked(int(s.rstrip("nitsu")), text)


def _checked(units: int, text: str) -> int:
    if units > MAX_AMOUNT:
        raise ValueError(f"{text!r} is too large: amounts are below 2^63 units")
    return units


def format_mcash(units: int) -> str:
    """``150000000`` -> ``"1.5"``: exact, trailing zeros trimmed, at least one decimal."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), COIN)
    frac_text = f"{frac:0{DECIMALS}d}".rstrip("0") or "0"
    return f"{sign}{whole}.{frac_text}"


def format_amount(units: int) -> str:
    """``150000000`` -> ``"1.5 MCASH (150000000 units)"``, the wallet's display form."""
    return f"{format_mcash(units)} MCASH ({units} units)"

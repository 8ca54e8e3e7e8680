"""Escrow state, creation checks and issuing schedule (SPEC §3, paper §4.1, eqs. (1), (2)).

All arithmetic is exact: ``p = win_num / win_den`` is a ``Fraction``.
"""

from dataclasses import dataclass, replace
from fractions import Fraction

from consensus.address import decode_address, encode_address
from consensus.encoding import (expect_bool, expect_bytes, expect_int, expect_list, packb,
                                unpackb_canonical)
from consensus.errors import ConsensusError
from consensus.hashing import tagged_hash
from consensus.params import ChainParams


@dataclass(frozen=True)
class EscrowState:
    """An escrow's on-chain state (SPEC §3.2)."""

    owner: bytes              # 32-byte customer key; signs tickets, receives the refund
    escrow_balance: int       # units left for winning tickets
    penalty_balance: int      # units burned on proof of cheating
    win_num: int              # p = win_num / win_den
    win_den: int
    beta: int                 # units paid per winning ticket
    tkt_rate: int             # sequence numbers per round
    draw_len: int             # rounds per draw group
    l_esc: int                # lifetime in issuing rounds
    merchants: tuple[bytes, ...]  # beneficiaries, 32-byte keys
    created_height: int       # height of the including block
    start: int                # first issuing round
    t_refund: int             # height whose block refunds the residue
    broken: bool              # a proof of cheating was accepted

    @property
    def N(self) -> int:
        """Total sequence numbers ``l_esc * tkt_rate``."""
        return self.l_esc * self.tkt_rate

    @property
    def draw_size(self) -> int:
        """``a = tkt_rate * draw_len``, sequence numbers per draw group."""
        return self.tkt_rate * self.draw_len

    @property
    def winners_per_draw(self) -> int:
        """``k = p * a``, an integer by construction."""
        return self.draw_size * self.win_num // self.win_den

    @property
    def groups(self) -> int:
        """Number of draw groups ``l_esc / draw_len``."""
        return self.l_esc // self.draw_len

    def to_obj(self) -> list:
        """The msgpack array stored in the state."""
        return [self.owner, self.escrow_balance, self.penalty_balance, self.win_num,
                self.win_den, self.beta, self.tkt_rate, self.draw_len, self.l_esc,
                list(self.merchants), self.created_height, self.start, self.t_refund,
                self.broken]

    def encode(self) -> bytes:
        """Canonical bytes; remembered so decoding them again returns this (immutable)
        object without re-parsing (a REDEEM updates its escrow once per ticket)."""
        raw = packb(self.to_obj())
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.clear()
        _RECENT[raw] = self
        return raw

    @classmethod
    def decode(cls, data: bytes) -> "EscrowState":
        """Inverse of ``encode``; raises ``DecodeError``."""
        known = _RECENT.get(data)
        if known is not None:
            return known
        f = expect_list(unpackb_canonical(data), 14, "escrow")
        expect_bytes(f[0], 32, "owner")
        for i in (1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12):
            expect_int(f[i], "escrow field")
        merchants = tuple(expect_bytes(m, 32, "merchant") for m in expect_list(f[9]))
        expect_bool(f[13], "broken")
        return cls(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], merchants,
                   f[10], f[11], f[12], f[13])

    def to_json(self) -> dict:
        """JSON-friendly dict with ``N`` and ``groups`` (SPEC §12 getescrow): owner and
        merchants as bech32m addresses."""
        return {"owner": encode_address(self.owner), "escrow_balance": self.escrow_balance,
                "penalty_balance": self.penalty_balance, "win_num": self.win_num,
                "win_den": self.win_den, "beta": self.beta, "tkt_rate": self.tkt_rate,
                "draw_len": self.draw_len, "l_esc": self.l_esc,
                "merchants": [encode_address(m) for m in self.merchants],
                "created_height": self.created_height, "start": self.start,
                "t_refund": self.t_refund, "broken": self.broken, "N": self.N,
                "groups": self.groups}

    @classmethod
    def from_rpc(cls, d: dict) -> "EscrowState":
        """Parse the ``getescrow`` RPC result (addresses bech32m or hex); raises
        ``KeyError``/``ValueError``."""
        return cls(decode_address(d["owner"]), int(d["escrow_balance"]),
                   int(d["penalty_balance"]), int(d["win_num"]), int(d["win_den"]),
                   int(d["beta"]), int(d["tkt_rate"]), int(d["draw_len"]), int(d["l_esc"]),
                   tuple(decode_address(m) for m in d["merchants"]), int(d["created_height"]),
                   int(d["start"]), int(d["t_refund"]), bool(d["broken"]))

    def replace(self, **changes) -> "EscrowState":
        """A copy with some fields changed."""
        return replace(self, **changes)


_RECENT: dict[bytes, EscrowState] = {}  # encodings made lately -> their (frozen) state
_RECENT_MAX = 4096


def compute_escrow_id(block_hash: bytes, txid: bytes) -> bytes:
    """``H(b"escrow", block_hash || txid)`` — chosen by the including block (SPEC §3.2)."""
    return tagged_hash(b"escrow", block_hash + txid)


# ---- creation checks (SPEC §3.1) -------------------------------------------------------

def compute_lifetime(escrow_amount: int, win_num: int, win_den: int, beta: int,
                     tkt_rate: int) -> Fraction:
    """``l_esc = escrow_amount / (beta * p * tkt_rate)`` as an exact fraction (eq. (1))."""
    return Fraction(escrow_amount) / (beta * Fraction(win_num, win_den) * tkt_rate)


def compute_escrow_amount(win_num: int, win_den: int, beta: int, tkt_rate: int,
                          l_esc: int) -> int:
    """``escrow_amount = beta * p * tkt_rate * l_esc`` (eq. (1)); raises ``ValueError``
    when that is not a whole number of units."""
    amount = beta * Fraction(win_num, win_den) * tkt_rate * l_esc
    if amount.denominator != 1:
        raise ValueError("beta * p * tkt_rate * l_esc is not a whole number of units")
    return int(amount)


def _penalty_terms(params: ChainParams, m: int, p: Fraction, beta: int, tkt_rate: int,
                   draw_len: int) -> tuple[Fraction, Fraction]:
    """``(A, D)`` with ``B = A + D / (rho - 1)`` — equation (2) rearranged (SPEC §3.1)."""
    f = (m - 1) * p * beta * tkt_rate * draw_len
    q = 1 - p
    a_term = f * (q + draw_len * (q * (params.d_draw - 1) + params.d_redeem))
    return a_term, f * q


def _binomial_exceeds(a: int, k: int, limit: Fraction) -> tuple[bool, int]:
    """Build ``C(a, k)`` term by term; stop once it is known to exceed ``limit``.

    Returns ``(True, partial)`` if ``C(a, k) > limit`` was decided early, else
    ``(False, C(a, k))`` with the exact value.
    """
    k = min(k, a - k)
    c = 1
    for i in range(1, k + 1):
        c = c * (a - k + i) // i  # C(a-k+i, i): increasing in i, ends at C(a, k)
        if c > limit:
            return True, c
    return False, c


def is_penalty_sufficient(params: ChainParams, penalty: int, m: int, win_num: int,
                          win_den: int, beta: int, tkt_rate: int, draw_len: int) -> bool:
    """Exactly ``penalty > B`` of equation (2), without building huge binomials."""
    p = Fraction(win_num, win_den)
    a = tkt_rate * draw_len
    k_frac = p * a
    a_term, d_term = _penalty_terms(params, m, p, beta, tkt_rate, draw_len)
    if penalty <= a_term:
        return False
    if d_term == 0:
        return True
    # penalty > B  <=>  (penalty - A)(rho - 1) > D  <=>  rho > D / (penalty - A) + 1
    limit = d_term / (penalty - a_term) + 1
    decided, rho = _binomial_exceeds(a, int(k_frac), limit)
    return decided or rho > limit


def compute_min_penalty(params: ChainParams, m: int, win_num: int, win_den: int, beta: int,
                        tkt_rate: int, draw_len: int) -> int:
    """The least valid penalty ``floor(B) + 1`` of equation (2) (SPEC §3.1), exact."""
    p = Fraction(win_num, win_den)
    a = tkt_rate * draw_len
    a_term, d_term = _penalty_terms(params, m, p, beta, tkt_rate, draw_len)
    first = a_term.numerator // a_term.denominator + 1  # least integer > A
    if d_term == 0:
        return first
    gap = first - a_term  # in (0, 1]
    decided, rho = _binomial_exceeds(a, int(p * a), d_term / gap + 1)
    if decided:  # D / (rho - 1) < gap, so floor(B) = floor(A)
        return first
    b = a_term + d_term / (rho - 1)
    return b.numerator // b.denominator + 1


def verify_escrow_params(params: ChainParams, escrow_amount: int, penalty_amount: int,
                         win_num: int, win_den: int, beta: int, tkt_rate: int, draw_len: int,
                         merchants: list[bytes]) -> int:
    """SPEC §3.1 checks in order (all but the balance); returns ``l_esc``.

    Raises ``ConsensusError``: bad-escrow-params, bad-merchants, bad-winners,
    bad-lifetime, penalty-too-low.
    """
    if not (0 < win_num <= win_den < 2**32 and beta > 0 and tkt_rate > 0
            and 1 <= draw_len <= params.draw_len_max):
        raise ConsensusError("bad-escrow-params")
    m = len(merchants)
    if not 1 <= m <= params.max_merchants or len(set(merchants)) != m:
        raise ConsensusError("bad-merchants")
    a = tkt_rate * draw_len
    k = Fraction(win_num, win_den) * a
    if k.denominator != 1 or k < 1 or a > params.max_draw_size or k > params.max_winners:
        raise ConsensusError("bad-winners")
    l_esc = compute_lifetime(escrow_amount, win_num, win_den, beta, tkt_rate)
    if (l_esc.denominator != 1 or l_esc % draw_len != 0
            or not draw_len <= l_esc <= params.max_escrow_rounds):
        raise ConsensusError("bad-lifetime")
    if not is_penalty_sufficient(params, penalty_amount, m, win_num, win_den, beta,
                                 tkt_rate, draw_len):
        raise ConsensusError("penalty-too-low")
    return int(l_esc)


# ---- schedule (SPEC §3.2) --------------------------------------------------------------

def compute_start(params: ChainParams, created_height: int) -> int:
    """First issuing round ``h + confirm_depth + 1``."""
    return created_height + params.confirm_depth + 1


def compute_seqno_range(escrow: EscrowState, r: int) -> tuple[int, int]:
    """Sequence numbers ``[lo, hi)`` of round ``r``; empty outside the issuing rounds."""
    i = r - escrow.start
    if not 0 <= i < escrow.l_esc:
        return (0, 0)
    return (i * escrow.tkt_rate, (i + 1) * escrow.tkt_rate)


def compute_round_of_seqno(escrow: EscrowState, seqno: int) -> int:
    """The round that carries ``seqno``: ``start + seqno // tkt_rate``."""
    return escrow.start + seqno // escrow.tkt_rate


def compute_group_of_seqno(escrow: EscrowState, seqno: int) -> int:
    """The draw group of ``seqno``: ``seqno // (tkt_rate * draw_len)``."""
    return seqno // escrow.draw_size


def compute_t_draw(params: ChainParams, escrow: EscrowState, g: int) -> int:
    """``t_draw(g) = start + (g+1)*draw_len - 1 + d_draw``."""
    return escrow.start + (g + 1) * escrow.draw_len - 1 + params.d_draw


def compute_t_expire(params: ChainParams, escrow: EscrowState, g: int) -> int:
    """``t_expire(g) = t_draw(g) + d_redeem``."""
    return compute_t_draw(params, escrow, g) + params.d_redeem


def compute_t_refund(params: ChainParams, start: int, l_esc: int, draw_len: int) -> int:
    """``t_refund = t_expire(last group)``."""
    return start + l_esc - 1 + params.d_draw + params.d_redeem

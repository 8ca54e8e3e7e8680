"""The workload `microcash-devnet compare` runs through every scheme (SPEC §17).

One customer pays ``merchants`` merchants ``payments_per_block`` payments per block in
total (merchant ``j`` gets every ``j``-th payment), each worth ``value`` units in
expectation, for ``blocks`` blocks. The probabilistic schemes pay a winner
``beta = value · 2^win_bits`` with probability ``p = 2^-win_bits``; the channels pay
``value`` on every payment. Every scheme therefore moves the same expected amount,
``value · payments_per_block · blocks`` units.
"""

from dataclasses import dataclass
from fractions import Fraction

from consensus import keys
from consensus.params import COIN, ChainParams
from devnet.keys import dev_seed

PAYER_PREMINE = 10_000 * COIN  # units given to every payer of the comparison in genesis


class WorkloadError(ValueError):
    """The options describe no valid workload; the message says which and why."""


@dataclass(frozen=True)
class Workload:
    """The comparison's options plus what follows from them (amounts in units)."""

    merchants: int           # m
    payments_per_block: int  # R, all merchants together
    value: int               # expected value of one payment
    blocks: int              # payment rounds (rounded up to whole draw groups)
    win_bits: int            # p = 2^-win_bits for MicroCash and MICROPAY alike
    points_of_sale: int      # points of sale per merchant in the penalised channels
    draw_len: int            # MicroCash rounds per draw group (smallest making k whole)

    @property
    def beta(self) -> int:
        """Face value of a winning ticket, ``value / p`` (both lottery schemes)."""
        return self.value << self.win_bits

    @property
    def p(self) -> Fraction:
        """Winning probability ``2^-win_bits``."""
        return Fraction(1, 1 << self.win_bits)

    @property
    def total_payments(self) -> int:
        """Payments of the whole workload, ``R · blocks``."""
        return self.payments_per_block * self.blocks

    def per_merchant(self, j: int) -> int:
        """Payments merchant ``j`` receives per block (payment ``s`` goes to ``s % m``)."""
        base, extra = divmod(self.payments_per_block, self.merchants)
        return base + (1 if j < extra else 0)

    def to_json(self) -> dict:
        """The workload as the JSON report shows it (units)."""
        return {"merchants": self.merchants, "payments_per_block": self.payments_per_block,
                "value": self.value, "blocks": self.blocks, "win_bits": self.win_bits,
                "points_of_sale": self.points_of_sale, "draw_len": self.draw_len,
                "beta": self.beta, "payments": self.total_payments}


def make_workload(params: ChainParams, merchants: int, payments_per_block: int, value: int,
                  blocks: int, win_bits: int, points_of_sale: int) -> Workload:
    """Check the options and derive ``draw_len``; raises ``WorkloadError``."""
    if merchants < 1 or payments_per_block < merchants:
        raise WorkloadError("need at least one merchant and one payment per merchant per block")
    if value < 1 or blocks < 1 or not 1 <= win_bits <= 20 or points_of_sale < 1:
        raise WorkloadError("value, blocks and points of sale must be positive, "
                            "win_bits in 1..20")
    draw_len = next((d for d in range(1, params.draw_len_max + 1)
                     if (payments_per_block * d) % (1 << win_bits) == 0), None)
    if draw_len is None:
        raise WorkloadError(
            f"MicroCash needs a whole number of winners per draw: payments per block × "
            f"draw_len (≤ {params.draw_len_max}) must be a multiple of 2^win_bits = "
            f"{1 << win_bits}; use e.g. --payments-per-block {1 << win_bits}")
    blocks = -(-blocks // draw_len) * draw_len
    return Workload(merchants, payments_per_block, value, blocks, win_bits, points_of_sale,
                    draw_len)


@dataclass(frozen=True)
class Party:
    """A development key of the comparison (never for real money)."""

    name: str

    @property
    def seed(self) -> bytes:
        """32-byte seed, ``dev_seed("compare/<name>")``."""
        return dev_seed(f"compare/{self.name}")

    @property
    def address(self) -> bytes:
        """32-byte public key (the account address)."""
        return keys.public_key(self.seed)

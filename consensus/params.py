"""Chain parameters and the three profiles of SPEC §1."""

from dataclasses import dataclass, replace

COIN = 10**8  # units per MCASH (SPEC §0)


@dataclass(frozen=True)
class ChainParams:
    """Every constant a chain is fixed by (SPEC §1); field names are the spec's."""

    name: str                  # profile name: devnet | paper | regtest
    chain_id: str              # ASCII, part of genesis
    block_time: int            # target seconds per block
    retarget_interval: int     # blocks per difficulty window, 0 = never retarget
    pow_limit: int             # easiest target (256-bit integer)
    genesis_target: int        # target of genesis and every block until the first retarget
    block_reward: int          # units minted per block
    vdf_iterations: int        # T
    vdf_checkpoints: int       # C, T divisible by C
    confirm_depth: int         # blocks after inclusion before issuing starts
    d_draw: int                # rounds from the end of a draw group to its draw (>= 2)
    d_redeem: int              # rounds a winning ticket stays redeemable (>= 2)
    draw_len_max: int          # c, largest allowed draw_len
    max_future_time: int       # seconds a block time may lead local time
    max_block_bytes: int       # encoded block size limit
    max_merchants: int         # beneficiaries per escrow
    max_escrow_rounds: int     # largest l_esc
    max_draw_size: int         # largest tkt_rate * draw_len
    max_winners: int           # largest p * tkt_rate * draw_len
    genesis_time: int          # Unix seconds of the genesis block
    premine: tuple[tuple[bytes, int], ...] = ()  # genesis outputs (address, units)

    def with_genesis(self, genesis_time: int, premine) -> "ChainParams":
        """A copy with another genesis time and premine (devnets and tests set these)."""
        outputs = tuple((bytes(addr), int(amount)) for addr, amount in premine)
        for addr, amount in outputs:
            if len(addr) != 32 or not 0 < amount < 2**63:
                raise ValueError("premine entries must be (32-byte address, 0 < amount < 2^63)")
        if sum(amount for _, amount in outputs) >= 2**63:
            raise ValueError("the premine must total less than 2^63 units (SPEC §0)")
        return replace(self, genesis_time=int(genesis_time), premine=outputs)


_COMMON = dict(
    block_reward=50 * COIN,
    draw_len_max=8,
    max_future_time=7200,
    max_block_bytes=1_000_000,
    max_merchants=256,
    max_escrow_rounds=100_000,
    max_draw_size=2**24,
    max_winners=2**16,
)

DEVNET = ChainParams(
    name="devnet", chain_id="microcash-devnet", block_time=2, retarget_interval=10,
    pow_limit=2**248 - 1, genesis_target=2**240 - 1, vdf_iterations=20_000,
    vdf_checkpoints=4, confirm_depth=2, d_draw=3, d_redeem=6,
    genesis_time=1_767_225_600, **_COMMON)

PAPER = ChainParams(
    name="paper", chain_id="microcash-paper", block_time=60, retarget_interval=60,
    pow_limit=2**240 - 1, genesis_target=2**232 - 1, vdf_iterations=2_000_000,
    vdf_checkpoints=16, confirm_depth=6, d_draw=10, d_redeem=20,
    genesis_time=1_767_225_600, **_COMMON)

REGTEST = ChainParams(
    name="regtest", chain_id="microcash-regtest", block_time=1, retarget_interval=0,
    pow_limit=2**255 - 1, genesis_target=2**255 - 1, vdf_iterations=1_000,
    vdf_checkpoints=2, confirm_depth=2, d_draw=3, d_redeem=6,
    genesis_time=1_767_225_600, **_COMMON)

PROFILES: dict[str, ChainParams] = {p.name: p for p in (DEVNET, PAPER, REGTEST)}


def get_params(name: str) -> ChainParams:
    """The profile called ``name``; raises ``ValueError`` naming the valid ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown chain profile {name!r} (choose from {', '.join(PROFILES)})") from None

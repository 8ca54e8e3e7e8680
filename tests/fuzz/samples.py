"""Valid sample objects the consensus fuzz targets start from (deterministic keys)."""

from consensus.block import Block, Header, compute_tx_root, make_genesis
from consensus.channel import ChannelState, sign_voucher
from consensus.escrow import EscrowState
from consensus.keys import public_key
from consensus.micropay import MpEscrowState, compute_mp_commitment, sign_mp_ticket
from consensus.params import get_params
from consensus.ticket import sign_ticket
from consensus.tx import (make_channel_cheat, make_channel_close, make_channel_open,
                          make_cheat_proof, make_coinbase, make_escrow_create, make_mp_claim,
                          make_mp_escrow, make_redeem, make_transfer)

PARAMS = get_params("regtest")
SEEDS = [bytes([i]) * 32 for i in range(1, 4)]
KEYS = [public_key(s) for s in SEEDS]
GENESIS = make_genesis(PARAMS.with_genesis(PARAMS.genesis_time, [(KEYS[0], 10**12)]))
GENESIS_HASH = GENESIS.hash()
ESCROW_ID = b"\x07" * 32

MP_ESCROW_ID = b"\x0a" * 32
CHANNEL_ID = b"\x0c" * 32
R1, R2 = b"\x01" * 16, b"\x02" * 16
MP_TICKET = sign_mp_ticket(SEEDS[0], GENESIS_HASH, MP_ESCROW_ID, compute_mp_commitment(R1), R2,
                           KEYS[1])
VOUCHERS = [sign_voucher(SEEDS[0], GENESIS_HASH, CHANNEL_ID, 3, c) for c in (700, 900)]
TICKETS = [sign_ticket(SEEDS[0], GENESIS_HASH, ESCROW_ID, i % 2, 10 + i) for i in range(3)]
TXS = [
    make_coinbase(1, [(KEYS[1], 50 * 10**8), (KEYS[2], 1)]),
    make_transfer(SEEDS[0], GENESIS_HASH, 0, 1000, KEYS[1], 5 * 10**8),
    make_escrow_create(SEEDS[0], GENESIS_HASH, 1, 1000, 10**10, 10**9, 1, 100, 10**8, 2000, 3,
                       [KEYS[1], KEYS[2]]),
    make_redeem(SEEDS[1], GENESIS_HASH, 500, TICKETS[:2]),
    make_cheat_proof(SEEDS[2], GENESIS_HASH, 500, TICKETS[0], TICKETS[2]),
    make_cheat_proof(SEEDS[2], GENESIS_HASH, 500, TICKETS[1], None),
    make_mp_escrow(SEEDS[0], GENESIS_HASH, 2, 1000, 10**8, 8, 300),
    make_mp_claim(SEEDS[1], GENESIS_HASH, 100, MP_ESCROW_ID, R1, R2, MP_TICKET.ticket_sig),
    make_channel_open(SEEDS[0], GENESIS_HASH, 3, 1000, KEYS[1], 10**8, 10**6, 400),
    make_channel_close(SEEDS[1], GENESIS_HASH, 100, CHANNEL_ID, VOUCHERS[0]),
    make_channel_cheat(SEEDS[1], GENESIS_HASH, 100, CHANNEL_ID, VOUCHERS[0], VOUCHERS[1]),
]
HEADER = Header(1, 1, GENESIS_HASH, PARAMS.genesis_time + 60, PARAMS.genesis_target, 12345,
                compute_tx_root([tx.txid() for tx in TXS]), b"\x09" * 32,
                tuple(bytes([i]) * 32 for i in range(3)))
BLOCK = Block(HEADER, tuple(TXS))
ESCROW = EscrowState(KEYS[0], 10**10, 10**9, 1, 100, 10**8, 2000, 3, 12, (KEYS[1], KEYS[2]),
                     5, 2, 40, False)
MP_ESCROW = MpEscrowState(KEYS[0], 10**8, 8, 300)
CHANNEL = ChannelState(KEYS[0], KEYS[1], 10**8, 10**6, 400)

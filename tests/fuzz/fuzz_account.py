"""Fuzz the account record ``[balance, nonce]`` (SPEC §2) as ``get_account`` reads it."""

from consensus.encoding import packb
from consensus.errors import DecodeError
from consensus.state import Account, MemoryState, get_account, put_account

EXPECTED = (DecodeError,)
SEEDS = [packb([5 * 10**8, 1]), packb([1, 0]), packb([2**63 - 1, 2**63 - 1])]
_ADDRESS = b"\x01" * 32


def target(data: bytes) -> None:
    account = get_account(MemoryState({b"a" + _ADDRESS: data}), _ADDRESS)
    state = MemoryState()
    put_account(state, _ADDRESS, account)
    assert get_account(state, _ADDRESS) == account
    assert isinstance(account, Account)

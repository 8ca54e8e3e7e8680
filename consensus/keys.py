"""Ed25519 keys and signatures through libsodium (PyNaCl), SPEC §0.

A key is held as its 32-byte seed; the public key is also the account address.
"""

import os
from functools import lru_cache

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

SEED_SIZE = 32
PUBKEY_SIZE = 32
SIG_SIZE = 64


def generate_seed() -> bytes:
    """A fresh random 32-byte Ed25519 seed."""
    return os.urandom(SEED_SIZE)


@lru_cache(maxsize=64)
def _signing_key(seed: bytes) -> SigningKey:
    # Deriving the key from the seed costs a scalar multiplication; issuing thousands of
    # tickets with one key should pay it once.
    return SigningKey(seed)


def public_key(seed: bytes) -> bytes:
    """The 32-byte public key (address) of ``seed``."""
    return _signing_key(bytes(seed)).verify_key.encode()


def sign(seed: bytes, message: bytes) -> bytes:
    """Detached 64-byte Ed25519 signature of ``message`` with the key of ``seed``."""
    return _signing_key(bytes(seed)).sign(message).signature


def verify(pubkey: bytes, message: bytes, sig: bytes) -> bool:
    """``crypto_sign_verify_detached``; False for any bad key, signature or length.

    Never raises. SPEC §0: one verification rule everywhere, never batch.
    """
    if len(pubkey) != PUBKEY_SIZE or len(sig) != SIG_SIZE:
        return False
    try:
        crypto_sign_open(bytes(sig) + bytes(message), bytes(pubkey))  # what VerifyKey.verify does
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False
    except Exception:  # nacl raises CryptoError for keys that are not points
        return False

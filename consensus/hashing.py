"""Hash functions of SPEC §0: the tagged hash ``H`` and plain blake3."""

from blake3 import blake3

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)


def tagged_hash(tag: bytes, data: bytes) -> bytes:
    """SPEC §0 ``H(tag, data) = blake3(len(tag) || tag || data)``; 32 bytes."""
    return blake3(bytes([len(tag)]) + tag + data).digest()


def blake3_hash(data: bytes) -> bytes:
    """Plain untagged blake3 (used only by the VDF iteration and the lottery chain)."""
    return blake3(data).digest()

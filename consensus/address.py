"""Text form of account addresses: bech32m with human-readable part ``mc`` (SPEC §0).

An address *is* a 32-byte Ed25519 public key. Its text form is the bech32m string
``mc1...`` whose data part is the key regrouped into 5-bit values (no witness version,
unlike segwit). On input, exactly 64 hex digits are accepted as well.
The checksum code comes from the maintained ``bech32m`` library, not from here.
"""

from __future__ import annotations

import re

from bech32m.codecs import DecodeError, Encoding, bech32_decode, bech32_encode, convertbits

ADDRESS_HRP = "mc"
PUBLIC_KEY_SIZE = 32  # bytes, an Ed25519 public key

# A bech32 string is at most 90 characters (BIP-173); ours is always 61.
_MAX_BECH32_LENGTH = 90
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def encode_address(pubkey: bytes) -> str:
    """Return the bech32m text form ``mc1...`` (61 characters) of a public key.

    pubkey: 32 bytes. Raises ValueError for any other length or type. SPEC §0.
    """
    if not isinstance(pubkey, (bytes, bytearray)) or len(pubkey) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an address is a {PUBLIC_KEY_SIZE}-byte public key")
    return bech32_encode(ADDRESS_HRP, bytes(convertbits(pubkey, 8, 5)), Encoding.BECH32M)


def decode_address(text: str) -> bytes:
    """Parse an address given as bech32m ``mc1...`` or as exactly 64 hex digits.

    Returns the 32-byte public key. Surrounding whitespace is ignored; bech32m may be
    all lower or all upper case. Raises ValueError("not a MicroCash address: ...") for
    a wrong checksum, a wrong human-readable part, a bech32 (not bech32m) checksum, a
    wrong length or anything that is not a string. SPEC §0.
    """
    if not isinstance(text, str):
        raise ValueError(f"not a MicroCash address: expected a string, got {type(text).__name__}")
    text = text.strip()
    if _HEX_KEY.fullmatch(text):
        return bytes.fromhex(text)
    return _decode_bech32m(text)


def is_address(text: object) -> bool:
    """Whether `text` parses as an address (bech32m or 64 hex digits). Never raises."""
    try:
        decode_address(text)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def _decode_bech32m(text: str) -> bytes:
    """Decode the bech32m form; raises ValueError naming what is wrong."""
    shown = text if len(text) <= 100 else text[:97] + "..."
    if len(text) > _MAX_BECH32_LENGTH:
        raise ValueError(f"not a MicroCash address: too long ({len(text)} characters)")
    try:
        hrp, data, encoding = bech32_decode(text)
    except DecodeError:
        raise ValueError(
            f"not a MicroCash address: {shown!r} is neither 64 hex digits nor valid bech32m "
            "(bad characters, mixed case or wrong checksum)"
        ) from None
    if hrp != ADDRESS_HRP:
        raise ValueError(
            f"not a MicroCash address: prefix {hrp!r}, expected {ADDRESS_HRP!r} in {shown!r}"
        )
    if encoding != Encoding.BECH32M:
        raise ValueError(
            f"not a MicroCash address: {shown!r} has a bech32 checksum, expected bech32m"
        )
    try:
        key = bytes(convertbits(data, 5, 8, False))
    except DecodeError:
        raise ValueError(f"not a MicroCash address: bad padding in {shown!r}") from None
    if len(key) != PUBLIC_KEY_SIZE:
        raise ValueError(
            f"not a MicroCash address: holds {len(key)} bytes, expected {PUBLIC_KEY_SIZE}"
        )
    return key

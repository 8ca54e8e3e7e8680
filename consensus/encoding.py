"""Canonical msgpack encoding and strict decoding (SPEC §0).

Every consensus object is a msgpack array with a fixed field order. ``unpackb_canonical``
rejects trailing bytes and anything that does not re-encode to the identical bytes; the
``expect_*`` helpers check arity, types and fixed lengths. All failures raise
``DecodeError`` (reason ``bad-encoding``) and nothing else.
"""

from typing import Any

import msgpack

from consensus.errors import DecodeError

MAX_INT = 2**63  # every amount, height and count is below this (SPEC §0)


def packb(obj: Any) -> bytes:
    """Encode ``obj`` as msgpack: arrays, bin for bytes, smallest integer forms."""
    return msgpack.packb(obj, use_bin_type=True)


def unpackb_canonical(data: bytes) -> Any:
    """Decode one msgpack object from ``data`` and insist it is canonical.

    Raises ``DecodeError`` on malformed input, trailing bytes, maps with non-str keys,
    invalid UTF-8, or when ``packb(result) != data``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("expected bytes")
    data = bytes(data)
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many types; all mean "not our encoding"
        raise DecodeError(f"malformed msgpack ({type(exc).__name__})") from None
    try:
        again = packb(obj)
    except Exception:
        raise DecodeError("not re-encodable") from None
    if again != data:
        raise DecodeError("non-canonical encoding")
    return obj


def expect_list(obj: Any, arity: int | None = None, what: str = "array") -> list:
    """Return ``obj`` if it is an array (of ``arity`` items when given)."""
    if not isinstance(obj, list):
        raise DecodeError(f"{what}: expected an array")
    if arity is not None and len(obj) != arity:
        raise DecodeError(f"{what}: expected {arity} fields, got {len(obj)}")
    return obj


def expect_int(obj: Any, what: str = "integer", lo: int = 0, hi: int = MAX_INT) -> int:
    """Return ``obj`` if it is an integer (not a bool) with ``lo <= obj < hi``."""
    if not isinstance(obj, int) or isinstance(obj, bool):
        raise DecodeError(f"{what}: expected an integer")
    if not lo <= obj < hi:
        raise DecodeError(f"{what}: {obj} out of range [{lo}, {hi})")
    return obj


def expect_bytes(obj: Any, length: int | None = None, what: str = "bytes") -> bytes:
    """Return ``obj`` if it is bin (of exactly ``length`` bytes when given)."""
    if not isinstance(obj, bytes):
        raise DecodeError(f"{what}: expected bin")
    if length is not None and len(obj) != length:
        raise DecodeError(f"{what}: expected {length} bytes, got {len(obj)}")
    return obj


def expect_bool(obj: Any, what: str = "bool") -> bool:
    """Return ``obj`` if it is a msgpack boolean."""
    if not isinstance(obj, bool):
        raise DecodeError(f"{what}: expected a boolean")
    return obj

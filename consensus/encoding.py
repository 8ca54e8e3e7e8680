"""Canonical msgpack encoding and strict decoding (SPEC §0).

Every consensus object is a msgpack array with a fixed field order. ``unpackb_canonical``
rejects trailing bytes and anything that does not re-encode to the identical bytes; the
``expect_*`` helpers check arity, types and fixed lengths. All failures raise
``DecodeError`` (reason ``bad-encoding``) and nothing else.
"""

import threading
from typing import Any

import msgpack

from consensus.errors import DecodeError

MAX_INT = 2**63  # every amount, height and count is below this (SPEC §0)


# One Packer per thread, reused: ``msgpack.packb`` builds a Packer per call, which is
# about two thirds of the cost of encoding a small object (0.93 vs 0.32 µs for a ticket).
# A Packer resets its buffer after each pack, also when packing raises.
_packers = threading.local()


def packb(obj: Any) -> bytes:
    """Encode ``obj`` as msgpack: arrays, bin for bytes, smallest integer forms (SPEC §0).

    Raises ``TypeError`` for values msgpack cannot encode and ``ValueError`` for integers
    out of its range, as ``msgpack.packb`` does.
    """
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(obj)


# Every array of a valid block, header or transaction carries at least one hash, key or
# signature (≥ 32 bytes) for at most two arrays, so a valid object of ``n`` bytes holds
# far fewer than ``n // BYTES_PER_ARRAY`` arrays. Peer bytes are decoded under that
# bound, which makes a payload of empty arrays or maps cost no more than a valid one of
# the same size (issue 6: memory and time amplification).
BYTES_PER_ARRAY = 16


class _OverBudget(Exception):
    """Raised from the decode hooks to abort unpacking early."""


def _array_budget(limit: int):
    """A ``list_hook`` that aborts unpacking after ``limit`` arrays."""
    count = 0

    def hook(items: list) -> list:
        nonlocal count
        count += 1
        if count > limit:
            raise _OverBudget(f"more than {limit} arrays")
        return items
    return hook


def _no_maps(pairs: Any) -> Any:
    raise _OverBudget("maps are not part of any consensus encoding")


def unpackb_canonical(data: bytes, *, peer: bool = False) -> Any:
    """Decode one msgpack object from ``data`` and insist it is canonical.

    With ``peer=True`` (blocks, headers and transactions from the network, SPEC §0/§11)
    maps are refused at once and unpacking stops after ``8 + len(data) // 16`` arrays,
    a bound no valid block, header or transaction reaches; so hostile bytes cost at most
    what valid bytes of the same size cost.

    Raises ``DecodeError`` on malformed input, trailing bytes, maps with non-str keys,
    invalid UTF-8, over-budget input, or when ``packb(result) != data``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("expected bytes")
    data = bytes(data)
    hooks: dict[str, Any] = {}
    if peer:
        hooks = {"list_hook": _array_budget(8 + len(data) // BYTES_PER_ARRAY),
                 "object_hook": _no_maps}
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, **hooks)
    except _OverBudget as exc:
        raise DecodeError(f"over-limit encoding ({exc})") from None
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

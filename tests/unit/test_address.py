"""Address text form: bech32m with hrp `mc`, hex accepted on input (SPEC §0)."""

import pytest
from bech32m.codecs import Encoding, bech32_encode, convertbits
from hypothesis import given
from hypothesis import strategies as st

from consensus.address import decode_address, encode_address, is_address

KEY = bytes(range(32))


def _bech(hrp: str, payload: bytes, encoding: Encoding = Encoding.BECH32M) -> str:
    return bech32_encode(hrp, bytes(convertbits(payload, 8, 5)), encoding)


@given(st.binary(min_size=32, max_size=32))
def test_round_trip(key):
    text = encode_address(key)
    assert text.startswith("mc1")
    assert len(text) == 61
    assert decode_address(text) == key
    assert decode_address(text.upper()) == key


def test_known_vector_is_stable():
    # Fixed once so that a library change that alters the text form is noticed.
    text = "mc1qqqsyqcyq5rqwzqfpg9scrgwpugpzysnzs23v9ccrydpk8qarc0sw2t7p6"
    assert encode_address(KEY) == text
    assert decode_address(text) == KEY


def test_hex_input_accepted():
    assert decode_address(KEY.hex()) == KEY
    assert decode_address(KEY.hex().upper()) == KEY
    assert decode_address("  " + KEY.hex() + "\n") == KEY


def test_invalid_wrong_checksum():
    text = encode_address(KEY)
    last = "q" if text[-1] != "q" else "p"
    with pytest.raises(ValueError, match="not a MicroCash address"):
        decode_address(text[:-1] + last)


def test_invalid_wrong_hrp():
    with pytest.raises(ValueError, match="prefix 'bc'"):
        decode_address(_bech("bc", KEY))


def test_invalid_bech32_not_m():
    with pytest.raises(ValueError, match="bech32 checksum, expected bech32m"):
        decode_address(_bech("mc", KEY, Encoding.BECH32))


@pytest.mark.parametrize("size", [0, 20, 31, 33, 40])
def test_invalid_wrong_length(size):
    with pytest.raises(ValueError, match="not a MicroCash address"):
        decode_address(_bech("mc", bytes(size)))


@pytest.mark.parametrize(
    "text",
    ["", "mc1", KEY.hex()[:-1], KEY.hex() + "00", "zz" * 32, "x" * 10_000, "Mc1" + "q" * 58],
)
def test_invalid_garbage(text):
    with pytest.raises(ValueError, match="not a MicroCash address"):
        decode_address(text)
    assert not is_address(text)


def test_invalid_not_a_string():
    with pytest.raises(ValueError, match="expected a string"):
        decode_address(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33), "00" * 32])
def test_encode_rejects_wrong_key(bad):
    with pytest.raises(ValueError):
        encode_address(bad)


@given(st.text(max_size=120))
def test_decode_never_raises_other_errors(text):
    try:
        key = decode_address(text)
    except ValueError:
        return
    assert len(key) == 32

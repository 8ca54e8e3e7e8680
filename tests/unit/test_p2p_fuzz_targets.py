"""The p2p fuzz targets (tests/fuzz/fuzz_p2p_*.py) under hypothesis: their seeds decode,
and mutated seeds raise nothing but the declared EXPECTED exceptions (issue 6)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

FUZZ_DIR = Path(__file__).resolve().parents[1] / "fuzz"
TARGETS = sorted(p.stem for p in FUZZ_DIR.glob("fuzz_p2p_*.py"))


def load(name: str):
    return importlib.import_module(f"tests.fuzz.{name}")


def test_every_message_type_and_frames_have_a_target():
    from p2p.decode import DECODERS

    assert {f"fuzz_p2p_{t}" for t in DECODERS} | {"fuzz_p2p_frame"} == set(TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_are_valid_inputs(name):
    module = load(name)
    assert module.SEEDS and all(isinstance(s, bytes) for s in module.SEEDS)
    if name != "fuzz_p2p_frame":  # a frame stream always ends in PeerDisconnect (EOF)
        for seed in module.SEEDS:
            module.target(seed)


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == 3:
            data = data[:pos]
        else:
            data[pos:pos] = bytes([draw(st.sampled_from([0x90, 0x80, 0xC0, 0xDC, 0xDD]))]) * 500
    return bytes(data)


@pytest.mark.parametrize("name", TARGETS)
def test_mutated_inputs_raise_only_declared_exceptions(name):
    module = load(name)

    @settings(max_examples=60, deadline=None)
    @given(mutated(module.SEEDS))
    def check(data):
        try:
            module.target(data)
        except module.EXPECTED:
            pass

    check()

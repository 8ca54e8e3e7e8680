"""Fuzz target: the bounded decoder of SPEC §11 `headers` payloads (p2p.decode)."""

from tests.fuzz._p2p_common import EXPECTED_DECODE, payload_seeds, payload_target

EXPECTED: tuple[type[BaseException], ...] = EXPECTED_DECODE
SEEDS: list[bytes] = payload_seeds("headers")
target = payload_target("headers")

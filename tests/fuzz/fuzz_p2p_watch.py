"""Fuzz target: the bounded decoder of `watch` payloads (DESIGN "Ticket watch between
merchants"; p2p.decode)."""

from tests.fuzz._p2p_common import EXPECTED_DECODE, payload_seeds, payload_target

EXPECTED: tuple[type[BaseException], ...] = EXPECTED_DECODE
SEEDS: list[bytes] = payload_seeds("watch")
target = payload_target("watch")

"""Fuzz target: the bounded decoder of `tktann` payloads (DESIGN "Ticket watch between
merchants"; p2p.decode)."""

from tests.fuzz._p2p_common import EXPECTED_DECODE, payload_seeds, payload_target

EXPECTED: tuple[type[BaseException], ...] = EXPECTED_DECODE
SEEDS: list[bytes] = payload_seeds("tktann")
target = payload_target("tktann")

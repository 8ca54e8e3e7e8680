"""Reasons a peer connection ends (SPEC §11)."""

from __future__ import annotations


class PeerDisconnect(Exception):
    """Close the connection without punishing the peer (EOF, timeout, wrong chain...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SelfConnection(PeerDisconnect):
    """The peer's hello carried our own node_nonce: we dialled ourselves."""


class ProtocolViolation(Exception):
    """The peer broke SPEC §11 (malformed, over-limit, invalid data): disconnect and ban its IP."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

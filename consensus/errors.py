"""The one exception type of consensus failures (SPEC §2–§10 reject reasons)."""


class ConsensusError(Exception):
    """A consensus rule failed; ``reason`` is the SPEC reject reason (e.g. ``bad-nonce``).

    ``detail`` is free text for logs and humans; it never takes part in consensus.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class DecodeError(ConsensusError):
    """Bytes that are not the canonical encoding of a consensus object (SPEC §0)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("bad-encoding", detail)

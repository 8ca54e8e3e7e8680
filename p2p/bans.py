"""IP bans with expiry (SPEC §11: refuse a misbehaving peer's address for ban_seconds)."""

from __future__ import annotations

import trio

PURGE_ABOVE = 1024  # drop expired entries once the table is this large


class BanList:
    """Banned IP strings (exact match) with expiry times on the trio clock."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self.bans_made = 0  # ban() calls so far (metrics: microcash_bans_total)

    def ban(self, ip: str, seconds: float) -> None:
        """Refuse `ip` for `seconds` from now (extends an existing ban)."""
        now = trio.current_time()
        self.bans_made += 1
        if len(self._until) >= PURGE_ABOVE:
            self._until = {key: t for key, t in self._until.items() if t > now}
        until = now + seconds
        self._until[ip] = max(until, self._until.get(ip, until))

    def remaining(self, ip: str) -> float:
        """Seconds left on `ip`'s ban, 0 if not banned (expired bans are dropped)."""
        until = self._until.get(ip)
        if until is None:
            return 0.0
        left = until - trio.current_time()
        if left <= 0:
            del self._until[ip]
            return 0.0
        return left

    def is_banned(self, ip: str) -> bool:
        """True if `ip` is currently banned."""
        return self.remaining(ip) > 0

    def active(self) -> int:
        """How many IPs are banned now (expired entries are dropped); trio clock."""
        return sum(1 for ip in list(self._until) if self.is_banned(ip))

    def __len__(self) -> int:
        return len(self._until)

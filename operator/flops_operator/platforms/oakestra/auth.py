"""Access tokens: how long one lasts and when to replace it (pure)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

DEFAULT_LIFETIME = 600.0  # Oakestra's access tokens live 10 minutes (oakestra-api.md §2.2)


def lifetime(token: str, default: float = DEFAULT_LIFETIME) -> float:
    """exp - iat of a JWT, read without verifying (only the server needs to trust it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return max(0.0, float(claims["exp"]) - float(claims["iat"]))
    except (IndexError, KeyError, TypeError, ValueError):
        return default


@dataclass(frozen=True)
class Token:
    access: str
    access_expires: float
    """On the driver's own (monotonic) clock: server and driver clocks need not agree."""
    refresh: str | None = None
    refresh_expires: float = 0.0

    @classmethod
    def issued(cls, access: str, refresh: str | None, now: float) -> "Token":
        return cls(access, now + lifetime(access), refresh, now + lifetime(refresh) if refresh else 0.0)

    def renewed(self, access: str, now: float) -> "Token":
        return Token(access, now + lifetime(access), self.refresh, self.refresh_expires)

    def usable(self, now: float, margin: float) -> bool:
        return now < self.access_expires - margin

    def refreshable(self, now: float, margin: float) -> bool:
        return self.refresh is not None and now < self.refresh_expires - margin

"""Access tokens: how long one lasts and when to replace it (pure)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

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


def token_refused(status: int, body: Any) -> bool:
    """Did Oakestra refuse the token rather than the request? 401 on every route; 422 with a
    flask-jwt-extended `msg` (a signature it cannot verify after its key changed, a refresh token
    where an access token belongs), unlike a 422 for an invalid SLA (oakestra-api.md §2.3, §13.14)."""
    return status == 401 or (status == 422 and isinstance(body, dict) and "msg" in body)

"""JWTs as the System Manager hands them out (claims as observed; HS256 instead of RS256: same shape)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets


class TokenError(Exception):
    """`reason` is one of: missing, malformed, signature, expired, wrong_type."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenMint:
    def __init__(self, *, access_ttl: float = 600.0, refresh_ttl: float = 30 * 24 * 3600.0):
        self._key = secrets.token_bytes(32)
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def rotate(self) -> None:
        """A new signing key (the jwt-generator's key changes when Oakestra restarts): every token
        issued so far fails verification."""
        self._key = secrets.token_bytes(32)

    def _sign(self, claims: dict) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(sig)}"

    def issue(self, user: str, roles: list[str], organization: str, now: float, *, kind: str) -> str:
        iat = int(now)
        ttl = self.access_ttl if kind == "access" else self.refresh_ttl
        claims = {"fresh": False, "iat": iat, "jti": secrets.token_hex(16), "type": kind, "sub": user,
                  "nbf": iat, "csrf": secrets.token_hex(16), "exp": iat + int(ttl), "user": user,
                  "roles": roles, "organization": organization}
        return self._sign(claims)

    def verify(self, token: str | None, now: float, *, kind: str = "access") -> dict:
        if not token:
            raise TokenError("missing")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("malformed")
        expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            given = _unb64(parts[2])
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, json.JSONDecodeError):
            raise TokenError("malformed") from None
        if not hmac.compare_digest(expected, given):
            raise TokenError("signature")
        if claims.get("type") != kind:
            raise TokenError("wrong_type")
        if now >= claims["exp"]:
            raise TokenError("expired")
        return claims

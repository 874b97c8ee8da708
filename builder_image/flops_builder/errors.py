"""The one error a build step raises, and the helpers that keep its message one secret-free line.

A BuildError says which step failed, which spec field or source file it concerns, and one line a person can act
on. The builder prints it as `FLOPS-BUILD-ERROR {"step","field","message"}`; the operator copies it into the
project's status. Messages quote git's and pip's own words, so every message goes through `redact` first: a URL
with a login in it, or a password that a tool echoed back, must not reach a log or a status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

STEPS = ("resolve", "fetch", "path", "entrypoint", "requirements", "check", "registry", "push")
MAX_MESSAGE = 400  # a status line, not a log: the builder's log tail carries the rest

# scheme://user:password@host or scheme://token@host: the login part is dropped, the host kept.
_URL_LOGIN = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]+@")
_MIN_SECRET = 3  # shorter values ("x", "ab") would blank out ordinary words


class BuildError(Exception):
    """A build step failed: `step` (one of STEPS), `field` (a spec field such as "spec.task.source.git.ref", a
    source file such as "requirements.txt", or None) and `message` (one line, no secret in it)."""

    def __init__(self, step: str, field: str | None, message: str):
        if step not in STEPS:
            raise ValueError(f"unknown build step {step!r}; one of {', '.join(STEPS)}")
        self.step = step
        self.field = field
        self.message = one_line(message)
        super().__init__(self.message)

    def as_dict(self) -> dict[str, str | None]:
        """The FLOPS-BUILD-ERROR payload."""
        return {"step": self.step, "field": self.field, "message": self.message}

    def __repr__(self) -> str:
        return f"BuildError(step={self.step!r}, field={self.field!r}, message={self.message!r})"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without URL logins and without any of `secrets` (each replaced by ***)."""
    text = _URL_LOGIN.sub(lambda m: m["scheme"], text)
    # Longest first: a secret that contains another is replaced whole.
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, "***")
        # A multi-line secret (an SSH key) is also hidden line by line, should a tool print part of it.
        for part in secret.splitlines():
            if len(part.strip()) >= 16:
                text = text.replace(part.strip(), "***")
    return text


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """Whitespace (newlines included) collapsed to single spaces, cut at `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"

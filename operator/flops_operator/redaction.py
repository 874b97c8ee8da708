"""One redaction for every text that reaches status, Kubernetes Events or `flops run`'s live view.

Services print what they are given (a failing client logs the URL it used, a crash dumps its environment) and their
last log lines become status messages; so do exception texts. Everything that puts such text where people read it
goes through here, on both platforms: the log tails the platforms report (local: platforms/local/process.py;
Oakestra: platforms/oakestra/interpret.py), the whole status a reconcile step computes (reconcile.py: service
messages, the builder's output, the source's errors), the messages made from errors (status.problem_status and
friends, the kopf adapter's error Events) and the live view's notes.

Two kinds:
- values: every credential of the project (generated and referenced, `project_secrets`; the catalogue is
  plan/logins.py and plan/builder.py) and the platform's own (the Oakestra login, the build registry's), in the
  forms a log shows them (as given, URL-encoded, JSON-escaped, line by line, base64-decoded);
- shapes, whatever the value: a URL's user:password@, an Authorization header, a PEM private key, `password=...`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Callable, Iterable, Mapping
from urllib.parse import quote, quote_plus

from pydantic import BaseModel

from .plan.builder import GIT_CREDENTIALS_FIELD, GIT_KNOWN_HOSTS, GIT_USERNAME, git_credentials
from .plan.logins import TRACKING_USERNAME, credential_names
from .platforms.base import MissingCredentials

if TYPE_CHECKING:
    from .models import Project
    from .models.status import FLOpsProjectStatus
    from .platforms.base import Credentials

MASK = "***"
MIN_LENGTH = 4
"""Shorter values are not blanked by value: they would blank ordinary words everywhere (and a shape still catches
them in a URL or a header)."""
MIN_LINE = 16
"""A line of a multi-line value (a PEM key) is blanked on its own from this length: logs show such values line by
line, and a log tail joins lines."""
NOT_SECRET = frozenset({TRACKING_USERNAME, GIT_USERNAME, GIT_KNOWN_HOSTS})
"""Credentials that are not secret (user names, public host keys): blanking them would mangle ordinary words."""

_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host, or a token as the user.
    (re.compile(r"(?<=://)[^/\s@]+@"), MASK + "@"),
    # Authorization: Basic ..., "authorization": "Bearer ...", Proxy-Authorization=...
    (re.compile(r"(?i)(\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?(?:(?:basic|bearer|token|digest)\s+)?)"
                r"[^\s\"',;}]+"), r"\1" + MASK),
    (re.compile(r"(?i)(\bbearer\s+)[\w.~+/-]{8,}=*"), r"\1" + MASK),
    # A private key, to its end or to the end of the text (a tail may hold only its start).
    (re.compile(r"(-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----).*?(?:-----END \2PRIVATE KEY-----|\Z)", re.S),
     r"\1" + MASK + r"-----END \2PRIVATE KEY-----"),
    # password=..., FLOPS_GIT_PASSWORD=..., ?token=...: query strings, env dumps, command lines.
    (re.compile(r"(?i)(\b[\w.-]*(?:password|passwd|secret|token)[\w.-]*=)[^\s&;,'\"]+"), r"\1" + MASK),
)


def _decoded(value: str) -> str | None:
    """The text a base64 value stands for (the Flower CA is a base64 PEM bundle), if it is one."""
    if len(value) < MIN_LINE or len(value) % 4:
        return None
    try:
        text = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return text if all(line.isprintable() for line in text.splitlines()) else None


def _forms(value: str, depth: int = 0) -> set[str]:
    """How a log may show one value."""
    forms = {value, value.strip(), quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    lines = [line.strip() for line in value.splitlines()]
    if len(lines) > 1:
        forms.update(line for line in lines if len(line) >= MIN_LINE)
    decoded = _decoded(value.strip()) if depth == 0 else None
    if decoded is not None:
        forms |= _forms(decoded, depth + 1)
    return {form for form in forms if len(form) >= MIN_LENGTH}


class Redactor:
    """Blanks out the given values (in every form of `_forms`) and the secret shapes of any text."""

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        forms: set[str] = set()
        for value in values:
            if value:
                forms |= _forms(value)
        # Longest first: a value containing another is blanked whole.
        self._forms = tuple(sorted(forms, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        for shape, replacement in _SHAPES:
            text = shape.sub(replacement, text)
        return text


SHAPES_ONLY = Redactor()
"""For texts whose project or platform is not at hand (exception texts): the shapes alone."""


def redact(text: str, values: Iterable[str | None] = ()) -> str:
    return Redactor(values)(text)


def secret_values(credentials: Mapping[str, str]) -> tuple[str, ...]:
    """The values worth blanking among credentials by name (all but user names and host keys)."""
    return tuple(value for name, value in credentials.items() if value and name not in NOT_SECRET)


def clip(text: str, limit: int) -> str:
    """The last `limit` characters, from the start of a word: a value cut in half would not be recognised as one
    by whoever redacts after (the status step knows the values, a platform may not), so none is left in part."""
    if len(text) <= limit:
        return text
    kept = text[-limit:]
    if not text[-limit - 1].isspace():
        at = re.search(r"\s", kept)
        kept = kept[at.end():] if at else ""
    return "…" + kept


def tail(text: str, *, lines: int, limit: int, redactor: Redactor = SHAPES_ONLY,
         keep: Callable[[str], bool] = lambda line: True) -> str:
    """A log's last `lines` non-empty lines (those `keep` accepts), redacted before anything is cut, joined with
    " | " and clipped to `limit` characters."""
    kept = [line.strip() for line in redactor(text).splitlines() if line.strip() and keep(line)][-lines:]
    return clip(" | ".join(kept), limit)


def _texts(model: BaseModel) -> Iterable[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, str) and name.endswith("message"):
            yield value
        elif isinstance(value, BaseModel):
            yield from _texts(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    yield from _texts(item)


def texts(status: FLOpsProjectStatus) -> set[str]:
    """The free texts of a status (every `...message` field): what may hold a log line or an error's words."""
    return set(_texts(status))


def _redacted(model: BaseModel, redactor: Redactor) -> BaseModel:
    update = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, str) and name.endswith("message"):
            new = redactor(value)
        elif isinstance(value, BaseModel):
            new = _redacted(value, redactor)
        elif isinstance(value, list):
            new = [_redacted(item, redactor) if isinstance(item, BaseModel) else item for item in value]
        else:
            continue
        if new != value:
            update[name] = new
    return model.model_copy(update=update) if update else model


def redact_status(status: FLOpsProjectStatus, redactor: Redactor) -> FLOpsProjectStatus:
    """The status with its free texts redacted. Nothing else changes: ids, addresses, hashes and the spec values
    edits are compared with (createdWith) are not text people read, and the operator reads them back."""
    return _redacted(status, redactor)  # type: ignore[return-value]


async def project_secrets(project: Project, credentials: Credentials,
                          referenced: Mapping[str, str]) -> tuple[str, ...]:
    """Every secret value of the project: generated (as stored: none is generated here), referenced (the tracking
    login) and the Git login."""
    values = dict(referenced)
    values.update(await credentials.stored(project.ref, credential_names(project.spec)))
    keys = git_credentials(project)
    if keys:
        ref = project.spec.task.source.git.credentials_secret  # type: ignore[union-attr]
        try:
            values.update(await credentials.read(project.ref, ref.name, keys, field=GIT_CREDENTIALS_FIELD,
                                                 optional=True))
        except MissingCredentials:
            pass  # gone: the source step says so where it matters, and shapes still apply
    return secret_values(values)


async def redacted_status(status: FLOpsProjectStatus, previous: FLOpsProjectStatus, project: Project,
                          credentials: Credentials, referenced: Mapping[str, str],
                          also: Iterable[str] = ()) -> FLOpsProjectStatus:
    """What a reconcile step writes: its status with every secret of the project blanked out of its free texts (and
    the values `also`: the keys the step deleted). A text the previous status showed went through here already, so a
    step that says nothing new (an idle look) reads no credential."""
    if texts(status) <= texts(previous):
        return status
    return redact_status(status, Redactor([*await project_secrets(project, credentials, referenced), *also]))

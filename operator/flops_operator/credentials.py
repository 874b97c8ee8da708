"""Generated per-project credentials: in memory (tests) or a 0600 file (local runs).

The Kubernetes Secret store lives with the kopf adapter.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from typing import Mapping

from flops_runtime import pki

from .models import ProjectRef
from .plan.logins import FLOWER_CA
from .platforms.base import MissingCredentials

# Credentials that are not a random token.
_GENERATORS = {FLOWER_CA: pki.new_ca}


def generate(name: str) -> str:
    """A new value for the project credential `name`: a random token, or what its kind needs (a CA)."""
    make = _GENERATORS.get(name)
    return make() if make is not None else secrets.token_urlsafe(24)


def pick(where: str, data: Mapping[str, str] | None, keys: Mapping[str, str], *,
         field: str = "tracking.credentialsSecret", optional: bool = False) -> dict[str, str]:
    """{name: data[key]} for the referenced Secret's data; MissingCredentials naming what is not there. With
    `optional`, a key that is not there reads as "" (the Secret must still exist)."""
    if data is None:
        raise MissingCredentials(f"{field}: Secret {where} not found; create it with the keys "
                                 f"{', '.join(sorted(set(keys.values())))}" + (" (each optional)" if optional else ""))
    missing = sorted({key for key in keys.values() if not data.get(key)})
    if missing and not optional:
        raise MissingCredentials(f"{field}: Secret {where} has no key {', '.join(missing)}")
    return {name: data.get(key) or "" for name, key in keys.items()}


class MemoryCredentials:
    def __init__(self, referenced: dict[tuple[str, str], dict[str, str]] | None = None) -> None:
        self.store: dict[str, dict[str, str]] = {}
        self.orphaned: dict[str, dict[str, str]] = {}
        self.referenced = referenced or {}
        """Secrets the specs name, by (namespace, name)."""

    async def read(self, project: ProjectRef, secret: str, keys: Mapping[str, str], *,
                   field: str = "tracking.credentialsSecret", optional: bool = False) -> dict[str, str]:
        return pick(f"{project.namespace}/{secret}", self.referenced.get((project.namespace, secret)), keys,
                    field=field, optional=optional)

    async def ensure(self, project: ProjectRef, names: list[str]) -> dict[str, str]:
        values = self.store.setdefault(project.uid, {})
        for name in names:
            values.setdefault(name, generate(name))
        return {n: values[n] for n in names}

    async def remove(self, project: ProjectRef) -> None:
        self.store.pop(project.uid, None)

    async def orphan(self, project: ProjectRef) -> None:
        self.orphaned[project.uid] = self.store.pop(project.uid, {})


class FileCredentials:
    """One JSON file per project, created 0600 before anything is written into it. Secrets the spec names come
    from the Secret documents given with the project (`flops run` reads them from the same file)."""

    def __init__(self, path_for: "callable[[ProjectRef], Path]",
                 referenced: dict[tuple[str, str], dict[str, str]] | None = None) -> None:
        self._path_for = path_for
        self._referenced = referenced or {}

    async def read(self, project: ProjectRef, secret: str, keys: Mapping[str, str], *,
                   field: str = "tracking.credentialsSecret", optional: bool = False) -> dict[str, str]:
        return pick(f"{project.namespace}/{secret}", self._referenced.get((project.namespace, secret)), keys,
                    field=field, optional=optional)

    async def ensure(self, project: ProjectRef, names: list[str]) -> dict[str, str]:
        path = self._path_for(project)
        values = json.loads(path.read_text()) if path.exists() else {}
        missing = [n for n in names if n not in values]
        if missing:
            values.update({n: generate(n) for n in missing})
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(values, fh)
        return {n: values[n] for n in names}

    async def remove(self, project: ProjectRef) -> None:
        self._path_for(project).unlink(missing_ok=True)

    async def orphan(self, project: ProjectRef) -> None:
        """The file stays where it is, for the services left running."""

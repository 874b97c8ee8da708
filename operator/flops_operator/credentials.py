"""Generated per-project credentials: in memory (tests) or a 0600 file (local runs).

The Kubernetes Secret store lives with the kopf adapter.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path

from typing import Iterable, Mapping

from flops_runtime import pki

from .models import ProjectRef
from .plan.logins import FLOWER_CA, is_flower_key
from .platforms.base import MissingCredentials
from .private_state import open_private, private_dir

# Credentials that are not a random token.
_GENERATORS = {FLOWER_CA: pki.new_ca}


def generate(name: str) -> str:
    """A new value for the project credential `name`: a random token, or what its kind needs (a CA, a key)."""
    make = _GENERATORS.get(name) or (pki.new_key if is_flower_key(name) else None)
    return make() if make is not None else secrets.token_urlsafe(24)


def changes(values: Mapping[str, str], names: Iterable[str], renew: Iterable[str] = (),
            drop: Iterable[str] = ()) -> dict[str, str | None]:
    """The writes that leave the stored `values` with every one of `names` (generated where missing), `renew` generated
    anew and `drop` gone (but those asked for): {name: new value, or None to delete}. Every store applies these
    (plan/flower_keys.py)."""
    names, renew = list(names), list(renew)
    made: dict[str, str | None] = {n: generate(n) for n in dict.fromkeys([*names, *renew])
                                   if n not in values or n in renew}
    made.update({n: None for n in drop if n in values and n not in made and n not in names})
    return made


OPT_IN_LABEL = "flops.oakestra.io/credentials"
"""A Secret the spec names is read only if it carries this label with the value "true". The operator may read every
Secret of a namespace; without the opt-in, whoever may create a FLOpsProject could have any of them sent to a server
of their choosing (a confused deputy). The same rule holds for `flops run`'s Secret documents."""


@dataclass(frozen=True)
class ReferencedSecret:
    """A Secret the spec names, as the stores see it: its values (decoded) and its labels."""

    data: Mapping[str, str]
    labels: Mapping[str, str] = dataclass_field(default_factory=dict)

    @classmethod
    def opted_in(cls, data: Mapping[str, str]) -> "ReferencedSecret":
        """A Secret with these values that carries the opt-in label (fixtures, tests)."""
        return cls(data, {OPT_IN_LABEL: "true"})

    @property
    def is_opted_in(self) -> bool:
        return self.labels.get(OPT_IN_LABEL) == "true"


def pick(where: str, secret: ReferencedSecret | None, keys: Mapping[str, str], *,
         field: str = "tracking.credentialsSecret", optional: bool = False) -> dict[str, str]:
    """{name: data[key]} for the referenced Secret `where` (namespace/name); MissingCredentials naming what is not
    there, or that the Secret does not opt in (OPT_IN_LABEL). With `optional`, a key that is not there reads as ""
    (the Secret must still exist and opt in)."""
    if secret is None:
        raise MissingCredentials(f"{field}: Secret {where} not found; create it with the keys "
                                 f"{', '.join(sorted(set(keys.values())))}" + (" (each optional)" if optional else "")
                                 + f" and the label {OPT_IN_LABEL}: \"true\"")
    if not secret.is_opted_in:
        namespace, _, name = where.rpartition("/")
        raise MissingCredentials(f"{field}: Secret {where} is not labelled {OPT_IN_LABEL}: \"true\", so the operator "
                                 f"does not read it; label it if this project may use it: kubectl label secret -n "
                                 f"{namespace} {name} {OPT_IN_LABEL}=true (for flops run: metadata.labels in the file)")
    data = secret.data
    missing = sorted({key for key in keys.values() if not data.get(key)})
    if missing and not optional:
        raise MissingCredentials(f"{field}: Secret {where} has no key {', '.join(missing)}")
    return {name: data.get(key) or "" for name, key in keys.items()}


class MemoryCredentials:
    def __init__(self, referenced: dict[tuple[str, str], ReferencedSecret] | None = None) -> None:
        self.store: dict[str, dict[str, str]] = {}
        self.orphaned: dict[str, dict[str, str]] = {}
        self.referenced = referenced or {}
        """Secrets the specs name, by (namespace, name)."""

    async def read(self, project: ProjectRef, secret: str, keys: Mapping[str, str], *,
                   field: str = "tracking.credentialsSecret", optional: bool = False) -> dict[str, str]:
        return pick(f"{project.namespace}/{secret}", self.referenced.get((project.namespace, secret)), keys,
                    field=field, optional=optional)

    async def stored(self, project: ProjectRef, names: list[str]) -> dict[str, str]:
        values = self.store.get(project.uid, {})
        return {n: values[n] for n in names if n in values}

    async def ensure(self, project: ProjectRef, names: list[str], *, renew: Iterable[str] = (),
                     drop: Iterable[str] = ()) -> dict[str, str]:
        values = self.store.setdefault(project.uid, {})
        for name, value in changes(values, names, renew, drop).items():
            if value is None:
                del values[name]
            else:
                values[name] = value
        return {n: values[n] for n in names}

    async def remove(self, project: ProjectRef) -> None:
        self.store.pop(project.uid, None)

    async def orphan(self, project: ProjectRef) -> None:
        self.orphaned[project.uid] = self.store.pop(project.uid, {})


class FileCredentials:
    """One JSON file per project, created 0600 before anything is written into it. Secrets the spec names come
    from the Secret documents given with the project (`flops run` reads them from the same file)."""

    def __init__(self, path_for: "callable[[ProjectRef], Path]",
                 referenced: dict[tuple[str, str], ReferencedSecret] | None = None) -> None:
        self._path_for = path_for
        self._referenced = referenced or {}

    async def read(self, project: ProjectRef, secret: str, keys: Mapping[str, str], *,
                   field: str = "tracking.credentialsSecret", optional: bool = False) -> dict[str, str]:
        return pick(f"{project.namespace}/{secret}", self._referenced.get((project.namespace, secret)), keys,
                    field=field, optional=optional)

    async def stored(self, project: ProjectRef, names: list[str]) -> dict[str, str]:
        path = self._path_for(project)
        values = json.loads(path.read_text()) if path.exists() else {}
        return {n: values[n] for n in names if n in values}

    async def ensure(self, project: ProjectRef, names: list[str], *, renew: Iterable[str] = (),
                     drop: Iterable[str] = ()) -> dict[str, str]:
        path = self._path_for(project)
        values = json.loads(path.read_text()) if path.exists() else {}
        made = changes(values, names, renew, drop)
        if made:
            values.update({n: v for n, v in made.items() if v is not None})
            for name in [n for n, v in made.items() if v is None]:
                del values[name]
            private_dir(path.parent)
            fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "w") as fh:
                json.dump(values, fh)
        return {n: values[n] for n in names}

    async def remove(self, project: ProjectRef) -> None:
        self._path_for(project).unlink(missing_ok=True)

    async def orphan(self, project: ProjectRef) -> None:
        """The file stays where it is, for the services left running."""

"""The whole FLOpsProject object, and turning manifests into it with field-named errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from .patterns import DNS_LABEL
from .spec import FLOpsProjectSpec
from .status import FLOpsProjectStatus, TaskStatus

GROUP = "flops.oakestra.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FLOpsProject"
PLURAL = "flopsprojects"
SINGULAR = "flopsproject"
SHORT_NAMES = ["fp"]
CATEGORIES = ["flops"]
FINALIZER = f"{GROUP}/cleanup"


@dataclass(frozen=True)
class ProjectRef:
    """Identity of one project: what platforms name things after."""

    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Project:
    ref: ProjectRef
    generation: int
    spec: FLOpsProjectSpec
    code: str | None = None
    """For a task from task.source: the commit (or local folder's tree digest) this training runs, once resolved."""
    task: TaskStatus | None = None
    """For a task from task.source: where its build stands (task_build.py); the plan runs what it built."""

    @cached_property
    def training_identity(self) -> str:
        """Computed once per Project (a look asks for it several times; a dump and a hash of the whole spec)."""
        from .edits import training_identity

        return training_identity(self.spec, self.code)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located by its field path."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidProject(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def _loc_to_path(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}"
    return path


def _spec_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] == "enum" or err["type"] == "literal_error":
            message = f"{message} (got {err.get('input')!r})"
        # Model-level rules name their own field in the message; point at the object that holds it.
        field = _loc_to_path("spec", loc)
        named = re.match(r"^(?:set |strategy \w+ does not take )?(\w+(?:\.\w+)+)", message)
        if named and "." in named.group(1):
            field = "spec." + named.group(1)
        problems.append(Problem(field, message))
    return problems


def validate_spec(spec: Any) -> FLOpsProjectSpec:
    if not isinstance(spec, dict):
        raise InvalidProject([Problem("spec", "must be a mapping")])
    try:
        return FLOpsProjectSpec.model_validate(spec)
    except ValidationError as exc:
        raise InvalidProject(_spec_problems(exc)) from None


def parse_project(manifest: Any, *, default_namespace: str = "default") -> Project:
    """A manifest (dict) as a Project, or InvalidProject listing every problem found."""
    if not isinstance(manifest, dict):
        raise InvalidProject([Problem("(document)", "must be a mapping (a Kubernetes object)")])
    problems: list[Problem] = []
    if manifest.get("apiVersion") != API_VERSION:
        problems.append(Problem("apiVersion", f"must be {API_VERSION} (got {manifest.get('apiVersion')!r})"))
    if manifest.get("kind") != KIND:
        problems.append(Problem("kind", f"must be {KIND} (got {manifest.get('kind')!r})"))
    unknown_top = set(manifest) - {"apiVersion", "kind", "metadata", "spec", "status"}
    problems += [Problem(k, "unknown field") for k in sorted(unknown_top)]
    meta = manifest.get("metadata")
    if not isinstance(meta, dict):
        problems.append(Problem("metadata", "must be a mapping with a name"))
        meta = {}
    name = meta.get("name")
    namespace = meta.get("namespace") or default_namespace
    if not isinstance(name, str) or not re.match(DNS_LABEL, name):
        problems.append(Problem("metadata.name", f"must be a DNS-1123 label (lowercase letters, digits, '-', at most 63), got {name!r}"))
    if not isinstance(namespace, str) or not re.match(DNS_LABEL, namespace):
        problems.append(Problem("metadata.namespace", f"must be a DNS-1123 label, got {namespace!r}"))
    spec = None
    if "spec" not in manifest:
        problems.append(Problem("spec", "required field is missing"))
    else:
        try:
            spec = validate_spec(manifest["spec"])
        except InvalidProject as exc:
            problems += exc.problems
    if problems:
        raise InvalidProject(problems)
    assert spec is not None
    uid = str(meta.get("uid") or "")
    ref = ProjectRef(namespace=namespace, name=name, uid=uid or f"local-{namespace}-{name}")
    return Project(ref=ref, generation=int(meta.get("generation") or 1), spec=spec)


def parse_status(raw: Any) -> FLOpsProjectStatus:
    """Previous status as we wrote it; anything unreadable is treated as no status."""
    if not isinstance(raw, dict):
        return FLOpsProjectStatus()
    try:
        return FLOpsProjectStatus.model_validate(raw)
    except ValidationError:
        return FLOpsProjectStatus()

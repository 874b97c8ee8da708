"""Which edits do what: the one table behind the training identity, the CRD's field descriptions and the
README's table (a test keeps all three in step and fails on a spec field that is not classified).

## Training identity
A training run belongs to one training identity: a hash of the spec fields that define the training
(the RETRAIN rows below), taken over their values with defaults left out, so that writing a default out
(or a new operator version adding a field with a default) does not change it. It is derived, not counted:
the same spec has the same identity in `flops run` and in the cluster, with or without the status it had
(GitOps tools do not restore status). The aggregator tags its MLflow run with it (`flops.training.id`);
the operator reads only runs of the current identity, so a run of another identity never decides the
outcome. Going back to an earlier training spec makes that identity current again, with its outcome; to
train an unchanged spec again, change `spec.training.trigger`.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Any

from .spec import FLOpsProjectSpec, public_uri


class Edit(str, Enum):
    retrain = "starts a new training"
    in_place = "applied in place, no new training"
    immutable = "immutable"


# (field path as written in YAML, what editing it does, why or how). A path covers the fields below it.
EDITS: tuple[tuple[str, Edit, str], ...] = (
    ("task", Edit.retrain, "another model"),
    ("task.source", Edit.retrain,
     "other code: a branch or tag `ref` is resolved to a commit when a training starts (`status.task.commit`, part "
     "of the training's identity); a new commit on that branch is trained only when the spec or `training.trigger` "
     "changes. Pin a commit for GitOps"),
    ("task.source.git.credentialsSecret", Edit.in_place, "read when the ref is resolved and the source fetched"),
    ("task.source.git.insecure", Edit.in_place,
     "checked with the spec: without it, a credentialsSecret with an http:// url is refused (Stalled)"),
    ("data", Edit.retrain, "other data or another split"),
    ("training", Edit.retrain, "every training setting (change `trigger` to train an unchanged spec again)"),
    ("learners.image", Edit.retrain, "other learner code"),
    ("aggregator.image", Edit.retrain, "other aggregator code"),
    ("registry", Edit.retrain, "the aggregator registers the model it trained; a new name or alias needs a new model"),
    ("training.activeDeadlineSeconds", Edit.in_place,
     "bounds the training under way; raised past the time spent, it resumes a training that ended DeadlineExceeded"),
    ("learners.replicas", Edit.in_place,
     "while training, learners are added or removed and the run goes on (the aggregator admits exactly the new "
     "learners' keys); after training, nothing to do"),
    ("learners.resources", Edit.in_place, "running learners are replaced; the run goes on"),
    ("learners.placement", Edit.in_place, "running learners are replaced; the run goes on"),
    ("aggregator.resources", Edit.in_place,
     "a running aggregator is replaced and the training resumes from its last finished round"),
    ("aggregator.placement", Edit.in_place,
     "a running aggregator is replaced and the training resumes from its last finished round"),
    ("suspend", Edit.in_place,
     "true stops the training at its next round boundary (that round's model is kept); false resumes it from there"),
    ("tracking.image", Edit.in_place, "the tracking server is replaced"),
    ("tracking.resources", Edit.in_place, "the tracking server is replaced"),
    ("tracking.credentialsSecret", Edit.in_place,
     "read when a service that logs in is created or replaced, and by the operator at each look"),
    ("tracking.insecure", Edit.in_place,
     "checked with the spec: without it, a credentialsSecret with an http:// uri is refused (Stalled)"),
    ("tracking.backendStore.image", Edit.in_place, "the backend store is replaced"),
    ("tracking.artifactStore.image", Edit.in_place, "the artifact store is replaced"),
    ("serving", Edit.in_place, "the model server is created, replaced or removed"),
    ("deletionPolicy", Edit.in_place, "read when the project is deleted"),
    ("platform", Edit.immutable, "services cannot move between platforms"),
    ("tracking.backendStore.type", Edit.immutable, "the project's MLflow runs and registry live there"),
    ("tracking.artifactStore.type", Edit.immutable, "the project's models live there"),
    ("tracking.uri", Edit.immutable, "the project's MLflow runs and registry live there"),
)

IDENTITY_LENGTH = 12


def edit_of(path: str) -> tuple[Edit, str] | None:
    """The row that covers a YAML field path (the longest path that is it or holds it)."""
    best = None
    for row_path, edit, why in EDITS:
        if (path == row_path or path.startswith(row_path + ".")) and (best is None or len(row_path) > len(best[0])):
            best = (row_path, edit, why)
    return None if best is None else (best[1], best[2])


def _pick(wire: dict[str, Any], path: str) -> Any:
    node: Any = wire
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _drop(wire: dict[str, Any], path: str) -> None:
    """Remove the field at `path`, and the objects it leaves empty (an empty object is no value written)."""
    head, _, rest = path.partition(".")
    if not rest:
        wire.pop(head, None)
    elif isinstance(wire.get(head), dict):
        _drop(wire[head], rest)
        if not wire[head]:
            del wire[head]


def training_identity(spec: FLOpsProjectSpec, code: str | None = None) -> str:
    """The identity of the training this spec asks for (see the module docstring); for a task from task.source,
    with `code`: the commit (or the local folder's tree digest) resolved for it when the training started."""
    written = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    for path, edit, _ in EDITS:  # rows inside a retrain row that say otherwise are no part of it
        if edit is not Edit.retrain and "." in path and (edit_of(path.rsplit(".", 1)[0]) or (None,))[0] is Edit.retrain:
            _drop(written, path)
    # A retrain row inside another one is there for its description: the outer row already covers its value.
    basis = {path: _pick(written, path) for path, edit, _ in EDITS
             if edit is Edit.retrain and not _inside_retrain(path)}
    if code is not None:
        basis["code"] = code
    payload = json.dumps(basis, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:IDENTITY_LENGTH]


def _inside_retrain(path: str) -> bool:
    parts = path.split(".")
    return any(edit is Edit.retrain and p == ".".join(parts[:n])
               for n in range(1, len(parts)) for p, edit, _ in EDITS)


def immutable_values(spec: FLOpsProjectSpec) -> dict[str, str | None]:
    """The immutable fields' values (defaults included), by their YAML path: what status.createdWith keeps."""
    wire = spec.model_dump(mode="json", by_alias=True)
    values = {f"spec.{path}": _pick(wire, path) for path, edit, _ in EDITS if edit is Edit.immutable}
    if values.get("spec.tracking.uri"):  # status keeps it: only what may be shown
        values["spec.tracking.uri"] = public_uri(values["spec.tracking.uri"])
    return values


def immutable_changes(spec: FLOpsProjectSpec, created_with: dict[str, str | None] | None) -> list[tuple[str, str]]:
    """(field path, message) for each immutable field the spec changes against what the project was created
    with. The API server refuses such edits (CEL); this covers one that does not run the rules."""
    if not created_with:
        return []
    now = immutable_values(spec)
    return [(path, f"is immutable ({why}): the project was created with {created_with[path]!r}, "
                   f"the spec now says {now[path]!r}; nothing was changed")
            for path, edit, why in ((f"spec.{p}", e, w) for p, e, w in EDITS if e is Edit.immutable)
            if path in created_with and created_with[path] != now[path]]


def description(path: str) -> str | None:
    """What the CRD's description of a field says about editing it (None for fields inside a row's path:
    the row's own field says it once)."""
    for row_path, edit, why in EDITS:
        if row_path == path:
            if edit is Edit.immutable:
                return f"It cannot be changed (immutable): {why}."
            return f"Editing it {edit.value}: {why}." if edit is Edit.retrain else f"Editing it is {edit.value}: {why}."
    return None


def markdown_table() -> str:
    """The README's table, generated here so that it cannot drift (a test compares)."""
    lines = ["| field | editing it | what happens |", "|---|---|---|"]
    for path, edit, why in EDITS:
        lines.append(f"| `spec.{path}` | {edit.value} | {why} |")
    return "\n".join(lines)


# CEL transition rules for the immutable fields. The API server defaults every object and `type` in the
# spec, so those always exist on both sides; an optional field (tracking.uri) is guarded on its parent, so
# that setting or clearing it is refused as well as changing it.
IMMUTABLE_RULES: dict[str, list[dict[str, str]]] = {
    "platform": [{"rule": "self == oldSelf", "message": "platform is immutable"}],
    "tracking.backendStore.type": [{"rule": "self == oldSelf", "message": "tracking.backendStore.type is immutable"}],
    "tracking.artifactStore.type": [{"rule": "self == oldSelf", "message": "tracking.artifactStore.type is immutable"}],
    "tracking": [{"rule": "has(self.uri) == has(oldSelf.uri) && (!has(self.uri) || self.uri == oldSelf.uri)",
                  "message": "tracking.uri is immutable"}],
}

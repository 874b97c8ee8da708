"""Pure decisions of the kopf adapter: what to patch into status, which Events to post, how long to wait.

No kopf and no I/O here, so all of it is unit-tested without an API server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..models import FLOpsProjectStatus, Phase
from ..status import problem_status

__all__ = ["EventSpec", "backoff_seconds", "describe", "events_for", "merge_patch", "problem_status"]
from ..plan.diff import Action, Create, Remove, Replace

_MISSING = object()


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning `old` into `new`; empty when they are equal.

    Lists are replaced whole (as merge patches do); keys gone from `new` are set to None.
    """
    patch: dict[str, Any] = {}
    for key in sorted(set(old) - set(new)):
        patch[key] = None
    for key, value in new.items():
        before = old.get(key, _MISSING)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif before != value:
            patch[key] = value
    return patch


def apply_merge_patch(old: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """What an API server stores after `patch` (RFC 7386) over `old`: None deletes a key, mappings merge."""
    result = dict(old)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            before = result.get(key)
            result[key] = apply_merge_patch(before if isinstance(before, Mapping) else {}, value)
        else:
            result[key] = value
    return result


@dataclass(frozen=True)
class EventSpec:
    type: str
    """Normal or Warning."""
    reason: str
    message: str


def describe(actions: Sequence[Action]) -> str:
    verbs = {Create: "create", Replace: "replace", Remove: "remove"}
    parts = []
    for action in actions:
        verb = verbs.get(type(action))
        if verb is not None:
            name = action.name if isinstance(action, Remove) else action.service.name
            parts.append(f"{verb} {name}")
    return ", ".join(parts)


def _is_true(status: FLOpsProjectStatus | None, type_: str) -> bool:
    condition = status.condition(type_) if status is not None else None
    return condition is not None and condition.status == "True"


def events_for(previous: FLOpsProjectStatus | None, new: FLOpsProjectStatus, *, applied: Sequence[Action] = (),
               invalid: bool = False) -> list[EventSpec]:
    """The Events one reconcile is worth: what it changed, a phase change, a new reason to stop.

    `previous` is None when the project had no status yet. Nothing is repeated while nothing changes,
    so a periodic resync of a steady project posts no Event.
    """
    events = []
    if applied:
        events.append(EventSpec("Normal", "Applied", describe(applied)))
    changed_phase = previous is None or previous.phase is not new.phase
    changed_message = previous is None or previous.message != new.message
    if invalid:
        if changed_phase or changed_message:
            events.append(EventSpec("Warning", "InvalidSpec", new.message or "invalid spec"))
    elif changed_phase:
        before = previous.phase.value if previous is not None else "(new)"
        kind = "Warning" if new.phase is Phase.Failed else "Normal"
        events.append(EventSpec(kind, new.phase.value, f"{before} -> {new.phase.value}: {new.message or ''}".rstrip(": ")))
    elif _is_true(new, "Stalled") and (not _is_true(previous, "Stalled") or changed_message):
        events.append(EventSpec("Warning", "Stalled", new.message or "stalled"))
    return events


def backoff_seconds(retry: int, *, base: float = 2.0, cap: float = 300.0,
                    rand: Callable[[float, float], float] = random.uniform) -> float:
    """Exponential backoff with +-20% jitter, so that many projects do not retry in lockstep."""
    delay = min(cap, base * 2 ** max(0, retry))
    return delay * rand(0.8, 1.2)

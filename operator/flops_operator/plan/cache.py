"""The plan of a project, the same tuple for the same inputs, kept process-wide.

Its ServiceSpecs compute their spec_hash once, not at every look: at scale that was a tenth of the driver's CPU.
desired() does not read the generation, so the spec as written, the project's identity, what of status.task the
plan reads and the flags are the whole key.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from ..models import Project
from .desired import desired
from .services import ServiceSpec

KEPT = 1024
# What of status.task the plan reads (not the build's progress messages).
PLANNED_TASK_FIELDS = {"build_phase", "commit", "tree", "entrypoint", "image", "aggregator_image", "python_path"}
_PLANS: OrderedDict[tuple, tuple[ServiceSpec, ...]] = OrderedDict()


def planned(manifest: dict[str, Any], project: Project, **flags: bool) -> tuple[ServiceSpec, ...]:
    """desired(project, **flags), from the cache when these inputs were planned before."""
    built = project.task.model_dump_json(include=PLANNED_TASK_FIELDS) if project.task is not None else None
    key = (project.ref, json.dumps(manifest.get("spec"), sort_keys=True, default=str), project.code, built,
           *sorted(flags.items()))
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = tuple(desired(project, **flags))
        while len(_PLANS) > KEPT:
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(key)
    return plan

"""The one reconcile step, called by the kopf handlers and by `flops run` alike: gather -> decide -> act.

gather (gather.py) reads everything the step needs into one immutable World; decide (decide.py, pure) turns it into
the changes to make and, once they are made, the status; act (act.py) makes them. Nothing here knows Kubernetes or
processes. ARCHITECTURE.md has the layers around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .act import act
from .cleanup import Cleanup, cleanup_plan, finalize, project_ref
from .control import NoControl, TrainingControl
from .decide import ReconcileResult, decide
from .gather import gather
from .models import FLOpsProjectStatus
from .plan.diff import Action, Remove
from .platforms.base import Credentials, Platform
from .progress import ProgressSource
from .redaction import redacted_status
from .sources import SourceResolver, Sources

__all__ = ["Cleanup", "Passes", "ReconcileResult", "cleanup_plan", "converge", "finalize", "project_ref",
           "reconcile", "utcnow"]


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def reconcile(
    manifest: dict[str, Any],
    previous: FLOpsProjectStatus,
    *,
    platform: Platform,
    credentials: Credentials,
    progress_source: ProgressSource,
    control: TrainingControl = NoControl(),
    now: str | None = None,
    sources: SourceResolver | None = None,
) -> ReconcileResult:
    """Converge one project one step. Raises TransientPlatformError for the caller to retry."""
    world = await gather(manifest, previous, platform=platform, credentials=credentials,
                         progress_source=progress_source, sources=sources or Sources(), now=now or utcnow())
    decision = decide(world)
    # The keys this step deletes with the services it removes (plan/flower_keys.py): their last log lines, which
    # status may quote, are read before the values are gone.
    dropped: dict[str, str] = {}
    if world.project is not None and any(isinstance(a, Remove) for a in decision.services):
        dropped = await credentials.stored(world.project.ref, list(decision.drop))
    observation = await act(decision, platform=platform, credentials=credentials, control=control)
    result = decision.result(observation)
    if world.project is not None:
        # Services print what they are given, and their log lines reach status: none of the project's secrets does.
        result.status = await redacted_status(result.status, world.previous, world.project, credentials,
                                              world.referenced or {}, also=dropped.values())
    return result


# One change can take a few passes to carry out: services wait for those they depend on, which the next
# observe may already see running. Bounded: a platform that keeps changing cannot hold a caller forever.
MAX_PASSES = 6


@dataclass
class Passes:
    """What the passes of one convergence step got to, also when one of them raised."""

    status: FLOpsProjectStatus
    """The status the last finished pass computed (the previous one before any)."""
    applied: list[Action] = field(default_factory=list)
    """Everything the passes changed, in order."""
    result: ReconcileResult | None = None


async def converge(manifest: dict[str, Any], passes: Passes, *, platform: Platform, credentials: Credentials,
                   progress_source: ProgressSource, control: TrainingControl = NoControl(),
                   max_passes: int = MAX_PASSES, sources: SourceResolver | None = None) -> ReconcileResult:
    """The one convergence step both adapters take: reconcile() again while a pass changed something.
    When to take the next step is theirs to schedule, by the same policy (pacing.Pacing). Platform errors
    propagate; `passes` then holds what was done before."""
    for _ in range(max_passes):
        result = await reconcile(manifest, passes.status, platform=platform, credentials=credentials,
                                 progress_source=progress_source, control=control, sources=sources)
        passes.applied += result.applied
        passes.status, passes.result = result.status, result
        if result.invalid or not result.applied:
            break
    assert passes.result is not None
    return passes.result

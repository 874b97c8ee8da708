"""When to look at a project again: one pure policy for both adapters (kopf's ticks, `flops run`'s loop).

A project that waits on a service it depends on is looked at again soon, then less often (backing off to
the resync interval): a service that becomes ready lets the next dependency wave go within a moment, not
at the next 30 s resync. A project that is training is looked at every few seconds, so a finished round
shows in status promptly, and sooner when the training is estimated to end sooner (its last rounds, its model
being registered), so that Completed shows when it happens. A settled one (Completed and ready, Failed,
Stalled) only at the resync.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .models import FLOpsProjectStatus, Phase


def _true(status: FLOpsProjectStatus, kind: str) -> bool:
    condition = status.condition(kind)
    return condition is not None and condition.status == "True"


def settled(status: FLOpsProjectStatus) -> bool:
    """Nothing will change without an edit or drift: Completed or Suspended and ready, Failed, or Stalled."""
    return ((status.phase in (Phase.Completed, Phase.Suspended) and _true(status, "Ready"))
            or status.phase is Phase.Failed or _true(status, "Stalled"))


@dataclass(frozen=True)
class Pacing:
    resync: float = 30.0
    """A settled project: drift repair and nothing else."""
    quick: float = 0.5
    """After a change was applied: the next wave may be ready about now."""
    growth: float = 1.1
    """Each look that found nothing new waits this much longer, up to `resync`. Gentle: a service that takes
    10 s to start (an MLflow server on one machine) is seen within about a second of it being up, and a wait
    of minutes (an image pulled on an edge worker) still reaches the resync interval within about 5 minutes."""
    training: float = 3.0
    """A project training with every service up: how often its progress is read."""
    jitter: float = 0.2
    """Settled projects resync at resync × (1 + up to jitter), so that many do not resync in lockstep."""

    def next_delay(self, status: FLOpsProjectStatus, *, applied: bool, previous: float | None,
                   rand: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds until the next look, given the status just computed, whether this look changed the
        platform, and the delay before it (None: the first look, or the first after an edit)."""
        if settled(status):
            return self.resync * rand(1.0, 1.0 + self.jitter)
        if status.phase is Phase.Training and _true(status, "Ready"):
            remaining = status.training.estimated_remaining_seconds
            if remaining is not None and status.training.round > 0:
                # The end is near (or all rounds are in and the model is being registered): look when it is due.
                return min(self.training, self.resync, max(self.quick, float(remaining)))
            return min(self.training, self.resync)
        if applied or previous is None:
            return min(self.quick, self.resync)
        return min(self.resync, max(self.quick, previous * self.growth))

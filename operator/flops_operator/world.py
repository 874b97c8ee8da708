"""What one reconcile step knows: the gatherer's reading (gather.py), the decision's only input (decide.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .models import FLOpsProjectStatus, Problem, Project
from .observed import Observation
from .progress import TrainingProgress


@dataclass(frozen=True)
class World:
    """What one step knows. Either `problems` (the spec cannot be used: nothing else was read) or the rest."""

    manifest: dict[str, Any]
    previous: FLOpsProjectStatus
    now: str
    generation: int
    problems: list[Problem] | None = None
    project: Project | None = None
    """Parsed, with its task's version and build as the source and the builder say (status.task)."""
    observation: Observation = Observation()
    referenced: Mapping[str, str] | None = None
    """Values of the Secret the spec references (tracking.credentialsSecret), by credential name."""
    reader: tuple[str, str] | None = None
    """The operator's login to the project's tracking server, for reads."""
    writer: tuple[str, str] | None = None
    """The aggregator's login, for the operator's control writes (a stop request, the learner count)."""
    url: str | None = None
    """Where the tracking server answers; None while there is none to reach."""
    progress: TrainingProgress | None = None

"""Training progress as read from the project's MLflow run (the aggregator writes, we read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .models import Project


@dataclass(frozen=True)
class TrainingProgress:
    experiment_id: str | None = None
    run_id: str | None = None
    run_status: str | None = None
    """MLflow run status: RUNNING, FINISHED, FAILED, KILLED."""
    round: int = 0
    latest_metrics: dict[str, float] = field(default_factory=dict)
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_round: int | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_alias: str | None = None
    model_uri: str | None = None
    promoted: bool | None = None


class ProgressSource(Protocol):
    async def fetch(self, project: Project, tracking_url: str) -> TrainingProgress | None:
        """Progress of the project's latest training run, None if there is none (yet).

        Raises nothing for an unreachable server: progress is best effort, status keeps the last
        known numbers.
        """
        ...


class NoProgress:
    """The no-op twin: for platforms/tests with no tracking server to read."""

    async def fetch(self, project: Project, tracking_url: str) -> TrainingProgress | None:
        return None

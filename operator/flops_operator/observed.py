"""What a platform reports it sees of a project's services: the vocabulary the platforms produce and the plan,
status and task-build decisions read. Its own module so that plan/ and platforms/ both import it downwards."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .plan.services import Role


class ServiceState(str, Enum):
    pending = "pending"  # accepted, not yet scheduled/started
    starting = "starting"  # scheduled/started, not yet ready
    running = "running"  # ready (probe passed / instance RUNNING)
    completed = "completed"  # one-shot service exited 0
    failed = "failed"  # one-shot exited non-zero, or could not be placed / kept failing


@dataclass(frozen=True)
class ObservedService:
    name: str
    role: Role
    state: ServiceState
    spec_hash: str
    service_id: str | None = None
    address: str | None = None
    """host:port of its first port, as the project's other services reach it."""
    external_address: str | None = None
    """host:port reachable from where the operator runs (published services only)."""
    message: str | None = None
    restarts: int = 0
    exit_code: int | None = None
    output: str = ""
    """The last lines it printed, for a service whose output is its result (the image builder)."""


@dataclass(frozen=True)
class Observation:
    services: dict[str, ObservedService] = field(default_factory=dict)
    application_id: str | None = None
    application_name: str | None = None

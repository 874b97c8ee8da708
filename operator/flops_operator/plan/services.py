"""What one project needs, as platform-neutral service specs (values only, no I/O).

Services refer to each other and to their own environment through placeholders that each
platform resolves (see render.py): the plan never knows whether a service is a container behind
an Oakestra round-robin IP or a local process on a free loopback port.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from enum import Enum


class Role(str, Enum):
    backend_store = "backend-store"
    artifact_store = "artifact-store"
    tracking_server = "tracking-server"
    aggregator = "aggregator"
    learner = "learner"
    model_server = "model-server"
    builder = "builder"


STACK_ROLES = (Role.backend_store, Role.artifact_store, Role.tracking_server)
TRAINING_ROLES = (Role.aggregator, Role.learner)


@dataclass(frozen=True)
class Port:
    name: str
    container_port: int
    published: bool = False
    """Also reachable from outside the platform (a host port on Oakestra)."""
    health_path: str | None = None
    """An HTTP path on this port that answers 200 once the service is ready."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service of a project. Strings in command/env may hold placeholders (render.py)."""

    name: str
    """Logical name, unique in the project: tracking-server, learner-3, ..."""
    role: Role
    image: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[Port, ...] = ()
    memory_mb: int = 256
    vcpus: int = 1
    cluster: str | None = None
    one_shot: bool = False
    depends_on: tuple[str, ...] = ()
    """Services that must be running before this one is created."""
    partition_id: int | None = None
    secrets: tuple[str, ...] = ()
    """Names of project credentials this service's placeholders use."""
    options: tuple[tuple[str, str], ...] = field(default=())
    """Role-specific facts platforms may need (e.g. backend=sqlite), never secrets."""
    scale_env: tuple[str, ...] = ()
    """Env keys whose values follow the learner count. Left out of spec_hash: scaling learners while
    training adds or removes learners without restarting the run (new ones get the new values)."""
    scale_free: tuple[tuple[str, str], ...] = ()
    """What of the scale_env values must still change spec_hash (their learner-count-free form)."""

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    @property
    def options_dict(self) -> dict[str, str]:
        return dict(self.options)

    def port(self, name: str) -> Port:
        for port in self.ports:
            if port.name == name:
                return port
        raise KeyError(f"service {self.name} has no port {name!r}")

    @cached_property
    def spec_hash(self) -> str:
        """Changes whenever anything a platform would deploy differently changes."""
        # The JSON of dataclasses.asdict(self) (what the hashes of running services were made from:
        # a different value would replace them all), built without asdict's deep copies, the
        # driver's largest CPU cost at scale.
        basis = {f.name: getattr(self, f.name) for f in fields(self)}
        basis["ports"] = [asdict(p) for p in self.ports]  # small and flat: cheap
        basis["env"] = [(k, v) for k, v in self.env if k not in self.scale_env]
        payload = json.dumps(basis, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

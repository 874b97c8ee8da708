"""Projects as tests need them, and what the operator's plan renders for them (the contracts that ship)."""

from __future__ import annotations

import functools
import socket
from pathlib import Path
from typing import Any

from flops_aggregator.contract import AggregatorConfig, FlowerAdmission
from flops_aggregator.settings import Settings
from flops_learner.contract import LearnerAdmission
from flops_operator.credentials import generate
from flops_operator.models import FLOpsProjectSpec, Project, ProjectRef
from flops_operator.plan.desired import AGGREGATOR_ADMISSION, FLOWER_CA, aggregator_config, learner_admission
from flops_operator.plan.logins import is_flower_key
from flops_operator.plan.render import render


def project(spec: dict[str, Any], *, namespace: str = "ns", name: str = "p", uid: str = "u-1") -> Project:
    return Project(ProjectRef(namespace, name, uid), 1, FLOpsProjectSpec.model_validate(spec))


def with_training(config: AggregatorConfig, **changes: Any) -> AggregatorConfig:
    """The plan's config with training values the spec would refuse (e.g. a tiny round timeout)."""
    return config.model_copy(update={"training": config.training.model_copy(update=changes)})


def aggregator_settings(spec: dict[str, Any], workdir: str | Path = ".", tracking_uri: str = "",
                        **training: Any) -> Settings:
    config = aggregator_config(project(spec))
    return Settings(config=with_training(config, **training) if training else config, workdir=Path(workdir),
                    tracking_uri=tracking_uri)


@functools.cache
def _flower(name: str) -> str:
    return generate(name)


def fake_secret(name: str) -> str:
    """A stand-in credential value that shows where it lands; real Flower material (the CA, the keys) where the plan
    issues certificates from it."""
    return _flower(name) if name == FLOWER_CA or is_flower_key(name) else f"<{name}>"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackPki:
    """A project's Flower PKI as the operator generates it (the CA, the SuperLink's key, each learner's key), and the
    admission values the plan's placeholders render to when every process runs on loopback (the aggregator's
    enrollment port: `enroll_port`)."""

    def __init__(self, enroll_port: int | None = None) -> None:
        self.values: dict[str, str] = {}
        self.enroll_port = enroll_port or _free_port()

    def renew(self, name: str) -> str:
        """A new key for `name` (the operator's rotation when the service is replaced)."""
        self.values[name] = generate(name)
        return self.values[name]

    # render.Resolver, for the few placeholders admission uses
    def secret(self, name: str) -> str:
        return self.values[name] if name in self.values else self.renew(name)

    def host(self, service: str) -> str:
        return "127.0.0.1"

    def bind(self) -> str:
        return "127.0.0.1"

    def own_port(self, port: str) -> int:
        assert port == "enroll", port
        return self.enroll_port

    def address(self, service: str, port: str) -> str:
        assert (service, port) == ("aggregator", "enroll"), (service, port)
        return f"127.0.0.1:{self.enroll_port}"

    def aggregator(self) -> FlowerAdmission:
        return FlowerAdmission.model_validate(
            {k: render(v, self) for k, v in AGGREGATOR_ADMISSION.model_dump().items()})

    def learner(self, partition_id: int) -> LearnerAdmission:
        """Learner `partition_id`'s admission: its current key (LoopbackPki.renew: a new one) and a certificate
        issued now for it."""
        return LearnerAdmission.model_validate(
            {k: render(v, self) for k, v in learner_admission(partition_id).model_dump().items()})

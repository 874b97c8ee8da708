"""Projects as tests need them, and what the operator's plan renders for them (the contracts that ship)."""

from __future__ import annotations

import functools
import secrets
from pathlib import Path
from typing import Any

from flops_aggregator.contract import AggregatorConfig, FlowerAdmission
from flops_aggregator.settings import Settings
from flops_learner.contract import LearnerAdmission
from flops_operator.credentials import generate
from flops_operator.models import FLOpsProjectSpec, Project, ProjectRef
from flops_operator.plan.desired import (AGGREGATOR_ADMISSION, FLOWER_CA, LEARNER_KEY_SEED, aggregator_config,
                                         learner_admission)
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
def _ca() -> str:
    return generate(FLOWER_CA)


def fake_secret(name: str) -> str:
    """A stand-in credential value that shows where it lands; a real CA where the plan derives values from it."""
    return _ca() if name == FLOWER_CA else f"<{name}>"


class LoopbackPki:
    """A project's Flower CA and learner-key seed as the operator generates them, and the admission values the
    plan's placeholders render to when every process runs on loopback."""

    def __init__(self) -> None:
        self.values = {FLOWER_CA: generate(FLOWER_CA), LEARNER_KEY_SEED: secrets.token_urlsafe(24)}

    # render.Resolver, for the few placeholders admission uses
    def secret(self, name: str) -> str:
        return self.values[name]

    def host(self, service: str) -> str:
        return "127.0.0.1"

    def aggregator(self) -> FlowerAdmission:
        return FlowerAdmission.model_validate(
            {k: render(v, self) for k, v in AGGREGATOR_ADMISSION.model_dump().items()})

    def learner(self, partition_id: int) -> LearnerAdmission:
        return LearnerAdmission.model_validate(
            {k: render(v, self) for k, v in learner_admission(partition_id).model_dump().items()})

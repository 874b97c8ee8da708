"""Projects as tests need them, and what the operator's plan renders for them (the contracts that ship)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flops_aggregator.contract import AggregatorConfig
from flops_aggregator.settings import Settings
from flops_operator.models import FLOpsProjectSpec, Project, ProjectRef
from flops_operator.plan.desired import aggregator_config


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

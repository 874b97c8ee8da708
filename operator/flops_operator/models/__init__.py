"""The FLOpsProject API: pydantic models, the single source of truth (the CRD is generated)."""

from .project import (
    API_VERSION,
    FINALIZER,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    InvalidProject,
    Problem,
    Project,
    ProjectRef,
    parse_project,
    parse_status,
    validate_spec,
)
from .spec import FLOpsProjectSpec, Platform, StrategyName
from .status import ComponentStatus, Condition, FLOpsProjectStatus, Phase

__all__ = [
    "API_VERSION", "FINALIZER", "GROUP", "KIND", "PLURAL", "VERSION",
    "InvalidProject", "Problem", "Project", "ProjectRef", "parse_project", "parse_status", "validate_spec",
    "FLOpsProjectSpec", "Platform", "StrategyName",
    "ComponentStatus", "Condition", "FLOpsProjectStatus", "Phase",
]

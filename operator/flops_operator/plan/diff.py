"""diff(desired, observed) -> actions. Pure; steady state gives no actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

from ..observed import ObservedService, ServiceState
from .services import ServiceSpec


@dataclass(frozen=True)
class Create:
    service: ServiceSpec


@dataclass(frozen=True)
class Replace:
    """Its spec changed: the platform replaces it (Oakestra cannot update a service in place)."""

    service: ServiceSpec


@dataclass(frozen=True)
class Remove:
    name: str


@dataclass(frozen=True)
class Wait:
    """Not created yet: these dependencies are not running. Not an effect, only reported."""

    name: str
    waiting_for: tuple[str, ...]


Action = Union[Create, Replace, Remove, Wait]


def _ready(observed: ObservedService | None) -> bool:
    return observed is not None and observed.state is ServiceState.running


def diff(desired: Sequence[ServiceSpec], observed: Mapping[str, ObservedService],
         rerun: frozenset[str] = frozenset()) -> list[Action]:
    """`rerun`: finished services of this very spec to run again (an aggregator that stopped for a suspension
    that is over): removed, then created by the next pass (a platform keeps a service of the same spec)."""
    actions: list[Action] = []
    wanted = {s.name for s in desired}
    # Removals first: they free capacity (and Oakestra addresses) for what comes next.
    actions += [Remove(name) for name in sorted(observed) if name not in wanted]
    for service in desired:
        seen = observed.get(service.name)
        if seen is None:
            missing = tuple(d for d in service.depends_on if not _ready(observed.get(d)))
            actions.append(Wait(service.name, missing) if missing else Create(service))
        elif service.name in rerun and seen.state is ServiceState.completed:
            actions.append(Remove(service.name))
        elif seen.spec_hash != service.spec_hash:
            # Finished one-shots too: a finished one that is still wanted did the work of another spec
            # (training is not done for this spec's identity, status.training_outcome), so it runs again.
            actions.append(Replace(service))
    return actions


def effects(actions: Sequence[Action]) -> list[Action]:
    """The actions that change the world (Wait is only information)."""
    return [a for a in actions if not isinstance(a, Wait)]

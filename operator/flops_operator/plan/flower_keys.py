"""When the Flower PKI's credentials are generated anew and when they are deleted: pure, from one step's actions.

A service's own key lives as long as that service (one incarnation): the SuperLink's TLS key is generated anew
whenever the aggregator is created or replaced, a learner's SuperNode key whenever that learner is, and each is
deleted when its service is removed. The learner presents the certificate issued for its new key to the aggregator,
which then unregisters the key it held for that learner (flops_aggregator.admission): a replaced learner's old key
is refused from then on, and no aggregator needs replacing for it (nor for a learner added).

The CA lives as long as a span of training (flops_runtime.pki, CA_DAYS): generated anew when the aggregator is created
or replaced while no learner is there (every service that trusts the CA is then created after it), kept while a
learner that trusts it is, and deleted once no training service is left. Credentials of earlier versions are deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..observed import ObservedService
from .diff import Action, Create, Remove, Replace
from .logins import FLOWER_CA, RETIRED_CREDENTIALS, SUPERLINK_KEY, learner_key
from .services import TRAINING_ROLES, Role


@dataclass(frozen=True)
class KeyChanges:
    renew: tuple[str, ...] = ()
    """Generated anew (before the services that use them are created)."""
    drop: tuple[str, ...] = ()
    """Deleted from the project's Secret (or credentials file), where they are."""


def own_keys(service: str) -> tuple[str, ...]:
    """The keys that belong to the service named `service` alone."""
    if service == "aggregator":
        return (SUPERLINK_KEY,)
    partition = service.removeprefix("learner-")
    if partition != service and partition.isdigit():
        return (learner_key(int(partition)),)
    return ()


def key_changes(actions: Sequence[Action], observed: Mapping[str, ObservedService]) -> KeyChanges:
    """What `actions` (one step's, on the services `observed`) change in the Flower PKI's credentials."""
    made = [a.service for a in actions if isinstance(a, (Create, Replace))]
    removed = {a.name for a in actions if isinstance(a, Remove)}
    remaining = [s for s in observed.values() if s.name not in removed]
    renew = [name for service in made for name in own_keys(service.name)]
    drop = [name for service in sorted(removed) for name in own_keys(service)] + list(RETIRED_CREDENTIALS)
    if any(s.role is Role.aggregator for s in made) and not any(s.role is Role.learner for s in remaining):
        renew.append(FLOWER_CA)
    if not any(s.role in TRAINING_ROLES for s in [*made, *remaining]):
        drop.append(FLOWER_CA)
    return KeyChanges(tuple(renew), tuple(drop))

"""kopf's settings for this operator, each chosen on purpose."""

from __future__ import annotations

import logging

import kopf

from ..models import FINALIZER, GROUP


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()

    # Our own finalizer name: `kubectl get fp -o yaml` then tells users which operator holds a
    # deleted project back, and `flops.oakestra.io/cleanup` is what the docs tell them to look for.
    settings.persistence.finalizer = FINALIZER

    # kopf's bookkeeping goes into annotations under our own prefix, never into status: status is
    # our documented API (kstatus conditions, printer columns), and the CRD's structural schema
    # would prune kopf's unknown status fields anyway, losing its progress between cycles.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")

    # Events are what users read in `kubectl describe fp`. The handlers post the meaningful ones
    # themselves (phase changes, invalid spec, applied changes); kopf's INFO chatter ("Handler ...
    # succeeded", one per reconcile) would drown them, so only warnings and errors of kopf and of
    # our logs become Events.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "flops-operator"
    settings.posting.event_name_prefix = "flops-operator-"

    # Ask the API server to end every watch after 5 minutes and start a new one: a watch broken
    # silently on the way (load balancers and NATs drop idle connections without a word) then heals
    # in minutes rather than never. The client-side timeout is a little longer so that the server
    # closes first; connecting should take seconds, not the default's unbounded wait.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10

    # No kopf peering: which replica is active is decided by a Lease before kopf starts (leader.py says
    # why: peering freezes replicas of equal priority), so kopf only ever runs in the one that leads.
    # No kopf peering CRDs to install, no RBAC for them, no start-up wait for peers.
    settings.peering.standalone = True

    # A reconcile talks to a remote platform (Oakestra) and may wait on it; an API request of
    # kopf's own should not hang for the 5-minute default while projects queue behind it.
    settings.networking.request_timeout = 60
    return settings


class QuietTicks(logging.Filter):
    """The resync timer ticks every second per project and mostly only finds the project not due; kopf would
    log "Timer 'resync' succeeded." at INFO for each tick. What a tick did is logged by the reconcile step."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Timer 'resync' succeeded."


def quiet_ticks() -> None:
    """Installed once per process (idempotent)."""
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietTicks) for f in objects.filters):
        objects.addFilter(QuietTicks())

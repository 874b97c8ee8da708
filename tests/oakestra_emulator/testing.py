"""Helpers for tests that drive the Oakestra platform against the emulator."""

from __future__ import annotations

import copy
from typing import Any

from flops_operator.credentials import MemoryCredentials
from flops_operator.models import FLOpsProjectStatus
from flops_operator.platforms.base import TransientPlatformError
from flops_operator.platforms.oakestra import OakestraConfig, OakestraPlatform
from flops_operator.progress import NoProgress
from flops_operator.reconcile import ReconcileResult, reconcile

from .server import Emulator


def manifest(uid: str = "5f0c7d1e-0000-4000-8000-000000000042", *, name: str = "digits", learners: int = 3,
             generation: int = 1) -> dict[str, Any]:
    """A FLOpsProject on Oakestra: MySQL + FTP + tracking server + aggregator + learners."""
    return {
        "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
        "metadata": {"name": name, "namespace": "team-a", "uid": uid, "generation": generation},
        "spec": {"platform": "oakestra", "task": {"name": "digits-mlp"}, "learners": {"replicas": learners},
                 "tracking": {"backendStore": {"type": "mysql"}, "artifactStore": {"type": "ftp"}}},
    }


def scaled(base: dict[str, Any], learners: int) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out["spec"]["learners"]["replicas"] = learners
    out["metadata"]["generation"] += 1
    return out


def driver_for(emu: Emulator, **overrides: Any) -> OakestraPlatform:
    # Instances here are the emulator's clock, not containers: nothing to wait for, nothing to probe.
    settings = {"backoff_initial": 0.01, "backoff_max": 0.05, "request_timeout": 5.0, "ready_after": 0.0,
                "health_checks": False, **overrides}
    clock = settings.pop("clock", None)
    config = OakestraConfig(**{"url": emu.url, "username": "Admin", "password": "Admin", **settings})
    return OakestraPlatform(config, clock=clock) if clock else OakestraPlatform(config)


async def converge(manifest: dict[str, Any], platform: OakestraPlatform, credentials: MemoryCredentials,
                   status: FLOpsProjectStatus | None = None, *, steps: int = 12,
                   tolerate_transient: bool = False) -> ReconcileResult:
    """Reconcile until a step applies nothing (as kopf's resync would), at most `steps` times."""
    status = status or FLOpsProjectStatus()
    result = None
    for _ in range(steps):
        try:
            result = await reconcile(manifest, status, platform=platform, credentials=credentials,
                                     progress_source=NoProgress())
        except TransientPlatformError:
            if not tolerate_transient:
                raise
            continue
        status = result.status
        if not result.applied:
            return result
    raise AssertionError(f"did not converge in {steps} steps; last: {result and result.applied}")

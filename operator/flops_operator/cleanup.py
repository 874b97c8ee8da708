"""Deleting a project: what its deletionPolicy and whatever its manifest still holds say to remove."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .models import ProjectRef
from .models.spec import DeletionPolicy
from .models.spec import Platform as PlatformName
from .platforms.base import Credentials, Platform

log = logging.getLogger(__name__)


def project_ref(manifest: dict[str, Any]) -> ProjectRef:
    """The identity of a project even when its spec no longer validates (for cleanup)."""
    meta = manifest.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name") or ""
    return ProjectRef(namespace=namespace, name=name, uid=str(meta.get("uid") or f"local-{namespace}-{name}"))


@dataclass(frozen=True)
class Cleanup:
    """What deleting a project takes, read from whatever its manifest holds (any shape)."""

    orphan: bool
    """spec.deletionPolicy Orphan: its services stay."""
    platform: str | None
    """Where its services would be; None when neither spec nor status names a platform that holds any."""
    created: bool
    """Its status shows something it created (services, an Oakestra application)."""


def cleanup_plan(manifest: Any) -> Cleanup:
    """Pure. The platform comes from the spec while it names one (even if the spec is otherwise
    invalid); otherwise from the status, if that shows anything created."""
    manifest = manifest if isinstance(manifest, dict) else {}
    spec, status = manifest.get("spec"), manifest.get("status")
    spec = spec if isinstance(spec, dict) else None
    status = status if isinstance(status, dict) else {}
    oakestra = status.get("oakestra") if isinstance(status.get("oakestra"), dict) else {}
    created = bool(status.get("components")) or bool(oakestra.get("applicationId"))
    named = spec.get("platform", PlatformName.local.value) if spec is not None else None
    if isinstance(named, str) and named in {p.value for p in PlatformName}:
        platform = named
    elif created:
        platform = PlatformName.oakestra.value if oakestra else PlatformName.local.value
    else:
        platform = None
    return Cleanup(orphan=spec is not None and spec.get("deletionPolicy") == DeletionPolicy.Orphan.value,
                   platform=platform, created=created)


async def finalize(manifest: dict[str, Any], *, platform: Platform | None, credentials: Credentials) -> bool:
    """Clean up a deleted project according to its deletionPolicy. Returns True if it removed
    services; `platform` None: nothing of it is on any platform (it never created anything)."""
    plan, ref = cleanup_plan(manifest), project_ref(manifest)
    if plan.orphan:
        log.info("%s: deletionPolicy Orphan: leaving its services and their credentials in place", ref.key)
        await credentials.orphan(ref)
        return False
    if platform is not None:
        await platform.remove_all(ref)
    await credentials.remove(ref)
    return platform is not None

"""kopf handlers for FLOpsProject (cluster mode). No business logic: they call reconcile()/finalize()
and turn the results into status patches, Events and kopf errors.

Handlers are attached to a registry by register(), and find their platforms, credentials, progress
source and metrics in kopf's memo (`memo.flops`, an OperatorContext), so a test can run them
against its own fakes.
"""

from __future__ import annotations

import asyncio
import copy
import random
from typing import Any, Mapping

import kopf

from ..models import FLOpsProjectStatus, GROUP, PLURAL, VERSION, parse_status
from ..platforms.base import PermanentPlatformError, TransientPlatformError
from ..reconcile import Passes, cleanup_plan, converge, finalize, project_ref, utcnow
from ..status import deleting_status
from .kopf_context import OperatorContext, Unusable, connection_info
from .kopf_metrics import Stopwatch
from .kopf_status import EventSpec, backoff_seconds, events_for, merge_patch, problem_status


def _context(memo: Any) -> OperatorContext:
    return memo.flops


def _write(ctx: OperatorContext, body: kopf.Body, patch: kopf.Patch, manifest: dict[str, Any],
           new: FLOpsProjectStatus, events) -> None:
    """Patch status where it differs from the object's; post the Events.

    The object's status as the watch last brought it is the base, never what this process meant
    to write: kopf applies the patch after the handler returns, and a patch that did not land is
    then sent again by the next reconcile (timers see a live body, so one that landed is not).
    """
    changes = merge_patch(_cluster_status(body), new.to_wire())
    if changes:
        patch["status"] = changes
    ctx.metrics.phase(project_ref(manifest).key, new.phase)
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _cluster_status(body: kopf.Body) -> dict[str, Any]:
    """The status on the object as the watch last brought it (anything but a mapping counts as none)."""
    status = body.get("status")
    return dict(status) if isinstance(status, Mapping) else {}


def _previous(ctx: OperatorContext, body: kopf.Body) -> FLOpsProjectStatus | None:
    """The status on the object (also what the liveness probe counts)."""
    raw = ctx.statuses[body["metadata"]["uid"]] = _cluster_status(body)
    return parse_status(raw) if raw else None


async def _converge(ctx: OperatorContext, body: kopf.Body, patch: kopf.Patch, retry: int, trigger: str,
                    logger) -> None:
    manifest = copy.deepcopy(dict(body))
    generation = int(manifest["metadata"].get("generation") or 1)
    uid = manifest["metadata"]["uid"]
    async with ctx.lock(uid):
        first = _previous(ctx, body)
        passes = Passes(first or FLOpsProjectStatus())
        platform = ctx.platforms.for_manifest(manifest)
        clock = Stopwatch()
        try:
            result = await converge(manifest, passes, platform=platform, credentials=ctx.credentials,
                                    progress_source=ctx.progress)
        except TransientPlatformError as exc:
            message = f"platform {platform.name} unavailable, retrying: {exc}"
            new = problem_status(passes.status, generation, stalled=False, reason="PlatformUnavailable",
                                 message=message, now=utcnow())
            _write(ctx, body, patch, manifest, new, events_for(first, new, applied=passes.applied))
            ctx.metrics.reconciled(trigger, "transient_error", clock.seconds)
            delay = backoff_seconds(retry)
            ctx.retry_in(uid, delay)
            raise kopf.TemporaryError(message, delay=delay) from None
        except PermanentPlatformError as exc:
            new = problem_status(passes.status, generation, stalled=True, reason=exc.reason, message=str(exc),
                                 now=utcnow())
            _write(ctx, body, patch, manifest, new, events_for(first, new, applied=passes.applied))
            ctx.schedule(uid, new, applied=bool(passes.applied), edited=trigger == "change")
            ctx.metrics.reconciled(trigger, "stalled", clock.seconds)
            logger.debug("stalled: %s", exc)
            return
        except Exception as exc:  # a bug or an unforeseen failure: kopf logs it and retries with its backoff
            ctx.metrics.reconciled(trigger, "error", clock.seconds)
            # Said where users look, whatever else fails (writing status may be what fails).
            kopf.event(body, type="Warning", reason="ReconcileError", message=f"{type(exc).__name__}: {exc}")
            raise
        _write(ctx, body, patch, manifest, result.status,
               events_for(first, result.status, applied=passes.applied, invalid=result.invalid))
        ctx.schedule(uid, result.status, applied=bool(passes.applied), edited=trigger == "change")
        ctx.metrics.reconciled(trigger, "invalid" if result.invalid else "ok", clock.seconds)


async def on_change(body: kopf.Body, patch: kopf.Patch, retry: int, memo: Any, logger, **_: Any) -> None:
    """Create, update and resume alike: converge the project to its spec (idempotent)."""
    await _converge(_context(memo), body, patch, retry, "change", logger)


async def on_resync(body: kopf.Body, patch: kopf.Patch, retry: int, memo: Any, logger, **_: Any) -> None:
    """Ticks often; converges when the project is due (pacing.Pacing): soon while it waits on a service,
    every few seconds while it trains, at the resync interval once settled (drift repair)."""
    ctx = _context(memo)
    uid = body["metadata"]["uid"]
    wait = ctx.until_due(uid)
    if wait > ctx.lookahead:
        return
    if wait > 0:
        await asyncio.sleep(wait)
        if ctx.until_due(uid) > 0.05:  # a change handler looked meanwhile and planned the next look
            return
    await _converge(ctx, body, patch, retry, "resync", logger)


async def on_delete(body: kopf.Body, patch: kopf.Patch, retry: int, memo: Any, logger, **_: Any) -> None:
    """Behind the finalizer: clean up per spec.deletionPolicy; keep the project until that worked."""
    ctx = _context(memo)
    manifest = copy.deepcopy(dict(body))
    ref = project_ref(manifest)
    generation = int(manifest["metadata"].get("generation") or 1)
    plan = cleanup_plan(manifest)
    policy = "Orphan" if plan.orphan else "Delete"
    platform = ctx.platforms.for_name(plan.platform) if plan.platform else None
    if isinstance(platform, Unusable) and not plan.created:
        # Nothing it made is anywhere (it never got that far): nothing to wait for.
        platform = None
    async with ctx.lock(ref.uid):
        first = _previous(ctx, body)
        clock = Stopwatch()
        try:
            removed = await finalize(manifest, platform=platform, credentials=ctx.credentials)
        except (TransientPlatformError, PermanentPlatformError) as exc:
            message = f"cleanup failed (deletionPolicy {policy}), retrying: {exc}"
            new = deleting_status(first or FLOpsProjectStatus(), generation, now=utcnow(), message=message)
            events = events_for(first, new)
            if not first or first.message != message:
                events.append(EventSpec("Warning", "CleanupFailed", message))
            _write(ctx, body, patch, manifest, new, events)
            ctx.metrics.reconciled("delete", "transient_error" if isinstance(exc, TransientPlatformError)
                                   else "stalled", clock.seconds)
            raise kopf.TemporaryError(message, delay=backoff_seconds(retry)) from None
        except Exception as exc:  # a bug: kopf logs it and retries; users see it in the Events
            ctx.metrics.reconciled("delete", "error", clock.seconds)
            kopf.event(body, type="Warning", reason="CleanupError", message=f"{type(exc).__name__}: {exc}")
            raise
    ctx.metrics.reconciled("delete", "ok", clock.seconds)
    ctx.forget(ref.uid, ref.key)
    if plan.orphan:
        kopf.event(body, type="Normal", reason="Orphaned", message="deletionPolicy Orphan: services left running")
    elif removed:
        kopf.event(body, type="Normal", reason="Deleted", message="services and credentials removed")
    else:
        kopf.event(body, type="Normal", reason="Deleted", message="it never created services; nothing to remove")


def on_login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    return connection_info(_context(memo).kube_config)


def on_probe(memo: Any, **_: Any) -> int:
    """Liveness: the operator's loop answers; reports how many projects it tracks."""
    return len(_context(memo).statuses)


def register(registry: kopf.OperatorRegistry, *, tick_seconds: float = 1.0) -> kopf.OperatorRegistry:
    """Attach the handlers to `registry` (one per operator instance: tests make their own). The resync
    timer ticks every `tick_seconds` and converges a project only when it is due (OperatorContext.pacing);
    the first tick of each project comes at a random point of the first interval, spreading them out."""
    resource = dict(group=GROUP, version=VERSION, plural=PLURAL, registry=registry)
    kopf.on.login(registry=registry)(on_login)
    kopf.on.probe(id="projects", registry=registry)(on_probe)
    kopf.on.resume(**resource, id="reconcile")(on_change)
    kopf.on.create(**resource, id="reconcile")(on_change)
    kopf.on.update(**resource, id="reconcile")(on_change)
    kopf.timer(**resource, id="resync", interval=tick_seconds,
               initial_delay=lambda **_: random.uniform(0.0, tick_seconds))(on_resync)
    kopf.on.delete(**resource, id="cleanup")(on_delete)
    return registry

"""kopf handlers for FLOpsProject (cluster mode). No business logic: they call reconcile()/finalize()
and turn the results into status patches, Events and kopf errors.

Handlers are attached to a registry by register(), and find their platforms, credentials, progress
source and metrics in kopf's memo (`memo.flops`, an OperatorContext), so a test can run them
against its own fakes.
"""

from __future__ import annotations

import copy
import random
from typing import Any, Mapping

import kopf

from ..models import FLOpsProjectStatus, GROUP, PLURAL, VERSION, parse_status
from ..platforms.base import PermanentPlatformError, TransientPlatformError
from ..redaction import SHAPES_ONLY  # error texts reach Events: shapes out (status gets its own)
from ..reconcile import Passes, cleanup_plan, converge, finalize, project_ref, utcnow
from ..status import deleting_status
from .kopf_context import OperatorContext, Unusable, connection_info
from .kopf_metrics import Stopwatch
from .kopf_status import EventSpec, apply_merge_patch, backoff_seconds, events_for, merge_patch, problem_status


def _context(memo: Any) -> OperatorContext:
    return memo.flops


def _write(ctx: OperatorContext, body: kopf.Body, patch: kopf.Patch, manifest: dict[str, Any],
           new: FLOpsProjectStatus, events) -> None:
    """Patch status where it differs from the object's; post the Events.

    The object's status as the watch last brought it is the base, never what this process meant
    to write: kopf applies the patch after the handler returns, and a patch that did not land is
    then sent again by the next reconcile (timers see a live body, so one that landed is not).
    """
    base, wire = _cluster_status(body), new.to_wire()
    changes = merge_patch(base, wire)
    if changes:
        patch["status"] = changes
    # As the object will hold it (a None in the status is a deletion, never stored): compared with what it shows.
    ctx.written[body["metadata"]["uid"]] = (base, apply_merge_patch(base, changes))
    ctx.metrics.phase(project_ref(manifest).key, new.phase)
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _cluster_status(body: kopf.Body) -> dict[str, Any]:
    """The status on the object as the watch last brought it (anything but a mapping counts as none)."""
    status = body.get("status")
    return dict(status) if isinstance(status, Mapping) else {}


def _previous(ctx: OperatorContext, body: kopf.Body) -> FLOpsProjectStatus | None:
    """The status the step starts from: the one on the object (also what the liveness probe counts), unless the
    object still shows what it showed before this process's last write. The watch may bring that write back after
    the next look has begun (seconds, on a busy API server); a look from the older status would forget what the
    last one decided (a training's outcome: its services, already removed, would be created again). The patch is
    still computed against the object, so a write that never landed is sent again."""
    uid = body["metadata"]["uid"]
    raw = ctx.statuses[uid] = _cluster_status(body)
    written = ctx.written.get(uid)
    if written is not None and raw == written[0] and written[1] != raw:
        raw = written[1]
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
                                    progress_source=ctx.progress, control=ctx.control)
        except TransientPlatformError as exc:
            message = SHAPES_ONLY(f"platform {platform.name} unavailable, retrying: {exc}")
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
            kopf.event(body, type="Warning", reason="ReconcileError",
                       message=SHAPES_ONLY(f"{type(exc).__name__}: {exc}"))
            raise
        _write(ctx, body, patch, manifest, result.status,
               events_for(first, result.status, applied=passes.applied, invalid=result.invalid))
        ctx.schedule(uid, result.status, applied=bool(passes.applied), edited=trigger == "change")
        ctx.metrics.reconciled(trigger, "invalid" if result.invalid else "ok", clock.seconds)


async def on_change(body: kopf.Body, patch: kopf.Patch, retry: int, memo: Any, logger, **_: Any) -> None:
    """Create, update and resume alike: converge the project to its spec (idempotent)."""
    await _converge(_context(memo), body, patch, retry, "change", logger)


async def on_resync(body: kopf.Body, patch: kopf.Patch, retry: int, memo: Any, logger, stopped: Any = None,
                    **_: Any) -> None:
    """Converges when the project is due (pacing.Pacing): soon while it waits on a service, every few seconds
    while it trains, at the resync interval once settled (drift repair). A tick waits for a look due within the
    lookahead (the operator's: any), woken early when a change handler plans the next look anew."""
    ctx = _context(memo)
    if await ctx.wait_until_due(body["metadata"]["uid"], stopped):
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
            message = SHAPES_ONLY(f"cleanup failed (deletionPolicy {policy}), retrying: {exc}")
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
            kopf.event(body, type="Warning", reason="CleanupError",
                       message=SHAPES_ONLY(f"{type(exc).__name__}: {exc}"))
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

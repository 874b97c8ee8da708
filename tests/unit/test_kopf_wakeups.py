"""A resync tick sleeps until its project is due (no tick twice a second to find nothing due), and wakes when a
change handler plans the look anew or kopf stops the timer (the project deleted, the operator stopping)."""

from __future__ import annotations

import asyncio
import time

import kubernetes.client

from flops_operator.adapters.kopf_context import OperatorContext, PlatformSet
from flops_operator.adapters.kopf_metrics import Metrics
from flops_operator.credentials import MemoryCredentials
from flops_operator.models import FLOpsProjectStatus
from flops_operator.pacing import Pacing
from flops_operator.progress import NoProgress

PROVISIONING = FLOpsProjectStatus.model_validate({"phase": "Provisioning", "conditions": [
    {"type": "Ready", "status": "False"}, {"type": "Reconciling", "status": "True"}]})


def context(quick: float) -> OperatorContext:
    metrics = Metrics()
    return OperatorContext(platforms=PlatformSet({}, metrics), credentials=MemoryCredentials(), progress=NoProgress(),
                           metrics=metrics, kube_config=kubernetes.client.Configuration(), lookahead=float("inf"),
                           pacing=Pacing(resync=60.0, quick=quick, growth=1.0))


class Stopped:
    """kopf's `stopped` flag as handlers see it: truthy once set, and awaitable."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def __bool__(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


async def test_a_tick_sleeps_until_due_and_a_new_plan_wakes_it():
    ctx = context(quick=30.0)
    ctx.schedule("u", PROVISIONING, applied=True, edited=True)  # due in 30 s
    started = time.monotonic()
    waiting = asyncio.create_task(ctx.wait_until_due("u", Stopped()))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    ctx.pacing = Pacing(resync=60.0, quick=0.2)
    ctx.schedule("u", PROVISIONING, applied=True, edited=True)  # a change handler looked: due in 0.2 s
    assert await asyncio.wait_for(waiting, 5) is True
    assert 0.25 <= time.monotonic() - started < 5


async def test_a_stopped_timer_stops_waiting_at_once():
    ctx, stopped = context(quick=30.0), Stopped()
    ctx.schedule("u", PROVISIONING, applied=True, edited=True)
    waiting = asyncio.create_task(ctx.wait_until_due("u", stopped))
    await asyncio.sleep(0.05)
    stopped.set()
    assert await asyncio.wait_for(waiting, 5) is False


async def test_a_project_not_looked_at_yet_is_due_at_once():
    assert await asyncio.wait_for(context(quick=30.0).wait_until_due("new", Stopped()), 1) is True

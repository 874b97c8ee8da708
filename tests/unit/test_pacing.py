"""When a project is looked at again (pacing.Pacing), and the kopf adapter acting on it: a tick converges a
project only when it is due, soon while it waits on a service, every few seconds while it trains."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from types import SimpleNamespace

import kopf
import kubernetes.client
import pytest
from kopf._core.engines import posting

from flops_operator.adapters.kopf_cli import tick_seconds
from flops_operator.adapters.kopf_context import OperatorContext, PlatformSet
from flops_operator.adapters.kopf_handlers import on_change, on_resync
from flops_operator.adapters.kopf_metrics import Metrics
from flops_operator.adapters.kopf_settings import QuietTicks, operator_settings
from flops_operator.credentials import MemoryCredentials
from flops_operator.models import FLOpsProjectStatus, ProjectRef
from flops_operator.pacing import Pacing, settled
from flops_operator.platforms.base import ServiceState
from flops_operator.platforms.fake import FakePlatform
from flops_operator.progress import NoProgress

PACING = Pacing(resync=30.0, quick=0.5, growth=2.0, training=3.0, jitter=0.2)


def status(phase, **conditions):
    return FLOpsProjectStatus.model_validate({"phase": phase, "conditions": [
        {"type": kind, "status": value} for kind, value in conditions.items()]})


COMPLETED = status("Completed", Ready="True", Reconciling="False", Stalled="False")
SETTLING = status("Completed", Ready="False", Reconciling="True", Stalled="False")
FAILED = status("Failed", Ready="False", Reconciling="False", Stalled="True")
STALLED_STACK = status("Provisioning", Ready="False", Reconciling="False", Stalled="True")
TRAINING = status("Training", Ready="True", Reconciling="False", Stalled="False")
TRAINING_LEARNER_STARTING = status("Training", Ready="False", Reconciling="True", Stalled="False")
PROVISIONING = status("Provisioning", Ready="False", Reconciling="True", Stalled="False")


def training(round_: int, remaining: int | None) -> FLOpsProjectStatus:
    out = TRAINING.model_copy(deep=True)
    out.training.round, out.training.total_rounds, out.training.estimated_remaining_seconds = round_, 5, remaining
    return out


@pytest.mark.parametrize("case,current,applied,previous,expected", [
    ("settled: resync, jittered upwards", COMPLETED, False, 4.0, 36.0),
    ("failed: resync", FAILED, False, None, 36.0),
    ("stalled stack: resync", STALLED_STACK, True, None, 36.0),
    ("suspended: resync", status("Suspended", Ready="True", Reconciling="False", Stalled="False"), False, 0.5, 36.0),
    ("training with everything up: progress poll", TRAINING, False, 3.0, 3.0),
    ("first look while provisioning", PROVISIONING, False, None, 0.5),
    ("a change was applied: look again soon", PROVISIONING, True, 16.0, 0.5),
    ("nothing new: back off", PROVISIONING, False, 0.5, 1.0),
    ("nothing new for long: capped at resync", PROVISIONING, False, 20.0, 30.0),
    ("a learner still starting: backoff as while provisioning", TRAINING_LEARNER_STARTING, False, 2.0, 4.0),
    ("completed, training services being removed", SETTLING, True, None, 0.5),
    ("training, far from the end: progress poll", training(2, 60), False, 3.0, 3.0),
    ("training, the end estimated in 1 s: look then", training(4, 1), False, 3.0, 1.0),
    ("training, every round in (the model being registered): look soon", training(5, 0), False, 1.0, 0.5),
    ("training, no round reported yet: progress poll", training(0, None), False, 3.0, 3.0),
])
def test_next_delay(case, current, applied, previous, expected):
    assert PACING.next_delay(current, applied=applied, previous=previous, rand=lambda lo, hi: hi) == expected, case


def test_settled():
    assert [settled(s) for s in (COMPLETED, FAILED, STALLED_STACK, TRAINING, SETTLING, PROVISIONING)] == [
        True, True, True, False, False, False]


OBJECT = {
    "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
    "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-9", "generation": 1, "resourceVersion": "5"},
    "spec": {"task": {"name": "digits-mlp"}, "learners": {"replicas": 1}},
}


def _ref():
    return ProjectRef("team-a", "digits", "u-9")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
async def world():
    posting.event_queue_var.set(asyncio.Queue())
    posting.settings_var.set(operator_settings())
    posting.event_queue_loop_var.set(asyncio.get_running_loop())
    fake, metrics, clock = FakePlatform(start_state=ServiceState.starting), Metrics(), Clock()
    ctx = OperatorContext(platforms=PlatformSet({"local": lambda: fake}, metrics), credentials=MemoryCredentials(),
                          progress=NoProgress(), metrics=metrics, kube_config=kubernetes.client.Configuration(),
                          pacing=PACING, clock=clock)
    return SimpleNamespace(memo=SimpleNamespace(flops=ctx), platform=fake, clock=clock, obj=copy.deepcopy(OBJECT))


async def call(handler, world) -> kopf.Patch:
    patch = kopf.Patch()
    await handler(body=kopf.Body(copy.deepcopy(world.obj)), patch=patch, retry=0, memo=world.memo,
                  logger=logging.getLogger("test"))
    if "status" in patch:  # it landed: the next body carries it
        world.obj["status"] = {**world.obj.get("status", {}), **patch["status"]}
    return patch


async def test_a_waiting_project_is_looked_at_again_within_a_second_not_at_the_resync(world):
    await call(on_change, world)
    observes = len([c for c in world.platform.calls if c[0] == "observe"])
    world.clock.now += 0.2
    assert await call(on_resync, world) == {}  # not due: nothing read, nothing written
    assert len([c for c in world.platform.calls if c[0] == "observe"]) == observes
    # The artifact store became ready: the next wave goes at the next due tick.
    for name in list(world.platform.services(_ref())):
        world.platform.set_state(_ref(), name, ServiceState.running)
    world.clock.now += 0.4
    await call(on_resync, world)
    assert ("ensure", "team-a/digits", "tracking-server") in world.platform.calls


async def test_a_training_project_is_read_every_few_seconds_and_a_settled_one_at_the_resync(world):
    world.platform.start_state = ServiceState.running
    await call(on_change, world)
    while world.obj["status"]["phase"] != "Training" or world.obj["status"]["conditions"][0]["status"] != "True":
        world.clock.now += 0.5
        await call(on_resync, world)
    seen = len(world.platform.calls)
    world.clock.now += 2.9
    await call(on_resync, world)
    assert len(world.platform.calls) == seen
    world.clock.now += 0.2
    await call(on_resync, world)
    assert len(world.platform.calls) > seen
    world.platform.complete(_ref(), "aggregator")
    world.clock.now += 3.1
    await call(on_resync, world)
    assert world.obj["status"]["phase"] == "Completed"
    seen = len(world.platform.calls)
    world.clock.now += 29.0
    await call(on_resync, world)
    assert len(world.platform.calls) == seen
    world.clock.now += 8.0
    await call(on_resync, world)
    assert len(world.platform.calls) > seen


async def test_with_a_lookahead_a_tick_waits_for_a_look_due_before_the_next_tick(world):
    """The timer ticks every second; a look due 0.5 s after a tick happens then, not at the next tick."""
    ctx = world.memo.flops
    ctx.clock, ctx.lookahead = time.monotonic, 1.0
    await call(on_change, world)  # the first wave applied: due again in `quick` (0.5 s)
    observes = len([c for c in world.platform.calls if c[0] == "observe"])
    assert 0.0 < ctx.until_due("u-9") <= PACING.quick
    started = time.monotonic()
    await call(on_resync, world)
    assert len([c for c in world.platform.calls if c[0] == "observe"]) > observes, "the tick did not look"
    assert time.monotonic() - started >= PACING.quick - 0.05, "it looked before the project was due"


async def test_without_a_lookahead_a_tick_before_the_look_is_due_does_nothing(world):
    ctx = world.memo.flops
    ctx.clock = time.monotonic
    await call(on_change, world)
    observes = len([c for c in world.platform.calls if c[0] == "observe"])
    assert await call(on_resync, world) == {}
    assert len([c for c in world.platform.calls if c[0] == "observe"]) == observes


def test_kopf_s_line_for_each_tick_is_dropped_and_nothing_else():
    quiet = QuietTicks()
    record = logging.LogRecord("kopf.objects", logging.INFO, "", 0, "Timer 'resync' succeeded.", (), None)
    other = logging.LogRecord("kopf.objects", logging.INFO, "", 0, "Handler 'reconcile' succeeded.", (), None)
    assert not quiet.filter(record) and quiet.filter(other)


@pytest.mark.parametrize("quick, tick", [(0.5, 0.5), (0.2, 0.2), (2.0, 1.0)])
def test_the_tick_is_never_longer_than_the_quickest_look(quick, tick):
    """kopf waits a timer's interval after each call: a longer tick would space the quickest looks a tick apart."""
    assert tick_seconds(Pacing(quick=quick)) == tick

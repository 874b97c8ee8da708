"""The kopf handlers called as kopf calls them (body in, patch out), without an API server."""

from __future__ import annotations

import asyncio
import copy
import logging
from types import SimpleNamespace

import kopf
import kubernetes.client
import pytest
from kopf._core.engines import posting

from flops_operator.adapters.kopf_context import OperatorContext, PlatformSet
from flops_operator.adapters.kopf_handlers import on_resync
from flops_operator.adapters.kopf_metrics import Metrics
from flops_operator.adapters.kopf_settings import operator_settings
from flops_operator.credentials import MemoryCredentials
from flops_operator.pacing import Pacing
from flops_operator.platforms.fake import FakePlatform
from flops_operator.progress import NoProgress

OBJECT = {
    "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
    "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-7", "generation": 1, "resourceVersion": "5"},
    "spec": {"task": {"name": "digits-mlp"}, "learners": {"replicas": 1}},
}


@pytest.fixture
async def memo():
    posting.event_queue_var.set(asyncio.Queue())  # where kopf.event() puts Events
    posting.settings_var.set(operator_settings())
    posting.event_queue_loop_var.set(asyncio.get_running_loop())
    fake, metrics = FakePlatform(), Metrics()
    # Every tick is due: these tests are about what one reconcile writes (test_kopf_pacing: when it runs).
    ctx = OperatorContext(platforms=PlatformSet({"local": lambda: fake}, metrics), credentials=MemoryCredentials(),
                          progress=NoProgress(), metrics=metrics, kube_config=kubernetes.client.Configuration(),
                          pacing=Pacing(resync=0.0, quick=0.0, training=0.0, jitter=0.0))
    return SimpleNamespace(flops=ctx)


async def resync(memo, obj: dict) -> kopf.Patch:
    patch = kopf.Patch()
    await on_resync(body=kopf.Body(copy.deepcopy(obj)), patch=patch, retry=0, memo=memo,
                    logger=logging.getLogger("test"))
    return patch


async def test_a_status_patch_that_never_landed_is_sent_again(memo):
    first = await resync(memo, OBJECT)
    assert first["status"]["phase"] == "Training"
    # kopf's PATCH failed: the object (and so the next body) has no status.
    again = await resync(memo, OBJECT)
    assert again.get("status", {}).get("phase") == "Training", "the status only the cache had was not written again"


async def test_a_status_that_landed_is_not_written_again(memo):
    first = await resync(memo, OBJECT)
    landed = {**OBJECT, "status": dict(first["status"])}
    assert "status" not in await resync(memo, landed)


async def test_a_status_of_any_shape_on_the_object_is_replaced(memo):
    patch = await resync(memo, {**OBJECT, "status": "garbage"})
    assert patch["status"]["phase"] == "Training" and patch["status"]["observedGeneration"] == 1

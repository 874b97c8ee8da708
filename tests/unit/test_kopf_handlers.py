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


async def test_a_look_on_an_object_the_watch_has_not_updated_yet_keeps_what_the_last_look_decided(memo):
    """The watch brings this process's own status write back late on a busy API server: the next look then gets
    the object as it was before. It must not forget a finished training (its aggregator, removed, would be created
    again and the project would train anew)."""
    from flops_operator.models import ProjectRef

    fake = memo.flops.platforms.for_manifest(OBJECT)._platform
    ref = ProjectRef("team-a", "digits", "u-7")
    training = await resync(memo, OBJECT)
    assert training["status"]["phase"] == "Training"
    stale = {**OBJECT, "status": dict(training["status"])}
    fake.complete(ref, "aggregator")
    done = await resync(memo, stale)
    assert done["status"]["phase"] == "Completed" and "aggregator" not in fake.services(ref)
    # The watch has not brought the Completed status yet: the object still says Training.
    again = await resync(memo, stale)
    assert "aggregator" not in fake.services(ref), "a finished training's aggregator was created again"
    assert again["status"]["phase"] == "Completed", "the Completed status that has not landed is written again"


def test_apply_merge_patch_deletes_nones_and_merges_mappings():
    from flops_operator.adapters.kopf_status import apply_merge_patch, merge_patch

    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}
    new = {"a": 1, "b": {"c": 4}, "e": [2], "f": None}
    assert apply_merge_patch(old, merge_patch(old, new)) == {"a": 1, "b": {"c": 4}, "e": [2]}

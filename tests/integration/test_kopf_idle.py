"""What a settled project costs at idle, over real HTTP (kmock): its Secret is not read again at every look, and its
resync timer does not wake twice a second to find that nothing is due (issue 26, item 7: 1,000 projects)."""

from __future__ import annotations

import base64
import time
from contextlib import ExitStack
from typing import Any, Iterator

import kmock
import kubernetes.client
import pytest

from flops_operator.adapters import kopf_handlers
from flops_operator.adapters.kopf_secrets import REFERENCED_TTL, STORED_TTL, SecretCredentials, secret_name
from flops_operator.models import ProjectRef

from .conftest import Cluster, _run_cluster, eventually, fake_case, kubernetes_in_thread

RESYNC = 2.0
IDLE_LOOKS = 4


@pytest.fixture(scope="module")
def idle_cluster() -> Iterator[tuple[Cluster, list[str]]]:
    """The operator with a short resync, its resync handler counting its calls (kopf's timer ticks)."""
    ticks: list[str] = []
    original = kopf_handlers.on_resync

    async def counted(**kwargs: Any) -> None:
        ticks.append(kwargs["body"]["metadata"]["uid"])
        await original(**kwargs)

    with pytest.MonkeyPatch.context() as patch, ExitStack():
        patch.setattr(kopf_handlers, "on_resync", counted)
        for cluster in _run_cluster(fake_case(), resync_seconds=RESYNC):
            yield cluster, ticks


def settled_project(cluster: Cluster, name: str) -> tuple[str, Any]:
    ns = cluster.namespace()
    ref = cluster.ref(cluster.create(ns, name, {
        "task": {"name": "digits-mlp"}, "training": {"rounds": 1}, "learners": {"replicas": 1},
        "tracking": {"backendStore": {"type": "mysql"}, "artifactStore": {"type": "ftp"}}}))
    eventually(lambda: "aggregator" in cluster.platform.services(ref), what="the aggregator created")
    cluster.platform.complete(ref, "aggregator")

    def settled() -> bool:
        status = cluster.get(ns, name).get("status") or {}
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return status.get("phase") == "Completed" and ready.get("status") == "True"
    eventually(settled, what="Completed and Ready (settled)")
    return ns, ref


def idle(cluster: Cluster, ref: Any, looks: int) -> int:
    """Wait until the operator has looked at the project `looks` more times; the API requests meanwhile."""
    emulator, first = cluster.emulator, cluster.platform.observations(ref)
    before = emulator.request_count()
    eventually(lambda: cluster.platform.observations(ref) >= first + looks, what=f"{looks} idle looks",
               timeout=RESYNC * 1.2 * (looks + 2) + 30)
    return before


def test_a_settled_project_s_secret_is_read_at_most_once_over_its_idle_looks(idle_cluster) -> None:
    cluster, _ = idle_cluster
    ns, ref = settled_project(cluster, "quiet")
    assert cluster.core.read_namespaced_secret(secret_name(ref), ns).data  # its logins exist (read at each look)
    since = idle(cluster, ref, IDLE_LOOKS)
    reads = [r for r in cluster.emulator.requests_to("", "v1", "secrets", kmock.action.FETCH, since=since)
             if r.namespace == ns]
    assert len(reads) <= 1, f"{len(reads)} Secret reads over {IDLE_LOOKS} idle looks of a settled project"
    writes = [r for r in cluster.emulator.requests_to("", "v1", "secrets", since=since)
              if r.namespace == ns and r.action != kmock.action.FETCH]
    assert not writes


def test_a_settled_project_s_timer_wakes_only_when_a_look_is_due(idle_cluster) -> None:
    cluster, ticks = idle_cluster
    ns, ref = settled_project(cluster, "sleepy")
    idle(cluster, ref, 1)  # the timer's rhythm is the settled one from here
    ticked, looked, started = ticks.count(ref.uid), cluster.platform.observations(ref), time.monotonic()
    idle(cluster, ref, 2)
    seconds = time.monotonic() - started
    ticked, looked = ticks.count(ref.uid) - ticked, cluster.platform.observations(ref) - looked
    # Before: a tick every half second (kopf's timer interval) whether due or not, ~2 per second of idling.
    assert ticked <= looked + 1, f"{ticked} timer calls for {looked} looks in {seconds:.1f} s of idling"
    # And a change still reaches it at once (a spec edit is looked at by the change handler, the timer re-plans).
    cluster.patch_spec(ns, "sleepy", {"deletionPolicy": "Orphan"})
    eventually(lambda: cluster.get(ns, "sleepy")["status"].get("observedGeneration") == 2, what="the edit seen")


REF = ProjectRef("team-c", "cached", "0c5e7a1d-2b3c-4d5e-8f90-aabbccddeeff")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_secrets_in_memory_follow_the_operator_s_writes_and_are_read_again_when_they_may_be_stale():
    with kubernetes_in_thread() as (url, emulator):
        clock = [0.0]
        api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
        store, core = SecretCredentials(api, clock=lambda: clock[0]), kubernetes.client.CoreV1Api(api)

        def fetches() -> int:
            return len(emulator.requests_to("", "v1", "secrets", kmock.action.FETCH))
        try:
            made = await store.ensure(REF, ["backend-password", "ftp-password"])
            read = fetches()
            assert await store.stored(REF, ["backend-password", "ftp-password"]) == made
            assert await store.ensure(REF, ["ftp-password"]) == {"ftp-password": made["ftp-password"]}
            assert fetches() == read, "the values it wrote itself were read back"
            more = await store.ensure(REF, ["ftp-password", "tracking-password"])  # a new name: read, then written
            assert more["ftp-password"] == made["ftp-password"] and fetches() == read + 1
            # Another writer (a replica before a handover) added a key: a name not in memory is read at once.
            core.patch_namespaced_secret(secret_name(REF), REF.namespace, {"data": {"extra": b64("x")}})
            assert await store.stored(REF, ["extra"]) == {"extra": "x"} and fetches() == read + 2
            # Someone deleted it behind the operator's back: seen once the memory is STORED_TTL old.
            core.delete_namespaced_secret(secret_name(REF), REF.namespace)
            assert await store.stored(REF, ["extra"]) == {"extra": "x"}
            clock[0] += STORED_TTL + 1
            assert await store.stored(REF, ["extra"]) == {}
            # Its own removal is never stale.
            await store.ensure(REF, ["backend-password"])
            await store.remove(REF)
            assert await store.stored(REF, ["backend-password"]) == {}

            # A Secret the spec names: read at most once per REFERENCED_TTL.
            core.create_namespaced_secret(REF.namespace, kubernetes.client.V1Secret(
                metadata=kubernetes.client.V1ObjectMeta(name="mlflow-login", namespace=REF.namespace),
                data={"user": b64("alice")}))
            first = await store._read_named_cached(REF, "mlflow-login")
            read = fetches()
            core.patch_namespaced_secret("mlflow-login", REF.namespace, {"data": {"user": b64("bob")}})
            assert await store._read_named_cached(REF, "mlflow-login") == first and fetches() == read
            clock[0] += REFERENCED_TTL + 1
            assert await store._read_named_cached(REF, "mlflow-login") != first and fetches() == read + 1
        finally:
            await store.close()

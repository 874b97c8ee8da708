"""The leader election's rules, in-process over kmock: a silent holder is waited out for the whole lease
duration, a leader replaced behind its back stops acting, a standby asked to stop never starts kopf."""

from __future__ import annotations

import asyncio
import threading
import time

import kubernetes.client

from flops_operator.adapters import leader
from flops_operator.adapters.lease import LeaseLock, micro_time

from .kmock_layer import serve_kubernetes

NAMESPACE, NAME = "flops-system", "flops-operator"
BOUND = 60.0  # against hangs only


def elector(url: str, identity: str) -> leader.LeaderElector:
    lock = LeaseLock(kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url)), NAMESPACE, NAME,
                     request_timeout=5)
    return leader.LeaderElector(lock, identity)


def coordination(url: str) -> kubernetes.client.CoordinationV1Api:
    return kubernetes.client.CoordinationV1Api(kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url)))


async def put_holder(url: str, holder: str) -> None:
    """Write a holder into the Lease as another replica would (created if missing)."""
    api = coordination(url)
    spec = {"holderIdentity": holder, "leaseDurationSeconds": leader.DURATION, "renewTime": micro_time(),
            "acquireTime": micro_time(), "leaseTransitions": 0}
    try:
        await asyncio.to_thread(api.read_namespaced_lease, NAME, NAMESPACE)
    except kubernetes.client.ApiException:
        await asyncio.to_thread(api.create_namespaced_lease, NAMESPACE,
                                {"metadata": {"name": NAME, "namespace": NAMESPACE}, "spec": spec})
    else:
        await asyncio.to_thread(api.patch_namespaced_lease, NAME, NAMESPACE,
                                [{"op": "add", "path": "/spec", "value": spec}],
                                _content_type="application/json-patch+json")


async def holder(url: str) -> str:
    lease = await asyncio.to_thread(coordination(url).read_namespaced_lease, NAME, NAMESPACE)
    return lease.spec.holder_identity


def test_a_silent_holder_is_waited_out_for_the_whole_lease_duration() -> None:
    async def main() -> None:
        async with serve_kubernetes() as (_, url):
            await put_holder(url, "ghost")  # a leader that died right after taking the Lease
            started = time.monotonic()
            standby = elector(url, "standby")
            assert await asyncio.wait_for(standby.acquire(lambda: asyncio.sleep(leader.RETRY_EVERY, False)), BOUND)
            waited = time.monotonic() - started
            standby.lock.close()
            # Never sooner (the dead leader's deadline is shorter than this); later only on a slow machine.
            assert waited >= leader.DURATION, waited
            assert await holder(url) == "standby"
    asyncio.run(main())


def test_a_leader_replaced_behind_its_back_stops_its_work_and_leaves_the_lease_alone() -> None:
    async def main() -> None:
        async with serve_kubernetes() as (_, url):
            lost: list[str] = []
            working = asyncio.Event()
            cancelled = asyncio.Event()

            async def work() -> None:
                working.set()
                try:
                    await asyncio.Event().wait()
                finally:
                    cancelled.set()

            first = elector(url, "first")
            running = asyncio.create_task(leader.run_as_leader(first, work, on_lost=lost.append))
            await asyncio.wait_for(working.wait(), BOUND)
            assert await holder(url) == "first"
            await put_holder(url, "intruder")  # as if "first" had been paused past its deadline
            await asyncio.wait_for(running, BOUND)
            assert cancelled.is_set() and lost == [f"{first.lock} is held by another operator now"]
            assert await holder(url) == "intruder", "the replaced leader released or renewed its successor's Lease"
    asyncio.run(main())


def test_a_standby_asked_to_stop_never_runs() -> None:
    async def main() -> None:
        async with serve_kubernetes() as (_, url):
            await put_holder(url, "someone-alive")
            stop = threading.Event()
            ran: list[bool] = []

            async def work() -> None:
                ran.append(True)

            standby = elector(url, "standby")
            waiting = asyncio.create_task(leader.run_as_leader(standby, work, stop_flag=stop))
            await asyncio.sleep(leader.RETRY_EVERY * 2)
            stop.set()
            await asyncio.wait_for(waiting, BOUND)
            assert ran == [] and await holder(url) == "someone-alive"
    asyncio.run(main())

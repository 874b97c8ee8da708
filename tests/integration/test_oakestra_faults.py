"""Failing calls (500, 502, timeouts; some after taking effect): the driver still converges with
no duplicate service and no extra instance, and deletes everything."""

import asyncio

import pytest

from flops_operator.credentials import MemoryCredentials
from flops_operator.platforms.base import TransientPlatformError
from flops_operator.reconcile import finalize
from tests.oakestra_emulator import Faults, run_emulator
from tests.oakestra_emulator.testing import converge, driver_for, manifest

SERVICES = {"backend-store", "artifact-store", "tracking-server", "aggregator", "learner-0", "learner-1", "learner-2"}
SERVICE = "/api/service/"
INSTANCE = "/api/service/{serviceid}/instance"
UNDEPLOY = "/api/service/{serviceid}/instance/{n}"
DELETE = "/api/service/{serviceid}"


async def delete_until_done(m, platform, creds, attempts=40):
    for _ in range(attempts):
        try:
            await finalize(m, platform=platform, credentials=creds)
            return
        except TransientPlatformError:
            continue
    raise AssertionError("finalize did not succeed")


def assert_exactly_once(emu, projects):
    """Each service was written by one POST /api/service/ and got one instance request."""
    assert len(emu.sm.upserts) == len(SERVICES) * projects and set(emu.sm.upserts.values()) == {1}
    assert len(emu.sm.instance_requests) == len(SERVICES) * projects
    assert set(emu.sm.instance_requests.values()) == {1}
    assert not emu.sm.overlapping_list_writes and emu.lost_services() == []


async def test_lost_answers_of_creates_and_deletes_do_not_duplicate_or_leak():
    m = manifest(uid="scripted")
    faults = Faults(hang=1.0, script=[
        ("POST", "/api/application/", "timeout", True),
        ("POST", SERVICE, "timeout", True),        # created, answer lost
        ("POST", SERVICE, "502", True),
        ("POST", INSTANCE, "502", True),           # requested, answer lost
        ("POST", INSTANCE, "timeout", True),
        ("POST", INSTANCE, "500", False),          # refused before doing anything
        ("DELETE", UNDEPLOY, "timeout", False),
        ("DELETE", DELETE, "500", False),          # looks like Oakestra's "not found" but is not
        ("DELETE", "/api/application/{appid}", "502", True),
    ])
    async with run_emulator(faults=faults) as emu:
        platform, creds = driver_for(emu, request_timeout=0.25), MemoryCredentials()
        try:
            result = await converge(m, platform, creds, steps=40, tolerate_transient=True)
            assert_exactly_once(emu, 1)
            await delete_until_done(m, platform, creds)
        finally:
            await platform.close()
        assert faults.script == []  # every scripted fault was hit
        assert result.status.condition("Ready").status == "True"
        assert (emu.apps(), emu.jobs(), emu.cluster_instances(), emu.sm.rr_ips) == ([], [], [], {})


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_twenty_percent_faults_converge_without_duplicates_and_clean_up(seed):
    projects = [manifest(uid=f"faulty-{seed}-{i}", name=f"p{i}") for i in range(4)]
    faults = Faults(rate=0.2, kinds=("500", "502", "timeout"), after_effect=0.5, hang=1.0, seed=seed)
    async with run_emulator(faults=faults) as emu:
        platform = driver_for(emu, request_timeout=0.25, retries=3)
        creds = MemoryCredentials()
        try:
            results = await asyncio.gather(*(converge(m, platform, creds, steps=80, tolerate_transient=True)
                                             for m in projects))
            injected = [c for c in emu.calls if c.fault]
            await asyncio.gather(*(delete_until_done(m, platform, creds) for m in projects))
        finally:
            await platform.close()
        faults.rate = 0
        left = (emu.apps(), emu.jobs(), emu.cluster_instances(), emu.sm.rr_ips)
    assert all(r.status.condition("Ready").status == "True" for r in results)
    assert all(set(r.observation.services) == SERVICES for r in results)
    assert_exactly_once(emu, len(projects))
    assert len(injected) > 10
    assert left == ([], [], [], {})

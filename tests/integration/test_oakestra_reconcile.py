"""The real reconcile step driving Oakestra (the emulator): converge, scale, restart, tokens, delete."""

import asyncio
import re
from collections import Counter

import pytest

from flops_operator.credentials import MemoryCredentials
from flops_operator.models import FLOpsProjectStatus, Phase, parse_project
from flops_operator.plan.desired import desired
from flops_operator.platforms.base import ServiceState, TransientPlatformError
from flops_operator.platforms.oakestra import names
from flops_operator.progress import NoProgress
from flops_operator.reconcile import finalize, reconcile
from tests.oakestra_emulator import ManualClock, run_emulator
from tests.oakestra_emulator.testing import converge, driver_for, manifest, scaled

SERVICE = "/api/service/"
INSTANCE = "/api/service/{serviceid}/instance"
UNDEPLOY = "/api/service/{serviceid}/instance/{n}"
DELETE = "/api/service/{serviceid}"
STACK = ["backend-store", "artifact-store", "tracking-server", "aggregator"]


def service_names(emu) -> list[str]:
    return sorted(j["flops_operator"]["service"] for j in emu.jobs())


def one_instance_each(emu) -> bool:
    jobs = emu.jobs()
    return (all(len(j["instance_list"]) == 1 for j in jobs)
            and len(emu.cluster_instances()) == len(jobs)
            and all(count == 1 for count in emu.sm.instance_requests.values()))


async def test_converges_ready_with_rr_ip_wiring_then_writes_nothing():
    m = manifest()
    async with run_emulator() as emu:
        platform, creds = driver_for(emu), MemoryCredentials()
        try:
            result = await converge(m, platform, creds)
            emu.clear_calls()
            again = await reconcile(m, result.status, platform=platform, credentials=creds,
                                    progress_source=NoProgress())
        finally:
            await platform.close()
    assert result.status.phase is Phase.Training and result.status.condition("Ready").status == "True"
    assert service_names(emu) == sorted(STACK + ["learner-0", "learner-1", "learner-2"])
    assert one_instance_each(emu)
    assert again.applied == [] and emu.writes() == []
    assert [(c.method, c.route) for c in emu.calls] == [("GET", "/api/services/{appid}")]
    by = {j["flops_operator"]["service"]: j for j in emu.jobs()}
    agg, tracking = by["aggregator"], by["tracking-server"]
    assert f"FLOPS_SUPERLINK={agg['RR_ip']}:8000" in by["learner-1"]["environment"]
    assert f"MLFLOW_TRACKING_URI=http://{tracking['RR_ip']}:5000" in agg["environment"]
    backend_uri = next(e for e in tracking["environment"] if e.startswith("MLFLOW_BACKEND_STORE_URI="))
    assert f"@{by['backend-store']['RR_ip']}:3306/mlflow" in backend_uri
    assert f"@{by['artifact-store']['RR_ip']}:21/artifacts" in " ".join(tracking["environment"])
    assert len({j["RR_ip"] for j in by.values()}) == len(by)
    assert result.status.oakestra.application_id == emu.apps()[0]["applicationID"]


async def test_scale_learners_3_5_2_with_exactly_the_right_calls():
    m3 = manifest(learners=3)
    m5, m2 = scaled(m3, 5), scaled(scaled(m3, 5), 2)
    # The plan keeps existing learners' specs when only the count changes; the calls below rely on it.
    hashes = {s.name: s.spec_hash for s in desired(parse_project(m3), training_done=False)}
    assert all(hashes[s.name] == s.spec_hash for s in desired(parse_project(m5), training_done=False)
               if s.name in hashes)
    async with run_emulator() as emu:
        platform, creds = driver_for(emu), MemoryCredentials()
        try:
            result = await converge(m3, platform, creds)
            emu.clear_calls()
            result = await converge(m5, platform, creds, result.status)
            up = Counter((c.method, c.route) for c in emu.writes())
            assert service_names(emu) == sorted(STACK + [f"learner-{i}" for i in range(5)])
            emu.clear_calls()
            result = await converge(m2, platform, creds, result.status)
            down = Counter((c.method, c.route) for c in emu.writes())
        finally:
            await platform.close()
    assert up == Counter({("POST", SERVICE): 2, ("POST", INSTANCE): 2})
    assert down == Counter({("DELETE", UNDEPLOY): 3, ("DELETE", DELETE): 3})
    assert service_names(emu) == sorted(STACK + ["learner-0", "learner-1"])
    assert one_instance_each(emu)
    assert result.status.observed_generation == 3


async def test_restarted_operator_adopts_what_the_first_one_created():
    m = manifest()
    async with run_emulator() as emu:
        first, creds = driver_for(emu), MemoryCredentials()
        try:
            result = await converge(m, first, creds)
        finally:
            await first.close()
        emu.clear_calls()
        second = driver_for(emu)
        try:
            again = await reconcile(m, result.status, platform=second, credentials=creds,
                                    progress_source=NoProgress())
        finally:
            await second.close()
    assert again.applied == [] and emu.writes() == []
    assert {n: s.state for n, s in again.observation.services.items()} == \
        {n: ServiceState.running for n in STACK + ["learner-0", "learner-1", "learner-2"]}
    assert again.status.condition("Ready").status == "True"


async def test_half_created_project_is_finished_not_duplicated_after_restart():
    m = manifest()
    async with run_emulator() as emu:
        first, creds = driver_for(emu), MemoryCredentials()
        try:
            await reconcile(m, FLOpsProjectStatus(), platform=first, credentials=creds, progress_source=NoProgress())
        finally:
            await first.close()
        # The store lost its only instance (as if the operator died between create and deploy; the
        # job-level status even stays RUNNING, stale).
        store = emu.job(names.service_name("backend-store"))
        emu.sm.undeploy_instance("Admin", store["microserviceID"], "0")
        second = driver_for(emu)
        try:
            result = await converge(m, second, creds)
        finally:
            await second.close()
    assert result.status.condition("Ready").status == "True"
    assert all(n == 1 for n in emu.sm.upserts.values())
    assert emu.sm.instance_requests[store["job_name"]] == 2
    assert all(len(j["instance_list"]) == 1 for j in emu.jobs()) and len(emu.cluster_instances()) == len(emu.jobs())


async def test_token_expiry_mid_reconcile_logs_in_again_and_converges():
    clock = ManualClock()
    expired = []

    def expire_on_first_service_create(request):
        if request.method == "POST" and request.path == SERVICE and not expired:
            expired.append(True)
            clock.advance(601)  # the server's clock only: the driver still believes its token

    m = manifest()
    async with run_emulator(clock=clock) as emu:
        emu.set_on_request(expire_on_first_service_create)
        platform, creds = driver_for(emu), MemoryCredentials()
        try:
            result = await converge(m, platform, creds)
        finally:
            await platform.close()
    unauthorized = [c for c in emu.calls if c.status == 401]
    # Only the creates already in flight with the old token (the first wave: at most two) were refused.
    assert {(c.method, c.route) for c in unauthorized} == {("POST", SERVICE)} and 1 <= len(unauthorized) <= 2
    assert emu.count("POST", "/api/auth/login") == 2 and platform.client.logins == 2
    assert result.status.condition("Ready").status == "True"
    assert all(n == 1 for n in emu.sm.upserts.values()) and one_instance_each(emu)


async def test_token_is_refreshed_before_it_expires():
    clock = ManualClock()
    m = manifest()
    async with run_emulator(clock=clock) as emu:
        platform, creds = driver_for(emu, clock=clock), MemoryCredentials()
        try:
            result = await converge(m, platform, creds)
            for _ in range(3):
                clock.advance(560)  # within the refresh margin of each token's 10 minutes
                result = await reconcile(m, result.status, platform=platform, credentials=creds,
                                         progress_source=NoProgress())
        finally:
            await platform.close()
    assert [c.status for c in emu.calls if c.status == 401] == []
    assert emu.count("POST", "/api/auth/login") == 1 and emu.count("POST", "/api/auth/refresh") == 3


async def test_delete_leaves_nothing_on_oakestra():
    m = manifest()
    async with run_emulator() as emu:
        platform, creds = driver_for(emu), MemoryCredentials()
        try:
            await converge(m, platform, creds)
            emu.clear_calls()
            assert await finalize(m, platform=platform, credentials=creds)
            observed = await platform.observe(parse_project(m).ref)
        finally:
            await platform.close()
    assert emu.apps() == [] and emu.jobs() == [] and emu.cluster_instances() == [] and emu.sm.rr_ips == {}
    assert emu.count("DELETE", UNDEPLOY) == 7 and emu.count("DELETE", DELETE) == 7
    assert emu.count("DELETE", "/api/application/{appid}") == 1
    assert observed.services == {} and observed.application_id is None


async def test_app_deleted_behind_the_operators_back_is_recreated():
    m = manifest()
    async with run_emulator() as emu:
        platform, creds = driver_for(emu), MemoryCredentials()
        try:
            result = await converge(m, platform, creds)
            old_app = emu.apps()[0]["applicationID"]
            emu.sm.delete_application("Admin", old_app, emu.clock())
            result = await converge(m, platform, creds, result.status)
        finally:
            await platform.close()
    [app] = emu.apps()
    assert app["applicationID"] != old_app and result.status.oakestra.application_id == app["applicationID"]
    assert service_names(emu) == sorted(STACK + ["learner-0", "learner-1", "learner-2"])
    assert result.status.condition("Ready").status == "True"


async def test_a_crash_looping_store_holds_its_dependents_back_and_is_named_in_status():
    """Oakestra re-deploys a DEAD instance every 15 s and it shows RUNNING for a moment each time: with
    readiness held for 10 s the tracking server is not created on such a moment, and the status says why."""
    clock = ManualClock()
    m = manifest()
    async with run_emulator(clock=clock) as emu:
        platform, creds = driver_for(emu, clock=clock, ready_after=10.0), MemoryCredentials()
        try:
            status, created = FLOpsProjectStatus(), set()
            for _ in range(3):  # both stores created and RUNNING (not yet held: nothing depends yet)
                result = await reconcile(m, status, platform=platform, credentials=creds, progress_source=NoProgress())
                status = result.status
                created |= {a.service.name for a in result.applied if hasattr(a, "service")}
            store = emu.job(names.service_name("backend-store"))
            for crash in range(3):
                clock.advance(4)  # up 4 s, then it crashes; the cluster brings it back 15 s later
                emu.fail_instance(store["microserviceID"], 0, status="DEAD", detail="", stay=False)
                result = await reconcile(m, status, platform=platform, credentials=creds, progress_source=NoProgress())
                status = result.status
                created |= {a.service.name for a in result.applied if hasattr(a, "service")}
                clock.advance(15)
                result = await reconcile(m, status, platform=platform, credentials=creds, progress_source=NoProgress())
                status = result.status
                created |= {a.service.name for a in result.applied if hasattr(a, "service")}
                assert "tracking-server" not in created, f"created on RUNNING after crash {crash + 1}"
            assert "waiting: tracking-server for backend-store" in status.message
            assert "backend-store: instance 0 RUNNING for 0s (ready once up 10s); fell 3 times" in status.message
            seen = {c.name: c for c in status.components}["backend-store"]
            assert seen.state == "starting"
            # Once it stays up, the rest follows (each held 10 s in turn).
            for _ in range(2):
                clock.advance(11)
                result = await converge(m, platform, creds, status)
                status = result.status
        finally:
            await platform.close()
    assert "tracking-server" in {j["flops_operator"]["service"] for j in emu.jobs()}
    assert result.status.condition("TrackingServerReady").status == "True"


async def converge_collecting(m, platform, creds, status, *, steps: int = 12):
    """Like converge(), but returns every action applied on the way, and the last result."""
    applied = []
    for _ in range(steps):
        result = await reconcile(m, status, platform=platform, credentials=creds, progress_source=NoProgress())
        applied += result.applied
        status = result.status
        if not result.applied:
            return applied, result
    raise AssertionError(f"did not converge in {steps} steps; applied so far: {applied}")


@pytest.mark.parametrize("vanished", ["tracking-server", "aggregator"])
async def test_a_service_deleted_out_of_band_comes_back_at_its_own_address_and_nothing_else_moves(vanished):
    m = manifest()
    async with run_emulator() as emu:
        platform, creds = driver_for(emu), MemoryCredentials()
        try:
            result = await converge(m, platform, creds)
            before = {j["flops_operator"]["service"]: (j["microserviceID"], j["RR_ip"]) for j in emu.jobs()}
            gone = emu.job(names.service_name(vanished))
            emu.sm.delete_service("Admin", gone["microserviceID"], emu.clock())  # someone else's delete
            applied, result = await converge_collecting(m, platform, creds, result.status)
        finally:
            await platform.close()
    after = {j["flops_operator"]["service"]: (j["microserviceID"], j["RR_ip"]) for j in emu.jobs()}
    assert [(type(a).__name__, a.service.name) for a in applied] == [("Create", vanished)]
    assert after[vanished][1] == before[vanished][1], "the recreated service moved to another address"
    assert {n: v for n, v in after.items() if n != vanished} == {n: v for n, v in before.items() if n != vanished}
    assert result.status.phase is Phase.Training and result.status.condition("Ready").status == "True"


async def test_address_bookkeeping_holds_only_what_exists():
    projects = [manifest(uid=f"held-{i}", name=f"p{i}") for i in range(3)]
    async with run_emulator() as emu:
        platform, creds = driver_for(emu), MemoryCredentials()
        try:
            for m in projects:
                await converge(m, platform, creds)
            assert platform.addresses_held() == {j["RR_ip"] for j in emu.jobs()}
            await finalize(projects[0], platform=platform, credentials=creds)
            # The second project's app is deleted behind the operator's back; a read notices.
            second = parse_project(projects[1]).ref
            app = next(a for a in emu.apps() if a["application_name"] == names.app_name(second))
            emu.sm.delete_application("Admin", app["applicationID"], emu.clock())
            await platform.observe(second)
            held = platform.addresses_held()
        finally:
            await platform.close()
    assert held == {j["RR_ip"] for j in emu.jobs()} and len(held) == 7


async def test_writes_to_one_apps_service_list_go_one_at_a_time_different_apps_at_once():
    """Against an SM whose overlapping list writes lose ids (§13.13): nothing is lost."""
    projects = [manifest(uid=f"serial-{i}", name=f"p{i}") for i in range(2)]
    async with run_emulator(list_write_gap=0.05) as emu:
        platform, creds = driver_for(emu), MemoryCredentials()
        try:
            results = await asyncio.gather(*(converge(m, platform, creds, steps=6) for m in projects))
            lost_after_create = emu.lost_services()
            await asyncio.gather(*(finalize(m, platform=platform, credentials=creds) for m in projects))
        finally:
            await platform.close()
    assert dict(emu.sm.overlapping_list_writes) == {}
    assert lost_after_create == []
    assert emu.sm.peak_list_writers == 2, "writes to different applications should overlap"
    assert all(r.status.condition("Ready").status == "True" for r in results)
    assert (emu.apps(), emu.jobs(), emu.sm.rr_ips) == ([], [], {})


def lose_from_app_list(emu, service: str) -> dict:
    """What another client's overlapping write does (§13.13): the job stays, its id leaves the app's list."""
    job = emu.job(names.service_name(service))
    app = emu.sm.apps[job["applicationID"]]
    app["microservices"] = [i for i in app["microservices"] if i != job["microserviceID"]]
    return job


async def test_delete_reports_what_oakestra_left_behind_instead_of_success():
    m = manifest()
    async with run_emulator() as emu:
        platform, creds = driver_for(emu, backoff_max=0.01), MemoryCredentials()
        try:
            await converge(m, platform, creds)
            lost = lose_from_app_list(emu, "learner-1")
            with pytest.raises(TransientPlatformError, match=r"learner-1 .*%s" % re.escape(lost["RR_ip"])):
                await finalize(m, platform=platform, credentials=creds)
        finally:
            await platform.close()
    assert [j["microserviceID"] for j in emu.jobs()] == [lost["microserviceID"]]
    assert len(emu.apps()) == 1, "the app is kept: its service listing is what still finds the leftover"
    assert creds.store, "credentials stay while the project's services are not all gone"


async def test_delete_finds_leftovers_by_name_after_the_app_is_gone():
    m = manifest()
    async with run_emulator() as emu:
        platform, creds = driver_for(emu, backoff_max=0.01), MemoryCredentials()
        try:
            await converge(m, platform, creds)
            lost = lose_from_app_list(emu, "aggregator")
            emu.sm.delete_application("Admin", lost["applicationID"], emu.clock())  # e.g. an earlier delete
            with pytest.raises(TransientPlatformError, match=r"aggregator .*%s" % re.escape(lost["RR_ip"])):
                await finalize(m, platform=platform, credentials=creds)
        finally:
            await platform.close()
    assert emu.apps() == [] and [j["microserviceID"] for j in emu.jobs()] == [lost["microserviceID"]]


async def test_after_a_system_manager_restart_the_driver_logs_in_again_and_projects_go_on():
    m, later = manifest(uid="before-restart"), manifest(uid="after-restart", name="later")
    async with run_emulator() as emu:
        platform, creds = driver_for(emu), MemoryCredentials()
        try:
            first = await converge(m, platform, creds)
            emu.restart()  # new signing key, new user ids
            new = await converge(later, platform, creds)
            again = await reconcile(m, first.status, platform=platform, credentials=creds,
                                    progress_source=NoProgress())
        finally:
            await platform.close()
    refused = [(c.route, c.status) for c in emu.calls if c.status in (401, 422)]
    # The old token: "Signature verification failed"; then the fresh one with the old user id.
    assert refused == [("/api/applications/{userid}", 422), ("/api/applications/{userid}", 401)]
    assert again.status.condition("Ready").status == "True" and again.applied == []
    assert new.status.condition("Ready").status == "True"
    assert platform.client.logins == 2 and emu.count("GET", "/api/user/{username}") == 2

"""The Oakestra driver against the emulator, call by call: the emulator's record is the judge."""

import logging
from collections import Counter

import pytest

from flops_operator.models import ProjectRef
from flops_operator.plan.services import Port, Role, ServiceSpec
from flops_operator.platforms.base import PermanentPlatformError, ServiceState, TransientPlatformError
from flops_operator.platforms.oakestra import names
from tests.oakestra_emulator import Cluster, ManualClock, Timing, run_emulator
from tests.oakestra_emulator.testing import driver_for

REF = ProjectRef("team-a", "digits", "0d4b9a52-1111-4222-8333-444455556666")
STORE = ServiceSpec(name="backend-store", role=Role.backend_store, image="docker.io/library/mariadb:11.4",
                    command=("mariadbd", "--port={{port:mysql}}"), env=(("PW", "{{secret:pw}}"),),
                    ports=(Port("mysql", 3306),), secrets=("pw",))
SECRETS = {"pw": "s3cret"}

SERVICE = "/api/service/"
INSTANCE = "/api/service/{serviceid}/instance"
UNDEPLOY = "/api/service/{serviceid}/instance/{n}"
DELETE = "/api/service/{serviceid}"


def learner(i: int, **changes) -> ServiceSpec:
    base = dict(name=f"learner-{i}", role=Role.learner, image="ghcr.io/flops-operator/learner:0.1.0",
                command=("flops-learner",), env=(("FLOPS_PARTITION_ID", str(i)),),
                ports=(Port("clientappio", 9094),), one_shot=True)
    return ServiceSpec(**{**base, **changes})


def writes(emu) -> Counter:
    return Counter((c.method, c.route) for c in emu.writes())


async def test_ensure_twice_creates_one_service_with_one_instance():
    async with run_emulator() as emu:
        platform = driver_for(emu)
        try:
            first = await platform.ensure(REF, STORE, SECRETS)
            second = await platform.ensure(REF, STORE, SECRETS)
        finally:
            await platform.close()
    assert writes(emu) == Counter({("POST", "/api/application/"): 1, ("POST", SERVICE): 1, ("POST", INSTANCE): 1})
    [job] = emu.jobs()
    assert job["microservice_name"] == names.service_name("backend-store")
    assert job["cmd"] == ["mariadbd", "--port=3306"] and "PW=s3cret" in job["environment"]
    assert first.service_id == second.service_id == job["microserviceID"]
    assert first.spec_hash == second.spec_hash == STORE.spec_hash
    assert [a["application_name"] for a in emu.apps()] == [names.app_name(REF)]


async def test_pending_scheduling_is_not_requested_again():
    clock = ManualClock()
    async with run_emulator(clock=clock, timing=Timing(schedule_delay=30, step_delay=5)) as emu:
        platform = driver_for(emu)
        try:
            await platform.ensure(REF, STORE, SECRETS)
            for _ in range(3):
                seen = (await platform.observe(REF)).services["backend-store"]
                assert seen.state is ServiceState.pending and seen.spec_hash == STORE.spec_hash
                await platform.ensure(REF, STORE, SECRETS)
            clock.advance(30)
            assert (await platform.observe(REF)).services["backend-store"].state is ServiceState.starting
            clock.advance(15)
            seen = (await platform.observe(REF)).services["backend-store"]
        finally:
            await platform.close()
    assert seen.state is ServiceState.running
    assert emu.count("POST", INSTANCE) == 1 and emu.count("POST", SERVICE) == 1
    assert [i["instance_number"] for i in emu.jobs()[0]["instance_list"]] == [0]


async def test_changed_spec_replaces_the_service_instance_first():
    async with run_emulator() as emu:
        platform = driver_for(emu)
        try:
            old = await platform.ensure(REF, learner(0), {})
            emu.clear_calls()
            new = await platform.ensure(REF, learner(0, image="ghcr.io/flops-operator/learner:0.2.0"), {})
        finally:
            await platform.close()
    assert [(c.method, c.route) for c in emu.writes()] == [
        ("DELETE", UNDEPLOY), ("DELETE", DELETE), ("POST", SERVICE), ("POST", INSTANCE)]
    [job] = emu.jobs()
    assert job["image"] == "ghcr.io/flops-operator/learner:0.2.0" and new.service_id != old.service_id
    assert len(emu.cluster_instances()) == 1


async def test_rr_ip_collision_takes_the_next_candidate():
    candidates = names.rr_ip_candidates(REF.uid, "backend-store")
    first, second = next(candidates), next(candidates)
    async with run_emulator() as emu:
        # Another user's service already holds our first choice.
        emu.sm.add_user("bob", "pw", ["Application_Provider"])
        app = emu.sm.create_application("bob", {"sla_version": "v2.0", "customerID": "bob", "applications": [
            {"applicationID": "", "application_name": "other", "application_namespace": "x", "microservices": [
                {"microservice_name": "db", "microservice_namespace": "x", "virtualization": "container",
                 "code": "img", "addresses": {"rr_ip": first}}]}]}, 0)[0]
        platform = driver_for(emu)
        try:
            seen = await platform.ensure(REF, STORE, SECRETS)
        finally:
            await platform.close()
    ours = [j for j in emu.jobs() if j["applicationID"] != app["applicationID"]]
    assert [j["RR_ip"] for j in ours] == [second]
    assert seen.address == f"{second}:3306"
    assert emu.count("POST", SERVICE) == 2 and emu.count("POST", INSTANCE) == 1
    assert emu.job("db")["RR_ip"] == first  # the other user's service is untouched


async def test_negative_scheduling_is_reported_in_oakestras_words_without_re_requesting():
    clock = ManualClock()
    async with run_emulator(clock=clock, clusters=[Cluster("edge1", "e" * 24, memory=128)]) as emu:
        platform = driver_for(emu, clock=clock)
        try:
            await platform.ensure(REF, STORE, SECRETS)  # 256 MB > the only cluster's 128 MB
            await platform.ensure(REF, learner(1, cluster="edge9", memory_mb=64), {})
            seen = (await platform.observe(REF)).services
            await platform.ensure(REF, STORE, SECRETS)
            again = await platform.observe(REF)
            requests_before_retry = emu.count("POST", INSTANCE)
            clock.advance(platform.config.unschedulable_retry + 1)
            await platform.observe(REF)
            await platform.ensure(REF, STORE, SECRETS)
        finally:
            await platform.close()
    assert seen["backend-store"].state is ServiceState.failed
    assert "NoActiveClusterWithCapacity" in seen["backend-store"].message
    assert seen["learner-1"].state is ServiceState.failed and "TargetClusterNotFound" in seen["learner-1"].message
    assert again.services["backend-store"].state is ServiceState.failed
    assert requests_before_retry == 2
    assert emu.count("POST", INSTANCE) == 3  # one retry, and only after the bound
    assert emu.job(names.service_name("learner-1"))["constraints"] == [{"type": "direct", "cluster": "edge9"}]


async def test_failed_instance_becomes_a_failure_only_past_the_bound():
    clock = ManualClock()
    async with run_emulator(clock=clock) as emu:
        platform = driver_for(emu, clock=clock)
        try:
            await platform.ensure(REF, learner(0), {})
            assert (await platform.observe(REF)).services["learner-0"].state is ServiceState.running
            job = emu.job(names.service_name("learner-0"))
            emu.fail_instance(job["microserviceID"], 0, detail="exit code 137: OOMKilled")
            early = (await platform.observe(REF)).services["learner-0"]
            clock.advance(platform.config.failure_grace + 1)
            late = (await platform.observe(REF)).services["learner-0"]
        finally:
            await platform.close()
    assert early.state is ServiceState.starting
    assert late.state is ServiceState.failed and "OOMKilled" in late.message and "FAILED" in late.message
    assert emu.count("POST", INSTANCE) == 1


async def test_completed_one_shot_and_published_address():
    tracking = ServiceSpec(name="tracking-server", role=Role.tracking_server, image="mlflow", command=("mlflow",),
                           ports=(Port("http", 5000, published=True),))
    async with run_emulator() as emu:
        platform = driver_for(emu)
        try:
            await platform.ensure(REF, tracking, {})
            await platform.ensure(REF, learner(0), {})
            emu.complete(emu.job(names.service_name("learner-0"))["microserviceID"])
            seen = (await platform.observe(REF)).services
        finally:
            await platform.close()
    host = names.host_port(REF.uid, "tracking-server", "http", platform.config.host_port_range)
    assert seen["tracking-server"].external_address == f"192.0.2.10:{host}"
    assert emu.job(names.service_name("tracking-server"))["port"] == f"{host}:5000/tcp"
    assert (seen["learner-0"].state, seen["learner-0"].exit_code) == (ServiceState.completed, 0)


async def test_lost_instance_is_requested_again_once():
    async with run_emulator() as emu:
        platform = driver_for(emu)
        try:
            await platform.ensure(REF, STORE, SECRETS)
            job = emu.jobs()[0]
            emu.sm.undeploy_instance("Admin", job["microserviceID"], "0")
            seen = (await platform.observe(REF)).services["backend-store"]
            await platform.ensure(REF, STORE, SECRETS)
            await platform.ensure(REF, STORE, SECRETS)
        finally:
            await platform.close()
    assert seen.spec_hash == ""  # so that the reconcile step calls ensure
    assert emu.count("POST", SERVICE) == 1 and emu.count("POST", INSTANCE) == 2
    assert [i["instance_number"] for i in emu.jobs()[0]["instance_list"]] == [1]


async def test_remove_undeploys_each_instance_then_deletes():
    async with run_emulator() as emu:
        platform = driver_for(emu)
        try:
            await platform.ensure(REF, STORE, SECRETS)
            await platform.ensure(REF, learner(0), {})
            emu.clear_calls()
            await platform.remove(REF, "learner-0")
            await platform.remove(REF, "learner-0")  # absent: nothing to do
            left = await platform.observe(REF)
        finally:
            await platform.close()
    assert [(c.method, c.route) for c in emu.writes()] == [("DELETE", UNDEPLOY), ("DELETE", DELETE)]
    assert set(left.services) == {"backend-store"}
    assert len(emu.cluster_instances()) == 1


async def test_remove_all_leaves_nothing_not_even_orphan_instances():
    async with run_emulator() as emu:
        platform = driver_for(emu)
        try:
            for i in range(3):
                await platform.ensure(REF, learner(i), {})
            await platform.remove_all(REF)
            await platform.remove_all(REF)  # already gone
        finally:
            await platform.close()
    assert emu.apps() == [] and emu.jobs() == [] and emu.cluster_instances() == [] and emu.sm.rr_ips == {}
    assert emu.count("DELETE", UNDEPLOY) == 3


async def test_wrong_password_is_permanent_and_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    async with run_emulator() as emu:
        platform = driver_for(emu, password="wrong-password-123")
        try:
            with pytest.raises(PermanentPlatformError, match="wrong username or password"):
                await platform.observe(REF)
        finally:
            await platform.close()
    assert "POST /api/auth/login" in caplog.text  # the driver's debug log is captured here
    assert "wrong-password-123" not in caplog.text


async def test_a_non_admin_user_works_through_its_own_routes():
    async with run_emulator() as emu:
        emu.sm.add_user("alice", "pw", ["Application_Provider"])
        platform = driver_for(emu, username="alice", password="pw")
        try:
            await platform.ensure(REF, STORE, SECRETS)
            seen = await platform.observe(REF)
            assert not any(c.status == 403 for c in emu.calls)
            owned = [a["userId"] for a in emu.apps("alice")]
            for _ in range(2):
                await platform.remove_all(REF)
        finally:
            await platform.close()
    assert seen.services["backend-store"].state is ServiceState.running
    assert owned == ["alice"] and emu.apps("Admin") == [] and emu.apps("alice") == [] and emu.jobs() == []
    # Deleting checks what is left through the app's own listing; Admin's listing of every job is
    # asked for once, and its refusal remembered.
    assert [(c.route, c.status) for c in emu.calls if c.status == 403] == [("/api/services/", 403)]


async def test_unknown_organization_is_permanent():
    async with run_emulator() as emu:
        platform = driver_for(emu, organization="nowhere")
        try:
            with pytest.raises(PermanentPlatformError, match="unknown organization"):
                await platform.observe(REF)
        finally:
            await platform.close()


async def test_a_failure_oakestra_recovers_from_within_the_bound_is_not_reported():
    clock = ManualClock()
    async with run_emulator(clock=clock, timing=Timing(redeploy_after=15)) as emu:
        platform = driver_for(emu, clock=clock)
        try:
            await platform.ensure(REF, STORE, SECRETS)
            job = emu.jobs()[0]
            emu.fail_instance(job["microserviceID"], 0, status="DEAD", detail="container exited", stay=False)
            dead = (await platform.observe(REF)).services["backend-store"]
            clock.advance(15)  # the cluster re-deploys it
            back = (await platform.observe(REF)).services["backend-store"]
            clock.advance(platform.config.failure_grace)
            later = (await platform.observe(REF)).services["backend-store"]
        finally:
            await platform.close()
    assert dead.state is ServiceState.starting and "DEAD" in dead.message
    assert back.state is ServiceState.running and later.state is ServiceState.running
    assert emu.count("POST", INSTANCE) == 1


async def test_a_token_oakestra_cannot_verify_is_renewed_once_and_never_a_permanent_verdict():
    other = ProjectRef("team-a", "other", "0d4b9a52-9999-4222-8333-444455556666")
    async with run_emulator() as emu:
        platform = driver_for(emu)
        try:
            await platform.observe(REF)  # logged in, user id known
            emu.restart(fresh_users=False)
            await platform.observe(other)  # the app listing answers 422 to the old token
            logins = platform.client.logins
            # An SM whose key changes with every listing: no token will do.
            emu.set_on_request(lambda r: emu.sm.mint.rotate() if r.path.startswith("/api/applications") else None)
            with pytest.raises(TransientPlatformError, match="HTTP 422"):
                await platform.observe(ProjectRef("team-a", "third", "third-uid"))
        finally:
            await platform.close()
    # One new login per refused call (listing; the user record read anew once; listing again), no more.
    assert logins == 2 and platform.client.logins == 5

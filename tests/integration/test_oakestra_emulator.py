"""The emulator answers as oakestra-api.md says the real System Manager does, quirks included."""

import asyncio
import json

import aiohttp
import pytest

from tests.oakestra_emulator import Cluster, ManualClock, Timing, run_emulator


def sla(app="demo", ns="test", app_id="", services=()):
    return {"sla_version": "v2.0", "customerID": "Admin",
            "applications": [{"applicationID": app_id, "application_name": app, "application_namespace": ns,
                              "application_desc": "d", "microservices": list(services)}]}


def ms(name, rr_ip=None, **extra):
    service = {"microserviceID": "", "microservice_name": name, "microservice_namespace": "test",
               "virtualization": "container", "code": "docker.io/library/nginx:latest", "memory": 100, "vcpus": 1,
               **extra}
    if rr_ip:
        service["addresses"] = {"rr_ip": rr_ip}
    return service


class Api:
    def __init__(self, emu, session):
        self.emu, self.s, self.headers = emu, session, {}

    async def login(self, user="Admin", password="Admin"):
        status, body = await self.raw("POST", "/api/auth/login", {"username": user, "password": password})
        assert status == 200, body
        self.headers = {"Authorization": f"Bearer {body['token']}"}
        return body

    async def raw(self, method, path, body=None, headers=None, redirects=True):
        async with self.s.request(method, self.emu.url + path, json=body, headers=headers or self.headers,
                                  allow_redirects=redirects) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def app(self, name="demo"):
        status, body = await self.raw("POST", "/api/application/", sla(name))
        assert status == 200
        return next(a for a in json.loads(body) if a["application_name"] == name)["applicationID"]

    async def services(self, app_id):
        status, body = await self.raw("GET", f"/api/services/{app_id}")
        assert status == 200 and isinstance(body, str)  # double-encoded
        return json.loads(body)


@pytest.fixture
async def api():
    clock = ManualClock()
    async with run_emulator(clock=clock, timing=Timing(schedule_delay=1, step_delay=1)) as emu:
        async with aiohttp.ClientSession() as session:
            yield Api(emu, session), clock


async def test_login_answers_per_cheat_sheet(api):
    api, _ = api
    assert (await api.raw("POST", "/api/auth/login", {"username": "Admin", "password": "nope"}))[0] == 401
    assert (await api.raw("POST", "/api/auth/login", {"username": "Admin"}))[0] == 500
    assert (await api.raw("POST", "/api/auth/login", None))[0] == 403
    assert (await api.raw("POST", "/api/auth/login", {"username": "Admin", "password": "Admin",
                                                      "organization_name": "nope"}))[0] == 404
    tokens = await api.login()
    assert set(tokens) == {"token", "refresh_token"}


async def test_collections_need_the_trailing_slash_and_app_get_answers_null(api):
    api, _ = api
    await api.login()
    status, _ = await api.raw("POST", "/api/application", sla(), redirects=False)
    assert status == 308
    app_id = await api.app()
    assert await api.raw("GET", f"/api/application/{app_id}") == (200, None)
    assert (await api.raw("GET", "/api/application/0123456789abcdef01234567"))[0] == 404
    assert (await api.raw("GET", f"/api/services/{app_id}/"))[0] == 404


async def test_app_listing_is_double_encoded_with_oid(api):
    api, _ = api
    await api.login()
    app_id = await api.app()
    status, user = await api.raw("GET", "/api/user/Admin")
    status, body = await api.raw("GET", f"/api/applications/{user['_id']['$oid']}")
    apps = json.loads(body)
    assert status == 200 and apps[0]["_id"] == {"$oid": app_id} and apps[0]["userId"] == "Admin"
    assert (await api.raw("GET", "/api/applications/0123456789abcdef01234567"))[0] == 401
    assert (await api.raw("POST", "/api/application/", sla()))[0] == 409
    assert (await api.raw("POST", "/api/application/", sla("bad-name")))[0] == 422
    assert (await api.raw("POST", "/api/application/", {**sla("x"), "sla_version": "v1.0"}))[0] == 500


async def test_service_create_reports_failures_in_a_200(api):
    api, _ = api
    await api.login()
    app_id = await api.app()
    status, body = await api.raw("POST", "/api/service/", sla(app_id=app_id, services=[ms("web", "10.30.30.30")]))
    assert status == 200 and body["failed_services"] == []
    status, body = await api.raw("POST", "/api/service/", sla(app_id=app_id, services=[ms("web2", "10.30.30.30")]))
    assert status == 200 and body["failed_services"][0]["service_name"] == "web2"
    assert [s["microservice_name"] for s in await api.services(app_id)] == ["web"]
    assert (await api.raw("POST", "/api/service/", sla(app_id=app_id, services=[ms("bad", port=80)])))[0] == 400
    assert (await api.raw("POST", "/api/service/", sla(app_id="0123456789abcdef01234567",
                                                      services=[ms("x")])))[0] == 400


async def test_service_upsert_by_job_name_orphans_instances(api):
    api, clock = api
    await api.login()
    app_id = await api.app()
    _, first = await api.raw("POST", "/api/service/", sla(app_id=app_id, services=[ms("web")]))
    await api.raw("POST", f"/api/service/{first['job_id']}/instance")
    clock.advance(10)
    assert len((await api.services(app_id))[0]["instance_list"]) == 1
    _, again = await api.raw("POST", "/api/service/", sla(app_id=app_id, services=[ms("web")]))
    assert again["job_id"] == first["job_id"]
    assert (await api.services(app_id))[0]["instance_list"] == []
    assert api.emu.sm.apps[app_id]["microservices"] == [first["job_id"], first["job_id"]]
    assert [i["orphan"] for i in api.emu.cluster_instances()] == [True]


async def test_instances_progress_on_the_clock_with_monotonic_numbers(api):
    api, clock = api
    await api.login()
    app_id = await api.app()
    _, created = await api.raw("POST", "/api/service/", sla(app_id=app_id, services=[ms("web", port="8080:80")]))
    job = created["job_id"]
    doc = (await api.services(app_id))[0]
    assert "status" not in doc and doc["instance_list"] == []
    assert await api.raw("POST", f"/api/service/{job}/instance") == (200, {"message": "ok"})
    seen = []
    for _ in range(5):
        doc = (await api.services(app_id))[0]
        seen.append((doc["status"], [i["status"] for i in doc["instance_list"]]))
        clock.advance(1)
    assert seen == [("REQUESTED", []), ("CLUSTER_SCHEDULED", ["CLUSTER_SCHEDULED"]),
                    ("NODE_SCHEDULED", ["NODE_SCHEDULED"]), ("CREATING", ["CREATING"]), ("RUNNING", ["RUNNING"])]
    assert doc["status_detail"] == "Waiting for scheduling decision"  # stale, as observed
    await api.raw("DELETE", f"/api/service/{job}/instance/0")
    await api.raw("POST", f"/api/service/{job}/instance")
    clock.advance(1)
    doc = (await api.services(app_id))[0]
    assert [i["instance_number"] for i in doc["instance_list"]] == [1]
    assert (await api.raw("DELETE", f"/api/service/{job}/instance/x"))[0] == 500
    assert (await api.raw("POST", "/api/service/0123456789abcdef01234567/instance")) == (200, {"message": "ok"})


async def test_negative_scheduling_sets_job_status_only():
    clock = ManualClock()
    async with run_emulator(clock=clock, clusters=[Cluster("small", "c" * 24, memory=50)]) as emu:
        async with aiohttp.ClientSession() as session:
            api = Api(emu, session)
            await api.login()
            app_id = await api.app()
            for name, extra in (("big", {}), ("lost", {"constraints": [{"type": "direct", "cluster": "nope"}]})):
                _, created = await api.raw("POST", "/api/service/", sla(app_id=app_id, services=[ms(name, **extra)]))
                await api.raw("POST", f"/api/service/{created['job_id']}/instance")
            docs = {d["microservice_name"]: d for d in await api.services(app_id)}
            assert docs["big"]["status"] == "NoActiveClusterWithCapacity" and docs["big"]["instance_list"] == []
            assert docs["lost"]["status"] == "TargetClusterNotFound"


async def test_service_delete_skips_every_second_instance(api):
    api, clock = api
    await api.login()
    app_id = await api.app()
    _, created = await api.raw("POST", "/api/service/", sla(app_id=app_id, services=[ms("web")]))
    for _ in range(3):
        await api.raw("POST", f"/api/service/{created['job_id']}/instance")
    clock.advance(10)
    assert await api.raw("DELETE", f"/api/service/{created['job_id']}") == (200, {"message": "Job deleted"})
    assert [(i["instance_number"], i["orphan"]) for i in api.emu.cluster_instances()] == [(1, True)]
    assert (await api.raw("DELETE", f"/api/service/{created['job_id']}"))[0] == 500
    clock.advance(15)
    await api.raw("GET", "/api/clusters/")
    assert api.emu.cluster_instances() == []
    assert (await api.raw("PUT", f"/api/service/{created['job_id']}", sla()))[0] == 501
    assert await api.raw("DELETE", f"/api/application/{app_id}") == (200, {"message": "Application Deleted"})
    assert (await api.raw("DELETE", f"/api/application/{app_id}"))[0] == 501


async def test_expired_and_refresh_tokens_answer_per_decorator(api):
    api, clock = api
    tokens = await api.login()
    app_id = await api.app()
    clock.advance(601)
    assert await api.raw("GET", f"/api/services/{app_id}") == (401, {"message": "Missing authentication token"})
    assert await api.raw("GET", f"/api/application/{app_id}") == (401, {"msg": "Token has expired"})
    refresh = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    status, body = await api.raw("POST", "/api/auth/refresh", headers=refresh)
    assert status == 200 and set(body) == {"token"}
    assert (await api.raw("POST", "/api/auth/refresh"))[0] == 422  # an access token
    api.headers = {"Authorization": f"Bearer {body['token']}"}
    assert (await api.raw("GET", f"/api/services/{app_id}"))[0] == 200
    assert (await api.raw("GET", f"/api/application/{app_id}", headers=refresh)) == \
        (422, {"msg": "Only non-refresh tokens are allowed"})


async def test_put_without_microservices_breaks_service_lookups(api):
    api, _ = api
    await api.login()
    app_id = await api.app()
    _, created = await api.raw("POST", "/api/service/", sla(app_id=app_id, services=[ms("web")]))
    await api.raw("PUT", f"/api/application/{app_id}", {"application_name": "demo", "application_namespace": "test"})
    assert (await api.raw("GET", f"/api/service/{created['job_id']}"))[0] == 500


async def test_admin_only_routes_refuse_other_users(api):
    api, _ = api
    api.emu.sm.add_user("alice", "pw", ["Application_Provider"])
    await api.login("alice", "pw")
    assert await api.raw("GET", "/api/applications/") == (403, {"message": "You have not enough permissions!"})
    assert (await api.raw("GET", "/api/services/"))[0] == 403
    assert (await api.raw("GET", "/api/user/Admin"))[0] == 401


async def test_call_record_and_injected_faults():
    from tests.oakestra_emulator import Faults
    async with run_emulator(faults=Faults(rate=1.0, kinds=("502",), after_effect=1.0)) as emu:
        async with aiohttp.ClientSession() as session:
            async with session.post(emu.url + "/api/auth/login", json={"username": "Admin", "password": "Admin"}) as r:
                assert r.status == 502
    [call] = emu.calls
    assert (call.method, call.route, call.status, call.fault, call.effect) == \
        ("POST", "/api/auth/login", 502, "502-after", True)


async def test_overlapping_creates_in_one_app_lose_an_id_with_the_consequences_of_section_13_13():
    """Two POST /api/service/ for one application at once: both answer 200, one id is lost."""
    async with run_emulator(list_write_gap=0.05) as emu:
        async with aiohttp.ClientSession() as session:
            api = Api(emu, session)
            await api.login()
            app_id = await api.app()
            answers = await asyncio.gather(*(api.raw("POST", "/api/service/", sla(app_id=app_id, services=[ms(n)]))
                                             for n in ("web", "db")))
            assert [status for status, _ in answers] == [200, 200]
            assert all(body["failed_services"] == [] for _, body in answers)
            assert len(await api.services(app_id)) == 2  # still listed by the app's service listing
            [lost] = emu.lost_services()
            job = lost["microserviceID"]
            assert emu.sm.overlapping_list_writes[app_id] == 1
            assert await api.raw("POST", f"/api/service/{job}/instance") == (200, {"message": "ok"})
            assert emu.sm.instance_requests[lost["job_name"]] == 0  # scheduled nothing
            assert (await api.raw("GET", f"/api/service/{job}"))[0] == 404
            assert (await api.raw("DELETE", f"/api/service/{job}"))[0] == 500
            assert (await api.raw("DELETE", f"/api/application/{app_id}"))[0] == 200
            assert [j["microserviceID"] for j in emu.jobs()] == [job]  # the job and its address remain
            assert list(emu.sm.rr_ips.values()) == [lost["job_name"]]


async def test_writes_to_different_apps_may_overlap_without_loss():
    async with run_emulator(list_write_gap=0.05) as emu:
        async with aiohttp.ClientSession() as session:
            api = Api(emu, session)
            await api.login()
            apps = [await api.app("one"), await api.app("two")]
            await asyncio.gather(*(api.raw("POST", "/api/service/", sla(app_id=a, services=[ms("web")])) for a in apps))
    assert emu.sm.peak_list_writers == 2 and not emu.sm.overlapping_list_writes and emu.lost_services() == []

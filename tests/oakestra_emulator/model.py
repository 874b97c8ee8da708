"""The System Manager's records and rules (oakestra-api.md §2, §4, §6, §8), without HTTP.

Operations raise ApiError with the status code and body the real SM answers; the HTTP layer only
encodes. Quirks are reproduced on purpose: job upsert by the global job_name, app.microservices
duplicates, failed_services in a 200, DELETE /api/service skipping every second instance, PUT on an
app replacing microservices (None breaks later lookups), and the lost update of app.microservices
when two writes to one application's service list overlap (§13.13): the `*_steps` generators yield
between reading the list and writing it back, where the HTTP layer lets other requests run.
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Generator

Steps = Generator[None, None, Any]
"""An operation that yields where the real SM would let another request in (between reading an
app's service list and writing it back); its return value is the answer."""

from .cluster import Cluster, Lifecycle, Timing
from .schema import SlaVersionError, validate_sla
from .tokens import TokenMint

ADMIN_ROLES = ["Admin", "Organization_Admin", "Application_Provider", "Infrastructure_Provider"]
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")


class ApiError(Exception):
    def __init__(self, status: int, body: Any = None):
        super().__init__(status)
        self.status = status
        self.body = body if body is not None else {"code": status, "status": HTTPStatus(status).phrase}


@dataclass
class User:
    name: str
    password: str
    id: str
    roles: dict[str, list[str]] = field(default_factory=dict)
    """organization name -> roles there."""


class SystemManager:
    def __init__(self, *, timing: Timing, mint: TokenMint, clusters: list[Cluster] | None = None,
                 service_subnet: str = "10.30.0.0/16", reserved: tuple[str, ...] = ()):
        self._oid_prefix = secrets.token_hex(5)
        self._counter = itertools.count(1)
        self.mint = mint
        self.organizations = {"root": self.new_id(0)}
        self.users = {"Admin": User("Admin", "Admin", self.new_id(0), {"root": list(ADMIN_ROLES)})}
        self.apps: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.service_subnet = ipaddress.IPv4Network(service_subnet)
        """The network plugin's range (Oakestra's is 10.30.0.0/16; a container worker's is its network's)."""
        self.rr_ips: dict[str, str] = {address: "(reserved)" for address in reserved}
        """Service IP -> job_name holding it (the network plugin's table)."""
        self.lifecycle = Lifecycle(timing)
        self.clusters = clusters if clusters is not None else [Cluster("cluster1", self.new_id(0))]
        # Effects actually applied, for tests to assert "never twice".
        self.upserts: Counter[str] = Counter()
        """job_name -> times a POST /api/service/ wrote it (created or overwrote)."""
        self.instance_requests: Counter[str] = Counter()
        """job_name -> instances requested (POST .../instance that reached a known job)."""
        self.list_writers: Counter[str] = Counter()
        """app id -> writes of its service list between their read and their write-back, now."""
        self.overlapping_list_writes: Counter[str] = Counter()
        """app id -> list writes that began while another one of the same app was in progress."""
        self.peak_list_writers = 0
        """Most list writes in progress at once, across all apps (different apps may overlap)."""

    def new_id(self, now: float) -> str:
        return f"{int(now) & 0xFFFFFFFF:08x}{self._oid_prefix}{next(self._counter) & 0xFFFFFF:06x}"

    def add_user(self, name: str, password: str, roles: list[str], organization: str = "root") -> User:
        user = User(name, password, self.new_id(0), {organization: list(roles)})
        self.users[name] = user
        return user

    def restart(self, *, fresh_users: bool = True) -> None:
        """What a client notices of a System Manager restart: tokens signed with the old key fail
        verification, and with a fresh users collection create_admin() gives users new ids."""
        self.mint.rotate()
        if fresh_users:
            for user in self.users.values():
                user.id = self.new_id(0)

    # Authentication (§2).
    def login(self, body: Any, now: float) -> dict:
        if not isinstance(body, dict):
            raise ApiError(403)
        try:
            name, password = body["username"], body["password"]
        except KeyError:
            raise ApiError(500) from None
        organization = body.get("organization_name") or "root"
        if organization not in self.organizations:
            raise ApiError(404)
        user = self.users.get(name)
        if user is None or user.password != password:
            raise ApiError(401)
        roles = user.roles.get(organization, [])
        org_id = self.organizations[organization]
        return {"token": self.mint.issue(name, roles, org_id, now, kind="access"),
                "refresh_token": self.mint.issue(name, roles, org_id, now, kind="refresh")}

    # Applications (§4).
    def user_apps(self, user: str) -> list[dict]:
        return [a for a in self.apps.values() if a["userId"] == user]

    def _owned_app(self, user: str, app_id: str) -> dict | None:
        app = self.apps.get(app_id)
        return app if app is not None and app["userId"] == user else None

    def create_application(self, user: str, sla: Any, now: float) -> list[dict]:
        try:
            errors = validate_sla(sla)
        except SlaVersionError:
            raise ApiError(500) from None
        if errors:
            raise ApiError(422, {"code": 422, "status": "Unprocessable Entity", "errors": {"json": errors}})
        for spec in sla["applications"]:
            taken = any(a["application_name"] == spec["application_name"]
                        and a["application_namespace"] == spec["application_namespace"] for a in self.user_apps(user))
            if taken:
                raise ApiError(409)
            app_id = self.new_id(now)
            self.apps[app_id] = {"applicationID": app_id, "application_name": spec["application_name"],
                                 "application_namespace": spec["application_namespace"],
                                 "application_desc": spec.get("application_desc", ""), "microservices": [],
                                 "userId": user}
            if spec["microservices"]:
                one = {**sla, "applications": [{**spec, "applicationID": app_id}]}
                try:
                    run(self.create_services_steps(user, one, now))
                except ApiError:
                    del self.apps[app_id]
                    raise
        return self.user_apps(user)

    def get_application(self, user: str, app_id: str) -> None:
        if self._owned_app(user, app_id) is None:
            raise ApiError(404)
        return None  # The real view returns null on success (§3.6).

    def update_application(self, user: str, app_id: str, body: Any) -> dict:
        app = self.apps.get(app_id)
        if app is None or not isinstance(body, dict):
            raise ApiError(404)
        # A replace, not a merge: a missing microservices list becomes None (§4 warning).
        app.update({"application_name": body.get("application_name"),
                    "application_namespace": body.get("application_namespace"),
                    "application_desc": body.get("application_desc"),
                    "microservices": body.get("microservices"), "userId": user})
        return {"message": "Application is updated"}

    def delete_application(self, user: str, app_id: str, now: float) -> dict:
        app = self._owned_app(user, app_id)
        if app is None:
            raise ApiError(501)
        for job_id in list(app["microservices"] or []):
            if job_id in self.jobs:
                run(self._delete_job_steps(job_id, now))
        self.apps.pop(app_id, None)
        return {"message": "Application Deleted"}

    # Services (§6).
    def _walk_user_apps(self, user: str, job_id: str) -> dict | None:
        for app in self.user_apps(user):
            if app["microservices"] is None:
                raise ApiError(500)  # TypeError in the real lookup
            if job_id in app["microservices"]:
                return self.jobs.get(job_id)
        return None

    def create_services(self, user: str, sla: Any, now: float) -> dict:
        return run(self.create_services_steps(user, sla, now))

    def create_services_steps(self, user: str, sla: Any, now: float) -> Steps:
        try:
            errors = validate_sla(sla)
        except SlaVersionError:
            raise ApiError(400) from None
        if errors or not sla["applications"]:
            raise ApiError(400)
        spec = sla["applications"][0]
        app = self._owned_app(user, spec.get("applicationID") or "")
        if app is None:
            raise ApiError(400)
        result: dict[str, Any] = {"job_id": None, "deployed_services": [], "failed_services": []}
        for ms in spec["microservices"]:
            job_id = self._upsert_job(app, ms, now)
            result["job_id"] = job_id
            if app["microservices"] is not None:
                # add_service_to_app: read the app, append the id, write the whole list back.
                listed = list(app["microservices"])
                yield from self._list_write(app["applicationID"])
                app["microservices"] = listed + [job_id]
            if self._net_deploy(self.jobs[job_id]):
                result["deployed_services"].append({"service_name": ms["microservice_name"], "status": 200})
            else:
                yield from self._delete_job_steps(job_id, now)
                result["failed_services"].append({"service_name": ms["microservice_name"],
                                                  "message": "failed to deploy service", "status": 500})
        return result

    def _upsert_job(self, app: dict, ms: dict, now: float) -> str:
        job_name = f"{app['application_name']}.{app['application_namespace']}.{ms['microservice_name']}." \
                   f"{ms['microservice_namespace']}"
        existing = next((j for j in self.jobs.values() if j["job_name"] == job_name), None)
        self.upserts[job_name] += 1
        job_id = existing["microserviceID"] if existing else self.new_id(now)
        if existing:
            # Overwritten with an empty instance list: deployed instances become orphans (§8).
            for instance in existing["instance_list"]:
                self.lifecycle.orphan((job_id, instance["instance_number"]), now)
        addresses = ms.get("addresses") or {}
        doc = copy.deepcopy(ms)
        doc.update({
            "job_name": job_name, "microserviceID": job_id, "applicationID": app["applicationID"],
            "app_name": app["application_name"], "app_ns": app["application_namespace"],
            "service_name": ms["microservice_name"], "service_ns": ms["microservice_namespace"],
            "image": ms["code"], "next_instance_progressive_number": 0, "instance_list": [],
            "RR_ip": addresses.get("rr_ip"), "RR_ip_v6": addresses.get("rr_ip_v6"),
        })
        if doc.get("virtualization") == "container":
            doc["virtualization"] = "docker"
        self.jobs[job_id] = doc
        return job_id

    def _net_deploy(self, job: dict) -> bool:
        """The network plugin's new_job_rr_address: an address of its range, not held by another job_name."""
        wanted = job["RR_ip"]
        if wanted is None:
            # Observed: the plugin hands out its range from the very first address (10.30.0.0) upwards.
            for n in range(self.service_subnet.num_addresses):
                candidate = str(self.service_subnet.network_address + n)
                if candidate not in self.rr_ips:
                    self.rr_ips[candidate] = job["job_name"]
                    return True
            return False
        try:
            address = ipaddress.IPv4Address(wanted)
        except ValueError:
            return False
        if address not in self.service_subnet:
            return False
        holder = self.rr_ips.get(wanted)
        if holder is not None and holder != job["job_name"]:
            return False
        self.rr_ips[wanted] = job["job_name"]
        return True

    def _list_write(self, app_id: str) -> Steps:
        """The gap between reading an app's service list and writing it back."""
        if self.list_writers[app_id]:
            self.overlapping_list_writes[app_id] += 1
        self.list_writers[app_id] += 1
        self.peak_list_writers = max(self.peak_list_writers, sum(self.list_writers.values()))
        try:
            yield
        finally:
            self.list_writers[app_id] -= 1
            if not self.list_writers[app_id]:
                del self.list_writers[app_id]

    def _delete_job_steps(self, job_id: str, now: float) -> Steps:
        job = self.jobs[job_id]
        listed = job["instance_list"]
        # The real loop removes from the list it iterates: every second instance gets no cluster
        # DELETE and lives on until the next cluster report (§6.5).
        for instance in listed:
            self.lifecycle.cluster_delete((job_id, instance["instance_number"]))
            listed.remove(instance)
        for instance in listed:
            self.lifecycle.orphan((job_id, instance["instance_number"]), now)
        app = self.apps.get(job["applicationID"])
        if app is not None and app["microservices"] and job_id in app["microservices"]:
            listed = list(app["microservices"])
            yield from self._list_write(app["applicationID"])
            listed.remove(job_id)
            app["microservices"] = listed
        self.jobs.pop(job_id, None)
        for ip, holder in list(self.rr_ips.items()):
            if holder == job["job_name"]:
                del self.rr_ips[ip]

    def get_service(self, user: str, job_id: str) -> dict:
        job = self._walk_user_apps(user, job_id) if OBJECT_ID.match(job_id) else None
        if job is None:
            raise ApiError(404)
        return job

    def list_services(self, user: str, app_id: str) -> list[dict]:
        if self._owned_app(user, app_id) is None:
            raise ApiError(404)
        return [j for j in self.jobs.values() if j["applicationID"] == app_id]

    def delete_service(self, user: str, job_id: str, now: float) -> dict:
        return run(self.delete_service_steps(user, job_id, now))

    def delete_service_steps(self, user: str, job_id: str, now: float) -> Steps:
        if self._walk_user_apps(user, job_id) is None:
            raise ApiError(500)
        yield from self._delete_job_steps(job_id, now)
        return {"message": "Job deleted"}

    def deploy_instance(self, user: str, job_id: str, now: float) -> dict:
        job = self._walk_user_apps(user, job_id)
        if job is not None:
            job["status"] = "REQUESTED"
            self.instance_requests[job["job_name"]] += 1
            job["status_detail"] = "Waiting for scheduling decision"
            self.lifecycle.request(job_id, now)
        return {"message": "ok"}

    def undeploy_instance(self, user: str, job_id: str, number: str) -> dict:
        try:
            n = int(number)
        except ValueError:
            raise ApiError(500) from None
        job = self._walk_user_apps(user, job_id)
        if job is not None:
            for instance in list(job["instance_list"]):
                if instance["instance_number"] == n:
                    job["instance_list"].remove(instance)
                    self.lifecycle.cluster_delete((job_id, n))
        return {"message": "ok"}

    def tick(self, now: float) -> None:
        self.lifecycle.tick(now, self.jobs, self.clusters)


def run(steps: Steps) -> Any:
    """Carry out an operation at once, with nothing in between (a single-threaded SM)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value

"""Two `flops operator` processes over kmock and the Oakestra emulator: one leads, the other stands by; the
leader is SIGKILLed while projects converge, the standby takes over within 15 s, nothing is created twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from aiohttp import web

from flops_operator.adapters.kopf_cli import USER_AGENT
from flops_operator.models import GROUP, PLURAL, VERSION, ProjectRef
from flops_operator.platforms.oakestra.names import app_name
from tests.oakestra_emulator import emulator_in_thread

from .conftest import eventually, free_port, kubernetes_in_thread
from .test_kopf_cli import kubeconfig_for

ROOT = Path(__file__).resolve().parents[2]
LEASE_NAMESPACE, LEASE_NAME = "flops-system", "flops-operator"
HANDOVER_BOUND = 15.0
PROJECTS = 3
LEARNERS = 2
SERVICES_PER_PROJECT = 4 + LEARNERS  # backend store, artifact store, tracking server, aggregator, learners
QUIET_SECONDS = 2.0


class WriteBatches:
    """Holds Oakestra writes (service creations, instance deployments) and lets them through together once
    none has come for QUIET_SECONDS. Two operators acting at once then both find a service missing while the
    first one's create is held, and both create it: a double is caught rather than raced past. The leader is
    killed while a batch of its writes is held: projects half made, writes in flight, on a fast machine too.
    (Only a slower one delays it; the handover is timed from the writes' arrival, before this hold.)"""

    def __init__(self) -> None:
        self.held = 0
        self._last = 0.0

    async def __call__(self, request: web.Request) -> None:
        if request.method != "POST" or not request.path.startswith("/api/service/"):
            return
        self.held += 1
        self._last = time.monotonic()
        try:
            while time.monotonic() - self._last < QUIET_SECONDS:
                await asyncio.sleep(0.05)
        finally:
            self.held -= 1


def start_operator(tmp_path: Path, pod: str, kubeconfig: Path, oakestra_url: str) -> tuple[subprocess.Popen, Path, int]:
    liveness_port = free_port()
    log_path = tmp_path / f"{pod}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flops_operator", "operator", "--platform", "oakestra", "-A",
             "--metrics-port", "0", "--liveness", f"http://127.0.0.1:{liveness_port}/healthz",
             "--resync-seconds", "1"],
            env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                 # What the Deployment passes from the downward API: who holds the Lease, and where it is.
                 "POD_NAME": pod, "POD_NAMESPACE": LEASE_NAMESPACE,
                 "FLOPS_OAKESTRA_URL": oakestra_url, "FLOPS_OAKESTRA_USERNAME": "Admin",
                 "FLOPS_OAKESTRA_PASSWORD": "Admin", "FLOPS_OAKESTRA_READY_AFTER": "0",
                 "FLOPS_OAKESTRA_HEALTH_CHECKS": "false"},
            stdout=log, stderr=subprocess.STDOUT)
    return proc, log_path, liveness_port


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as rsp:
            return rsp.status == 200
    except OSError:  # not listening yet
        return False


def holder(coordination: kubernetes.client.CoordinationV1Api) -> str:
    lease = coordination.read_namespaced_lease(LEASE_NAME, LEASE_NAMESPACE)
    return lease.spec.holder_identity or ""


def taken_by(request: Any, pod: str) -> bool:
    """Is this the JSON patch with which `pod` took the Lease over (its identity written as the holder)?"""
    if request.resource is None or request.resource.plural != "leases" or not isinstance(request.data, list):
        return False
    return any(op.get("path") == "/spec" and str(op["value"].get("holderIdentity", "")).startswith(f"{pod}_")
               for op in request.data)


def operator_write_to_projects(request: Any) -> bool:
    agent = request.headers.get("User-Agent", "")
    return (request.resource is not None and request.resource.plural == PLURAL and request.method in ("PATCH", "POST")
            and agent.startswith(("kopf/", USER_AGENT)))


def test_sigkilled_leader_is_replaced_within_15s_and_no_service_is_created_twice(tmp_path: Path) -> None:
    batches = WriteBatches()
    with ExitStack() as stack:
        url, kube = stack.enter_context(kubernetes_in_thread())
        emu = stack.enter_context(emulator_in_thread())
        emu.set_on_request(batches)
        kubeconfig = kubeconfig_for(url, tmp_path / "kubeconfig")
        api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
        stack.callback(api.close)
        coordination = kubernetes.client.CoordinationV1Api(api)
        custom = kubernetes.client.CustomObjectsApi(api)
        procs: dict[str, subprocess.Popen] = {}

        def stop_all() -> None:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(60)
        stack.callback(stop_all)

        # operator-a first, so that it leads; operator-b then finds the Lease held and stands by.
        procs["operator-a"], _, _ = start_operator(tmp_path, "operator-a", kubeconfig, emu.url)
        eventually(lambda: holder(coordination).startswith("operator-a_"), what="operator-a holding the Lease")
        procs["operator-b"], log_b, liveness_b = start_operator(tmp_path, "operator-b", kubeconfig, emu.url)
        eventually(lambda: answers(f"http://127.0.0.1:{liveness_b}/healthz"),
                   what="operator-b standing by and answering its liveness probe")
        assert holder(coordination).startswith("operator-a_")

        refs = []
        for name in (f"p{i}" for i in range(PROJECTS)):
            created = custom.create_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "FLOpsProject",
                "metadata": {"name": name, "namespace": "team-a"},
                "spec": {"platform": "oakestra", "task": {"name": "digits-mlp"}, "training": {"rounds": 3},
                         "learners": {"replicas": LEARNERS},
                         "tracking": {"backendStore": {"type": "mysql"}, "artifactStore": {"type": "ftp"}}}})
            refs.append(ProjectRef(namespace="team-a", name=name, uid=created["metadata"]["uid"]))

        # Killed with the tracking servers' creates in flight, once every project's stores were created.
        eventually(lambda: len(emu.sm.upserts) >= 2 * PROJECTS and batches.held,
                   what="the leader's next writes in flight after its first ones landed")
        assert holder(coordination).startswith("operator-a_"), "the standby acted before the leader was killed"
        procs["operator-a"].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        procs["operator-a"].wait(60)

        def survivor_acts() -> tuple[float, float] | None:
            """When operator-b took the Lease and when it first acted: an Oakestra write or a project write,
            whichever came first. Only it can act after the takeover: the leader was dead seconds before."""
            requests = list(kube)
            take = next((i for i, r in enumerate(requests) if taken_by(r, "operator-b")), None)
            if take is None:
                return None
            took_at = kube.arrived(requests[take])
            acts = [c.at for c in list(emu.calls) if c.method != "GET" and not c.path.startswith("/api/auth/")
                    and c.at > took_at]
            acts += [kube.arrived(r) for r in requests[take + 1:] if operator_write_to_projects(r)]
            return (took_at, min(acts)) if acts else None
        took_at, acted_at = eventually(survivor_acts, what="operator-b taking over and acting on the projects")
        handover = acted_at - killed_at
        print(f"handover: {handover:.1f} s from SIGKILL to the survivor's first write (Lease taken after "
              f"{took_at - killed_at:.1f} s)")
        assert handover <= HANDOVER_BOUND, f"handover took {handover:.1f} s"
        assert holder(coordination).startswith("operator-b_")

        def doubles() -> dict[str, int]:
            """Services created, or instances requested, more than once (by job name)."""
            return {job: n for counts in (emu.sm.upserts, emu.sm.instance_requests)
                    for job, n in list(counts.items()) if n != 1}

        def settled() -> bool:
            """Every project's services created and deployed, or something already done twice (no use waiting)."""
            apps = {a["application_name"]: a["applicationID"] for a in emu.apps()}
            made = len(apps) == PROJECTS and all(
                len(jobs) == SERVICES_PER_PROJECT and all(j["instance_list"] for j in jobs)
                for jobs in (emu.jobs(apps[app_name(ref)]) for ref in refs))
            return made or bool(doubles())
        eventually(settled, what="every project's services created and deployed by the survivor")
        # Created once, deployed once: the dead leader's work was observed, not redone.
        assert not doubles(), f"created or deployed more than once: {doubles()}"
        assert len(emu.sm.upserts) == PROJECTS * SERVICES_PER_PROJECT

        # A clean stop gives the Lease back at once (no holder) and exits 0.
        procs["operator-b"].send_signal(signal.SIGTERM)
        assert procs["operator-b"].wait(120) == 0, log_b.read_text()[-5000:]
        assert holder(coordination) == ""
        assert "Traceback" not in log_b.read_text()
        assert_lease_calls_allowed_by_the_role(list(kube))


def assert_lease_calls_allowed_by_the_role(requests: list[Any]) -> None:
    """The operators' calls on Leases are what manifests/operator/rbac.yaml's Role grants, and no more."""
    role = next(doc for doc in yaml.safe_load_all((ROOT / "manifests" / "operator" / "rbac.yaml").read_text())
                if doc["kind"] == "Role")
    allowed = {(verb, name) for rule in role["rules"] if "leases" in rule["resources"]
               for verb in rule["verbs"] for name in rule.get("resourceNames", [None])}
    verbs = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}
    used = {(verbs[r.method], None if r.method == "POST" else r.name) for r in requests
            if r.resource is not None and r.resource.plural == "leases"
            and r.headers.get("User-Agent", "").startswith(USER_AGENT)}
    assert {("get", LEASE_NAME), ("create", None), ("patch", LEASE_NAME)} <= used
    assert used <= allowed, f"Lease calls the Role does not allow: {sorted(used - allowed)}"
    namespaces = {r.namespace for r in requests if r.resource is not None and r.resource.plural == "leases"}
    assert namespaces == {LEASE_NAMESPACE}

"""The operator over real HTTP: create, scale, complete, delete; status, Events, finalizer, Secret."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml

from flops_operator.adapters.kopf_secrets import secret_name
from flops_operator.adapters.kopf_cli import USER_AGENT
from flops_operator.models import FINALIZER, GROUP, PLURAL, VERSION
from flops_operator.progress import TrainingProgress

from .conftest import Cluster, eventually

ROOT = Path(__file__).resolve().parents[2]
STACK = {"backend-store", "artifact-store", "tracking-server"}


def spec(platform: str, replicas: int = 3, **extra) -> dict:
    return {
        "platform": platform,
        "task": {"name": "digits-mlp"},
        "training": {"rounds": 3},
        "learners": {"replicas": replicas},
        "tracking": {"backendStore": {"type": "mysql"}, "artifactStore": {"type": "ftp"}},
        **extra,
    }


def condition(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def learners(n: int) -> set[str]:
    return {f"learner-{i}" for i in range(n)}


def ready(cluster: Cluster, ns: str, name: str, generation: int):
    def check():
        obj = cluster.get(ns, name)
        status = obj.get("status") or {}
        return (status.get("observedGeneration") == generation and condition(obj, "Ready")["status"] == "True"
                and obj)
    return eventually(check, what=f"{ns}/{name} Ready at generation {generation}")


def secret_values(cluster: Cluster, ns: str, name: str) -> list[str]:
    secret = cluster.core.read_namespaced_secret(f"{name}-flops-credentials", ns)
    return [base64.b64decode(v).decode() for v in secret.data.values()]


def test_create_converges_to_ready_with_finalizer_services_secret_and_events(cluster: Cluster) -> None:
    ns, name = cluster.namespace(), "digits"
    created = cluster.create(ns, name, spec(cluster.platform.spec_platform))
    ref = cluster.ref(created)

    obj = ready(cluster, ns, name, 1)
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert cluster.platform.services(ref) == STACK | {"aggregator"} | learners(3)
    status = obj["status"]
    assert status["phase"] == "Training"
    assert status["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]}.items() >= {
        "Ready": "True", "Reconciling": "False", "Stalled": "False", "BackendStoreReady": "True",
        "ArtifactStoreReady": "True", "TrackingServerReady": "True", "AggregatorReady": "True",
        "LearnersReady": "True", "TrainingComplete": "False"}.items()
    assert condition(obj, "LearnersReady")["message"] == "3/3 ready"
    components = {c["name"]: c for c in status["components"]}
    assert set(components) == STACK | {"aggregator"} | learners(3)
    assert all(c["state"] == "running" and c["address"] for c in components.values())
    assert status["training"]["progress"] == "0/3"
    assert status["mlflow"]["experimentName"] == f"{ns}/{name}"

    events = eventually(lambda: [e for e in cluster.events(ns, name) if e.reason == "Training"],
                        what="an Event for the phase change to Training")
    assert events[0].type == "Normal" and "-> Training" in events[0].message
    applied = [e for e in cluster.events(ns, name) if e.reason == "Applied"]
    assert applied and "create aggregator" in " ".join(e.message for e in applied)

    # Generated credentials: a Secret owned by the project, and nowhere else.
    secret = cluster.core.read_namespaced_secret(secret_name(ref), ns)
    owner = secret.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("FLOpsProject", name, ref.uid, True)
    assert set(secret.data) == {"backend-password", "backend-root-password", "ftp-password", "mlflow-admin-password",
                                "mlflow-aggregator-password", "mlflow-reader-password", "mlflow-flask-secret-key",
                                "flower-ca", "flower-superlink-key", *(f"flower-learner-key-{i}" for i in range(3))}
    exposed = str(cluster.get(ns, name)) + " ".join(f"{e.reason} {e.message}" for e in cluster.events(ns, name))
    for value in secret_values(cluster, ns, name):
        assert len(value) >= 20 and value not in exposed


def test_scaling_learners_converges(cluster: Cluster) -> None:
    ns, name = cluster.namespace(), "scaled"
    ref = cluster.ref(cluster.create(ns, name, spec(cluster.platform.spec_platform, replicas=3)))
    ready(cluster, ns, name, 1)

    cluster.patch_spec(ns, name, {"learners": {"replicas": 5}})
    obj = ready(cluster, ns, name, 2)
    assert cluster.platform.services(ref) == STACK | {"aggregator"} | learners(5)
    assert condition(obj, "LearnersReady")["message"] == "5/5 ready"
    assert len(obj["status"]["components"]) == 3 + 1 + 5
    assert any("create learner-3" in e.message and "create learner-4" in e.message
               for e in cluster.events(ns, name) if e.reason == "Applied")


def test_invalid_spec_stalls_and_creates_nothing(cluster: Cluster) -> None:
    ns, name = cluster.namespace(), "broken"
    bad = spec(cluster.platform.spec_platform, replicas=2)
    bad["training"] = {"rounds": 0}
    bad["learners"] = {"replicas": 0}
    ref = cluster.ref(cluster.create(ns, name, bad))

    def stalled():
        obj = cluster.get(ns, name)
        return obj.get("status") and condition(obj, "Stalled")["status"] == "True" and obj
    obj = eventually(stalled, what="Stalled condition")
    stall = condition(obj, "Stalled")
    assert stall["reason"] == "InvalidSpec"
    assert "spec.training.rounds" in stall["message"] and "spec.learners.replicas" in stall["message"]
    assert condition(obj, "Ready")["status"] == "False"
    assert obj["status"]["observedGeneration"] == 1
    warnings = eventually(lambda: [e for e in cluster.events(ns, name) if e.reason == "InvalidSpec"],
                          what="an InvalidSpec Event")
    assert warnings[0].type == "Warning" and "spec.training.rounds" in warnings[0].message
    assert cluster.platform.services(ref) == set()
    assert not [s for s in cluster.core.list_namespaced_secret(ns).items]


def test_unserved_platform_stalls_with_a_message(cluster: Cluster) -> None:
    ns, name = cluster.namespace(), "elsewhere"
    other = "oakestra" if cluster.platform.spec_platform != "oakestra" else "local"
    ref = cluster.ref(cluster.create(ns, name, spec(other)))

    def stalled():
        obj = cluster.get(ns, name)
        return obj.get("status") and condition(obj, "Stalled")["status"] == "True" and obj
    obj = eventually(stalled, what="Stalled for a platform not served")
    assert f"spec.platform '{other}' is not served" in condition(obj, "Stalled")["message"]
    assert obj["status"]["phase"] == "Failed"
    assert cluster.platform.services(ref) == set()
    eventually(lambda: [e for e in cluster.events(ns, name) if e.type == "Warning" and "not served" in e.message],
               what="a Warning Event naming the unserved platform")
    # Orphan lets it go without touching a platform it cannot reach.
    cluster.patch_spec(ns, name, {"deletionPolicy": "Orphan"})
    cluster.delete(ns, name)
    eventually(lambda: cluster.gone(ns, name), what="the orphaned project gone")


def test_training_completes_then_training_services_go(cluster: Cluster) -> None:
    ns, name = cluster.namespace(), "finishing"
    ref = cluster.ref(cluster.create(ns, name, spec(cluster.platform.spec_platform, replicas=2)))
    ready(cluster, ns, name, 1)

    cluster.platform.complete(ref, "aggregator")

    def completed():
        obj = cluster.get(ns, name)
        return obj["status"]["phase"] == "Completed" and condition(obj, "Ready")["status"] == "True" and obj
    obj = eventually(completed, what="phase Completed, settled (the resync timer sees the aggregator finish)")
    assert condition(obj, "TrainingComplete")["status"] == "True"
    assert condition(obj, "TrainingComplete")["reason"] == "Succeeded"
    assert cluster.platform.services(ref) == STACK
    events = eventually(lambda: [e for e in cluster.events(ns, name) if e.reason == "Completed"],
                        what="an Event for the phase change to Completed")
    assert events[0].type == "Normal" and "Training -> Completed" in events[0].message
    assert any("remove learner-0" in e.message for e in cluster.events(ns, name) if e.reason == "Applied")


def test_delete_removes_services_secret_and_object(cluster: Cluster) -> None:
    ns, name = cluster.namespace(), "short-lived"
    ref = cluster.ref(cluster.create(ns, name, spec(cluster.platform.spec_platform, replicas=2)))
    ready(cluster, ns, name, 1)
    assert cluster.core.read_namespaced_secret(secret_name(ref), ns)

    cluster.delete(ns, name)
    eventually(lambda: cluster.gone(ns, name), what="the project gone")
    assert cluster.platform.services(ref) == set()
    assert not cluster.core.list_namespaced_secret(ns).items
    eventually(lambda: [e for e in cluster.events(ns, name) if e.reason == "Deleted"], what="a Deleted Event")


def test_delete_while_platform_fails_keeps_finalizer_and_says_why(cluster: Cluster) -> None:
    ns, name = cluster.namespace(), "sticky"
    ref = cluster.ref(cluster.create(ns, name, spec(cluster.platform.spec_platform, replicas=2)))
    ready(cluster, ns, name, 1)

    cluster.platform.set_failing(True)
    try:
        cluster.delete(ns, name)

        def deleting():
            obj = cluster.get(ns, name)
            return obj["status"]["phase"] == "Deleting" and "cleanup failed" in obj["status"]["message"] and obj
        obj = eventually(deleting, what="status Deleting with the reason cleanup fails")
        assert obj["metadata"]["deletionTimestamp"]
        assert FINALIZER in obj["metadata"]["finalizers"]
        assert condition(obj, "Ready")["message"] == obj["status"]["message"]
        assert cluster.platform.services(ref), "nothing was removed while the platform failed"
        warning = eventually(lambda: [e for e in cluster.events(ns, name) if e.reason == "CleanupFailed"],
                             what="a CleanupFailed Event")
        assert warning[0].type == "Warning"
    finally:
        cluster.platform.set_failing(False)
    eventually(lambda: cluster.gone(ns, name), what="the project gone once the platform answers again")
    assert cluster.platform.services(ref) == set()


def test_resync_follows_training_progress_into_status(cluster: Cluster) -> None:
    ns, name = cluster.namespace(), "progressing"
    cluster.create(ns, name, spec(cluster.platform.spec_platform, replicas=1))
    ready(cluster, ns, name, 1)
    assert cluster.get(ns, name)["status"]["training"]["progress"] == "0/3"

    cluster.progress.by_project[f"{ns}/{name}"] = TrainingProgress(
        experiment_id="7", run_id="r1", run_status="RUNNING", round=2,
        latest_metrics={"eval_accuracy": 0.81, "train_loss": 0.4},
        best_metrics={"eval_accuracy": 0.83}, best_round=1)

    def progressed():
        status = cluster.get(ns, name)["status"]
        return status["training"]["progress"] == "2/3" and status
    status = eventually(progressed, what="round 2/3 in status (driven by the resync timer)")
    assert status["training"]["latestMetrics"] == {"eval_accuracy": 0.81, "train_loss": 0.4}
    assert status["training"]["best"] == "eval_accuracy=0.8300"
    assert status["mlflow"]["experimentId"] == "7" and status["mlflow"]["runId"] == "r1"
    assert status["mlflow"]["uiUrl"].endswith("/#/experiments/7")
    assert status["phase"] == "Training"
    asked = [url for key, url in cluster.progress.asked if key == f"{ns}/{name}"]
    assert asked and all(url.startswith("http://") for url in asked)


def test_steady_project_resyncs_without_writing(cluster: Cluster) -> None:
    ns, name = cluster.namespace(), "steady"
    ref = cluster.ref(cluster.create(ns, name, spec(cluster.platform.spec_platform, replicas=1)))
    ready(cluster, ns, name, 1)
    status_path = f"/namespaces/{ns}/flopsprojects/{name}/status"

    def status_writes() -> int:
        return sum(1 for r in list(cluster.emulator) if r.method == "PATCH" and r.url.path.endswith(status_path))
    # Let in-flight handling settle: wait for a resync that happened after the last status write.
    writes, seen = status_writes(), cluster.platform.observations(ref)
    eventually(lambda: cluster.platform.observations(ref) >= seen + 2, what="two resyncs")
    writes, seen = status_writes(), cluster.platform.observations(ref)
    events = len(cluster.events(ns, name))
    eventually(lambda: cluster.platform.observations(ref) >= seen + 3, what="three more resyncs")
    patches = [r.data for r in list(cluster.emulator) if r.method == "PATCH" and r.url.path.endswith(status_path)]
    assert writes > 0 and status_writes() == writes, \
        f"a resync that found nothing new patched status: {patches[writes:]}"
    assert len(cluster.events(ns, name)) == events, "a resync that found nothing new posted an Event"
    assert cluster.get(ns, name)["status"]["phase"] == "Training"


def test_platform_outage_is_retried_with_backoff(cluster: Cluster) -> None:
    ns, name = cluster.namespace(), "patient"
    cluster.platform.set_failing(True)
    try:
        ref = cluster.ref(cluster.create(ns, name, spec(cluster.platform.spec_platform, replicas=1)))

        def retrying():
            obj = cluster.get(ns, name)
            return obj.get("status") and condition(obj, "Reconciling")["reason"] == "PlatformUnavailable" and obj
        obj = eventually(retrying, what="Reconciling: PlatformUnavailable")
        assert condition(obj, "Reconciling")["status"] == "True"
        assert condition(obj, "Stalled")["status"] == "False"
        assert f"platform {cluster.platform.name} unavailable, retrying" in obj["status"]["message"]
    finally:
        cluster.platform.set_failing(False)
    obj = ready(cluster, ns, name, 1)
    assert cluster.platform.services(ref) == STACK | {"aggregator"} | learners(1)
    assert condition(obj, "Reconciling")["status"] == "False"
    errors = re.compile(r'flops_platform_call_errors_total\{kind="transient",operation="\w+",platform="%s"\} '
                        r'[1-9]' % cluster.platform.name)
    assert errors.search(cluster.metrics())
    # The create handler and the resync timer race for the first look at a new project: either may meet the outage.
    assert re.search(r'flops_reconciles_total\{result="transient_error",trigger="(change|resync)"\} [1-9]',
                     cluster.metrics())


def test_metrics_and_liveness_endpoints(cluster: Cluster) -> None:
    ns, name = cluster.namespace(), "measured"
    cluster.create(ns, name, spec(cluster.platform.spec_platform, replicas=1))
    ready(cluster, ns, name, 1)

    text = cluster.metrics()
    assert 'flops_reconciles_total{result="ok",trigger="change"}' in text
    assert "flops_reconcile_duration_seconds_bucket" in text
    assert 'flops_projects{phase="Training"}' in text
    assert f'flops_platform_calls_total{{operation="ensure",platform="{cluster.platform.name}"}}' in text

    import urllib.request
    with urllib.request.urlopen(cluster.liveness_url, timeout=10) as rsp:
        assert rsp.status == 200
        assert b"projects" in rsp.read()


@pytest.mark.parametrize("policy", ["Orphan"])
def test_delete_with_orphan_policy_leaves_services(cluster: Cluster, policy: str) -> None:
    ns, name = cluster.namespace(), "kept"
    ref = cluster.ref(cluster.create(ns, name, spec(cluster.platform.spec_platform, replicas=1,
                                                    deletionPolicy=policy)))
    ready(cluster, ns, name, 1)
    values = secret_values(cluster, ns, name)
    cluster.delete(ns, name)
    eventually(lambda: cluster.gone(ns, name), what="the project gone")
    assert cluster.platform.services(ref) == STACK | {"aggregator"} | learners(1)
    eventually(lambda: [e for e in cluster.events(ns, name) if e.reason == "Orphaned"], what="an Orphaned Event")
    # The services' credentials outlive the project: in a Secret nothing owns (garbage collection
    # would delete one owned by the project; kmock has none, so the owner references are what counts).
    secrets = cluster.core.list_namespaced_secret(ns).items
    assert all(not s.metadata.owner_references for s in secrets), "a Secret is still owned by the deleted project"
    [kept] = [s for s in secrets if (s.metadata.labels or {}).get("flops.oakestra.io/orphaned-from") == ref.uid]
    assert sorted(base64.b64decode(v).decode() for v in kept.data.values()) == sorted(values)
    assert kept.metadata.name != f"{name}-flops-credentials", "a new project of that name would take them over"


def _verb(request) -> str:
    if request.method == "GET":
        return "watch" if request.params.get("watch") == "true" else ("get" if request.name else "list")
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[request.method]


def test_every_call_of_the_operator_is_allowed_by_its_cluster_role(cluster: Cluster) -> None:
    """Runs last in the module: by now the operator has created, scaled, completed and deleted projects."""
    rules = yaml.safe_load_all((ROOT / "manifests" / "operator" / "rbac.yaml").read_text())
    role = next(doc for doc in rules if doc["kind"] == "ClusterRole")
    allowed = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    used = set()
    for request in list(cluster.emulator):
        agent = request.headers.get("User-Agent", "")
        if request.resource is None or not agent.startswith(("kopf/", USER_AGENT)):
            continue
        if request.resource.plural is None:  # discovery (/api, /apis/GROUP/VERSION): open to everyone
            continue
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        used.add((request.resource.group, resource, _verb(request)))
    assert {("", "secrets", "create"), (GROUP, "flopsprojects/status", "patch"), ("", "events", "create")} <= used
    assert used <= allowed, f"calls the ClusterRole does not allow: {sorted(used - allowed)}"


SHAPES = {
    "string": ("hello", "spec: must be a mapping"),
    "list": ([1, 2, 3], "spec: must be a mapping"),
    "null": (None, "spec: must be a mapping"),
    "missing": ("(missing)", "spec: required field is missing"),
    "unknown-platform": ({"platform": "kubernetes", "task": {"name": "digits-mlp"}}, "spec.platform: "),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_any_manifest_shape_gets_a_status_naming_the_problem_and_deletes_at_once(cluster: Cluster, shape: str) -> None:
    """An API server enforcing the schema refuses these; the operator must not depend on it."""
    ns, name = cluster.namespace(), f"odd-{shape}"
    value, problem = SHAPES[shape]
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FLOpsProject", "metadata": {"name": name, "namespace": ns}}
    if value != "(missing)":
        body["spec"] = value
    ref = cluster.ref(cluster.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body))

    def stalled():
        obj = cluster.get(ns, name)
        return obj.get("status") and condition(obj, "Stalled")["status"] == "True" and obj
    obj = eventually(stalled, what=f"a Stalled status for spec {value!r}")
    assert problem in obj["status"]["message"] and obj["status"]["phase"] == "Failed"
    eventually(lambda: [e for e in cluster.events(ns, name) if e.reason == "InvalidSpec" and problem in e.message],
               what="an InvalidSpec Event naming the problem")
    assert FINALIZER in obj["metadata"]["finalizers"]

    cluster.delete(ns, name)
    eventually(lambda: cluster.gone(ns, name), what="the invalid project gone")
    assert not [e for e in cluster.events(ns, name) if e.reason == "CleanupFailed"], "its delete was retried"
    assert cluster.platform.services(ref) == set()

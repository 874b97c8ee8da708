"""manifests/operator renders with kustomize (`kubectl kustomize`, a system binary: so end to end)
and holds what the operator needs, and no more."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import typer.main
import yaml

from flops_operator.cli import app
from flops_operator.crd import crd_yaml
from flops_operator.models import GROUP, PLURAL

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (`make test` says so; .ci/run requires it)")
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "manifests" / "operator")],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(out) if d}


def test_renders_every_part(rendered: dict[str, dict]) -> None:
    assert set(rendered) == {
        f"CustomResourceDefinition/{PLURAL}.{GROUP}", "Namespace/flops-system", "ServiceAccount/flops-operator",
        "ClusterRole/flops-operator", "ClusterRoleBinding/flops-operator", "Deployment/flops-operator",
        "Service/flops-operator-metrics", "Role/flops-operator-leader-election",
        "RoleBinding/flops-operator-leader-election"}
    for key, doc in rendered.items():
        if doc["kind"] in ("ServiceAccount", "Deployment", "Service", "Role", "RoleBinding"):
            assert doc["metadata"]["namespace"] == "flops-system", key


def test_the_crd_is_the_generated_one(rendered: dict[str, dict]) -> None:
    crd = rendered[f"CustomResourceDefinition/{PLURAL}.{GROUP}"]
    generated = yaml.safe_load(crd_yaml())
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["name"] == generated["metadata"]["name"]


def _container(rendered: dict[str, dict]) -> dict:
    return rendered["Deployment/flops-operator"]["spec"]["template"]["spec"]["containers"][0]


def test_deployment_two_replicas_rolling_probe_and_metrics(rendered: dict[str, dict]) -> None:
    deployment = rendered["Deployment/flops-operator"]
    # One active, one standby (leader election on a Lease); a rollout never leaves none running.
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == rendered["ServiceAccount/flops-operator"]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = _container(rendered)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = container["args"]
    assert f"--liveness=http://0.0.0.0:{ports['healthz']}/healthz" in args
    assert f"--metrics-port={ports['metrics']}" in args
    probe = container["livenessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/healthz", "healthz")
    service = rendered["Service/flops-operator-metrics"]["spec"]
    assert service["ports"][0]["targetPort"] == "metrics"
    assert container["image"] == "ghcr.io/flops-operator/operator:0.1.0"


def test_deployment_args_are_accepted_by_flops_operator(rendered: dict[str, dict]) -> None:
    operator = typer.main.get_command(app).commands["operator"]
    params = operator.make_context("operator", list(_container(rendered)["args"])).params
    assert [str(getattr(p, "value", p)) for p in params["platform"]] == ["oakestra"]
    assert params["all_namespaces"] is True and params["metrics_port"] == 9090


def test_leader_election_names_the_pod_and_uses_its_namespace(rendered: dict[str, dict]) -> None:
    """The Lease's holder is the pod's name and the Lease lives in the pod's namespace, where the Role
    grants exactly get/patch on that one Lease (and create, which RBAC cannot narrow to a name)."""
    env = {e["name"]: e["valueFrom"].get("fieldRef", {}).get("fieldPath") for e in _container(rendered)["env"]}
    assert env["POD_NAME"] == "metadata.name" and env["POD_NAMESPACE"] == "metadata.namespace"
    assert not any(a.startswith("--no-leader-election") for a in _container(rendered)["args"])
    rules = rendered["Role/flops-operator-leader-election"]["rules"]
    grants = {(rule["apiGroups"][0], rule["resources"][0], tuple(rule.get("resourceNames", ()))): set(rule["verbs"])
              for rule in rules}
    assert grants == {("coordination.k8s.io", "leases", ()): {"create"},
                      ("coordination.k8s.io", "leases", ("flops-operator",)): {"get", "patch"}}
    binding = rendered["RoleBinding/flops-operator-leader-election"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "flops-operator-leader-election"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "flops-operator", "namespace": "flops-system"}]


def test_oakestra_credentials_come_from_a_secret(rendered: dict[str, dict]) -> None:
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in _container(rendered)["env"]
           if "secretKeyRef" in e["valueFrom"]}
    assert set(env) == {"FLOPS_OAKESTRA_URL", "FLOPS_OAKESTRA_USERNAME", "FLOPS_OAKESTRA_PASSWORD",
                        "FLOPS_OAKESTRA_ORGANIZATION", "FLOPS_OAKESTRA_IMAGE_REGISTRY", "FLOPS_OAKESTRA_HEALTH_CHECKS"}
    assert {ref["name"] for ref in env.values()} == {"flops-oakestra-credentials"}
    assert all(ref["key"] == name for name, ref in env.items())


def test_rbac_is_least_privilege(rendered: dict[str, dict]) -> None:
    rules = rendered["ClusterRole/flops-operator"]["rules"]
    grants = {(group, resource): set(rule["verbs"])
              for rule in rules for group in rule["apiGroups"] for resource in rule["resources"]}
    assert grants == {
        (GROUP, PLURAL): {"get", "list", "watch", "patch"},
        (GROUP, f"{PLURAL}/status"): {"get", "patch"},
        ("", "events"): {"create"},
        ("", "secrets"): {"get", "create", "patch", "delete"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    }
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in rules)
    binding = rendered["ClusterRoleBinding/flops-operator"]
    assert binding["roleRef"]["name"] == "flops-operator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "flops-operator", "namespace": "flops-system"}]

"""The health checks shipped for GitOps tools, run on FLOpsProjects as the real status code leaves them:
Argo CD's Lua (fixtures in Argo CD's own health_test.yaml layout, so it can be upstreamed) and Flux's CEL
healthCheckExprs; and the conditions following kstatus on the same snapshots."""

from __future__ import annotations

import pytest
import yaml

from flops_operator.models import Phase
from tests.gitops_health import ARGOCD, argocd_health, flux_check, flux_status
from tests.gitops_snapshots import TESTDATA, as_yaml, snapshots

SNAPSHOTS = snapshots()
TESTS = yaml.safe_load(ARGOCD.joinpath("health_test.yaml").read_text())["tests"]
# Flux has no "suspended": a project suspended as its spec asks is current.
FLUX = {"Healthy": "Current", "Degraded": "Failed", "Progressing": "InProgress", "Suspended": "Current"}


def test_the_fixtures_are_what_the_status_code_produces():
    committed = {path.stem: path.read_text() for path in TESTDATA.glob("*.yaml")}
    assert committed == {name: as_yaml(obj) for name, obj in SNAPSHOTS.items()}, (
        "regenerate with: python -m tests.gitops_snapshots")


def test_every_fixture_is_tested_and_every_phase_has_one():
    assert sorted(t["inputPath"] for t in TESTS) == sorted(f"testdata/{name}.yaml" for name in SNAPSHOTS)
    phases = {obj["status"]["phase"] for obj in SNAPSHOTS.values() if "status" in obj}
    assert phases == {p.value for p in Phase}
    assert {t["healthStatus"]["status"] for t in TESTS} == {"Healthy", "Progressing", "Degraded", "Suspended"}


@pytest.mark.parametrize("case", TESTS, ids=[t["inputPath"] for t in TESTS])
def test_argocd_health(case):
    obj = yaml.safe_load(ARGOCD.joinpath(case["inputPath"]).read_text())
    assert argocd_health(obj) == case["healthStatus"]


@pytest.mark.parametrize("case", TESTS, ids=[t["inputPath"] for t in TESTS])
def test_flux_health_agrees_with_argocd(case):
    obj = yaml.safe_load(ARGOCD.joinpath(case["inputPath"]).read_text())
    assert flux_status(obj) == FLUX[case["healthStatus"]["status"]]


def test_stale_generation_is_progressing_whatever_the_phase():
    for name, obj in SNAPSHOTS.items():
        if "status" not in obj:
            continue
        stale = {**obj, "metadata": {**obj["metadata"], "generation": obj["metadata"]["generation"] + 1}}
        if "deletionTimestamp" in stale["metadata"]:
            continue  # deleting is progressing anyway, with its own message
        assert argocd_health(stale)["status"] == "Progressing", name
        assert argocd_health(stale)["message"].startswith("Waiting for the operator to observe generation"), name
        assert flux_status(stale) == "InProgress", name


@pytest.mark.parametrize("status", [None, {}, {"phase": "Completed"}, {"conditions": []}])
def test_flux_expressions_are_guarded_against_missing_status(status):
    obj = {"metadata": {"name": "p", "generation": 1}, "spec": {}}
    if status is not None:
        obj["status"] = status
    assert flux_status(obj) == "InProgress"  # and no expression errored
    assert argocd_health(obj)["status"] == "Progressing"


def test_the_flux_check_names_the_kind():
    check = flux_check()
    assert (check["apiVersion"], check["kind"]) == ("flops.oakestra.io/v1alpha1", "FLOpsProject")
    assert {"inProgress", "failed", "current"} <= set(check)


@pytest.mark.parametrize("name", sorted(n for n, o in SNAPSHOTS.items() if "status" in o))
def test_conditions_follow_kstatus(name):
    status, generation = SNAPSHOTS[name]["status"], SNAPSHOTS[name]["metadata"]["generation"]
    conditions = {c["type"]: c for c in status["conditions"]}
    # Ready is there from the first status (False early); Reconciling and Stalled are abnormal-true.
    assert {"Ready", "Reconciling", "Stalled"} <= set(conditions)
    ready, reconciling, stalled = (conditions[t]["status"] == "True" for t in ("Ready", "Reconciling", "Stalled"))
    assert not (reconciling and stalled) and not (ready and (reconciling or stalled))
    assert ready or reconciling or stalled, "a project that is neither ready nor stalled is reconciling"
    healthy = argocd_health(SNAPSHOTS[name])["status"]
    assert stalled == (healthy == "Degraded")
    if healthy in ("Healthy", "Suspended"):
        assert ready
    # observedGeneration on the status and on each condition (stale fixtures keep what was observed).
    assert status["observedGeneration"] <= generation
    assert all(c["observedGeneration"] == status["observedGeneration"] for c in status["conditions"]), name

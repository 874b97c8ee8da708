"""Logins to MLflow: the users the plan gives each client, the Secret reference of an existing server, what
of a tracking URI may be shown, and the tracking server's own bootstrap (users, grants) run twice."""

from __future__ import annotations

import copy

import pytest

from flops_operator.credentials import MemoryCredentials, ReferencedSecret
from flops_operator.models import InvalidProject, parse_project, validate_spec
from flops_operator.models.edits import immutable_values
from flops_operator.models.spec import public_uri
from flops_operator.plan.desired import (AGGREGATOR_PKI, MLFLOW_CREDENTIALS, credential_names, desired, learner_pki,
                                         login)
from flops_operator.platforms.base import MissingCredentials
from flops_operator.platforms.fake import FakePlatform
from flops_operator.progress import NoProgress
from flops_operator.reconcile import reconcile
from flops_operator.status import problem_status
from flops_tracking import bootstrap
from flops_tracking.contract import TrackingEnv

TASK = {"task": {"name": "digits-mlp"}}
EXTERNAL = {"tracking": {"uri": "https://mlflow.example.com/team", "credentialsSecret": {"name": "mlflow-login"}}}


def manifest(spec: dict) -> dict:
    return {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
            "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-7", "generation": 1},
            "spec": {**TASK, **spec}}


@pytest.mark.parametrize("uri, shown", [
    ("https://mlflow.example.com", "https://mlflow.example.com"),
    ("http://mlflow.example.com:5000/team/", "http://mlflow.example.com:5000/team/"),
    ("https://mlflow.example.com/a?token=s3cret#frag", "https://mlflow.example.com/a"),
    ("https://bob:s3cret@mlflow.example.com:8443/x", "https://mlflow.example.com:8443/x"),
    ("http://[::1]:5000", "http://[::1]:5000"),
])
def test_only_scheme_host_port_and_path_of_a_uri_are_shown(uri, shown):
    assert public_uri(uri) == shown


@pytest.mark.parametrize("tracking, field, words", [
    ({"uri": "https://bob:s3cret@mlflow.example.com"}, "spec.tracking.uri", "tracking.credentialsSecret"),
    ({"uri": "http://bob@mlflow.example.com:5000/x"}, "spec.tracking.uri", "Secret"),
    ({"credentialsSecret": {"name": "mlflow-login"}}, "spec.tracking.credentialsSecret", "set tracking.uri"),
    ({"uri": "https://mlflow.example.com", "credentialsSecret": {"name": "Not_A_Name"}},
     "spec.tracking.credentialsSecret.name", "pattern"),
])
def test_a_login_in_the_uri_or_a_stray_reference_is_refused_naming_the_field(tracking, field, words):
    with pytest.raises(InvalidProject) as caught:
        validate_spec({**TASK, "tracking": tracking})
    (problem,) = caught.value.problems
    assert problem.field == field and words in problem.message
    assert "s3cret" not in str(caught.value)


def test_created_with_keeps_only_the_shown_part_of_the_uri():
    spec = validate_spec({**TASK, "tracking": {"uri": "https://mlflow.example.com/team?token=s3cret"}})
    assert immutable_values(spec)["spec.tracking.uri"] == "https://mlflow.example.com/team"


@pytest.mark.parametrize("spec, writer, expected", [
    ({}, True, ("flops-aggregator", "{{secret:mlflow-aggregator-password}}")),
    ({}, False, ("flops-reader", "{{secret:mlflow-reader-password}}")),
    (EXTERNAL, True, ("{{secret:tracking-username}}", "{{secret:tracking-password}}")),
    (EXTERNAL, False, ("{{secret:tracking-username}}", "{{secret:tracking-password}}")),
    ({"tracking": {"uri": "https://mlflow.example.com"}}, True, None),
])
def test_each_client_gets_its_login(spec, writer, expected):
    got = login(validate_spec({**TASK, **spec}), writer=writer)
    assert (got.username, got.password) == expected if expected else got is None


def test_the_plan_gives_the_logins_to_the_services_that_use_them_and_only_by_placeholder():
    project = parse_project(manifest({"serving": {"enabled": True}}))
    assert set(MLFLOW_CREDENTIALS) <= set(credential_names(project.spec))
    services = {s.name: s for s in desired(project, training_done=False, model_registered=True)}
    tracking, aggregator, model_server = services["tracking-server"], services["aggregator"], services["model-server"]
    assert tracking.command[0] == "flops-tracking-server"
    assert set(MLFLOW_CREDENTIALS) <= set(tracking.secrets)
    assert TrackingEnv.from_env(tracking.env_dict).model == "digits"
    assert aggregator.env_dict["MLFLOW_TRACKING_USERNAME"] == "flops-aggregator"
    assert aggregator.secrets == ("mlflow-aggregator-password", *AGGREGATOR_PKI)
    assert model_server.env_dict["MLFLOW_TRACKING_USERNAME"] == "flops-reader"
    assert model_server.secrets == ("mlflow-reader-password",)
    for service in services.values():
        assert not any("secret:" in part for part in service.command), service.name
    # Learners render only their own key and what is issued from the CA (its certificate, their own).
    assert all(s.secrets == learner_pki(s.partition_id) for s in services.values() if s.role.value == "learner")


def test_an_existing_server_needs_no_generated_login():
    project = parse_project(manifest(EXTERNAL))
    assert not set(MLFLOW_CREDENTIALS) & set(credential_names(project.spec))
    (aggregator, *_) = desired(project, training_done=False)
    assert aggregator.secrets == ("tracking-username", "tracking-password", *AGGREGATOR_PKI)


@pytest.mark.parametrize("referenced, names", [
    ({}, "Secret team-a/mlflow-login not found"),
    ({("team-a", "mlflow-login"): ReferencedSecret.opted_in({"username": "alice"})},
     "Secret team-a/mlflow-login has no key password"),
    ({("other", "mlflow-login"): ReferencedSecret.opted_in({"username": "alice", "password": "pw"})},
     "Secret team-a/mlflow-login not found"),
])
async def test_a_missing_secret_or_key_stalls_naming_it_and_creates_nothing(referenced, names):
    platform = FakePlatform()
    with pytest.raises(MissingCredentials) as caught:
        await reconcile(manifest(EXTERNAL), _empty(), platform=platform,
                        credentials=MemoryCredentials(referenced), progress_source=NoProgress())
    assert names in str(caught.value) and "tracking.credentialsSecret" in str(caught.value)
    assert platform.writes() == []
    status = problem_status(_empty(), 1, stalled=True, reason=caught.value.reason, message=str(caught.value),
                            now="2026-11-30T00:00:00Z")
    stalled = status.condition("Stalled")
    assert (stalled.status, stalled.reason) == ("True", "CredentialsMissing") and names in stalled.message


async def test_the_referenced_login_reaches_the_aggregator_and_nothing_of_it_status():
    platform = FakePlatform()
    creds = MemoryCredentials({("team-a", "mlflow-login"): ReferencedSecret.opted_in(
        {"username": "alice", "password": "pa55word-s3cret"})})
    doc = manifest({"tracking": {**EXTERNAL["tracking"], "uri": "https://mlflow.example.com/team?t=s3cret"}})
    result = await reconcile(doc, _empty(), platform=platform, credentials=creds, progress_source=NoProgress())
    aggregator = platform.services(result.project.ref)["aggregator"]
    assert (aggregator.env["MLFLOW_TRACKING_USERNAME"], aggregator.env["MLFLOW_TRACKING_PASSWORD"]) == (
        "alice", "pa55word-s3cret")
    wire = str(result.status.to_wire())
    assert "s3cret" not in wire and result.status.mlflow.tracking_uri == "https://mlflow.example.com/team"


def _empty():
    from flops_operator.models import FLOpsProjectStatus
    return FLOpsProjectStatus()


def test_the_auth_config_holds_no_password_and_grants_nothing_by_default():
    ini = bootstrap.auth_ini("sqlite:////var/lib/flops/basic_auth.db")
    assert "default_permission = NO_PERMISSIONS" in ini and "admin_password" not in ini
    assert "auth_cache_ttl_seconds = 600" in ini  # one scrypt check per login and 10 minutes, not per request
    assert {(g.username, g.resource_type, g.permission) for g in bootstrap.GRANTS} == {
        ("flops-aggregator", "experiment", "EDIT"), ("flops-aggregator", "registered_model", "EDIT"),
        ("flops-reader", "experiment", "READ"), ("flops-reader", "registered_model", "READ")}


def test_the_bootstrap_is_idempotent_and_takes_the_passwords_it_is_given(tmp_path):
    from mlflow.server import handlers
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    def env(**passwords) -> TrackingEnv:
        values = {"admin_password": "admin-password-1", "aggregator_password": "aggregator-password-1",
                  "reader_password": "reader-password-1", **passwords}
        return TrackingEnv(workdir=str(tmp_path), experiment="team-a/digits", model="digits", secret_key="k" * 32,
                           **values)

    backend = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        bootstrap.prepare(env(), backend)
        # A restart with a rotated password: same experiment, the new password counts, the old one not.
        ini = bootstrap.prepare(env(reader_password="reader-password-2"), backend)
        assert "password" not in ini.read_text().replace("admin_username", "")
        store = SqlAlchemyStore()
        store.init_db(f"sqlite:///{tmp_path / bootstrap.AUTH_DB}")
        assert store.authenticate_user("flops-reader", "reader-password-2")
        assert not store.authenticate_user("flops-reader", "reader-password-1")
        assert store.authenticate_user("flops-aggregator", "aggregator-password-1")
        assert store.get_user("admin").is_admin and not store.get_user("flops-aggregator").is_admin
        tracking = handlers._get_tracking_store()
        assert [e.name for e in tracking.search_experiments()].count("team-a/digits") == 1
    finally:
        handlers._tracking_store = handlers._model_registry_store = None


def test_the_runner_takes_the_login_secret_from_the_same_file(tmp_path):
    from flops_operator.adapters.local_cli import load_run_input

    path = tmp_path / "p.yaml"
    doc = copy.deepcopy(manifest(EXTERNAL))
    doc["spec"]["platform"] = "local"
    import yaml
    path.write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "mlflow-login", "labels": {"flops.oakestra.io/credentials": "true"}},
         "stringData": {"username": "alice"}, "data": {"password": "cGFzc3dvcmQ="}}, doc]))
    _, project, secrets = load_run_input(path)
    assert project.ref.name == "digits"
    assert secrets == {("team-a", "mlflow-login"): ReferencedSecret.opted_in(
        {"username": "alice", "password": "password"})}


def test_flops_run_says_how_to_get_the_read_only_login_without_printing_it(tmp_path):
    from rich.console import Console

    from flops_operator.adapters.live_view import login_hint, render_summary
    from flops_operator.models import FLOpsProjectStatus
    from flops_operator.platforms.local import StateLayout

    layout = StateLayout(tmp_path)
    own, external = parse_project(manifest({})), parse_project(manifest(EXTERNAL))
    hint = login_hint(own, layout)
    assert "flops-reader" in hint and str(layout.credentials) in hint and "mlflow-reader-password" in hint
    assert login_hint(external, layout) is None
    console = Console(width=300, record=True)
    console.print(render_summary(own, FLOpsProjectStatus(), layout))
    assert "flops-reader (read-only)" in console.export_text()

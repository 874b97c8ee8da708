"""A Secret the spec names is used only if it opts in (the label flops.oakestra.io/credentials: "true"), and a login
goes over plain http only where the spec says insecure: true for that URI (issue 26, item 1). The Kubernetes store's
side is in tests/integration/test_kopf_secrets.py."""

from __future__ import annotations

import pytest
import yaml

from flops_operator.credentials import OPT_IN_LABEL, FileCredentials, MemoryCredentials, ReferencedSecret
from flops_operator.models import FLOpsProjectStatus, InvalidProject, ProjectRef, validate_spec
from flops_operator.platforms.base import MissingCredentials
from flops_operator.platforms.fake import FakePlatform
from flops_operator.progress import NoProgress
from flops_operator.reconcile import reconcile
from flops_operator.status import problem_status
from flops_operator.task_build import SourceVersion

REF = ProjectRef("team-a", "digits", "u-7")
KEYS = {"tracking-username": "username", "tracking-password": "password"}
VALUES = {"username": "root", "password": "s3cret-root"}
TRACKING_FIELD, GIT_FIELD = "spec.tracking.credentialsSecret", "spec.task.source.git.credentialsSecret"


def tracking(uri: str, secret: bool = True, **more) -> dict:
    return {"task": {"name": "digits-mlp"},
            "tracking": {"uri": uri, **({"credentialsSecret": {"name": "mlflow-login"}} if secret else {}), **more}}


def git(url: str, secret: bool = True, **more) -> dict:
    return {"task": {"source": {"git": {"url": url, **({"credentialsSecret": {"name": "git-login"}} if secret else {}),
                                        **more}}}, "platform": "oakestra"}


# spec, the field a refusal names (None: accepted)
HTTPS_ONLY = [
    (tracking("https://mlflow.example.com"), None),
    (tracking("http://mlflow.example.com:5000"), TRACKING_FIELD),
    (tracking("http://mlflow.example.com:5000", insecure=False), TRACKING_FIELD),
    (tracking("http://mlflow.example.com:5000", insecure=True), None),
    (tracking("http://127.0.0.1:5000"), TRACKING_FIELD),  # loopback is no exception: whose loopback?
    (tracking("http://mlflow.example.com:5000", secret=False), None),  # no login crosses the wire
    (tracking("https://mlflow.example.com", insecure=True), None),
    (git("https://git.example.com/team/wine.git"), None),
    (git("http://git.example.com/team/wine.git"), GIT_FIELD),
    (git("http://git.example.com/team/wine.git", insecure=True), None),
    (git("http://git.example.com/team/wine.git", secret=False), None),  # a public repository over http
    (git("ssh://git@git.example.com/team/wine.git"), None),
    (git("git@git.example.com:team/wine.git"), None),
    (git("git://git.example.com/team/wine.git"), None),
]


@pytest.mark.parametrize("spec, field", HTTPS_ONLY, ids=[str(s) for s, _ in HTTPS_ONLY])
def test_a_login_goes_over_plain_http_only_where_the_spec_says_insecure(spec, field):
    if field is None:
        validate_spec(spec)
        return
    with pytest.raises(InvalidProject) as caught:
        validate_spec(spec)
    (problem,) = caught.value.problems
    insecure = field.removeprefix("spec.").replace("credentialsSecret", "insecure: true")
    assert problem.field == field and "http://" in problem.message and insecure in problem.message


async def test_an_http_login_stalls_the_project_before_any_secret_is_read():
    platform = FakePlatform()
    manifest = {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
                "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-7", "generation": 1},
                "spec": tracking("http://mlflow.example.com:5000")}
    result = await reconcile(manifest, FLOpsProjectStatus(), platform=platform, credentials=MemoryCredentials(),
                             progress_source=NoProgress())
    stalled = result.status.condition("Stalled")
    assert result.invalid and stalled.status == "True" and TRACKING_FIELD in stalled.message
    assert platform.writes() == []


# labels, used
LABELS = [
    ({OPT_IN_LABEL: "true"}, True),
    ({OPT_IN_LABEL: "true", "app": "mlflow"}, True),
    ({}, False),
    ({OPT_IN_LABEL: "false"}, False),
    ({OPT_IN_LABEL: "True"}, False),
    ({OPT_IN_LABEL: "yes"}, False),
    ({"flops.oakestra.io/credential": "true"}, False),
    ({"credentials": "true"}, False),
]


def stores(secret: ReferencedSecret, tmp_path) -> list:
    referenced = {(REF.namespace, "db-root"): secret}
    return [MemoryCredentials(referenced), FileCredentials(lambda ref: tmp_path / "credentials.json", referenced)]


@pytest.mark.parametrize("labels, used", LABELS, ids=[str(labels) for labels, _ in LABELS])
async def test_the_stores_use_a_secret_only_with_the_opt_in_label(labels, used, tmp_path):
    for store in stores(ReferencedSecret(VALUES, labels), tmp_path):
        if used:
            assert await store.read(REF, "db-root", KEYS) == {"tracking-username": "root",
                                                               "tracking-password": "s3cret-root"}
            continue
        with pytest.raises(MissingCredentials) as caught:
            await store.read(REF, "db-root", KEYS, field="task.source.git.credentialsSecret", optional=True)
        message = str(caught.value)
        assert message.startswith("task.source.git.credentialsSecret: Secret team-a/db-root is not labelled")
        assert f"kubectl label secret -n team-a db-root {OPT_IN_LABEL}=true" in message
        assert "s3cret-root" not in message


async def test_a_missing_secret_says_to_add_the_label_too(tmp_path):
    for store in (MemoryCredentials(), FileCredentials(lambda ref: tmp_path / "credentials.json")):
        with pytest.raises(MissingCredentials, match=f"Secret team-a/mlflow-login not found.*{OPT_IN_LABEL}"):
            await store.read(REF, "mlflow-login", KEYS)


def run_file(tmp_path, labels) -> dict:
    """A `flops run` file with a Secret document (labels as given) and a project that names it."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mlflow-login"}, "stringData": VALUES}
    if labels is not None:
        secret["metadata"]["labels"] = labels
    project = {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
               "metadata": {"name": "digits", "namespace": "team-a"},
               "spec": tracking("https://mlflow.example.com")}
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump_all([secret, project]))
    return path


@pytest.mark.parametrize("labels, used", [(None, False), ({OPT_IN_LABEL: "true"}, True), ({"app": "x"}, False)])
async def test_flops_run_takes_the_label_from_the_secret_document_as_a_cluster_would(tmp_path, labels, used):
    from flops_operator.adapters.local_cli import load_run_input

    _, project, secrets = load_run_input(run_file(tmp_path, labels))
    store = FileCredentials(lambda ref: tmp_path / "credentials.json", secrets)
    keys = {"tracking-username": "username"}
    if used:
        assert await store.read(project.ref, "mlflow-login", keys) == {"tracking-username": "root"}
    else:
        with pytest.raises(MissingCredentials, match="is not labelled"):
            await store.read(project.ref, "mlflow-login", keys)


def test_an_unquoted_label_value_in_a_run_file_is_named_as_the_api_server_would_refuse_it(tmp_path):
    from flops_operator.adapters.local_cli import load_run_input

    with pytest.raises(InvalidProject) as caught:
        load_run_input(run_file(tmp_path, {OPT_IN_LABEL: True}))
    (problem,) = caught.value.problems
    assert problem.field == "Secret mlflow-login: metadata.labels" and '"true"' in problem.message


class AtCommit:
    async def version(self, project, credentials):
        return SourceVersion(commit="0" * 40)


@pytest.mark.parametrize("spec, secret, field", [
    (tracking("https://mlflow.example.com"), "mlflow-login", "tracking.credentialsSecret"),
    (git("https://git.example.com/team/wine.git"), "git-login", "task.source.git.credentialsSecret"),
])
async def test_a_project_naming_an_unlabelled_secret_stalls_naming_the_field_and_creates_nothing(spec, secret, field):
    platform = FakePlatform()
    # Every key the spec could want, and a label that is not the opt-in one.
    unlabelled = ReferencedSecret({**VALUES, "token": "t0ken-s3cret"}, {"app": "mlflow"})
    manifest = {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
                "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-7", "generation": 1}, "spec": spec}
    with pytest.raises(MissingCredentials) as caught:
        await reconcile(manifest, FLOpsProjectStatus(), platform=platform,
                        credentials=MemoryCredentials({("team-a", secret): unlabelled}),
                        progress_source=NoProgress(), sources=AtCommit())
    assert platform.writes() == []
    status = problem_status(FLOpsProjectStatus(), 1, stalled=True, reason=caught.value.reason,
                            message=str(caught.value), now="2026-12-08T00:00:00Z")
    stalled = status.condition("Stalled")
    assert (stalled.status, stalled.reason) == ("True", "CredentialsMissing")
    assert stalled.message.startswith(f"{field}: Secret team-a/{secret} is not labelled {OPT_IN_LABEL}")
    assert f"kubectl label secret -n team-a {secret} {OPT_IN_LABEL}=true" in stalled.message
    assert "s3cret" not in str(status.to_wire())



@pytest.mark.parametrize("make, uri", [(git, "https://git.example.com/team/wine.git"),
                                       (tracking, "https://mlflow.example.com")])
def test_insecure_is_no_part_of_the_training(make, uri):
    from flops_operator.models.edits import training_identity

    assert training_identity(validate_spec(make(uri, insecure=True))) == training_identity(validate_spec(make(uri)))

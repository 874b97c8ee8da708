"""flops_operator.redaction: the one redaction of what reaches status, Events and the live view. Here the module
itself, over the whole credential catalogue; tests/integration/test_redaction_platforms.py plants each secret in a
service's log on both platforms and reads status and Events."""

from __future__ import annotations

import base64
import json
import secrets
from urllib.parse import quote

import pytest

from flops_operator import redaction
from flops_operator.credentials import generate
from flops_operator.models import Condition, FLOpsProjectStatus, Problem
from flops_operator.models.status import ComponentStatus, TaskStatus
from flops_operator.plan.builder import GIT_SECRET_KEYS
from flops_operator.plan.logins import credential_names, referenced_credentials
from flops_operator.status import deleting_status, invalid_status, problem_status
from tests.projects import project

SSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(
    base64.b64encode(secrets.token_bytes(48)).decode() for _ in range(4)) + "\n-----END OPENSSH PRIVATE KEY-----\n")
OWN_STACK = project({"task": {"name": "digits-mlp"}, "tracking": {"backendStore": {"type": "mysql"},
                                                                   "artifactStore": {"type": "ftp"}}})
EXISTING = project({"task": {"name": "digits-mlp"},
                    "tracking": {"uri": "https://mlflow.example.com", "credentialsSecret": {"name": "login"}}})


def _value(name: str) -> str:
    if name == "git-ssh-key":
        return SSH_KEY
    return generate(name)  # what the operator would generate; for referenced ones, a token like a user's


# Every credential of the catalogue: generated (plan/logins.py), referenced (the tracking login, the Git login).
CATALOGUE = {name: _value(name) for name in [*credential_names(OWN_STACK.spec),
                                             *referenced_credentials(EXISTING.spec), *GIT_SECRET_KEYS]}
SECRET = {name: value for name, value in CATALOGUE.items() if name not in redaction.NOT_SECRET}


def parts(value: str) -> list[str]:
    """What of a value must not show: itself, and each line of it (or of the PEM it encodes) that is not a marker."""
    try:
        text = base64.b64decode(value, validate=True).decode()
    except ValueError:
        text = value
    return [value.strip()] + [line for line in text.splitlines() if len(line) >= 16 and not line.startswith("-----")]


def logged(value: str) -> list[str]:
    """How logs show a value: as given, in a URL, in a JSON dump, in an env dump, and a multi-line one line by line."""
    shown = [value, f"GET https://user:{quote(value, safe='')}@mlflow:5000/api 401",
             json.dumps({"config": {"pw": value}}), f"FLOPS_X={value}"]
    try:
        shown.append(base64.b64decode(value, validate=True).decode())
    except ValueError:
        pass
    return shown


def test_the_catalogue_is_all_there():
    # A credential added to the catalogue is planted below without further ado; this only guards the table's reading.
    assert {"backend-password", "mlflow-admin-password", "flower-ca", "flower-superlink-key", "flower-learner-key-0",
            "tracking-password", "git-token", "git-ssh-key"} <= set(SECRET)
    assert {"tracking-username", "git-username", "git-known-hosts"} == set(CATALOGUE) - set(SECRET)


@pytest.mark.parametrize("name", SECRET)
def test_every_secret_of_the_catalogue_is_blanked_in_every_form_a_log_shows(name):
    redactor = redaction.Redactor(redaction.secret_values(CATALOGUE))
    for shown in logged(SECRET[name]):
        log = f"starting\n{shown}\ndone\n"
        out = redaction.tail(log, lines=100, limit=100_000, redactor=redactor)
        assert redaction.MASK in out and out.startswith("starting |") and out.endswith("| done")
        for part in parts(SECRET[name]):
            assert part not in out, (name, shown[:40])


@pytest.mark.parametrize("text, gone, kept", [
    ("clone https://bob:hunter2@git.example.com/team/x.git failed", "hunter2", "git.example.com/team/x.git"),
    ("remote https://ghp_abcdefgh@github.com/x", "ghp_abcdefgh", "github.com/x"),
    ("mysql://mlflow:pw123@10.30.0.4:3306/mlflow", "pw123", "10.30.0.4:3306/mlflow"),
    ("headers: {'Authorization': 'Basic Ym9iOmh1bnRlcjI='}", "Ym9iOmh1bnRlcjI=", "headers"),
    ("> Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "eyJhbGciOiJIUzI1NiJ9", "> Authorization:"),
    ("proxy-authorization=Token abcdef123456", "abcdef123456", "proxy-authorization="),
    ("sent bearer abcdefghijkl to the server", "abcdefghijkl", "to the server"),
    ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIr8Zq\n-----END EC PRIVATE KEY-----\nnext", "MHcCAQEEIIr8Zq", "next"),
    ("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49", "MIGHAgEAMBMGByqGSM49", "BEGIN PRIVATE KEY"),
    ("FLOPS_GIT_PASSWORD=s3cr3t-value MLFLOW_URI=http://x", "s3cr3t-value", "MLFLOW_URI=http://x"),
    ("GET /api?user=bob&token=abc123def&x=1", "abc123def", "&x=1"),
])
def test_secret_shapes_are_blanked_whatever_the_value(text, gone, kept):
    out = redaction.SHAPES_ONLY(text)
    assert gone not in out and kept in out and redaction.MASK in out
    assert redaction.SHAPES_ONLY(out) == out  # redacting twice changes nothing more


def test_short_values_and_user_names_are_not_blanked_as_words():
    redactor = redaction.Redactor(redaction.secret_values({"tracking-username": "flops", "git-password": "abc"}))
    assert redactor("flops-build: step=deps abc") == "flops-build: step=deps abc"


def test_a_tail_cut_in_the_middle_of_a_value_shows_none_of_it():
    token = secrets.token_urlsafe(24)
    text = "x" * 50 + " " + token + " the end"
    clipped = redaction.clip(text, len(token) // 2 + 8)
    assert clipped == "…the end"
    assert not any(token[i:i + 6] in clipped for i in range(len(token) - 6))
    assert redaction.clip("short", 10) == "short"
    assert redaction.clip("a word cut exactly", 11) == "…cut exactly"  # cut where a word starts: kept


def test_status_free_texts_are_redacted_and_nothing_else():
    token = SECRET["mlflow-admin-password"]
    status = FLOpsProjectStatus(
        message=f"tracking-server failed: {token}",
        conditions=[Condition(type="Stalled", status="True", reason="ServiceFailed", message=f"said {token}")],
        components=[ComponentStatus(name="tracking-server", role="tracking-server", state="failed",
                                    message=f"exit code 1: {token}", address="10.30.0.4:5000")],
        task=TaskStatus(build_message=f"the builder failed: {token}", commit="0" * 40),
        created_with={"tracking.uri": token},
    )
    assert redaction.texts(status) == {status.message, f"said {token}", f"exit code 1: {token}",
                                       f"the builder failed: {token}"}
    out = redaction.redact_status(status, redaction.Redactor([token]))
    assert all(token not in text for text in redaction.texts(out))
    assert out.message == "tracking-server failed: ***" and out.components[0].address == "10.30.0.4:5000"
    assert out.created_with == {"tracking.uri": token}  # what edits are compared with is read back, not shown
    assert out.task.commit == "0" * 40


async def test_a_step_that_says_nothing_new_reads_no_credential():
    class Counting:
        reads = 0

        async def stored(self, ref, names):
            Counting.reads += 1
            return {"mlflow-admin-password": SECRET["mlflow-admin-password"]}

    before = FLOpsProjectStatus(message="training")
    same = await redaction.redacted_status(FLOpsProjectStatus(message="training"), before, OWN_STACK, Counting(), {})
    assert same.message == "training" and Counting.reads == 0
    new = FLOpsProjectStatus(message=f"tracking-server failed: {SECRET['mlflow-admin-password']}")
    out = await redaction.redacted_status(new, before, OWN_STACK, Counting(), {})
    assert out.message == "tracking-server failed: ***" and Counting.reads == 1


def test_error_texts_lose_their_shapes_on_the_way_to_status():
    leak = "https://bob:hunter2@mlflow.example.com"
    assert "hunter2" not in problem_status(FLOpsProjectStatus(), 1, stalled=True, reason="X",
                                           message=f"cannot reach {leak}", now="t").to_wire().__repr__()
    assert "hunter2" not in deleting_status(FLOpsProjectStatus(), 1, now="t", message=leak).to_wire().__repr__()
    assert "hunter2" not in invalid_status([Problem("spec.tracking.uri", f"bad {leak}")], FLOpsProjectStatus(), 1,
                                           now="t").to_wire().__repr__()

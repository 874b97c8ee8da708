"""Each secret of the project planted in a service's log, on both platforms, reaches neither status nor an Event.

Table-driven: every generated credential (a project with its own MySQL + FTP tracking stack) and every referenced
one (a project with an existing tracking server's login and a Git source's login), plus the Oakestra platform's own
build-registry password. The planted service is the one whose log tail status quotes: the aggregator (a failed
training) or the image builder (a failed build, its output read back). Locally it is a real child process and the
local platform's log-tail reading; on Oakestra the emulator's instance `logs`, read through the driver's interpret
path. Each case also checks that the planted lines did reach status, so that it can fail.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from flops_operator.adapters.kopf_status import events_for
from flops_operator.credentials import MemoryCredentials, ReferencedSecret, generate
from flops_operator.models import FLOpsProjectStatus, Phase, parse_project
from flops_operator.plan.builder import GIT_PASSWORD, GIT_SSH_KEY, GIT_TOKEN
from flops_operator.plan.logins import TRACKING_PASSWORD, credential_names
from flops_operator.plan.services import Role
from flops_operator.platforms.local import LOCAL_COMMANDS, LocalPlatform, RestartPolicy
from flops_operator.platforms.local.commands import LocalCommand, Recipe
from flops_operator.progress import NoProgress
from flops_operator.reconcile import reconcile
from flops_operator.task_build import SourceVersion
from tests.oakestra_emulator import run_emulator
from tests.oakestra_emulator.testing import driver_for

UID = "5f0c7d1e-0000-4000-8000-0000000000aa"
REGISTRY_PASSWORD = "registry-password"
"""The Oakestra platform's own (its config), not the project's: only the driver can blank it."""


def manifest(platform: str, referenced: bool) -> dict:
    if referenced:
        spec = {"task": {"source": {"git": {"url": "https://git.example.com/team/task.git",
                                             "credentialsSecret": {"name": "git-login"}}}},
                "tracking": {"uri": "http://127.0.0.1:9", "credentialsSecret": {"name": "mlflow-login"},
                             "insecure": True}}
    else:
        spec = {"task": {"name": "digits-mlp"},
                "tracking": {"backendStore": {"type": "mysql"}, "artifactStore": {"type": "ftp"}}}
    return {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
            "metadata": {"name": "leaky", "namespace": "team-a", "uid": UID, "generation": 1},
            "spec": {"platform": platform, "learners": {"replicas": 1}, **spec}}


SSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(
    base64.b64encode(secrets.token_bytes(48)).decode() for _ in range(3)) + "\n-----END OPENSSH PRIVATE KEY-----\n")
GENERATED = {name: generate(name) for name in credential_names(parse_project(manifest("local", False)).spec)}
REFERENCED = {TRACKING_PASSWORD: secrets.token_urlsafe(24), GIT_PASSWORD: secrets.token_urlsafe(24),
              GIT_TOKEN: "ghp_" + secrets.token_hex(18), GIT_SSH_KEY: SSH_KEY}
VALUES = {**GENERATED, **REFERENCED, REGISTRY_PASSWORD: secrets.token_urlsafe(24)}
SECRET_DOCS = {("team-a", "mlflow-login"): ReferencedSecret.opted_in(
                   {"username": "flops-user", "password": REFERENCED[TRACKING_PASSWORD]}),
               ("team-a", "git-login"): ReferencedSecret.opted_in(
                   {"username": "bob", "password": REFERENCED[GIT_PASSWORD], "token": REFERENCED[GIT_TOKEN],
                    "ssh-privatekey": SSH_KEY})}


def secret_lines(value: str) -> list[str]:
    """Two lines of a value as a log shows it: a multi-line one (or the PEM a base64 value encodes) by its key's
    first lines, any other in a URL and on its own."""
    try:
        text = base64.b64decode(value, validate=True).decode()
    except ValueError:
        text = value
    lines = text.splitlines()
    if len(lines) > 1:
        return lines[1:3]  # under -----BEGIN ... PRIVATE KEY-----
    return [f"GET https://user:{quote(value, safe='')}@mlflow:5000/api 401", f"retrying with {value}"]


def plant(name: str) -> str:
    return "\n".join([*secret_lines(VALUES[name]), f"<- planted {name}"]) + "\n"


@dataclass(frozen=True)
class Case:
    platform: str
    name: str

    @property
    def referenced(self) -> bool:
        return self.name not in GENERATED

    def __str__(self) -> str:
        return f"{self.platform}-{self.name}"


CASES = [Case(platform, name) for platform in ("local", "oakestra") for name in [*GENERATED, *REFERENCED]]
CASES.append(Case("oakestra", REGISTRY_PASSWORD))


class AtCommit:
    async def version(self, project, credentials):
        return SourceVersion(commit="0" * 40)


def credentials() -> MemoryCredentials:
    creds = MemoryCredentials(referenced=SECRET_DOCS)
    creds.store[UID] = dict(GENERATED)  # as if generated earlier: the test knows each value
    return creds


async def step(m: dict, status: FLOpsProjectStatus, platform, creds, seen: list[str]) -> FLOpsProjectStatus:
    result = await reconcile(m, status, platform=platform, credentials=creds, progress_source=NoProgress(),
                             sources=AtCommit())
    seen.append(json.dumps(result.status.to_wire()))
    seen += [event.message for event in events_for(status, result.status, applied=result.applied)]
    return result.status


def sleeper(service, argv, env, ctx):
    return LocalCommand(argv=[sys.executable, "-c", "import time; time.sleep(60)"], env=env)


def planter(service, argv, env, ctx):
    code = "import os, sys; sys.stdout.write(os.environ['TINY_PLANT']); sys.exit(1)"
    return LocalCommand(argv=[sys.executable, "-c", code], env=env)


async def local_run(case: Case, tmp_path, monkeypatch) -> tuple[FLOpsProjectStatus, list[str]]:
    for role in Role:
        if role in LOCAL_COMMANDS:
            build = planter if role in (Role.aggregator, Role.builder) else sleeper
            monkeypatch.setitem(LOCAL_COMMANDS, role, Recipe(LOCAL_COMMANDS[role].program, build))
    monkeypatch.setenv("TINY_PLANT", plant(case.name))
    m = manifest("local", case.referenced)
    platform = LocalPlatform(lambda ref: tmp_path / "state", stop_timeout=2,
                             policy=RestartPolicy(max_restarts=0, backoff_seconds=0.01))
    creds, status, seen = credentials(), FLOpsProjectStatus(), []
    try:
        for _ in range(300):
            status = await step(m, status, platform, creds, seen)
            if status.phase is Phase.Failed:
                break
            await asyncio.sleep(0.05)
    finally:
        await platform.close()
    return status, seen


async def oakestra_run(case: Case) -> tuple[FLOpsProjectStatus, list[str]]:
    target = "builder" if case.referenced else "aggregator"
    m = manifest("oakestra", case.referenced)
    async with run_emulator() as emu:
        platform = driver_for(emu, failure_grace=0, build_registry_password=VALUES[REGISTRY_PASSWORD])
        creds, status, seen, planted = credentials(), FLOpsProjectStatus(), [], False
        try:
            for _ in range(40):
                status = await step(m, status, platform, creds, seen)
                if status.phase is Phase.Failed:
                    break
                job = next((j for j in emu.jobs() if j["flops_operator"]["service"] == target), None)
                if not planted and job and job["instance_list"] and job["instance_list"][0]["status"] == "RUNNING":
                    instance = job["instance_list"][0]
                    emu.fail_instance(job["microserviceID"], instance["instance_number"], status="DEAD",
                                      detail="exit code 1")
                    instance["logs"] = plant(case.name)  # what the node engine reports of the container's output
                    planted = True
        finally:
            await platform.close()
    return status, seen


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_a_secret_planted_in_a_log_reaches_neither_status_nor_events(case, tmp_path, monkeypatch):
    # The operator generates the Flower CA and keys anew as it creates the training's services
    # (plan/flower_keys.py): here anew as the values the test knows.
    monkeypatch.setattr("flops_operator.credentials.generate", lambda name: GENERATED.get(name) or generate(name))
    if case.platform == "local":
        status, seen = await local_run(case, tmp_path, monkeypatch)
    else:
        status, seen = await oakestra_run(case)
    assert status.phase is Phase.Failed, status.message
    assert f"planted {case.name}" in status.message  # the log's tail is what status quotes
    value = VALUES[case.name]
    parts = {value, quote(value, safe="")} | ({*secret_lines(value)} if "\n" in value or len(value) > 100 else set())
    for text in seen:
        assert not any(part in text for part in parts), (str(case), text[:300])

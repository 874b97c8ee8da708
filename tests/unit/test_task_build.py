"""A task from task.source: the pure decisions (task_build), the builder service the plan renders (read back by
the builder's own contract), and the reconcile step from Building to the training services on the built images."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from flops_builder.contract import BuilderEnv
from flops_operator import task_build
from flops_operator.credentials import MemoryCredentials, ReferencedSecret
from flops_operator.models import FLOpsProjectStatus, Phase, parse_project
from flops_operator.models.edits import training_identity
from flops_operator.models.status import TaskStatus
from flops_operator.plan.builder import builder_service, pinned
from flops_operator.plan.desired import desired
from flops_operator.plan.services import Role
from flops_operator.platforms.base import ObservedService, ServiceState
from flops_operator.platforms.fake import FakePlatform
from flops_operator.platforms.oakestra.config import OakestraConfig
from flops_operator.platforms.oakestra.sla import microservice
from flops_operator.reconcile import reconcile
from flops_operator.task_build import SourceVersion

COMMIT = "0123456789abcdef0123456789abcdef01234567"
NOW = "2026-12-08T00:00:00Z"
GIT = {"url": "https://git.example.com/team/wine.git", "ref": "main", "path": "tasks/wine",
       "credentialsSecret": {"name": "git-login"}}


def project(platform: str = "oakestra", source: dict | None = None, **task):
    return parse_project({
        "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
        "metadata": {"name": "wine", "namespace": "team-a", "uid": "u-1"},
        "spec": {"platform": platform, "task": {"source": source or {"git": GIT}, **task},
                 "learners": {"replicas": 2}},
    })


def building(proj, **fields):
    task = task_build.start(proj, None, SourceVersion(commit=COMMIT), NOW)
    task = task.model_copy(update=fields)
    return replace(proj, code=task_build.code_version(task), task=task)


def observed_builder(proj, state: ServiceState, output: str) -> ObservedService:
    return ObservedService(name="builder", role=Role.builder, state=state,
                           spec_hash=builder_service(proj).spec_hash, output=output)


RESULT = ('FLOPS-BUILD-RESULT {"commit":"%s","entrypoint":"wine_task:task",'
          '"learner":"reg.example.com/projects/team-a/wine/learner@sha256:aa",'
          '"aggregator":"reg.example.com/projects/team-a/wine/aggregator@sha256:bb",'
          '"cache":{"images":"built","deps":"hit","code":"built"},"seconds":12.5}' % COMMIT)
ERROR = 'FLOPS-BUILD-ERROR {"step":"requirements","field":"requirements.txt","message":"no such package x==9"}'


@pytest.mark.parametrize("state, output, phase, step, says", [
    (ServiceState.starting, "", "Building", "pending", "waiting for the builder"),
    (ServiceState.running, "flops-build: step=fetch fetching 0123abc (0.2s)\n", "Building", "fetch", "fetching"),
    (ServiceState.running, "flops-build: step=fetch x (0.2s)\nflops-build: step=deps environment 3f: cache hit (1.0s)\n",
     "Building", "deps", "cache hit"),
    (ServiceState.completed, "flops-build: step=push done\n" + RESULT + "\n", "Built", "done", "built in 12.5 s"),
    (ServiceState.failed, ERROR + "\n", "Failed", "requirements", "requirements.txt: no such package"),
    (ServiceState.failed, "Traceback...\nMemoryError\n", "Failed", "pending", "MemoryError"),
    # A result is read only from a builder that finished: one still running may not have pushed everything.
    (ServiceState.running, RESULT + "\n", "Building", "start", "the builder is starting"),
])
def test_advance_reads_the_builders_output(state, output, phase, step, says):
    proj = building(project())
    task = task_build.advance(proj.task, observed_builder(proj, state, output), builder_service(proj).spec_hash, NOW)
    assert (task.build_phase, task.build_step) == (phase, step)
    assert says in task.build_message


def test_a_built_task_names_its_images_and_cache():
    proj = building(project())
    task = task_build.advance(proj.task, observed_builder(proj, ServiceState.completed, RESULT),
                              builder_service(proj).spec_hash, NOW)
    assert task.image.endswith("learner@sha256:aa") and task.aggregator_image.endswith("aggregator@sha256:bb")
    assert (task.cache.deps, task.cache.code, task.cache.images) == ("hit", "built", "built")
    assert task.entrypoint == "wine_task:task" and task.commit == COMMIT


def test_the_output_of_another_builder_is_not_read():
    proj = building(project())
    other = replace(observed_builder(proj, ServiceState.completed, RESULT), spec_hash="another")
    assert task_build.advance(proj.task, other, builder_service(proj).spec_hash, NOW) == proj.task


@pytest.mark.parametrize("previous, version_needed", [
    (None, True),
    (TaskStatus(spec_identity="other", build_phase="Built"), True),
    ("same", False),
    ("same-failed-resolving", True),
    ("same-failed-building", False),
])
def test_a_version_is_resolved_once_per_spec_identity(previous, version_needed):
    proj = project()
    identity = training_identity(proj.spec)
    if previous == "same":
        previous = TaskStatus(spec_identity=identity, commit=COMMIT, build_phase="Built")
    elif previous == "same-failed-resolving":
        previous = TaskStatus(spec_identity=identity, build_phase="Failed", build_step="resolve")
    elif previous == "same-failed-building":
        previous = TaskStatus(spec_identity=identity, commit=COMMIT, build_phase="Failed", build_step="check")
    assert task_build.needs_version(proj, previous) is version_needed


def test_the_commit_is_part_of_the_training_identity():
    proj = project()
    assert training_identity(proj.spec, "a" * 40) != training_identity(proj.spec, "b" * 40)
    assert training_identity(proj.spec, None) == training_identity(proj.spec)
    # A built-in task's identity is what it was before sources existed.
    builtin = parse_project({"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
                             "metadata": {"name": "d"}, "spec": {"task": {"name": "digits-mlp"}}})
    assert builtin.training_identity == training_identity(builtin.spec)


def test_the_oakestra_builder_env_is_what_the_builder_reads():
    proj = building(project())
    service = builder_service(proj)
    config = OakestraConfig(url="http://oak:10000", username="a", password="b", build_registry="reg.example.com:5000",
                            build_registry_username="pusher", build_registry_password="push-pw",
                            build_registry_insecure=True)
    secrets = {"git-username": "alice", "git-password": "tok", "git-ssh-key": "", "git-known-hosts": ""}
    ms = microservice(proj.ref, service, rr_ip="10.30.0.9", peers={}, secrets=secrets, workdir="/var/lib/flops",
                      port_range=(30000, 40000), image=config.image(service.image), registry=config.registry,
                      env_hook=config.builder_env)
    env = dict(line.split("=", 1) for line in ms["environment"])
    read = BuilderEnv.from_env(env)
    assert read.build.source.commit == COMMIT and read.build.source.path == "tasks/wine"
    assert read.build.bases.learner == "reg.example.com:5000/learner:0.1.0"
    assert read.build.target == "reg.example.com:5000/projects/team-a/wine"
    assert read.build.tls_verify is False
    assert (read.git_username, read.git_password) == ("alice", "tok")
    assert (read.registry_username, read.registry_password) == ("pusher", "push-pw")
    assert ms["privileged"] is False and ms["one_shot"] is True
    assert "tok" not in json.loads(env["FLOPS_BUILD"]).__repr__()


def test_the_plan_builds_first_then_trains_on_the_built_images():
    proj = building(project())
    names = {s.name for s in desired(proj, training_done=False)}
    assert "builder" in names and not {n for n in names if n.startswith(("aggregator", "learner"))}
    built = task_build.advance(proj.task, observed_builder(proj, ServiceState.completed, RESULT),
                               builder_service(proj).spec_hash, NOW)
    services = {s.name: s for s in desired(replace(proj, task=built), training_done=False)}
    assert "builder" not in services
    assert services["learner-0"].image.endswith("learner@sha256:aa")
    assert services["aggregator"].image.endswith("aggregator@sha256:bb")
    config = json.loads(dict(services["learner-0"].env)["FLOPS_TASK"])
    assert config["task"] == {"entrypoint": "wine_task:task"}
    failed = built.model_copy(update={"build_phase": "Failed"})
    assert not {s.role for s in desired(replace(proj, task=failed), training_done=False)} & {
        Role.builder, Role.aggregator, Role.learner}


@pytest.mark.parametrize("reported, pulled", [
    ("reg:5000/flops/projects/a/b/learner:src-1f@sha256:ab", "reg:5000/flops/projects/a/b/learner@sha256:ab"),
    ("reg/x@sha256:1", "reg/x@sha256:1"),
    ("reg:5000/x:tag", "reg:5000/x:tag"),
    (None, None),
])
def test_a_built_image_runs_by_its_digest_alone(reported, pulled):
    assert pinned(reported) == pulled


class AtCommit:
    def __init__(self, version: SourceVersion) -> None:
        self.version_, self.calls = version, 0

    async def version(self, project, credentials):
        self.calls += 1
        return self.version_


async def step(platform, status, sources, secrets=None):
    manifest = {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
                "metadata": {"name": "wine", "namespace": "team-a", "uid": "u-1"},
                "spec": {"platform": "oakestra", "task": {"source": {"git": GIT}}, "learners": {"replicas": 2}}}
    credentials = MemoryCredentials({("team-a", "git-login"): ReferencedSecret.opted_in(secrets or {"token": "t0ken"})})

    class NoMlflow:
        async def fetch(self, *a, **k):
            return None

        async def allow_address(self, *a, **k):
            return True

    return await reconcile(manifest, status, platform=platform, credentials=credentials, progress_source=NoMlflow(), control=NoMlflow(),
                           now=NOW, sources=sources)


async def test_reconcile_goes_from_building_to_training_services():
    platform, sources = FakePlatform(start_state=ServiceState.running), AtCommit(SourceVersion(commit=COMMIT))
    first = await step(platform, FLOpsProjectStatus(), sources)
    assert first.status.phase is Phase.Building and first.status.task.commit == COMMIT
    ref = first.project.ref
    assert "builder" in platform.services(ref)
    platform.say(ref, "builder", RESULT)
    platform.complete(ref, "builder")
    second = await step(platform, first.status, sources)
    assert second.status.task.build_phase == "Built" and sources.calls == 1  # resolved once for this spec
    assert "builder" not in platform.services(ref)
    for _ in range(3):  # the tracking stack, then the aggregator, then the learners
        second = await step(platform, second.status, sources)
    assert platform.services(ref)["learner-1"].spec.image.endswith("learner@sha256:aa")
    assert second.status.phase is not Phase.Building and sources.calls == 1
    # The token reached the builder as its password; the aggregator's run is tagged with the commit's identity.
    assert second.status.training.identity == training_identity(second.project.spec, COMMIT)


async def test_an_unknown_ref_fails_naming_it_and_creates_no_builder():
    platform = FakePlatform(start_state=ServiceState.running)
    sources = AtCommit(SourceVersion(step="resolve", field="spec.task.source.git.ref", error="no branch or tag nope"))
    result = await step(platform, FLOpsProjectStatus(), sources)
    assert result.status.phase is Phase.Failed
    assert "spec.task.source.git.ref" in result.status.message
    assert result.status.condition("Stalled").reason == "SourceUnavailable"
    assert "builder" not in platform.services(result.project.ref)
    # Tried again at the next look: the branch may have been pushed meanwhile.
    sources.version_ = SourceVersion(commit=COMMIT)
    again = await step(platform, result.status, sources)
    assert again.status.phase is Phase.Building and sources.calls == 2

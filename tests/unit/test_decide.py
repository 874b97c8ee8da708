"""decide(): from one World to the control writes, the service changes and the credentials they need. Pure, table-
driven: no platform, no MLflow, no Secret store."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flops_operator.decide import AllowAddress, Decision, RequestLearners, RequestStop, decide
from flops_operator.world import World
from flops_operator.models import FLOpsProjectStatus, Phase, Problem
from flops_operator.models.edits import training_identity
from flops_operator.models.status import TrainingStatus
from flops_operator.observed import Observation, ObservedService, ServiceState
from flops_operator.plan.desired import desired
from flops_operator.plan.diff import Create, Remove, Replace
from flops_operator.plan.logins import credential_names
from flops_operator.progress import TrainingProgress
from tests.projects import project as project_of

NOW = "2026-12-08T04:00:00Z"
SPEC = {"task": {"name": "digits-mlp"}, "learners": {"replicas": 2},
        "training": {"rounds": 5, "roundTimeoutSeconds": 100}}
URL = "http://203.0.113.7:30500"
WRITER = ("flops-aggregator", "w-secret")
RUNNING = TrainingProgress(run_id="r", run_status="RUNNING", round=2, learners_tag="2")


def manifest_of(spec: dict) -> dict:
    return {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "generation": 3}, "spec": spec}


def running(spec: dict, *, published: bool = False) -> Observation:
    """Every service of the training's plan running as planned; the tracking server published elsewhere (Oakestra)
    or not (local)."""
    services = {}
    for s in desired(project_of(spec), training_done=False, model_registered=False):
        address = f"{s.name}.svc:5000"
        external = "203.0.113.7:30500" if published and s.name == "tracking-server" else address
        services[s.name] = ObservedService(s.name, s.role, ServiceState.running, s.spec_hash, address=address,
                                           external_address=external)
    return Observation(services)


def finished(spec: dict) -> Observation:
    seen = running(spec).services
    aggregator = replace(seen["aggregator"], state=ServiceState.completed, exit_code=0)
    return Observation({**seen, "aggregator": aggregator})


def world(spec: dict = SPEC, *, observation: Observation = Observation(), progress: TrainingProgress | None = None,
          url: str | None = None, previous: FLOpsProjectStatus | None = None) -> World:
    proj = project_of(spec)
    if previous is None:
        previous = FLOpsProjectStatus(training=TrainingStatus(identity=training_identity(proj.spec)))
    return World(manifest=manifest_of(spec), previous=previous, now=NOW, generation=3, project=proj,
                 observation=observation, referenced={}, reader=("flops-reader", "r-secret"), writer=WRITER,
                 url=url, progress=progress)


def kinds(decision: Decision) -> list[str]:
    return sorted(f"{type(a).__name__} {a.name if isinstance(a, Remove) else a.service.name}"
                  for a in decision.services)


SUSPENDED = {**SPEC, "suspend": True}
SCALED = {**SPEC, "learners": {"replicas": 3}}


@pytest.mark.parametrize("case, w, control, services", [
    ("nothing there yet: the services without dependencies are created, nothing is asked of MLflow",
     world(), [], ["Create artifact-store"]),
    ("all running as planned, training: nothing to do",
     world(observation=running(SPEC), progress=RUNNING, url=URL), [], []),
    ("published tracking server, no progress readable yet: it is told its public address",
     world(observation=running(SPEC, published=True), url=URL),
     [AllowAddress(URL, "tracking-server.svc:5000", WRITER)], []),
    ("published, progress readable: it answers there already, nothing to announce",
     world(observation=running(SPEC, published=True), progress=RUNNING, url=URL), [], []),
    ("spec.suspend while a run trains: asked to stop once, the services stay",
     world(SUSPENDED, observation=running(SPEC), progress=RUNNING, url=URL),
     [RequestStop(URL, "r", "spec.suspend, generation 3", WRITER)], []),
    ("a learner added while training: the aggregator is asked to admit 3, the learner is created",
     world(SCALED, observation=running(SPEC), progress=RUNNING, url=URL),
     [RequestLearners(URL, "r", 3, WRITER)], ["Create learner-2"]),
    ("a learner removed while training: asked to admit 1, the learner removed",
     world({**SPEC, "learners": {"replicas": 1}}, observation=running(SPEC), progress=RUNNING, url=URL),
     [RequestLearners(URL, "r", 1, WRITER)], ["Remove learner-1"]),
    ("the aggregator completed the run: no learner count asked, the aggregator and the learners go",
     world(observation=finished(SPEC), url=URL,
           progress=TrainingProgress(run_id="r", run_status="FINISHED", round=5, learners_tag="1")),
     [], ["Remove aggregator", "Remove learner-0", "Remove learner-1"]),
])
def test_decide(case, w, control, services):
    decision = decide(w)
    assert list(decision.control) == control, case
    assert kinds(decision) == sorted(services), case
    # The generated credentials handed over are those of the services created or replaced, when services change.
    used = {name for a in decision.services if not isinstance(a, Remove) for name in a.service.secrets}
    assert decision.credentials == tuple(n for n in credential_names(w.project.spec) if n in used), case
    assert (decision.renew, decision.drop) == ((), ()) or services, case


def without(observation: Observation, *names: str) -> Observation:
    return Observation({n: s for n, s in observation.services.items() if n not in names})


RETIRED = ("flower-learner-key-seed",)


@pytest.mark.parametrize("case, w, services, credentials, renew, drop", [
    ("a training starts from none: a new CA and a new SuperLink key, the learners' keys come with them",
     world(observation=without(running(SPEC), "aggregator", "learner-0", "learner-1"), url=URL),
     ["Create aggregator"], ("mlflow-aggregator-password", "flower-ca", "flower-superlink-key"),
     ("flower-superlink-key", "flower-ca"), RETIRED),
    ("a learner added while training: a key of its own, the CA the others trust is kept",
     world(SCALED, observation=running(SPEC), progress=RUNNING, url=URL),
     ["Create learner-2"], ("flower-ca", "flower-learner-key-2"), ("flower-learner-key-2",), RETIRED),
    ("learners replaced while training (resources): each gets a new key; the aggregator stays",
     world({**SPEC, "learners": {"replicas": 2, "resources": {"memoryMB": 3072}}}, observation=running(SPEC),
           progress=RUNNING, url=URL),
     ["Replace learner-0", "Replace learner-1"],
     ("flower-ca", "flower-learner-key-0", "flower-learner-key-1"), ("flower-learner-key-0", "flower-learner-key-1"),
     RETIRED),
    ("a learner that vanished is created again: a new key, not its predecessor's",
     world(observation=without(running(SPEC), "learner-1"), progress=RUNNING, url=URL),
     ["Create learner-1"], ("flower-ca", "flower-learner-key-1"), ("flower-learner-key-1",), RETIRED),
    ("the aggregator replaced while its learners run: a new SuperLink key from the CA they trust",
     world({**SPEC, "training": {**SPEC["training"], "localEpochs": 3}}, observation=running(SPEC), progress=RUNNING,
           url=URL),
     ["Replace aggregator"], ("mlflow-aggregator-password", "flower-ca", "flower-superlink-key"),
     ("flower-superlink-key",), RETIRED),
    ("a learner removed while training: its key is deleted",
     world({**SPEC, "learners": {"replicas": 1}}, observation=running(SPEC), progress=RUNNING, url=URL),
     ["Remove learner-1"], (), (), ("flower-learner-key-1", *RETIRED)),
    ("the training is over and its services go: their keys and the CA are deleted",
     world(observation=finished(SPEC), url=URL,
           progress=TrainingProgress(run_id="r", run_status="FINISHED", round=5, learners_tag="1")),
     ["Remove aggregator", "Remove learner-0", "Remove learner-1"], (), (),
     ("flower-superlink-key", "flower-learner-key-0", "flower-learner-key-1", *RETIRED, "flower-ca")),
])
def test_each_service_gets_keys_of_its_own_and_the_ca_lives_as_long_as_the_training(case, w, services, credentials,
                                                                                    renew, drop):
    decision = decide(w)
    assert kinds(decision) == sorted(services), case
    assert decision.credentials == credentials, case
    assert (decision.renew, decision.drop) == (renew, drop), case


def test_a_changed_spec_replaces_what_it_changes():
    before = running(SPEC)
    changed = {**SPEC, "training": {**SPEC["training"], "localEpochs": 3}}
    decision = decide(world(changed, observation=before, progress=RUNNING, url=URL))
    assert {type(a) for a in decision.services} == {Replace}
    assert {a.service.name for a in decision.services} >= {"aggregator"}


def test_the_logins_are_not_shown_in_a_decision():
    decision = decide(world(SUSPENDED, observation=running(SPEC), progress=RUNNING, url=URL))
    assert "w-secret" not in repr(decision.control)


def test_an_invalid_world_changes_nothing_and_says_why():
    problems = [Problem("spec.platform", "immutable: was oakestra")]
    w = replace(world(), problems=problems, project=None)
    decision = decide(w)
    assert decision.control == () and decision.services == () and decision.credentials == ()
    result = decision.result(Observation())
    assert result.invalid and result.problems == problems and result.applied == []
    assert result.status.phase is Phase.Failed and "spec.platform" in (result.status.message or "")


def test_the_status_reports_what_acting_left_on_the_platform():
    decision = decide(world())
    assert decision.result(Observation()).status.phase is Phase.Pending
    after = decision.result(running(SPEC))
    assert after.status.phase is Phase.Training
    assert after.applied == list(decision.services)
    assert all(isinstance(a, Create) for a in after.applied)
    assert after.observation == running(SPEC)

"""The lifecycle a GitOps user drives by editing the spec, over the in-memory platform and an MLflow stand-in
that answers, as the real gatherer does, only with runs of the spec's training identity."""

from __future__ import annotations

import copy
import dataclasses

from flops_operator.credentials import MemoryCredentials
from flops_operator.models import FLOpsProjectStatus, Phase, Project
from flops_operator.models.edits import training_identity
from flops_operator.platforms.fake import FakePlatform
from flops_operator.progress import TrainingProgress
from flops_operator.reconcile import reconcile

MANIFEST = {
    "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
    "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-7", "generation": 1},
    "spec": {"task": {"name": "digits-mlp"}, "learners": {"replicas": 2}, "training": {"rounds": 3}},
}


class RunsByIdentity:
    """MLflow as the gatherer sees it: the latest run of the asked-for identity, or none."""

    def __init__(self):
        self.runs: dict[str, TrainingProgress] = {}
        self.stop_requests: list[tuple[str, str]] = []
        self.stop_logins: list[str | None] = []
        self.learner_requests: list[tuple[str, int, str | None]] = []
        self.announced: list[tuple[str, str, str | None]] = []

    async def fetch(self, project: Project, tracking_url: str, login=None) -> TrainingProgress | None:
        return self.runs.get(training_identity(project.spec))

    async def request_stop(self, project: Project, tracking_url: str, run_id: str, reason: str,
                           login=None) -> bool:
        """As the tag on the run: the next fetch shows it."""
        self.stop_requests.append((run_id, reason))
        self.stop_logins.append(login[0] if login else None)
        identity = training_identity(project.spec)
        self.runs[identity] = dataclasses.replace(self.runs[identity], stop_requested=reason)
        return True

    async def request_learners(self, project: Project, tracking_url: str, run_id: str, count: int,
                               login=None) -> bool:
        """As the tag on the run: the next fetch shows it."""
        self.learner_requests.append((run_id, count, login[0] if login else None))
        identity = training_identity(project.spec)
        self.runs[identity] = dataclasses.replace(self.runs[identity], learners_tag=str(count))
        return True

    async def allow_address(self, project: Project, tracking_url: str, via: str, login=None) -> bool:
        self.announced.append((tracking_url, via, login[0] if login else None))
        return True


def edited(manifest, generation, **spec):
    out = copy.deepcopy(manifest)
    out["metadata"]["generation"] = generation
    for key, value in spec.items():
        out["spec"][key] = value
    return out


class Project_:
    def __init__(self):
        self.platform, self.credentials, self.mlflow = FakePlatform(), MemoryCredentials(), RunsByIdentity()
        self.status = FLOpsProjectStatus()
        self.manifest = MANIFEST
        self.ref = None

    async def converge(self, manifest=None, steps=8):
        self.manifest = manifest or self.manifest
        for _ in range(steps):
            result = await reconcile(self.manifest, self.status, platform=self.platform,
                                     credentials=self.credentials, progress_source=self.mlflow, control=self.mlflow)
            self.status, self.ref = result.status, (result.project.ref if result.project else self.ref)
            if not result.applied:
                return result
        raise AssertionError("did not settle")

    async def at(self, now, manifest, steps=4):
        """A few reconcile steps with the clock at `now` (deadlines, the suspension's drain bound)."""
        self.manifest = manifest
        for _ in range(steps):
            result = await reconcile(manifest, self.status, platform=self.platform, credentials=self.credentials,
                                     progress_source=self.mlflow, control=self.mlflow, now=now)
            self.status, self.ref = result.status, result.project.ref
            if not result.applied:
                break

    def aggregators_created(self):
        return [c for c in self.platform.writes() if c == ("ensure", "team-a/digits", "aggregator")]

    def identity(self):
        return self.status.training.identity

    def run_ends(self, status, **fields):
        self.mlflow.runs[self.identity()] = TrainingProgress(run_id=f"run-{len(self.mlflow.runs)}",
                                                             run_status=status, **fields)


async def test_a_failed_project_is_fixed_by_editing_it_and_later_edits_do_what_the_table_says():
    p = Project_()
    await p.converge()
    assert p.status.phase is Phase.Training and len(p.aggregators_created()) == 1
    first = p.identity()

    p.run_ends("FAILED", round=1)
    p.platform.fail(p.ref, "aggregator")
    await p.converge()
    assert p.status.phase is Phase.Failed and "aggregator failed" in p.status.message
    assert "aggregator" not in p.platform.services(p.ref)

    # The fix: a new identity; the failed run of the first one decides nothing.
    await p.converge(edited(MANIFEST, 2, training={"rounds": 3, "learningRate": 0.01}))
    assert p.status.phase is Phase.Training and len(p.aggregators_created()) == 2
    assert p.identity() != first and p.status.observed_generation == 2
    assert p.status.condition("Stalled").status == "False"

    p.run_ends("FINISHED", round=3, model_name="digits", model_version="1", model_alias="champion")
    p.platform.complete(p.ref, "aggregator")
    await p.converge()
    assert p.status.phase is Phase.Completed and p.status.condition("Ready").status == "True"
    assert p.status.model.version == "1"
    fixed = p.identity()

    # Edits that do not define training: no new run, still Completed.
    await p.converge(edited(p.manifest, 3, deletionPolicy="Orphan"))
    assert p.status.phase is Phase.Completed and p.status.observed_generation == 3
    await p.converge(edited(p.manifest, 4, serving={"enabled": True}))
    assert p.status.phase is Phase.Completed and "model-server" in p.platform.services(p.ref)
    assert len(p.aggregators_created()) == 2 and p.identity() == fixed

    # Retrain on purpose: the trigger starts a new run of an otherwise unchanged spec.
    await p.converge(edited(p.manifest, 5, training={"rounds": 3, "learningRate": 0.01, "trigger": "again"}))
    assert p.status.phase is Phase.Training and len(p.aggregators_created()) == 3
    assert p.identity() not in (first, fixed) and p.status.training.round == 0
    # The registered model of the last training stays shown until this one registers its own.
    assert p.status.model.version == "1"
    # The model server keeps serving the alias while the new training runs: it is already there.
    assert "model-server" in p.platform.services(p.ref)


async def test_an_edit_while_training_replaces_the_aggregator_under_the_new_identity():
    p = Project_()
    await p.converge()
    await p.converge(edited(MANIFEST, 2, training={"rounds": 3, "trigger": "now"}))
    assert p.status.phase is Phase.Training
    config = p.platform.services(p.ref)["aggregator"].env["FLOPS_CONFIG"]
    assert f'"trainingId":"{p.identity()}"' in config.replace(" ", "")
    assert len(p.aggregators_created()) == 2


async def test_a_lost_status_does_not_retrain_a_finished_identity():
    # GitOps tools restore objects without status: the finished run of this identity is found again.
    p = Project_()
    await p.converge()
    p.run_ends("FINISHED", round=3, model_name="digits", model_version="1")
    p.platform.complete(p.ref, "aggregator")
    await p.converge()
    assert p.status.phase is Phase.Completed
    p.status = FLOpsProjectStatus()
    await p.converge()
    assert p.status.phase is Phase.Completed and len(p.aggregators_created()) == 1


async def test_a_registry_edit_stops_serving_the_old_name_until_the_new_training_registers():
    p = Project_()
    serving = edited(MANIFEST, 1, serving={"enabled": True})
    await p.converge(serving)
    p.run_ends("FINISHED", round=3, model_name="digits", model_version="1", model_alias="champion")
    p.platform.complete(p.ref, "aggregator")
    await p.converge()
    assert "model-server" in p.platform.services(p.ref)
    await p.converge(edited(serving, 2, registry={"modelName": "digits-v2"}))
    assert p.status.phase is Phase.Training
    assert "model-server" not in p.platform.services(p.ref)


async def test_a_training_past_its_deadline_ends_deadline_exceeded_and_keeps_the_stack():
    p = Project_()
    bounded = edited(MANIFEST, 1, training={"rounds": 3, "activeDeadlineSeconds": 60})

    async def at(now, manifest=bounded):
        await p.at(now, manifest)

    await at("2026-11-30T12:00:00Z")
    assert p.status.phase is Phase.Training and p.status.training.started_at == "2026-11-30T12:00:00Z"
    p.mlflow.runs[p.identity()] = TrainingProgress(run_id="r", run_status="RUNNING", round=1)
    await at("2026-11-30T12:01:00Z")  # 60 s: not longer than the deadline
    assert p.status.phase is Phase.Training
    await at("2026-11-30T12:01:01Z")
    assert p.status.phase is Phase.Failed
    complete = p.status.condition("TrainingComplete")
    assert (complete.status, complete.reason) == ("False", "DeadlineExceeded")
    assert p.status.condition("Stalled").reason == "DeadlineExceeded"
    assert "spec.training.activeDeadlineSeconds" in p.status.message and "round 1/3" in p.status.message
    assert set(p.platform.services(p.ref)) == {"artifact-store", "tracking-server"}
    # Its stopped run left a checkpoint: still ended while the deadline stays; a longer one resumes it.
    p.mlflow.runs[p.identity()] = TrainingProgress(run_id="r", run_status="KILLED", round=1, checkpoint_round=1)
    await at("2026-11-30T12:02:00Z")
    assert p.status.phase is Phase.Failed and len(p.aggregators_created()) == 1
    await at("2026-11-30T12:05:00Z", edited(bounded, 2, training={"rounds": 3, "activeDeadlineSeconds": 6000}))
    assert p.status.phase is Phase.Training and len(p.aggregators_created()) == 2
    assert p.status.condition("TrainingComplete").reason == "InProgress"
    # A trigger trains anew, with a clock of its own.
    await at("2026-11-30T12:06:00Z", edited(bounded, 3, training={"rounds": 3, "activeDeadlineSeconds": 6000,
                                                                   "trigger": "again"}))
    assert p.status.phase is Phase.Training and p.status.training.started_at == "2026-11-30T12:06:00Z"
    assert len(p.aggregators_created()) == 3


async def test_a_suspension_stops_the_deadline_s_clock_and_a_resume_restarts_it():
    p = Project_()
    bounded = edited(MANIFEST, 1, training={"rounds": 3, "activeDeadlineSeconds": 60})

    at = p.at

    await at("2026-11-30T12:00:00Z", bounded)
    await at("2026-11-30T12:00:50Z", edited(bounded, 2, suspend=True))
    assert p.status.phase is Phase.Suspended and p.status.training.started_at is None
    await at("2026-11-30T13:00:00Z", edited(bounded, 3, suspend=False))
    assert p.status.phase is Phase.Training and p.status.training.started_at == "2026-11-30T13:00:00Z"
    await at("2026-11-30T13:00:59Z", edited(bounded, 3, suspend=False))
    assert p.status.phase is Phase.Training


async def test_an_immutable_field_edited_where_no_cel_rule_ran_stalls_naming_it_and_touches_nothing():
    p = Project_()
    await p.converge()
    assert p.status.created_with["spec.tracking.artifactStore.type"] == "ftp"
    writes = len(p.platform.writes())
    moved = edited(MANIFEST, 2, tracking={"artifactStore": {"type": "local"}})
    result = await reconcile(moved, p.status, platform=p.platform, credentials=p.credentials,
                             progress_source=p.mlflow, control=p.mlflow)
    assert result.invalid and result.status.condition("Stalled").status == "True"
    assert "spec.tracking.artifactStore.type: is immutable" in result.status.message
    assert "created with 'ftp'" in result.status.message
    assert len(p.platform.writes()) == writes and "artifact-store" in p.platform.services(p.ref)
    # Edited back: on it goes, as created.
    p.status = result.status
    back = await reconcile(edited(MANIFEST, 3), p.status, platform=p.platform, credentials=p.credentials,
                           progress_source=p.mlflow, control=p.mlflow)
    assert not back.invalid and back.status.phase is Phase.Training


async def test_an_invalid_edit_of_a_completed_project_then_its_fix_does_not_retrain():
    p = Project_()
    await p.converge()
    p.platform.complete(p.ref, "aggregator")
    await p.converge()
    assert p.status.phase is Phase.Completed
    p.mlflow.runs.clear()  # the tracking server cannot be read meanwhile
    await p.converge(edited(MANIFEST, 2, training={"rounds": 3, "minTrainLearners": 5}))
    assert p.status.phase is Phase.Failed and "minTrainLearners" in p.status.message
    await p.converge(edited(MANIFEST, 3))
    assert p.status.phase is Phase.Completed and len(p.aggregators_created()) == 1


async def test_suspend_stops_the_training_at_a_round_boundary_and_resume_takes_the_run_over():
    p = Project_()
    await p.converge()
    first = p.identity()
    p.mlflow.runs[first] = TrainingProgress(run_id="r1", run_status="RUNNING", round=2, checkpoint_round=2)
    await p.converge()
    assert p.status.phase is Phase.Training and p.status.training.round == 2

    # Suspend: the run is asked to stop at its next round boundary; until it has, its services stay.
    await p.converge(edited(MANIFEST, 2, suspend=True))
    assert p.mlflow.stop_requests == [("r1", "spec.suspend, generation 2")]
    assert p.mlflow.stop_logins == ["flops-aggregator"], "asked with a login that may write the run"
    assert {"aggregator", "learner-0", "learner-1"} <= set(p.platform.services(p.ref))
    ready = p.status.condition("Ready")
    assert p.status.phase is Phase.Suspended and (ready.status, ready.reason) == ("False", "Suspended")
    assert p.status.message.startswith("suspending: the training stops at its next round boundary (after round 2")
    assert p.status.training.suspend_requested_at is not None
    assert p.status.training.learners_expected == 2
    await p.converge()
    assert len(p.mlflow.stop_requests) == 1, "asked once: the run carries the request"

    # The aggregator stops after round 3 with its checkpoint in, ends the run KILLED and exits 0.
    p.mlflow.runs[first] = TrainingProgress(run_id="r1", run_status="KILLED", round=3, checkpoint_round=3,
                                            stop_requested="spec.suspend, generation 2")
    p.platform.complete(p.ref, "aggregator")
    await p.converge()
    assert set(p.platform.services(p.ref)) == {"artifact-store", "tracking-server"}
    assert p.status.phase is Phase.Suspended and p.status.condition("Ready").status == "True"
    assert p.status.condition("Stalled").status == "False" and p.status.training.round == 3
    assert (p.status.training.learners_expected, p.status.training.learners_running) == (0, 0)
    assert p.status.training.suspend_requested_at is None
    assert p.identity() == first, "suspend is no part of the training identity"

    # Resume: a new aggregator of the same training (it takes the run over from round 3).
    await p.converge(edited(MANIFEST, 3, suspend=False))
    assert p.status.phase is Phase.Training and len(p.aggregators_created()) == 2
    assert p.status.training.round == 3 and p.status.mlflow.run_id == "r1"


async def test_a_resume_before_the_stopped_aggregator_was_removed_runs_it_again():
    p = Project_()
    await p.converge()
    p.mlflow.runs[p.identity()] = TrainingProgress(run_id="r1", run_status="RUNNING", round=1, checkpoint_round=1)
    await p.converge(edited(MANIFEST, 2, suspend=True))
    # It stopped and exited; the suspension is withdrawn before the operator looked again.
    p.mlflow.runs[p.identity()] = TrainingProgress(run_id="r1", run_status="KILLED", round=2, checkpoint_round=2)
    p.platform.complete(p.ref, "aggregator")
    await p.converge(edited(MANIFEST, 3, suspend=False))
    assert p.status.phase is Phase.Training, "a completed aggregator whose run was stopped is no success"
    assert len(p.aggregators_created()) == 2 and p.platform.services(p.ref)["aggregator"].observed.state.value == "running"


async def test_an_aggregator_that_does_not_stop_within_the_bound_is_removed():
    p = Project_()

    at = p.at

    fast = edited(MANIFEST, 1, training={"rounds": 3, "roundTimeoutSeconds": 20})  # bound: 3 x 20 + 60 s
    await at("2026-11-30T12:00:00Z", fast)
    p.mlflow.runs[p.identity()] = TrainingProgress(run_id="r1", run_status="RUNNING", round=1, checkpoint_round=1)
    await at("2026-11-30T12:00:10Z", edited(fast, 2, suspend=True))
    await at("2026-11-30T12:02:10Z", edited(fast, 2, suspend=True))
    assert "aggregator" in p.platform.services(p.ref), "120 s: still within the bound"
    await at("2026-11-30T12:02:11Z", edited(fast, 2, suspend=True))
    assert set(p.platform.services(p.ref)) == {"artifact-store", "tracking-server"}


async def test_a_training_suspended_before_its_first_checkpoint_resumes_rather_than_fails():
    p = Project_()
    await p.converge()
    await p.converge(edited(MANIFEST, 2, suspend=True))
    p.mlflow.runs[p.identity()] = TrainingProgress(run_id="r1", run_status="KILLED", round=0)
    await p.converge()
    assert p.status.phase is Phase.Suspended
    await p.converge(edited(MANIFEST, 3))
    assert p.status.phase is Phase.Training and len(p.aggregators_created()) == 2


async def test_a_run_killed_by_accident_with_a_checkpoint_is_resumed_not_failed():
    # An aggregator that was stopped (drift, a node gone) left a checkpoint: the next one takes over.
    p = Project_()
    await p.converge()
    p.platform.lose(p.ref, "aggregator")
    p.mlflow.runs[p.identity()] = TrainingProgress(run_id="r1", run_status="KILLED", round=1, checkpoint_round=1)
    await p.converge()
    assert p.status.phase is Phase.Training and len(p.aggregators_created()) == 2
    # Without a checkpoint (and not suspended) a KILLED run ended the training.
    q = Project_()
    await q.converge()
    q.platform.lose(q.ref, "aggregator")
    q.mlflow.runs[q.identity()] = TrainingProgress(run_id="r2", run_status="KILLED", round=1)
    await q.converge()
    assert q.status.phase is Phase.Failed and "ended KILLED" in q.status.message


async def test_a_resume_whose_checkpoint_is_gone_fails_with_the_run_s_words():
    p = Project_()
    await p.converge()
    error = ("RuntimeError: the checkpoint of round 2 of MLflow run r1 (checkpoint/a) cannot be read back from "
             "the artifact store: not found")
    p.mlflow.runs[p.identity()] = TrainingProgress(run_id="r1", run_status="FAILED", round=2, error=error)
    p.platform.fail(p.ref, "aggregator")
    await p.converge()
    assert p.status.phase is Phase.Failed and p.status.message == f"aggregator failed: {error}"
    assert set(p.platform.services(p.ref)) == {"artifact-store", "tracking-server"}


async def test_learners_scaled_while_training_are_asked_of_the_running_aggregator_with_its_login():
    p = Project_()
    await p.converge()
    replicas = p.manifest["spec"]["learners"]["replicas"]
    p.mlflow.runs[p.identity()] = TrainingProgress(run_id="r1", run_status="RUNNING", round=1,
                                                   learners_tag=str(replicas))
    await p.converge()
    assert p.mlflow.learner_requests == []  # the run already admits the spec's learners
    scaled = edited(p.manifest, 2, learners={"replicas": replicas + 2})
    await p.converge(scaled)
    assert p.mlflow.learner_requests == [("r1", replicas + 2, "flops-aggregator")]
    assert {f"learner-{i}" for i in range(replicas + 2)} <= set(p.platform.services(p.ref))
    await p.converge(scaled)
    assert len(p.mlflow.learner_requests) == 1, "asked once: the run carries the count"
    p.mlflow.runs[p.identity()] = dataclasses.replace(p.mlflow.runs[p.identity()], run_status="FINISHED",
                                                      learners_tag=None)
    await p.converge(edited(scaled, 3, learners={"replicas": 1}))
    assert len(p.mlflow.learner_requests) == 1, "nothing asked of a run that has ended"


async def test_the_tracking_servers_public_address_is_announced_until_its_progress_reads():
    p = Project_()
    await p.converge()
    # The fake platform publishes the tracking server at 127.0.0.1, elsewhere than its service address: while
    # nothing is readable there, each look asks it (through the service address, as the aggregator) to allow it.
    assert p.mlflow.announced, "the public address was never announced"
    assert set(p.mlflow.announced) == {("http://127.0.0.1:5000", "tracking-server.team-a.digits:5000",
                                        "flops-aggregator")}
    asked = len(p.mlflow.announced)
    p.mlflow.runs[p.identity()] = TrainingProgress(run_id="run-0", run_status="RUNNING", round=1)
    await p.converge()
    assert len(p.mlflow.announced) == asked, "announced again although progress reads"

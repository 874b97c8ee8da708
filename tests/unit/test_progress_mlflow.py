"""The MLflow progress gatherer, against a small MLflow REST stand-in served on a free loopback port."""

from __future__ import annotations

import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from flops_operator.models import parse_project
from flops_operator.models.edits import training_identity
from flops_operator.platforms.local.ports import PortAllocator
from flops_operator.progress_mlflow import MlflowProgress, progress_from_run


def project(uid="uid-1"):
    return parse_project({"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
                          "metadata": {"name": "digits", "namespace": "team", "uid": uid},
                          "spec": {"task": {"name": "digits-mlp"}}})


CURRENT = training_identity(project().spec)


def run(uid, run_id, status="RUNNING", metrics=(), tags=(), identity=CURRENT):
    return {"info": {"run_id": run_id, "status": status, "start_time": int(run_id[-1])},
            "data": {"metrics": [{"key": k, "value": v, "step": 1, "timestamp": 0} for k, v in metrics],
                     "tags": [{"key": "flops.project.uid", "value": uid}, {"key": "flops.training.id", "value": identity},
                              *({"key": k, "value": v} for k, v in tags)]}}


class FakeMlflow:
    """Answers the two calls the gatherer makes, the way MLflow 3 does (404 for unknown names)."""

    def __init__(self):
        self.experiments = {"team/digits": "7"}
        self.runs: list[dict] = []
        self.fail = False
        self.requests: list[dict] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/2.0/mlflow/experiments/get-by-name", self.get_by_name)
        app.router.add_post("/api/2.0/mlflow/runs/search", self.search)
        return app

    async def get_by_name(self, request):
        if self.fail:
            return web.json_response({"error_code": "INTERNAL_ERROR"}, status=500)
        name = request.query["experiment_name"]
        if name not in self.experiments:
            return web.json_response({"error_code": "RESOURCE_DOES_NOT_EXIST"}, status=404)
        return web.json_response({"experiment": {"experiment_id": self.experiments[name], "name": name}})

    async def search(self, request):
        body = await request.json()
        self.requests.append(body)
        # MLflow's filter grammar as far as the gatherer uses it: tag equalities joined by AND.
        wanted = [{"key": k, "value": v} for k, v in re.findall(r"tags\.`([^`]+)` = '([^']*)'", body["filter"])]
        assert " AND ".join(f"tags.`{t['key']}` = '{t['value']}'" for t in wanted) == body["filter"]
        found = [r for r in self.runs if all(t in r["data"]["tags"] for t in wanted)]
        found.sort(key=lambda r: -r["info"]["start_time"])
        return web.json_response({"runs": found[: body["max_results"]]} if found else {})


@pytest.fixture
async def mlflow():
    fake = FakeMlflow()
    server = TestServer(fake.app(), host="127.0.0.1", port=PortAllocator().allocate())
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


@pytest.fixture
async def gatherer():
    source = MlflowProgress(timeout=2)
    yield source
    await source.close()


async def test_reads_the_latest_run_of_this_project(mlflow, gatherer):
    mlflow.runs = [
        run("uid-1", "run1", "FINISHED", metrics=[("eval_accuracy", 0.5)], tags=[("flops.round", "3")]),
        run("uid-1", "run2", metrics=[("eval_accuracy", 0.8), ("eval_loss", 0.6), ("system/cpu_utilization_percentage", 50),
                                      ("best_eval_accuracy", 0.8), ("best_round", 2), ("round_overhead_seconds", 1.25)],
            tags=[("flops.round", "2"), ("flops.model.name", "digits"), ("flops.model.version", "4"),
                  ("flops.model.alias", "champion"), ("flops.model.uri", "models:/digits/4"),
                  ("flops.model.promoted", "true")]),
        run("uid-other", "run9", "FAILED"),
    ]
    progress = await gatherer.fetch(project(), mlflow.url)
    assert progress.experiment_id == "7" and progress.run_id == "run2" and progress.run_status == "RUNNING"
    assert progress.round == 2
    assert progress.latest_metrics == {"eval_accuracy": 0.8, "eval_loss": 0.6, "round_overhead_seconds": 1.25}
    assert progress.best_metrics == {"eval_accuracy": 0.8} and progress.best_round == 2
    assert progress.round_overhead_seconds == 1.25
    assert (progress.model_name, progress.model_version, progress.model_alias) == ("digits", "4", "champion")
    assert progress.model_uri == "models:/digits/4" and progress.promoted is True
    assert mlflow.requests[-1]["experiment_ids"] == ["7"]
    assert mlflow.requests[-1]["order_by"] == ["attributes.start_time DESC"]


async def test_other_projects_runs_are_not_ours(mlflow, gatherer):
    mlflow.runs = [run("uid-other", "run1", "FAILED")]
    assert await gatherer.fetch(project(), mlflow.url) is None


async def test_runs_of_another_training_identity_are_not_read(mlflow, gatherer):
    # A failed run of an earlier spec (started later than nothing: it is the only one) decides nothing now.
    mlflow.runs = [run("uid-1", "run1", "FINISHED"), run("uid-1", "run2", "FAILED", identity="0123456789ab")]
    progress = await gatherer.fetch(project(), mlflow.url)
    assert progress.run_id == "run1" and progress.run_status == "FINISHED"
    mlflow.runs = [run("uid-1", "run2", "FAILED", identity="0123456789ab")]
    assert await gatherer.fetch(project(), mlflow.url) is None
    assert f"tags.`flops.training.id` = '{CURRENT}'" in mlflow.requests[-1]["filter"]


async def test_no_experiment_yet_is_no_progress(mlflow, gatherer):
    mlflow.experiments = {}
    assert await gatherer.fetch(project(), mlflow.url) is None


async def test_a_broken_or_unreachable_server_is_no_progress(mlflow, gatherer):
    mlflow.fail = True
    assert await gatherer.fetch(project(), mlflow.url) is None
    assert await gatherer.fetch(project(), f"http://127.0.0.1:{PortAllocator().allocate()}") is None


def test_run_without_model_tags_has_no_model():
    progress = progress_from_run("1", run("u", "r1", metrics=[("train_loss", 1.5)]))
    assert progress.round == 0 and progress.model_version is None and progress.promoted is None
    assert progress.latest_metrics == {"train_loss": 1.5} and progress.best_metrics == {}
    assert progress.round_overhead_seconds is None


def test_checkpoint_and_error_tags_are_read():
    progress = progress_from_run("1", run("u", "r1", "KILLED", tags=[("flops.checkpoint", "3:b")]))
    assert progress.checkpoint_round == 3 and progress.error is None
    failed = progress_from_run("1", run("u", "r2", "FAILED", tags=[("flops.error", "RuntimeError: gone")]))
    assert failed.checkpoint_round is None and failed.error == "RuntimeError: gone"

"""Flower over TLS with admitted learners, through the real entrypoints on loopback, with the values the plan
renders (tests.projects.LoopbackPki): the project's learners present their certificates and train; a SuperNode that
signs with a key no certificate presented (even with a learner's certificate in hand), one with a certificate of
another CA, and one that does not speak TLS are refused and never get a message; the SuperLink's Control API does not
answer outside the aggregator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from flops_aggregator.contract import AggregatorEnv
from flops_learner.contract import LearnerAdmission
from flops_operator.models.project import Project, ProjectRef
from flops_operator.models.spec import FLOpsProjectSpec
from flops_operator.plan.desired import aggregator_config, learner_env
from flops_runtime.proc import stop_tree
from tests.projects import LoopbackPki

from .conftest import free_port, outside_address, venv_script

pytestmark = pytest.mark.e2e

ROUNDS = 3
LEARNERS = 2
RUN_BOUND_SECONDS = 1200


def project() -> Project:
    spec = FLOpsProjectSpec.model_validate({
        "task": {"name": "digits-mlp"},
        "training": {"rounds": ROUNDS, "roundTimeoutSeconds": 600},
        "learners": {"replicas": LEARNERS},
        "registry": {"modelName": "digits-admission"},
    })
    return Project(ProjectRef("team-s", "admission", "uid-admission"), 1, spec)


def start(name: str, command: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))}
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen(command, env={**base, **env}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def test_only_the_projects_learners_join_and_the_training_completes_with_them(tmp_path):
    p, pki, stranger = project(), LoopbackPki(), LoopbackPki()
    superlink = f"127.0.0.1:{free_port()}"

    def learner(name: str, partition: int, admission: LearnerAdmission | None) -> subprocess.Popen:
        return start(name, [venv_script("flops-learner")], learner_env(
            p, partition, superlink=superlink, clientappio_address=f"127.0.0.1:{free_port()}",
            workdir=str(tmp_path / name), max_wait_seconds=30, admission=admission).to_env(), tmp_path)

    processes: dict[str, subprocess.Popen] = {}
    try:
        processes["aggregator"] = start("aggregator", [venv_script("flops-aggregator")], AggregatorEnv(
            config=aggregator_config(p), superlink_address=superlink, workdir=str(tmp_path / "aggregator"),
            tracking_uri="", admission=pki.aggregator()).to_env(), tmp_path)
        for i in range(LEARNERS):
            processes[f"learner-{i}"] = learner(f"learner-{i}", i, pki.learner(i))
        # Trusts the project's CA and presents learner-0's certificate (public), but signs with a key of its own.
        own = pki.learner(0)
        processes["unregistered"] = learner("unregistered", 0, own.model_copy(
            update={"supernode_key": stranger.learner(0).supernode_key}))
        # Presents a certificate another CA issued (for the key it signs with).
        processes["foreign"] = learner("foreign", 1, stranger.learner(1).model_copy(
            update={"root_cert": own.root_cert, "enroll_address": own.enroll_address}))
        # Plain HTTP to the TLS port.
        processes["insecure"] = learner("insecure", 1, None)

        assert processes["aggregator"].wait(timeout=RUN_BOUND_SECONDS) == 0, (tmp_path / "aggregator.log").read_text()[-3000:]
        for i in range(LEARNERS):
            assert processes[f"learner-{i}"].wait(timeout=120) == 0
        # Retried while the aggregator answered, never admitted; ends once the aggregator is gone: 0 if its
        # SuperNode was still trying then (as any learner whose aggregator went away), 1 if it had just failed again.
        assert processes["unregistered"].wait(timeout=120) in (0, 1)
        assert processes["foreign"].wait(timeout=120) == 1  # refused at once, and says so
    finally:
        for process in processes.values():
            stop_tree(process, timeout=10)

    result = json.loads((tmp_path / "aggregator" / "result.json").read_text())
    assert [r["num_train_learners"] for r in result["rounds"]] == [LEARNERS] * ROUNDS
    assert result["best_metrics"]["eval_accuracy"] > 0.5
    for name in ("unregistered", "foreign", "insecure"):
        assert not (tmp_path / name / "state" / "progress.json").exists(), f"{name} handled a message"
    assert (tmp_path / "learner-0" / "state" / "progress.json").exists()
    aggregator_log = (tmp_path / "aggregator.log").read_text()
    assert "admitted learners: learner-0 (node" in aggregator_log and "learner-1 (node" in aggregator_log
    assert "refused a learner certificate: not issued by the project's CA" in aggregator_log
    assert "does not admit this learner's key (refused)" in (tmp_path / "foreign.log").read_text()
    # Refused: the SuperLink knows no SuperNode with the stranger's key, and the stranger's SuperNode gives up
    # (exit 1); the plain-HTTP one never completes a request.
    assert "No SuperNode found with the given public key" in aggregator_log
    assert "Failed to activate SuperNode" in (tmp_path / "unregistered.log").read_text()
    assert "before its first message (not admitted yet?)" in (tmp_path / "unregistered.log").read_text()
    assert "Connection attempt failed" in (tmp_path / "insecure.log").read_text()


def _post(url: str) -> int:
    request = urllib.request.Request(url, data=b"", headers={"Content-Type": "application/protobuf"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_superlink_answers_only_the_fleet_api_outside_the_aggregator(tmp_path):
    outside = outside_address()
    if outside is None:
        pytest.skip("this machine has no address but loopback")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))},
           "FLWR_HOME": str(tmp_path), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    link = subprocess.Popen([sys.executable, "-m", "flops_aggregator.superlink", "--insecure", "--host", "0.0.0.0",
                             "--port", str(port), "--disable-runtime-dependency-installation"], env=env,
                            stdout=(tmp_path / "superlink.log").open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        @retry(retry=retry_if_result(lambda up: not up and link.poll() is None), wait=wait_fixed(0.2),
               stop=stop_after_delay(120))
        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        assert up(), (tmp_path / "superlink.log").read_text()
        codes = {(where, path): _post(f"http://{host}:{port}{path}")
                 for where, host in (("outside", outside), ("loopback", "127.0.0.1"))
                 for path in ("/v1/control/register-node", "/v1/runtime/get-run", "/v1/fleet/create-node")}
    finally:
        stop_tree(link, timeout=10)
    assert codes[("outside", "/v1/control/register-node")] == 403
    assert codes[("outside", "/v1/runtime/get-run")] == 403
    # Past the middleware: Flower itself answers (an empty request is its own error, never our 403).
    assert codes[("outside", "/v1/fleet/create-node")] != 403
    assert all(code != 403 for (where, _), code in codes.items() if where == "loopback"), codes

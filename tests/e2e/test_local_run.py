"""`flops run` end to end: real processes, a real MLflow server, a real FTP server (and MariaDB).

Each test runs the `flops` console script as a child process, reads its live lines (stderr) and
its final object (`-o yaml`, stdout), and afterwards asserts that no process of the run, no port
it used and no temporary file it made is left behind.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
import pytest
import yaml

from flops_operator.platforms.base import PermanentPlatformError
from flops_operator.platforms.local import mariadb
from flops_operator.platforms.local.layout import MARKER_ENV
from flops_operator.platforms.local.ports import port_is_free

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent
# Bounds for hangs only (2 shared cores may be busy): a line of output, a round.
RUN_TIMEOUT = 900
ROUND_BOUND_SECONDS = 600


def project(name: str, *, rounds: int = 2, replicas: int = 2, **spec) -> dict:
    training = {"rounds": rounds, "roundTimeoutSeconds": ROUND_BOUND_SECONDS, **spec.pop("training", {})}
    return {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject", "metadata": {"name": name},
            "spec": {"platform": "local", "task": {"name": "digits-mlp"}, "training": training,
                     "learners": {"replicas": replicas}, **spec}}


@dataclass
class Workspace:
    root: Path
    used_ports: set[int] = field(default_factory=set)

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"


@dataclass
class Run:
    code: int
    document: dict | None
    lines: list[str] = field(default_factory=list)

    @property
    def status(self) -> dict:
        assert self.document is not None, "\n".join(self.lines[-30:])
        return self.document["status"]


def marked_processes(state: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER_ENV, "").startswith(f"{state}::") and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def leader_of(state: Path, service: str) -> psutil.Process | None:
    """The process the platform started for a service (its children carry the same marker)."""
    marker = f"{state}::{service}"
    for proc in marked_processes(state):
        try:
            if proc.environ().get(MARKER_ENV) == marker and proc.pid == os.getpgid(proc.pid):
                return proc
        except (psutil.Error, OSError):
            continue
    return None


def flops_run(ws: Workspace, manifest: dict, *, keep: bool = False,
              on_line: Callable[[str, subprocess.Popen], None] | None = None, extra: list[str] = (),
              documents: list[dict] = ()) -> Run:
    """`flops run` of the manifest (with `documents`, such as Secrets, in the same file)."""
    path = ws.root / f"{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump_all([*documents, manifest]))
    command = [str(BIN / "flops"), "run", str(path), "--state-dir", str(ws.state), "-o", "yaml"]
    if keep:
        command.append("--keep")
    command += extra
    # The runner and everything it starts get a private TMPDIR: it must be empty afterwards.
    env = {**os.environ, "TMPDIR": str(ws.tmp)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    stdout: list[str] = []
    readers = [threading.Thread(target=pump, daemon=True),
               threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True)]
    for reader in readers:
        reader.start()
    seen: list[str] = []
    try:
        while (line := lines.get(timeout=RUN_TIMEOUT)) is not None:
            seen.append(line)
            if on_line is not None:
                on_line(line, proc)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for reader in readers:
            reader.join(timeout=10)
    out = "".join(stdout)
    return Run(proc.returncode, yaml.safe_load(out) if out.strip() else None, seen)


@pytest.fixture
def workspace():
    # Short and outside pytest's tmp tree: the MariaDB socket path must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="flops-e2e-"))
    ws = Workspace(root)
    ws.tmp.mkdir()
    yield ws
    try:
        assert not marked_processes(ws.state), "processes outlived flops run"
        assert list(ws.tmp.iterdir()) == [], "flops run left temporary files"
        assert not (ws.state / "tmp").exists() or list((ws.state / "tmp").iterdir()) == []
        assert not (ws.state / "credentials.json").exists(), "credentials outlived the run"
        assert all(port_is_free(p) for p in ws.used_ports), "a port is still bound"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert not root.exists()


def exposed(state: Path) -> list[str]:
    """Everything in the run's state tree that another local user could read or write: any group or other
    permission bit (the state holds MLflow's databases, artifacts, logs and credentials)."""
    paths = [state]
    for folder, dirs, files in os.walk(state):
        paths += [Path(folder, name) for name in (*dirs, *files)]
    found = []
    for path in paths:
        try:
            info = path.lstat()
        except FileNotFoundError:  # a running service removed it meanwhile
            continue
        # MariaDB binds its socket 0777 on purpose (any local user may connect); it lies inside the 0700 state
        # tree, so nobody else can reach it (connect needs search permission on every directory above it), and it
        # is removed with the server. A symlink's own bits mean nothing (what it points to is checked where it is).
        if stat.S_ISSOCK(info.st_mode) or stat.S_ISLNK(info.st_mode):
            continue
        if info.st_mode & 0o077:
            found.append(f"{stat.filemode(info.st_mode)} {path.relative_to(state)}")
    assert len(paths) > 1, f"no state at {state}"
    return found


def remember_ports(ws: Workspace, status: dict) -> None:
    for component in status.get("components", []):
        if component.get("address"):
            ws.used_ports.add(int(component["address"].rsplit(":", 1)[1]))


def assert_completed(run: Run, rounds: int) -> dict:
    assert run.code == 0, "\n".join(run.lines[-40:])
    status = run.status
    assert status["phase"] == "Completed"
    assert status["training"]["round"] == rounds and status["training"]["totalRounds"] == rounds
    assert status["training"]["progress"] == f"{rounds}/{rounds}"
    assert status["training"]["runStatus"] == "FINISHED"
    assert 0.0 < status["training"]["bestMetrics"]["eval_accuracy"] <= 1.0
    assert "eval_loss" in status["training"]["bestMetrics"]
    assert status["model"]["version"] and status["model"]["alias"] == "champion"
    assert {c["type"]: c["status"] for c in status["conditions"]}["ModelRegistered"] == "True"
    # After training only the tracking stack remained (the runner then removed it too).
    assert {c["role"] for c in status["components"]} <= {"backend-store", "artifact-store", "tracking-server"}
    return status


LOAD_MODEL = """
import sys, numpy as np, mlflow
from sklearn.datasets import load_digits
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2], dst_path=sys.argv[3])
digits = load_digits()
x = (digits.data / 16.0).astype(np.float32)
scores = np.asarray(model.predict(x))
assert scores.shape == (len(x), 10), scores.shape
print("accuracy", float((scores.argmax(axis=1) == digits.target).mean()))
"""


def test_sqlite_run_completes_and_its_model_loads_through_the_ftp_store(workspace):
    loaded: dict[str, str] = {}
    private: dict[str, list[str]] = {}

    def on_line(line: str, proc: subprocess.Popen) -> None:
        # --keep: once Completed the tracking server stays up; load the model, then Ctrl-C.
        if line.startswith("Keeping the tracking server up at"):
            # All of it there: MLflow's database and auth database, the FTP root, logs, credentials.
            private["kept"] = exposed(workspace.state)
            url = line.split(" at ", 1)[1].split(" ")[0].split("/#")[0]
            model_uri = "models:/digits-e2e/1"
            dst = workspace.root / "model"
            dst.mkdir()
            # The tracking server takes logins: the read-only one, from the run's credentials file.
            password = json.loads((workspace.state / "credentials.json").read_text())["mlflow-reader-password"]
            done = subprocess.run([sys.executable, "-c", LOAD_MODEL, url, model_uri, str(dst)], capture_output=True,
                                  text=True, timeout=300, env={**os.environ, "TMPDIR": str(workspace.root / "model"),
                                                               "MLFLOW_TRACKING_USERNAME": "flops-reader",
                                                               "MLFLOW_TRACKING_PASSWORD": password})
            loaded["out"] = done.stdout + done.stderr
            loaded["code"] = str(done.returncode)
            proc.send_signal(signal.SIGINT)

    manifest = project("digits-e2e", registry={"modelName": "digits-e2e"})
    run = flops_run(workspace, manifest, keep=True, on_line=on_line)
    status = assert_completed(run, rounds=2)
    remember_ports(workspace, status)
    assert loaded.get("code") == "0", loaded.get("out")
    accuracy = float(loaded["out"].split("accuracy", 1)[1].split()[0])
    assert accuracy > 0.5
    assert status["model"] == {**status["model"], "name": "digits-e2e", "version": "1", "uri": "models:/digits-e2e/1"}
    assert status["mlflow"]["trackingUri"].startswith("http://127.0.0.1:")
    # The model's files went through FTP into the artifact store's root.
    stored = list((workspace.state / "services" / "artifact-store" / "ftp-root" / "artifacts").rglob("MLmodel"))
    assert stored, "no model in the FTP artifact store"
    assert (workspace.state / "services" / "tracking-server" / "mlflow.db").is_file()
    assert private == {"kept": []}, "readable by other users while kept up"
    assert exposed(workspace.state) == [], "readable by other users after the run"
    shutil.rmtree(workspace.root / "model")


def require_mariadb() -> None:
    try:
        mariadb.find_binary("mariadbd")
        mariadb.find_binary("mariadb-install-db")
    except PermanentPlatformError as exc:
        if os.environ.get("FLOPS_REQUIRE_MARIADB"):
            pytest.fail(f"FLOPS_REQUIRE_MARIADB is set but: {exc}")
        pytest.skip(str(exc))


def test_mariadb_backend_run_completes(workspace):
    require_mariadb()
    private: dict[str, list[str]] = {}

    def on_line(line: str, proc: subprocess.Popen) -> None:
        # --keep: the MariaDB server is up (its datadir, pid file and socket in use); walked, then Ctrl-C.
        if line.startswith("Keeping the tracking server up at"):
            private["kept"] = exposed(workspace.state)
            proc.send_signal(signal.SIGINT)

    manifest = project("digits-mariadb-e2e", tracking={"backendStore": {"type": "mysql"}})
    run = flops_run(workspace, manifest, keep=True, on_line=on_line)
    status = assert_completed(run, rounds=2)
    remember_ports(workspace, status)
    assert {c["name"] for c in status["components"]} == {"backend-store", "artifact-store", "tracking-server"}
    assert (workspace.state / "services" / "backend-store" / "data" / "mlflow").is_dir()
    # The init SQL held the password: gone with the server.
    assert not (workspace.state / "services" / "backend-store" / "init.sql").exists()
    assert private == {"kept": []}, "readable by other users while kept up"
    assert exposed(workspace.state) == [], "readable by other users after the run"


def test_a_learner_killed_mid_run_does_not_stop_training(workspace):
    killed: list[int] = []
    rounds = 3
    done = threading.Event()
    log = workspace.state / "logs" / "learner-1.log"

    def kill_after_first_reply() -> None:
        # Mid-run, decided by the learner's own log rather than by the status lines: the first reply it
        # sent ("Sent successfully", Flower's SuperNode) is in round 1 of 3, however fast rounds are.
        while not done.wait(0.05):
            try:
                replied = "Sent successfully" in log.read_text(errors="replace")
            except FileNotFoundError:
                continue
            if replied and (learner := leader_of(workspace.state, "learner-1")) is not None:
                learner.kill()
                killed.append(learner.pid)
                return

    watcher = threading.Thread(target=kill_after_first_reply, daemon=True)
    watcher.start()
    manifest = project("digits-kill-e2e", rounds=rounds, training={
        "minTrainLearners": 1, "minEvaluateLearners": 1, "minAvailableLearners": 1,
        "roundTimeoutSeconds": 45})  # a round waits this long for the killed learner
    try:
        run = flops_run(workspace, manifest)
    finally:
        done.set()
        watcher.join(timeout=10)
    assert killed, "learner-1 never replied to a message while running"
    assert any("learner-1 failed" in line for line in run.lines), run.lines[-20:]
    status = assert_completed(run, rounds=rounds)
    remember_ports(workspace, status)


def test_a_failing_aggregator_fails_the_project_and_stops_everything(workspace):
    manifest = project("digits-fail-e2e")
    manifest["spec"]["task"] = {"module": "flops_e2e_no_such_task", "image": "example.org/no/such:1"}
    run = flops_run(workspace, manifest)
    assert run.code == 1, "\n".join(run.lines[-30:])
    status = run.status
    remember_ports(workspace, status)
    assert status["phase"] == "Failed"
    assert status["message"].startswith("aggregator failed: exit code 2")
    assert "flops_e2e_no_such_task" in status["message"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["TrainingComplete"]["reason"] == "Failed" and conditions["Stalled"]["status"] == "True"
    assert not any(c["role"] in ("aggregator", "learner") for c in status["components"])


def test_an_invalid_manifest_exits_2_naming_the_field_and_starts_nothing(workspace):
    manifest = project("digits-invalid-e2e", training={"minTrainLearners": 5})
    run = flops_run(workspace, manifest)
    assert run.code == 2 and run.document is None
    assert any("spec.training.minTrainLearners" in line for line in run.lines), run.lines
    assert not workspace.state.exists()

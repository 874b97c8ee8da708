"""`flops run` end to end with an eye on its secrets: the tracking server takes logins (MLflow basic auth),
and every generated secret appears in exactly the places listed here, nowhere else.

One run (SQLite, FTP, serving on, --keep, the runner's own logs at debug level). While it trains, every
process of the run is looked at (arguments, environment); while it is kept up, the tracking server is asked
as nobody, as the read-only user and as the aggregator, the run's params and tags are read and every file of
the state directory is searched; at the end the final status and every line the runner printed are.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from flops_runtime import pki
from flops_operator.platforms.local.layout import MARKER_ENV

from .test_local_run import Workspace, assert_completed, flops_run, marked_processes, project, remember_ports
from .test_local_run import workspace  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Where each generated secret may be, and only there: the 0600 credentials file (always) and the environment
# of the services that use it (their child processes inherit it). Nowhere else: not in any process's
# arguments, another service's environment, the status, the runner's output (debug logs included), MLflow
# params or tags, or any other file. The Flower CA's key is in no service's environment at all (each gets
# certificates issued from it), and each Flower key in its own service's only.
ALLOWED_ENV = {
    "ftp-password": {"artifact-store", "tracking-server"},
    "mlflow-admin-password": {"tracking-server"},
    "mlflow-aggregator-password": {"tracking-server", "aggregator"},
    "mlflow-reader-password": {"tracking-server", "model-server"},
    "mlflow-flask-secret-key": {"tracking-server"},
    "flower-ca": set(),
    "flower-superlink-key": {"aggregator"},
    "flower-learner-key-0": {"learner-0"},
    "flower-learner-key-1": {"learner-1"},
}
ALLOWED_FILES = {"credentials.json"}
LEARNERS = 2
FLOWER_KEYS = [name for name in ALLOWED_ENV if name.startswith("flower-")]


def pem_forms(values: dict[str, str]) -> dict[str, str]:
    """The Flower secrets as PEM lines too (a process may hold a key decoded): each line of the key's body."""
    return {f"{name} (PEM line {n})": line for name, value in values.items() if name.split(" ")[0] in FLOWER_KEYS
            for n, line in enumerate(pki.pem(value).splitlines()) if len(line) > 16 and not line.startswith("-----")}


def base(name: str) -> str:
    return name.split(" (PEM")[0]


def _service(proc: psutil.Process, state: Path) -> str:
    return proc.environ().get(MARKER_ENV, "").removeprefix(f"{state}::")


class Seen:
    """Where each secret was found in the run's processes."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.services: set[str] = set()
        self.in_env: dict[str, set[str]] = {}
        self.in_argv: list[tuple[str, str]] = []

    def look(self, secrets: dict[str, str]) -> None:
        """`secrets` by name (a PEM line of a Flower secret under its name and "(PEM line n)")."""
        for proc in marked_processes(self.state):
            try:
                service, argv, env = _service(proc, self.state), proc.cmdline(), proc.environ()
            except (psutil.Error, OSError):
                continue
            self.services.add(service.split("-")[0] if service.startswith("learner-") else service)
            for name, value in secrets.items():
                if any(value in part for part in argv):
                    self.in_argv.append((name, service))
                if any(value in v for v in env.values()):
                    self.in_env.setdefault(base(name), set()).add(service)


def _get(url: str, login: tuple[str, str] | None = None, body: dict | None = None) -> tuple[int, dict | None]:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    if login is not None:
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def run_without(run, role: str):
    document = json.loads(json.dumps(run.document))
    document["status"]["components"] = [c for c in document["status"]["components"] if c["role"] != role]
    return type(run)(run.code, document, run.lines)


def test_the_tracking_server_takes_logins_and_each_secret_stays_in_its_places(workspace: Workspace):
    credentials = workspace.state / "credentials.json"
    seen = Seen(workspace.state)
    checks: dict[str, object] = {}
    # Every value the credentials file held while the run went on: the Flower keys live only as long as their services.
    history: dict[str, str] = {}

    def on_line(line: str, proc: subprocess.Popen) -> None:
        if credentials.exists() and not line.startswith("Keeping"):
            values = json.loads(credentials.read_text())
            history.update({f"{name} ({value[-12:]})" if name in history and history[name] != value else name: value
                            for name, value in values.items()})
            seen.look(values | pem_forms(values))
        if not line.startswith("Keeping the tracking server up at"):
            return
        try:
            secrets = json.loads(credentials.read_text())
            checks["secrets"] = secrets
            seen.look(secrets | pem_forms(secrets))
            base = line.split(" at ", 1)[1].split(" ")[0].split("/#")[0] + "/api/2.0/mlflow"
            reader = ("flops-reader", secrets["mlflow-reader-password"])
            aggregator = ("flops-aggregator", secrets["mlflow-aggregator-password"])
            experiment = "/experiments/get-by-name?experiment_name=default/digits-secrets-e2e"
            checks["anonymous"] = _get(base + experiment)[0]
            checks["wrong password"] = _get(base + experiment, ("flops-reader", "not-the-password-at-all"))[0]
            code, found = _get(base + experiment, reader)
            checks["reader reads"] = code
            experiment_id = found["experiment"]["experiment_id"]
            checks["reader writes"] = _get(base + "/runs/create", reader, {"experiment_id": experiment_id})[0]
            checks["aggregator deletes"] = _get(base + "/experiments/delete", aggregator,
                                                {"experiment_id": experiment_id})[0]
            _, runs = _get(base + "/runs/search", reader, {"experiment_ids": [experiment_id], "max_results": 5})
            checks["runs"] = runs["runs"]
            checks["files"] = sorted(
                str(path.relative_to(workspace.state)) for path in workspace.state.rglob("*") if path.is_file()
                and any(value.encode() in path.read_bytes() for value in [*secrets.values(), *history.values()]))
        finally:
            proc.send_signal(signal.SIGINT)

    manifest = project("digits-secrets-e2e", replicas=LEARNERS, serving={"enabled": True})
    run = flops_run(workspace, manifest, keep=True, on_line=on_line, extra=["--log-level", "debug"])
    status = run.status
    remember_ports(workspace, status)
    # The model server stays with the stack after training; the rest is what every completed run shows.
    assert_completed(run_without(run, "model-server"), rounds=2)
    assert "secrets" in checks, "the run never kept its tracking server up"
    secrets: dict[str, str] = checks["secrets"]  # type: ignore[assignment]
    assert {name for name in history if " " not in name} == set(ALLOWED_ENV)
    # Training over: the Flower keys and the CA were deleted with the training's services.
    assert set(secrets) == set(ALLOWED_ENV) - set(FLOWER_KEYS)

    # Logins: nobody gets in, the read-only user reads and cannot write, the aggregator cannot delete.
    assert checks["anonymous"] == 401 and checks["wrong password"] == 401
    assert checks["reader reads"] == 200 and checks["reader writes"] == 403
    assert checks["aggregator deletes"] == 403
    (mlflow_run,) = checks["runs"]  # type: ignore[misc]
    assert mlflow_run["info"]["user_id"] == "flops-aggregator"  # the aggregator logged as its own user

    # Every service was seen (the model server too, which read the model with the read-only login).
    assert {"artifact-store", "tracking-server", "aggregator", "learner", "model-server"} <= seen.services
    assert seen.in_argv == []
    for name, services in seen.in_env.items():
        assert services <= ALLOWED_ENV[name], f"{name} in the environment of {services - ALLOWED_ENV[name]}"
    assert {name: seen.in_env.get(name, set()) for name in FLOWER_KEYS} == {name: ALLOWED_ENV[name]
                                                                            for name in FLOWER_KEYS}
    assert seen.in_env["mlflow-aggregator-password"] >= {"aggregator"}
    assert seen.in_env["mlflow-reader-password"] >= {"model-server"}
    assert set(checks["files"]) <= ALLOWED_FILES, checks["files"]  # type: ignore[arg-type]

    data = mlflow_run["data"]
    logged = json.dumps([data.get("params", []), data.get("tags", [])])
    printed = "\n".join(run.lines) + json.dumps(run.document)
    assert any(" DEBUG " in line for line in run.lines), "no debug log lines to look at"
    for name, value in (history | pem_forms(history)).items():
        assert value not in logged, f"{name} in the MLflow run's params or tags"
        assert value not in printed, f"{name} in what flops run printed or its final status"

"""What the benchmarks share: a local `mlflow server`, and one training through the real entrypoints on loopback
(the aggregator and each learner a separate process, their environments rendered by the operator's plan)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from flops_runtime.proc import stop_tree
from flops_aggregator.contract import AggregatorEnv
from flops_operator.models.project import Project
from flops_operator.plan.desired import aggregator_config, experiment_name, learner_env, model_name
from flops_tracking.contract import AGGREGATOR_USER, ENV_CLIENT_PASSWORD, ENV_CLIENT_USERNAME, TrackingEnv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.projects import LoopbackPki  # noqa: E402  (the admission values the plan renders, on loopback)

BIN = Path(sys.executable).parent

# A benchmark stopped with SIGTERM unwinds like one stopped with Ctrl-C: its `finally` blocks stop the servers and
# trainings it started (they run in sessions of their own, so nothing else would).
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))}


def start_mlflow(root: Path, project: Project | None = None) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """A tracking server on loopback; its URI and the environment that logs the aggregator in. With a project:
    the shipped entrypoint (flops-tracking-server: basic-auth, the project's users and grants, as the plan
    renders it); without: a bare `mlflow server`, no logins."""
    port = free_port()
    log = (root / "mlflow.log").open("wb")
    args = ["--host", "127.0.0.1", "--port", str(port), "--serve-artifacts", "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    client: dict[str, str] = {}
    if project is None:
        command = [str(BIN / "mlflow"), "server", *args, "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                   "--artifacts-destination", str(root / "artifacts")]
    else:
        passwords = {role: secrets.token_urlsafe(16) for role in ("admin", "aggregator", "reader", "key")}
        (root / "tracking").mkdir()
        command = [str(BIN / "flops-tracking-server"), *args]
        env.update(TrackingEnv(workdir=str(root / "tracking"), experiment=experiment_name(project),
                               model=model_name(project), admin_password=passwords["admin"],
                               aggregator_password=passwords["aggregator"], reader_password=passwords["reader"],
                               secret_key=passwords["key"]).to_env(),
                   MLFLOW_BACKEND_STORE_URI=f"sqlite:///{root / 'mlflow.db'}",
                   MLFLOW_ARTIFACTS_DESTINATION=str(root / "artifacts"))
        client = {ENV_CLIENT_USERNAME: AGGREGATOR_USER, ENV_CLIENT_PASSWORD: passwords["aggregator"]}
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    uri = f"http://127.0.0.1:{port}"

    @retry(retry=retry_if_exception_type(OSError), wait=wait_fixed(0.5), stop=stop_after_delay(120), reraise=True)
    def healthy() -> None:
        if server.poll() is not None:
            raise RuntimeError(f"the tracking server exited; its log: {root / 'mlflow.log'}")
        urllib.request.urlopen(f"{uri}/health", timeout=2).close()

    healthy()
    return server, uri, client


def learner_jobs(project: Project, root: Path, superlink: str,
                 pki: LoopbackPki | None) -> list[tuple[list[str], dict[str, str]]]:
    return [([str(BIN / "flops-learner")], learner_env(
        project, i, superlink=superlink, clientappio_address=f"127.0.0.1:{free_port()}",
        workdir=str(root / f"learner-{i}"), max_wait_seconds=120,
        admission=pki.learner(i) if pki else None).to_env())
        for i in range(project.spec.learners.replicas)]


def federation(root: Path, project: Project, tracking_uri: str, tracking_login: dict[str, str] | None = None,
               secure: bool = True) -> dict:
    """One training; returns the aggregator's wall time and its result file. secure: Flower over TLS with admitted
    learners, as the plan renders it; False: --insecure."""
    superlink = f"127.0.0.1:{free_port()}"
    pki = LoopbackPki() if secure else None
    jobs = [([str(BIN / "flops-aggregator")], AggregatorEnv(
        config=aggregator_config(project), superlink_address=superlink, workdir=str(root / "aggregator"),
        tracking_uri=tracking_uri, admission=pki.aggregator() if pki else None).to_env() | (tracking_login or {}))]
    jobs += learner_jobs(project, root, superlink, pki)
    started = time.monotonic()
    procs = []
    try:
        for i, (command, extra) in enumerate(jobs):
            log = (root / f"process-{i}.log").open("wb")
            procs.append(subprocess.Popen(command, env={**clean_env(), **extra}, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        aggregator_code = procs[0].wait(timeout=3600)
        aggregator_wall = time.monotonic() - started
        codes = [aggregator_code] + [p.wait(timeout=300) for p in procs[1:]]
    finally:
        for proc in procs:
            stop_tree(proc, timeout=10)
    if any(codes):
        raise SystemExit(f"a process failed ({codes}); logs in {root}")
    return {"wall": aggregator_wall, "result": json.loads((root / "aggregator" / "result.json").read_text())}

"""What the benchmarks share: a local `mlflow server`, and one training through the real entrypoints on loopback
(the aggregator and each learner a separate process, their environments rendered by the operator's plan)."""

from __future__ import annotations

import json
import os
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
from flops_operator.plan.desired import aggregator_config, learner_env

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


def start_mlflow(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (root / "mlflow.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--serve-artifacts", "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"

    @retry(retry=retry_if_exception_type(OSError), wait=wait_fixed(0.5), stop=stop_after_delay(120), reraise=True)
    def healthy() -> None:
        if server.poll() is not None:
            raise RuntimeError("mlflow server exited")
        urllib.request.urlopen(f"{uri}/health", timeout=2).close()

    healthy()
    return server, uri


def learner_jobs(project: Project, root: Path, superlink: str) -> list[tuple[list[str], dict[str, str]]]:
    return [([str(BIN / "flops-learner")], learner_env(
        project, i, superlink=superlink, clientappio_address=f"127.0.0.1:{free_port()}",
        workdir=str(root / f"learner-{i}"), max_wait_seconds=120).to_env())
        for i in range(project.spec.learners.replicas)]


def federation(root: Path, project: Project, tracking_uri: str) -> dict:
    """One training; returns the aggregator's wall time and its result file."""
    superlink = f"127.0.0.1:{free_port()}"
    jobs = [([str(BIN / "flops-aggregator")], AggregatorEnv(
        config=aggregator_config(project), superlink_address=superlink, workdir=str(root / "aggregator"),
        tracking_uri=tracking_uri).to_env())]
    jobs += learner_jobs(project, root, superlink)
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

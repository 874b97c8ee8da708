"""What the MLflow contract costs: digits-mlp, 3 learners x 5 rounds, run twice in one go through the real
entrypoints on loopback: bare (no MLflow) and with the MLflow contract against a local `mlflow server`
(SQLite backend, local artifacts). Prints wall time per round, final accuracy and the overhead ratio.

    .venv/bin/python bench/mlflow_overhead.py

Two local epochs per round (default learning rate 0.05).
Targets: final accuracy >= 0.90, overhead ratio (MLflow wall / bare wall) <= 1.10. The machine's other load
moves single runs by +-10 %: compare figures from the same invocation only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from flops_runtime.proc import stop_tree
from flops_operator.models.project import Project, ProjectRef
from flops_operator.models.spec import FLOpsProjectSpec
from flops_aggregator.contract import AggregatorEnv
from flops_learner.contract import LearnerEnv
from flops_operator.plan.desired import aggregator_config, learner_task

LEARNERS, ROUNDS = 3, 5
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project() -> Project:
    spec = FLOpsProjectSpec.model_validate({
        "task": {"name": "digits-mlp"},
        "training": {"rounds": ROUNDS, "roundTimeoutSeconds": 120, "localEpochs": 2},
        "learners": {"replicas": LEARNERS},
        "registry": {"modelName": "digits-bench"},
    })
    return Project(ProjectRef("bench", "digits", "bench-uid"), 1, spec)


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


def federation(root: Path, tracking_uri: str) -> dict:
    """One training: the aggregator and the learners as separate processes; returns its figures."""
    p = project()
    superlink = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))}
    jobs = [([str(BIN / "flops-aggregator")], AggregatorEnv(
        config=aggregator_config(p), superlink_address=superlink, workdir=str(root / "aggregator"),
        tracking_uri=tracking_uri).to_env())]
    for i in range(LEARNERS):
        jobs.append(([str(BIN / "flops-learner")], LearnerEnv(
            task=learner_task(p), superlink=superlink, partition_id=i, num_partitions=LEARNERS,
            clientappio_address=f"127.0.0.1:{free_port()}", workdir=str(root / f"learner-{i}"),
            max_wait_seconds=120).to_env()))
    started = time.monotonic()
    procs = []
    try:
        for i, (command, extra) in enumerate(jobs):
            log = (root / f"process-{i}.log").open("wb")
            procs.append(subprocess.Popen(command, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        aggregator_code = procs[0].wait(timeout=1800)
        aggregator_wall = time.monotonic() - started
        codes = [aggregator_code] + [p.wait(timeout=300) for p in procs[1:]]
    finally:
        for proc in procs:
            stop_tree(proc, timeout=10)
    if any(codes):
        raise SystemExit(f"a process failed ({codes}); logs in {root}")
    result = json.loads((root / "aggregator" / "result.json").read_text())
    durations = [r["round_duration_seconds"] for r in result["rounds"]]
    return {"wall": aggregator_wall, "rounds": durations, "accuracy": result["rounds"][-1]["eval_accuracy"],
            "best": result["best_metrics"]["eval_accuracy"], "serverapp": result["wall_seconds"]}


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2,
                        help="pairs of runs, in ABBA order so the machine's drifting load cancels (default 2)")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"bare": [], "mlflow": []}
    with tempfile.TemporaryDirectory(prefix="flops-bench-") as tmp:
        root = Path(tmp)
        server, uri = start_mlflow(root)
        try:
            for i in range(args.repeats):
                order = ("bare", "mlflow") if i % 2 == 0 else ("mlflow", "bare")
                for mode in order:
                    workdir = root / f"{mode}-{i}"
                    workdir.mkdir()
                    runs[mode].append(federation(workdir, uri if mode == "mlflow" else ""))
        finally:
            stop_tree(server, timeout=10)
    print(f"digits-mlp, {LEARNERS} learners x {ROUNDS} rounds, FedAvg, 2 local epochs, real entrypoints on loopback;"
          f" {args.repeats} run(s) each, ABBA order")
    print(f"{'':8} {'wall s':>8} {'ServerApp s':>12} {'s/round':>8}  {'per-round s':41} final acc")
    for mode, figures in runs.items():
        for f in figures:
            per_round = " ".join(f"{d:5.1f}" for d in f["rounds"])
            print(f"{mode:8} {f['wall']:8.1f} {f['serverapp']:12.1f} {f['wall'] / ROUNDS:8.1f}  {per_round:41} "
                  f"{f['accuracy']:9.3f}")
    wall = {mode: mean([f["wall"] for f in figures]) for mode, figures in runs.items()}
    rounds = {mode: mean([sum(f["rounds"]) for f in figures]) for mode, figures in runs.items()}
    print(f"mean wall per round: bare {wall['bare'] / ROUNDS:.1f} s, mlflow {wall['mlflow'] / ROUNDS:.1f} s")
    print(f"overhead ratio (whole aggregator run, incl. model logging + registration): "
          f"{wall['mlflow'] / wall['bare']:.3f} (target <= 1.10)")
    print(f"overhead ratio (sum of round durations only): {rounds['mlflow'] / rounds['bare']:.3f}")
    print(f"final accuracy with MLflow: {mean([f['accuracy'] for f in runs['mlflow']]):.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()

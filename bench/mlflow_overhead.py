"""What the MLflow contract costs: digits-mlp, 3 learners x 5 rounds, run twice in one go through the real
entrypoints on loopback: bare (no MLflow) and with the MLflow contract against the shipped tracking server
(flops-tracking-server: MLflow with basic-auth, the aggregator logged in as its own user; SQLite backend, local
artifacts). Prints wall time per round, final accuracy and the overhead ratio.

    .venv/bin/python bench/mlflow_overhead.py [--repeats 8] [--round-mode fast|standard] [--rounds 5]
        [--learners 3]

Two local epochs per round (default learning rate 0.05); roundMode fast (the spec's default) unless told.
"wall s" is the aggregator's whole run; "ServerApp s" its training, from loading the task (which overlaps MLflow's
start) to the end.
Targets: final accuracy >= 0.90, overhead ratio (MLflow wall / bare wall, the means of all runs) <= 1.10.
The machine's other load moves single runs by +-10 % (bare walls 33-39 s in one invocation), about what MLflow adds
(1-3 s of about 37): with 4 pairs, one invocation's ratio ranged 0.98-1.14 over ten invocations of the same design,
so the default is 8 pairs (10-11 min). Each pair's own ratio (its two runs are adjacent in time) is printed
too, with their median, to show that scatter. Compare figures from the same invocation only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from loopback import federation, start_mlflow
from flops_runtime.proc import stop_tree
from flops_operator.models.project import Project, ProjectRef
from flops_operator.models.spec import FLOpsProjectSpec

LEARNERS, ROUNDS = 3, 5


def project(round_mode: str, rounds: int = ROUNDS, learners: int = LEARNERS) -> Project:
    spec = FLOpsProjectSpec.model_validate({
        "task": {"name": "digits-mlp"},
        "training": {"rounds": rounds, "roundTimeoutSeconds": 120, "localEpochs": 2, "roundMode": round_mode},
        "learners": {"replicas": learners},
        "registry": {"modelName": "digits-bench"},
    })
    return Project(ProjectRef("bench", "digits", "bench-uid"), 1, spec)


def summary(run: dict) -> dict:
    result = run["result"]
    return {"wall": run["wall"], "rounds": [r["round_duration_seconds"] for r in result["rounds"]],
            "accuracy": result["rounds"][-1]["eval_accuracy"], "best": result["best_metrics"]["eval_accuracy"],
            "serverapp": result["wall_seconds"], "mlflow_seconds": result.get("mlflow_seconds", {})}


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=8,
                        help="pairs of runs, in ABBA order so the machine's drifting load cancels "
                             "(default 8: single runs move by +-10 %%)")
    parser.add_argument("--round-mode", choices=("fast", "standard"), default="fast",
                        help="spec.training.roundMode of both runs (default fast, the spec's default)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds per run (default {ROUNDS})")
    parser.add_argument("--learners", type=int, default=LEARNERS, help=f"learners (default {LEARNERS})")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"bare": [], "mlflow": []}
    with tempfile.TemporaryDirectory(prefix="flops-bench-") as tmp:
        root = Path(tmp)
        # The tracking server as shipped: basic-auth, the aggregator logged in as its own user.
        server, uri, login = start_mlflow(root, project(args.round_mode, args.rounds, args.learners))
        try:
            for i in range(args.repeats):
                order = ("bare", "mlflow") if i % 2 == 0 else ("mlflow", "bare")
                for mode in order:
                    workdir = root / f"{mode}-{i}"
                    workdir.mkdir()
                    runs[mode].append(summary(federation(workdir, project(args.round_mode, args.rounds, args.learners),
                                                         uri if mode == "mlflow" else "",
                                                         login if mode == "mlflow" else None)))
        finally:
            stop_tree(server, timeout=10)
    print(f"digits-mlp, {args.learners} learners x {args.rounds} rounds, FedAvg, 2 local epochs, "
          f"roundMode {args.round_mode}, "
          f"real entrypoints on loopback; {args.repeats} run(s) each, ABBA order; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'':8} {'wall s':>8} {'ServerApp s':>12} {'s/round':>8}  {'per-round s':41} final acc")
    for mode, figures in runs.items():
        for f in figures:
            per_round = " ".join(f"{d:5.1f}" for d in f["rounds"])
            print(f"{mode:8} {f['wall']:8.1f} {f['serverapp']:12.1f} {f['wall'] / args.rounds:8.1f}  {per_round:41} "
                  f"{f['accuracy']:9.3f}")
    wall = {mode: mean([f["wall"] for f in figures]) for mode, figures in runs.items()}
    rounds = {mode: mean([sum(f["rounds"]) for f in figures]) for mode, figures in runs.items()}
    print(f"mean wall per round: bare {wall['bare'] / args.rounds:.1f} s, "
          f"mlflow {wall['mlflow'] / args.rounds:.1f} s")
    print(f"overhead ratio (whole aggregator run, incl. model logging + registration): "
          f"{wall['mlflow'] / wall['bare']:.3f} (target <= 1.10)")
    print(f"overhead ratio (sum of round durations only): {rounds['mlflow'] / rounds['bare']:.3f}")
    pairs = [m["wall"] / b["wall"] for b, m in zip(runs["bare"], runs["mlflow"])]
    print(f"whole-run ratio of each pair (adjacent runs): {' '.join(f'{r:.3f}' for r in pairs)}; "
          f"median {statistics.median(pairs):.3f}")
    phases = {}
    for f in runs["mlflow"]:
        for name, seconds in f["mlflow_seconds"].items():
            phases.setdefault(name, []).append(seconds)
    print("MLflow's phases, mean s (log_ahead runs in the background during the final evaluate; wait_ahead is what "
          "the end still waited for it; the others are on the ServerApp's path): "
          + ", ".join(f"{name} {mean(values):.2f}" for name, values in phases.items()))
    print(f"final accuracy with MLflow: {mean([f['accuracy'] for f in runs['mlflow']]):.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()

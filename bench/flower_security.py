"""What Flower's TLS and SuperNode authentication cost per round: digits-mlp, 3 learners x 10 rounds through the
real entrypoints on loopback, bare mode (no MLflow, so only Flower differs), run in pairs in ABBA order in one
invocation: `insecure` (--insecure everywhere) and `secure` (what the plan renders: the SuperLink serves TLS with
a certificate from the project's CA, only the learners' registered keys are admitted, every SuperNode request is
signed; the Control and Runtime APIs answer loopback only).

    .venv/bin/python bench/flower_security.py [--repeats 4] [--rounds 10] [--learners 3]

Prints per-round wall times, the ratio of the mean round (target <= 1.05), the ratio of whole runs (start-up
included: the certificate is issued and the learners' keys registered before the first round) and the final
accuracy. The machine's other load moves single runs: compare figures from the same invocation only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from loopback import federation
from flops_operator.models.project import Project, ProjectRef
from flops_operator.models.spec import FLOpsProjectSpec

LEARNERS, ROUNDS = 3, 10


def project(rounds: int = ROUNDS, learners: int = LEARNERS) -> Project:
    spec = FLOpsProjectSpec.model_validate({
        "task": {"name": "digits-mlp"},
        "training": {"rounds": rounds, "roundTimeoutSeconds": 120, "localEpochs": 2},
        "learners": {"replicas": learners},
        "registry": {"modelName": "digits-bench"},
    })
    return Project(ProjectRef("bench", "digits", "bench-uid"), 1, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=4, help="pairs of runs, in ABBA order (default 4)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds per run (default {ROUNDS})")
    parser.add_argument("--learners", type=int, default=LEARNERS, help=f"learners (default {LEARNERS})")
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"insecure": [], "secure": []}
    with tempfile.TemporaryDirectory(prefix="flops-bench-") as tmp:
        for i in range(args.repeats):
            for mode in ("insecure", "secure") if i % 2 == 0 else ("secure", "insecure"):
                workdir = Path(tmp) / f"{mode}-{i}"
                workdir.mkdir()
                run = federation(workdir, project(args.rounds, args.learners), "", secure=mode == "secure")
                result = run["result"]
                runs[mode].append({"wall": run["wall"],
                                   "rounds": [r["round_duration_seconds"] for r in result["rounds"]],
                                   "accuracy": result["rounds"][-1]["eval_accuracy"]})
    print(f"digits-mlp, {args.learners} learners x {args.rounds} rounds, FedAvg, 2 local epochs, roundMode fast, "
          f"bare mode, "
          f"real entrypoints on loopback; {args.repeats} run(s) each, ABBA order; load average at start "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'':9} {'wall s':>7} {'mean round s':>13} {'median s':>9}  final acc")
    for mode, figures in runs.items():
        for f in figures:
            print(f"{mode:9} {f['wall']:7.1f} {statistics.mean(f['rounds']):13.3f} "
                  f"{statistics.median(f['rounds']):9.3f}  {f['accuracy']:.3f}")
    per_round = {mode: statistics.mean([d for f in figures for d in f["rounds"]]) for mode, figures in runs.items()}
    median = {mode: statistics.median([d for f in figures for d in f["rounds"]]) for mode, figures in runs.items()}
    wall = {mode: statistics.mean([f["wall"] for f in figures]) for mode, figures in runs.items()}
    print(f"mean round: insecure {per_round['insecure']:.3f} s, secure {per_round['secure']:.3f} s; "
          f"ratio {per_round['secure'] / per_round['insecure']:.3f} (target <= 1.05)")
    print(f"median round ratio {median['secure'] / median['insecure']:.3f}; "
          f"whole-run ratio (start-up included) {wall['secure'] / wall['insecure']:.3f}")
    print("final accuracy: " + ", ".join(
        f"{mode} {statistics.mean([f['accuracy'] for f in figures]):.3f}" for mode, figures in runs.items()))


if __name__ == "__main__":
    main()

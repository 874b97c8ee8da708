"""Wall time of the README demo (`flops run manifests/examples/digits-local.yaml`), split into phases.

Runs the demo through the same runner `flops run` uses and timestamps what its status shows:

    stack start-up   start -> every tracking-stack service answers its readiness probe
    training start   stack ready -> the aggregator's SuperLink answers (learners are started then)
    training         SuperLink up -> the MLflow run reports the last round
    model logging    last round -> aggregator exited 0 (best model logged, registered, aliased)
    teardown         Completed -> every process stopped

Status is read every 0.5 s, so each boundary is known to about half a second.
Usage: python bench/demo_timing.py [MANIFEST] [--rounds N] [--learners N]   (a temporary state directory, removed
after a Completed run; --rounds, --learners: instead of the manifest's)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from flops_operator.adapters.local_cli import load_manifest
from flops_operator.adapters.local_runner import LocalRunner
from flops_operator.models import FLOpsProjectStatus, Phase, parse_project
from flops_operator.reconcile import ReconcileResult

DEMO = Path(__file__).resolve().parents[1] / "manifests" / "examples" / "digits-local.yaml"
STACK = ("backend-store", "artifact-store", "tracking-server")


class Clock:
    """A runner view that notes when each boundary is first seen."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.marks: dict[str, float] = {}

    def _mark(self, name: str) -> None:
        if name not in self.marks:
            self.marks[name] = time.monotonic() - self.start
            print(f"  {self.marks[name]:7.1f}s  {name}", flush=True)

    def update(self, result: ReconcileResult) -> None:
        status = result.status
        states = {c.name: c.state for c in status.components}
        stack = [n for n in states if n in STACK]
        if stack and all(states[n] == "running" for n in stack) and "tracking-server" in stack:
            self._mark("stack ready")
        if states.get("aggregator") == "running":
            self._mark("superlink up")
        if status.training.total_rounds and status.training.round >= status.training.total_rounds:
            self._mark("last round")
        if status.phase in (Phase.Completed, Phase.Failed):
            self._mark(status.phase.value.lower())

    def note(self, text: str) -> None:
        pass

    def keeping(self, status: FLOpsProjectStatus) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", nargs="?", type=Path, default=DEMO)
    parser.add_argument("--rounds", type=int, default=None, help="training rounds (default: the manifest's)")
    parser.add_argument("--learners", type=int, default=None, help="learners (default: the manifest's)")
    args = parser.parse_args()
    manifest_path = args.manifest
    manifest, project = load_manifest(manifest_path)
    if args.rounds is not None:
        manifest["spec"]["training"]["rounds"] = args.rounds
    if args.learners is not None:
        manifest["spec"]["learners"]["replicas"] = args.learners
    project = parse_project(manifest)
    state = Path(tempfile.mkdtemp(prefix="flops-bench-"))
    clock = Clock()
    print(f"{manifest_path.name}: {project.spec.learners.replicas} learners x {project.spec.training.rounds} rounds, "
          f"backend {project.spec.tracking.backend_store.type}, artifacts {project.spec.tracking.artifact_store.type}")
    result = asyncio.run(LocalRunner(manifest, project, state_dir=state, view=clock).run())
    if result.status.phase is Phase.Completed:
        shutil.rmtree(state, ignore_errors=True)
    else:
        print(f"kept the state directory for its logs: {state / 'logs'}")
    total = time.monotonic() - clock.start
    m = clock.marks
    end = m.get("completed", m.get("failed", total))
    rows = [
        ("stack start-up", 0.0, m.get("stack ready")),
        ("training start", m.get("stack ready"), m.get("superlink up")),
        ("training", m.get("superlink up"), m.get("last round")),
        ("model logging", m.get("last round"), m.get("completed")),
        ("teardown", end, total),
    ]
    print(f"\nphase: {result.status.phase.value}   {result.status.message or ''}")
    for name, begin, finish in rows:
        figure = f"{finish - begin:7.1f}s" if begin is not None and finish is not None else "    n/a"
        print(f"{name:>15}: {figure}")
    print(f"{'total':>15}: {total:7.1f}s")
    t = result.status.training
    print(f"rounds {t.progress}; best {t.best or '-'} (round {t.best_round}); last round "
          + ", ".join(f"{k}={v:.4g}" for k, v in sorted(t.latest_metrics.items())))
    model = result.status.model
    if model.version:
        print(f"model {model.name} version {model.version} @{model.alias}")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())

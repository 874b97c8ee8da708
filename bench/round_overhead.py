"""Per-round overhead of a federated training, before and after issue 12, in one invocation.

    .venv/bin/python bench/round_overhead.py [--repeats 2] [--rounds 5] [--learners N] [--idle-seconds 30]
        [--idle-after 70] [--no-demo] [--demo-rounds N]

before = spec.training.roundMode "standard" (Flower's defaults: a train and an evaluate exchange per round, a fresh
ClientApp process per message, the SuperNode's 3 s idle poll; synchronous MLflow logging: what FLOps did before);
after = "fast" (the default). The same code runs both; only that setting differs.

1. Trainings: the demo's task (digits-mlp, 3 learners x 3 local epochs, FedAvg) through the real entrypoints on
   loopback, logging to a local MLflow server, in ABBA order (the machine's drifting load cancels). Per round:
   wall time, the slowest learner's evaluate + fit time, overhead = wall - that, and where the time went, phase by
   phase, along the learner whose reply came last (flops_aggregator/timing.py says what each phase holds).
2. Idle learners: one learner connected to a SuperLink that runs nothing, per mode; CPU % (of one core) of the
   learner's process tree and of the SuperLink's, over --idle-seconds: "waiting" just after the start (as
   between two messages of a training), "idle" once the learner has had no message for a minute (--idle-after
   seconds after it came up; below the learner's active window, the smoke test's, it is not idle yet).
3. The demo (`flops run manifests/examples/digits-local.yaml`, through the runner `flops run` uses) per mode:
   total wall time and best eval_accuracy (--demo-rounds: its rounds instead of the manifest's; --learners: its
   learners too).
Every part prints the load average: on a shared machine compare figures of the same invocation only.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from loopback import BIN, clean_env, federation, free_port, learner_jobs, start_mlflow
from flops_learner.supernode import ACTIVE_WINDOW_SECONDS
from flops_runtime.proc import reachable, stop_tree
from flops_operator.adapters.local_cli import load_manifest
from flops_operator.adapters.local_runner import LocalRunner
from flops_operator.models.project import Project, ProjectRef, parse_project
from flops_operator.models.spec import FLOpsProjectSpec


MODES = {"before": "standard", "after": "fast"}
LEARNERS, EPOCHS = 3, 3
DEMO = Path(__file__).resolve().parents[1] / "manifests" / "examples" / "digits-local.yaml"
PHASES = ("configure", "delivery", "start", "setup", "work", "reply", "aggregation", "bookkeeping")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def project(mode: str, rounds: int, learners: int = LEARNERS) -> Project:
    spec = FLOpsProjectSpec.model_validate({
        "task": {"name": "digits-mlp"},
        "training": {"rounds": rounds, "roundTimeoutSeconds": 300, "localEpochs": EPOCHS, "roundMode": mode},
        "learners": {"replicas": learners},
        "registry": {"modelName": "digits-round-overhead"},
    })
    return Project(ProjectRef("bench", f"rounds-{mode}", f"bench-{mode}"), 1, spec)


def trainings(root: Path, repeats: int, rounds: int, learners: int) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name in MODES}
    server, uri, _ = start_mlflow(root)  # two projects, one server: no per-project logins
    try:
        for i in range(repeats):
            for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
                workdir = root / f"{name}-{i}"
                workdir.mkdir()
                print(f"  training {name} #{i + 1} ({load()})", flush=True)
                runs[name].append(federation(workdir, project(MODES[name], rounds, learners), uri))
    finally:
        stop_tree(server, timeout=10)
    return runs


def print_rounds(runs: dict[str, list[dict]]) -> dict[str, float]:
    print(f"\n{'':7} {'run':>3} {'round':>5} {'wall':>6} {'work':>6} {'overh':>6}  "
          + " ".join(f"{p[:8]:>8}" for p in PHASES) + "   (seconds)")
    medians = {}
    for name, figures in runs.items():
        overheads = []
        for i, f in enumerate(figures):
            for r, t in enumerate(f["result"]["timing"], start=1):
                overheads.append(t["overhead"])
                print(f"{name:7} {i + 1:3} {r:5} {t['wall']:6.2f} {t['work']:6.2f} {t['overhead']:6.2f}  "
                      + " ".join(f"{t['phases'][p]:8.2f}" for p in PHASES))
        medians[name] = statistics.median(overheads)
        phases = {p: statistics.median([t["phases"][p] for f in figures for t in f["result"]["timing"]])
                  for p in PHASES}
        print(f"{name:7} median of rounds: " + " ".join(f"{p} {v:.2f}" for p, v in phases.items()))
    for name, figures in runs.items():
        walls = ", ".join(f"{f['wall']:.1f}" for f in figures)
        accuracy = ", ".join(f"{f['result']['best_metrics']['eval_accuracy']:.3f}" for f in figures)
        print(f"{name:7} aggregator wall s: {walls}; best eval_accuracy: {accuracy}")
    return medians


def tree_cpu(process: psutil.Process) -> float:
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def tree_pss_mb(process: psutil.Process) -> float:
    """Proportional set size of a process tree: shared (forked, copy-on-write) pages counted once."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 2**20


def cpu_percent(procs: list[psutil.Process], seconds: float) -> list[float]:
    before = [tree_cpu(p) for p in procs]
    time.sleep(seconds)
    return [100 * (tree_cpu(p) - b) / seconds for p, b in zip(procs, before)]


def idle_learner(root: Path, mode: str, seconds: float, idle_after: float) -> dict[str, list[float]]:
    """CPU % of one learner's process tree and of its SuperLink's while no message comes: first as in a training
    (just started), then idle (past the learner's ACTIVE_WINDOW_SECONDS without a message)."""
    home = root / f"idle-{mode}"
    (home / "flwr").mkdir(parents=True)
    address = f"127.0.0.1:{free_port()}"
    env = {**clean_env(), "FLWR_HOME": str(home / "flwr"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    link = subprocess.Popen([str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port",
                             address.rsplit(":", 1)[1], "--disable-runtime-dependency-installation"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    (command, extra), = learner_jobs(_one_learner(mode), home, address, None)  # an insecure SuperLink
    learner = subprocess.Popen(command, env={**env, **extra}, stdout=(home / "learner.log").open("wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (reachable(address) and reachable(extra["FLOPS_CLIENTAPPIO_ADDRESS"])):
            if time.monotonic() > deadline or learner.poll() is not None:
                raise SystemExit(f"idle learner ({mode}) did not come up; see {home / 'learner.log'}")
            time.sleep(0.5)
        up = time.monotonic()
        procs = [psutil.Process(learner.pid), psutil.Process(link.pid)]
        time.sleep(5)  # the launcher's imports settle
        waiting = cpu_percent(procs, min(seconds, 45))
        memory = tree_pss_mb(procs[0])
        time.sleep(max(0.0, up + idle_after - time.monotonic()))
        return {"waiting": waiting, "idle": cpu_percent(procs, seconds), "memory": memory}
    finally:
        stop_tree(learner, timeout=10)
        stop_tree(link, timeout=10)


def _one_learner(mode: str) -> Project:
    p = project(mode, 1)
    spec = p.spec.model_copy(update={"learners": p.spec.learners.model_copy(update={"replicas": 1})})
    return Project(p.ref, 1, spec)


def demo(mode: str, rounds: int | None, learners: int | None) -> tuple[float, float | None, str]:
    raw, _ = load_manifest(DEMO)
    manifest = copy.deepcopy(raw)
    manifest["spec"]["training"]["roundMode"] = mode
    if rounds is not None:
        manifest["spec"]["training"]["rounds"] = rounds
    if learners is not None:
        manifest["spec"]["learners"]["replicas"] = learners
    state = Path(tempfile.mkdtemp(prefix="flops-bench-demo-"))
    started = time.monotonic()
    result = asyncio.run(LocalRunner(manifest, parse_project(manifest), state_dir=state).run())
    wall = time.monotonic() - started
    shutil.rmtree(state, ignore_errors=True)
    best = result.status.training.best_metrics.get("eval_accuracy")
    return wall, best, result.status.phase.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="pairs of trainings, ABBA order (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per training (default 5)")
    parser.add_argument("--learners", type=int, default=None,
                        help=f"learners per training (default {LEARNERS}) and in the demo (default: its manifest's)")
    parser.add_argument("--idle-seconds", type=float, default=30, help="idle CPU sampling window (default 30)")
    parser.add_argument("--idle-after", type=float, default=ACTIVE_WINDOW_SECONDS + 10,
                        help="seconds after the idle learner came up when its idle CPU is sampled (default "
                             f"{ACTIVE_WINDOW_SECONDS + 10:g}: past its {ACTIVE_WINDOW_SECONDS:g} s active window)")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo runs")
    parser.add_argument("--demo-rounds", type=int, default=None, help="the demo's rounds (default: the manifest's)")
    args = parser.parse_args()
    print(f"digits-mlp, {args.learners or LEARNERS} learners x {EPOCHS} local epochs, {args.rounds} rounds, FedAvg; "
          f"before = roundMode {MODES['before']}, after = roundMode {MODES['after']}; {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="flops-bench-rounds-") as tmp:
        root = Path(tmp)
        runs = trainings(root, args.repeats, args.rounds, args.learners or LEARNERS)
        medians = print_rounds(runs)
        print(f"\nmedian round overhead: before {medians['before']:.2f} s, after {medians['after']:.2f} s, "
              f"{medians['before'] / medians['after']:.1f}x lower (target: after <= 2 s on a quiet machine, "
              f">= 5x lower); {load()}", flush=True)
        for name, mode in MODES.items():
            idle = idle_learner(root, mode, args.idle_seconds, args.idle_after)
            for state in ("waiting", "idle"):
                learner, superlink = idle[state]
                print(f"learner CPU, {state:7} ({name}): its process tree {learner:4.1f} %, its SuperLink's "
                      f"{superlink:4.1f} % of one core; {load()}", flush=True)
            print(f"learner memory ({name}): {idle['memory']:.0f} MB PSS, its whole process tree between messages",
                  flush=True)
    if not args.no_demo:
        for name, mode in MODES.items():
            wall, best, phase = demo(mode, args.demo_rounds, args.learners)
            print(f"demo ({name}): {phase} in {wall:.1f} s, best eval_accuracy "
                  f"{best if best is None else round(best, 4)}; {load()}", flush=True)


if __name__ == "__main__":
    main()

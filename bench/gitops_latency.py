"""Time from apply to Training and to Completed: the operator in a cluster against `flops run`, same
manifest, same machine, one invocation (issue 8: the cluster should be within 15 % of `flops run`).

    flops run   LocalRunner, as `flops run MANIFEST` runs it
    operator    kopf with the local platform, against kmock as the API server (tests/integration's), the
                project created through the official client as `kubectl apply` would, once the operator
                watches FLOpsProjects; its phases followed with a watch, as `kubectl get fp -w` does

Both run real services (MLflow, FTP, Flower): expect minutes on 2 cores. The operator is given the
default pacing and the default 30 s resync, so what is measured is what a user's cluster does. The two run in
ABBA order (--pairs, default 2), so the machine's drifting load weighs on both alike; the means are compared.
Usage: python bench/gitops_latency.py [MANIFEST] [--pairs N] [--rounds N] [--learners N]   (--rounds, --learners:
instead of the manifest's)
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import kubernetes.client
import kubernetes.watch

from flops_operator.adapters.kopf_cli import build_context, run_operator
from flops_operator.adapters.local_cli import load_manifest
from flops_operator.adapters.local_runner import LocalRunner
from flops_operator.models import GROUP, PLURAL, VERSION, FLOpsProjectStatus, Phase, Project, parse_project
from flops_operator.platforms.local import LocalPlatform
from flops_operator.reconcile import ReconcileResult

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.integration.kmock_layer import serve_kubernetes  # noqa: E402  (the API server stand-in)

DEMO = ROOT / "manifests" / "examples" / "digits-local.yaml"
MARKS = (Phase.Training, Phase.Completed)


class Marks:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.seen: dict[Phase, float] = {}

    def phase(self, phase: Phase) -> None:
        if phase in MARKS and phase not in self.seen:
            self.seen[phase] = time.monotonic() - self.start


class RunnerView(Marks):
    def update(self, result: ReconcileResult) -> None:
        self.phase(result.status.phase)

    def note(self, text: str) -> None:
        pass

    def keeping(self, status: FLOpsProjectStatus) -> None:
        pass


async def flops_run(manifest: dict, project: Project, state: Path) -> Marks:
    view = RunnerView()
    result = await LocalRunner(manifest, project, state_dir=state, view=view).run()
    if result.status.phase is not Phase.Completed:
        raise SystemExit(f"flops run ended {result.status.phase.value}: {result.status.message}")
    return view


async def operator_run(manifest: dict, state: Path) -> Marks:
    async with serve_kubernetes() as (emulator, url):
        config = kubernetes.client.Configuration(host=url)
        api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))
        body = copy.deepcopy(manifest)
        namespace = body["metadata"].setdefault("namespace", "default")
        name = body["metadata"]["name"]
        follower = asyncio.create_task(asyncio.to_thread(follow, api, namespace, name))
        ctx = build_context(["local"], config,
                            factories={"local": lambda: LocalPlatform(lambda ref: state / ref.uid)})
        stop, ready = asyncio.Event(), asyncio.Event()
        operator = asyncio.create_task(run_operator(ctx, clusterwide=True, liveness=None, metrics_port=None,
                                                    stop_flag=stop, ready_flag=ready))
        await ready.wait()
        # kopf says ready before its watch streams are open. In a cluster the operator runs long before anything
        # is applied: the clock starts once it watches, and so does the follower (`kubectl get fp -w`).
        while emulator.watches(GROUP, VERSION, PLURAL) < 2:
            await asyncio.sleep(0.05)
        marks = Marks()
        try:
            await asyncio.to_thread(api.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body)
            marks.seen = {phase: at - marks.start for phase, at in (await follower).items()}
        finally:
            await asyncio.to_thread(api.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
            for _ in range(600):  # the finalizer stops the services
                try:
                    await asyncio.to_thread(api.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                            name)
                except kubernetes.client.ApiException as exc:
                    if exc.status == 404:
                        break
                    raise
                await asyncio.sleep(0.1)
            stop.set()
            await operator
        return marks


def follow(api: kubernetes.client.CustomObjectsApi, namespace: str, name: str) -> dict[Phase, float]:
    """The project's phases as a watch brings them (the monotonic time each first arrived), until Completed. A
    watch, not polling: following costs the machine nothing while the project converges."""
    seen: dict[Phase, float] = {}
    stream = kubernetes.watch.Watch()
    for event in stream.stream(api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                               timeout_seconds=3600):
        obj = event["object"]
        if obj["metadata"]["name"] != name:
            continue
        status = obj.get("status") or {}
        phase = status.get("phase")
        if phase == Phase.Failed.value:
            stream.stop()
            raise SystemExit(f"the operator's project Failed: {status.get('message')}")
        if phase in (p.value for p in MARKS):
            seen.setdefault(Phase(phase), time.monotonic())
        if Phase.Completed in seen:
            stream.stop()
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", nargs="?", type=Path, default=DEMO)
    parser.add_argument("--pairs", type=int, default=2, help="pairs of runs, ABBA order (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="training rounds (default: the manifest's)")
    parser.add_argument("--learners", type=int, default=None, help="learners (default: the manifest's)")
    args = parser.parse_args()
    manifest, project = load_manifest(args.manifest)
    if args.rounds is not None:
        manifest["spec"]["training"]["rounds"] = args.rounds
    if args.learners is not None:
        manifest["spec"]["learners"]["replicas"] = args.learners
    project = parse_project(manifest)
    print(f"{project.ref.key}: {project.spec.learners.replicas} learners x {project.spec.training.rounds} rounds, "
          f"{args.pairs} pair(s) in ABBA order", flush=True)
    runs: dict[str, list[Marks]] = {"flops run": [], "operator": []}
    with tempfile.TemporaryDirectory(prefix="flops-bench-") as tmp:
        for i in range(args.pairs):
            order = ("flops run", "operator") if i % 2 == 0 else ("operator", "flops run")
            for mode in order:
                state = Path(tmp) / f"{mode.replace(' ', '-')}-{i}"
                marks = asyncio.run(flops_run(manifest, project, state) if mode == "flops run"
                                    else operator_run(manifest, state))
                runs[mode].append(marks)
                print(f"  {mode:10} " + "  ".join(f"{p.value} {marks.seen[p]:5.1f}s" for p in MARKS), flush=True)
    means = {mode: {p: sum(m.seen[p] for m in marks) / len(marks) for p in MARKS} for mode, marks in runs.items()}
    print(f"{'mean':12}{'to Training':>14}{'to Completed':>15}")
    print(f"{'flops run':12}" + "".join(f"{means['flops run'][p]:13.1f}s" + " " * (p is Phase.Training)
                                         for p in MARKS))
    ratios = [means["operator"][p] / means["flops run"][p] - 1 for p in MARKS]
    print(f"{'operator':12}" + "".join(f"{means['operator'][p]:13.1f}s" + " " * (p is Phase.Training) for p in MARKS)
          + "   (" + ", ".join(f"{r:+.0%}" for r in ratios) + " against flops run; target within +15 %)")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale benchmark of the Oakestra driver against the emulator (prints figures; not a test).

N projects (default 100), each a MySQL backend store + FTP artifact store + MLflow tracking server
+ aggregator + 3 learners (7 services, one instance each), against the emulator in a process of its
own (as a System Manager would be: the driver's CPU is then the benchmark process's alone) with 20 ms
of latency per call:

- the driver, through the real reconcile step, all projects concurrently (as kopf runs handlers):
  time until every service has its instance requested, the driver's CPU (per call too), calls per
  project, writes to one application one at a time (oakestra-api.md §13.13), then in steady state
  reads per project per resync and writes per resync; the driver process's peak RSS;
- a sequential baseline that does what the FLOps reference does (addon-FLOps, oakestra-api.md
  §11): one call at a time, a fresh login whenever its token is older than 10 s, POST app, then per
  service POST /api/service/ + POST .../instance with job_id trusted and failed_services unchecked.
  It is sequential, so its time grows linearly: --baseline-projects measures it on fewer projects
  and scales the figure (said so when it does).

    .venv/bin/python bench/oakestra_scale.py [--projects 100] [--latency 0.02] [--max-in-flight 32]
        [--baseline-projects N] [--profile driver.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flops_operator.credentials import MemoryCredentials  # noqa: E402
from flops_operator.models import FLOpsProjectStatus, parse_project  # noqa: E402
from flops_operator.plan.desired import credential_names, desired  # noqa: E402
from flops_operator.platforms.oakestra import OakestraConfig, OakestraPlatform, names, sla  # noqa: E402
from flops_operator.progress import NoProgress  # noqa: E402
from flops_operator.reconcile import reconcile  # noqa: E402
from tests.oakestra_emulator import emulator_in_process  # noqa: E402
from tests.oakestra_emulator.testing import manifest  # noqa: E402

AUTH = ("/api/auth/login", "/api/auth/refresh")


def workload(n: int) -> list[dict]:
    return [manifest(uid=f"bench-{i:04d}-5f0c7d1e-0000-4000-8000", name=f"proj{i}", learners=3) for i in range(n)]


def split(calls) -> tuple[int, int, int]:
    """(reads, writes, auth calls) of (method, route, status) records."""
    reads = sum(1 for method, _, _ in calls if method == "GET")
    auth = sum(1 for _, route, _ in calls if route in AUTH)
    return reads, len(calls) - reads - auth, auth


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def run_driver(manifests: list[dict], latency: float, max_in_flight: int, resyncs: int,
                     profile: str | None) -> dict:
    with emulator_in_process(latency=latency) as emu:
        platform = OakestraPlatform(OakestraConfig(url=emu.url, username="Admin", password="Admin",
                                                   max_in_flight=max_in_flight, ready_after=0.0,
                                                   health_checks=False))
        creds = MemoryCredentials()
        statuses: dict[str, FLOpsProjectStatus] = {}
        wanted = {m["metadata"]["uid"]: len(desired(parse_project(m), training_done=False)) for m in manifests}
        rounds = Counter()

        async def until_requested(m: dict) -> None:
            uid, status = m["metadata"]["uid"], FLOpsProjectStatus()
            while True:
                rounds[uid] += 1
                result = await reconcile(m, status, platform=platform, credentials=creds,
                                         progress_source=NoProgress())
                status = statuses[uid] = result.status
                if len(result.observation.services) == wanted[uid]:
                    return

        emulator_cpu = emu.world()["cpu_seconds"]
        profiler = cProfile.Profile() if profile else None
        started, cpu = time.monotonic(), time.process_time()
        if profiler:
            profiler.enable()
        await asyncio.gather(*(until_requested(m) for m in manifests))
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
        create_calls = emu.calls()
        world = emu.world()
        ok = world["apps"] == len(manifests) and set(world["services_per_app"]) == {7}

        # Steady state: every instance running; each resync reconciles every project once.
        steady = []
        for _ in range(resyncs):
            emu.clear_calls()
            results = await asyncio.gather(*(
                reconcile(m, statuses[m["metadata"]["uid"]], platform=platform, credentials=creds,
                          progress_source=NoProgress()) for m in manifests))
            for m, r in zip(manifests, results):
                statuses[m["metadata"]["uid"]] = r.status
            steady.append((split(emu.calls()), sum(len(r.applied) for r in results),
                           sum(r.status.condition("Ready").status == "True" for r in results)))
        await platform.close()
        after = emu.world()
    reads, writes, auth = split(create_calls)
    return {"elapsed": elapsed, "cpu": cpu, "emulator_cpu": world["cpu_seconds"] - emulator_cpu,
            "calls": len(create_calls), "reads": reads, "writes": writes, "auth": auth,
            "rounds": sum(rounds.values()) / len(manifests), "steady": steady, "ok": ok, "world": after,
            "rss_mb": peak_rss_mb()}


class Reference:
    """The FLOps manager's way (addon-FLOps @ 2fa0ab97): sequential, re-login when token > 10 s old."""

    def __init__(self, url: str, session: aiohttp.ClientSession):
        self.url, self.session = url, session
        self.token, self.token_at = "", -1e9
        self.credentials = MemoryCredentials()

    async def request(self, method: str, path: str, body=None):
        if time.monotonic() - self.token_at > 10:
            async with self.session.post(self.url + "/api/auth/login",
                                         json={"username": "Admin", "password": "Admin"}) as resp:
                self.token, self.token_at = (await resp.json())["token"], time.monotonic()
        async with self.session.request(method, self.url + path, json=body,
                                        headers={"Authorization": f"Bearer {self.token}"}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status}")
            body = await resp.json()
            return json.loads(body) if isinstance(body, str) else body

    async def deploy(self, m: dict) -> int:
        project = parse_project(m)
        ref = project.ref
        apps = await self.request("POST", "/api/application/", sla.application(ref, "Admin"))
        app_id = next(a["applicationID"] for a in apps if a["application_name"] == names.app_name(ref))
        # The project's generated credentials as the driver gets them (random tokens, the Flower CA bundle that the
        # SLAs render certificates from): the reference sends the same SLAs, so it pays the same rendering.
        secrets = await self.credentials.ensure(ref, credential_names(project.spec))
        peers: dict[str, sla.Peer] = {}
        failed = 0
        for service in desired(project, training_done=False):
            rr_ip = next(names.rr_ip_candidates(ref.uid, service.name))  # FLOps: a hash, collisions unchecked
            ms = sla.microservice(ref, service, rr_ip=rr_ip, peers=peers, secrets=secrets, workdir="/var/lib/flops",
                                  port_range=(30000, 40000))
            answer = await self.request("POST", "/api/service/", sla.service_request(ref, "Admin", app_id, ms))
            failed += len(answer.get("failed_services") or [])  # counted here; FLOps does not look
            await self.request("POST", f"/api/service/{answer['job_id']}/instance")
            peers[service.name] = sla.Peer(rr_ip, {p.name: p.container_port for p in service.ports})
        return failed


async def run_reference(manifests: list[dict], latency: float) -> dict:
    with emulator_in_process(latency=latency) as emu:
        async with aiohttp.ClientSession() as session:
            client = Reference(emu.url, session)
            started = time.monotonic()
            failed = 0
            for m in manifests:
                failed += await client.deploy(m)
            elapsed = time.monotonic() - started
        calls = emu.calls()
    reads, writes, auth = split(calls)
    return {"elapsed": elapsed, "calls": len(calls), "writes": writes, "auth": auth, "failed": failed,
            "projects": len(manifests)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--max-in-flight", type=int, default=32)
    parser.add_argument("--resyncs", type=int, default=3)
    parser.add_argument("--baseline-projects", type=int, default=None,
                        help="measure the sequential baseline on this many projects and scale it (default: all)")
    parser.add_argument("--profile", default=None, help="write a cProfile of the driver's create phase here")
    args = parser.parse_args()
    manifests = workload(args.projects)
    n = args.projects
    print(f"Oakestra scale benchmark: {n} projects x 7 services (mysql, ftp, tracking server, aggregator, "
          f"3 learners), one instance each; emulator (own process) latency {args.latency * 1000:.0f} ms per "
          f"call; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    ours = await run_driver(manifests, args.latency, args.max_in_flight, args.resyncs, args.profile)
    world = ours["world"]
    print(f"\ndriver (reconcile step, all projects concurrently, max {args.max_in_flight} calls in flight)")
    print(f"  time until every service is requested: {ours['elapsed']:.2f} s")
    print(f"  driver CPU meanwhile: {ours['cpu']:.2f} s = {ours['cpu'] / ours['calls'] * 1000:.2f} ms per call "
          f"(emulator, in its own process: {ours['emulator_cpu']:.2f} s)")
    print(f"  calls per project: {ours['calls'] / n:.1f} (reads {ours['reads'] / n:.1f}, writes "
          f"{ours['writes'] / n:.1f}; {ours['auth']} logins in total); reconcile rounds per project "
          f"{ours['rounds']:.1f}")
    print(f"  every project has its 7 services: {ours['ok']}; duplicate service writes: "
          f"{world['duplicate_service_writes']}; extra instance requests: {world['extra_instance_requests']}")
    print(f"  writes to one application's service list that overlapped: {world['overlapping_list_writes']} "
          f"(lost service ids: {world['lost_services']}); most list writes at once across applications: "
          f"{world['peak_list_writers']}")
    for i, ((reads, writes, auth), applied, ready) in enumerate(ours["steady"], 1):
        print(f"  steady-state resync {i}: {reads / n:.2f} reads per project, {writes} writes, {auth} auth calls, "
              f"{applied} actions, {ready}/{n} Ready")
    print(f"  driver process peak RSS: {ours['rss_mb']:.0f} MB")

    sample = manifests[:args.baseline_projects] if args.baseline_projects else manifests
    ref = await run_reference(sample, args.latency)
    scale = n / ref["projects"]
    baseline = ref["elapsed"] * scale
    print("\nFLOps-reference baseline (sequential, login when token > 10 s old)")
    print(f"  time until every service is requested: {baseline:.2f} s"
          + (f" (measured {ref['elapsed']:.2f} s on {ref['projects']} projects, scaled x{scale:.1f})"
             if scale != 1 else ""))
    print(f"  calls per project: {ref['calls'] / ref['projects']:.1f} (writes {ref['writes'] / ref['projects']:.1f}, "
          f"{ref['auth']} logins); services silently not created (rr_ip collision, failed_services unchecked): "
          f"{ref['failed']}")

    ratio = baseline / ours["elapsed"]
    worst_reads = max(r[0][0] for r in ours["steady"]) / n
    worst_writes = max(r[0][1] for r in ours["steady"])
    print(f"\nspeed-up over the baseline: {ratio:.1f}x (target >= 10x: {'met' if ratio >= 10 else 'NOT met'})")
    print(f"steady state: {worst_reads:.2f} reads per project per resync (target <= 2: "
          f"{'met' if worst_reads <= 2 else 'NOT met'}), {worst_writes} writes per resync (target 0: "
          f"{'met' if worst_writes == 0 else 'NOT met'})")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

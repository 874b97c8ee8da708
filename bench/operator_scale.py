"""Scale benchmark of the kopf operator at idle (prints figures; not a test). Issue 26, item 7.

For each size (default 100 and 1,000 projects), --repeats times: kmock (the API server stand-in of
tests/integration/kmock_layer.py) and the Oakestra emulator (tests/oakestra_emulator) serve from this process, in
threads; the operator (`run_operator`, the same kopf handlers, settings and Secret store as `flops operator`)
runs in a process of its own, so that its CPU and RSS are its own. The benchmark applies N projects (MySQL + FTP +
tracking server + aggregator + 1 learner each, on Oakestra), times apply -> all Training, then lets every
aggregator finish (-> Completed: settled, looked at once per resync) and measures an idle window:

- requests per second the operator sends to Kubernetes (all of them, as kmock received them) and to Oakestra,
  and Oakestra reads per project resync (one look of the timer at one project);
- the operator process's CPU (% of one core over the window) and RSS at the end of it.

Targets at 1,000 idle projects (issue 26): <= 40 Kubernetes requests/s, <= 1 Oakestra read per project per
resync, CPU <= 10 % of a core, RSS <= 300 MB. The machine may be shared: the load average is printed with each run.

    .venv/bin/python bench/operator_scale.py [--projects 100 1000] [--repeats 3] [--idle-seconds 90]
        [--resync-seconds 30] [--legacy]

--legacy runs the operator as before the idle-cost work (a tick every 0.5 s per project, the project's Secret read
at every look): the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kubernetes.client  # noqa: E402

from flops_operator.models import GROUP, PLURAL, VERSION  # noqa: E402

NAMESPACE = "bench"
SETTLE_SECONDS = 5.0
"""After the last project settled: the quick looks of the Completed transition (training services removed) end."""
APPLY_TIMEOUT = 3600.0


def spec() -> dict:
    return {"platform": "oakestra", "task": {"name": "digits-mlp"}, "training": {"rounds": 3},
            "learners": {"replicas": 1},
            "tracking": {"backendStore": {"type": "mysql"}, "artifactStore": {"type": "ftp"}}}


# ---------------------------------------------------------------------------------------------- the operator process

def serve_operator(kube_url: str, oakestra_url: str, resync: float, metrics_port: int, legacy: bool,
                   profile: str | None = None) -> None:
    from flops_operator.adapters import kopf_secrets
    from flops_operator.adapters.kopf_cli import build_context, run_operator, tick_seconds
    from flops_operator.adapters.kopf_context import OperatorContext
    from flops_operator.control import NoControl
    from flops_operator.platforms.oakestra import OakestraConfig, OakestraPlatform
    from flops_operator.progress import NoProgress

    if legacy:  # as before: a look due beyond the next tick is not waited for; the Secret is read at every look
        kopf_secrets.STORED_TTL = kopf_secrets.REFERENCED_TTL = -1.0
        set_attribute = OperatorContext.__setattr__

        def pinned(self: Any, key: str, value: Any) -> None:
            set_attribute(self, key, tick_seconds(self.pacing) if key == "lookahead" else value)
        OperatorContext.__setattr__ = pinned  # type: ignore[method-assign]

    # Instances are the emulator's records, not processes: nothing to wait for, nothing to probe.
    oakestra = OakestraConfig(url=oakestra_url, username="Admin", password="Admin", ready_after=0.0,
                              health_checks=False)
    ctx = build_context(["oakestra"], kubernetes.client.Configuration(host=kube_url),
                        factories={"oakestra": lambda: OakestraPlatform(oakestra)}, progress=NoProgress(),
                        control=NoControl())

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        if profile:  # the idle window only: SIGUSR1 starts the profiler, SIGUSR2 writes what it saw
            import cProfile

            profiler = cProfile.Profile()
            loop.add_signal_handler(signal.SIGUSR1, profiler.enable)
            loop.add_signal_handler(signal.SIGUSR2, lambda: (profiler.disable(), profiler.dump_stats(profile)))
        await run_operator(ctx, clusterwide=True, liveness=None, metrics_host="127.0.0.1", metrics_port=metrics_port,
                           resync_seconds=resync, stop_flag=stop)
    asyncio.run(main())


# ----------------------------------------------------------------------------------------- the emulator's process

def _serve_emulator(conn) -> None:
    """The Oakestra emulator in a process of its own (as a System Manager would be: neither the operator nor kmock
    shares its interpreter), answering the benchmark's commands on its own loop."""
    from flops_operator.platforms.oakestra.names import service_name
    from tests.oakestra_emulator import run_emulator

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        async with run_emulator() as emu:
            conn.send(emu.url)
            while True:
                command, arg = await loop.run_in_executor(None, conn.recv)
                if command == "stop":
                    conn.send(None)
                    return
                if command == "count":
                    conn.send(len(emu.calls))
                elif command == "calls_since":
                    conn.send([(c.method, c.route) for c in emu.calls[arg:]])
                elif command == "complete":  # the aggregators of these applications exit 0
                    apps = {a["application_name"]: a["applicationID"] for a in emu.apps()}
                    jobs = {(j["applicationID"], j["microservice_name"]): j["microserviceID"] for j in emu.jobs()}
                    for app in arg:
                        emu.complete(jobs[(apps[app], service_name("aggregator"))])
                    conn.send(len(arg))
                else:
                    conn.send(ValueError(f"unknown command {command!r}"))
    asyncio.run(serve())


class EmulatorProcess:
    def __init__(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_serve_emulator, args=(child,), name="oakestra-emulator", daemon=True)
        self.process.start()
        if not self._conn.poll(60):
            raise RuntimeError("the emulator process did not start")
        self.url = self._conn.recv()

    def ask(self, command: str, arg: Any = None) -> Any:
        self._conn.send((command, arg))
        answer = self._conn.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def stop(self) -> None:
        try:
            self.ask("stop")
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()


# ----------------------------------------------------------------------------------------------- the benchmark side

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def kubernetes_in_thread() -> Iterator[tuple[str, Any]]:
    """kmock on its own loop in a thread, keeping no log of requests (only their tally: its reactions scan the log
    for every request, quadratic over a benchmark)."""
    import threading

    from tests.integration.kmock_layer import serve_kubernetes

    ready, stop, box = threading.Event(), threading.Event(), {}

    async def main() -> None:
        async with serve_kubernetes(keep_log=False) as (emulator, url):
            box.update(url=url, emulator=emulator)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="kmock", daemon=True)
    thread.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("kmock did not start")
        yield box["url"], box["emulator"]
    finally:
        stop.set()
        thread.join(60)


class Operator:
    """The operator process: its CPU seconds and RSS from /proc, its reconcile counters from /metrics."""

    def __init__(self, kube_url: str, oakestra_url: str, resync: float, legacy: bool, log: Path,
                 profile: str | None = None):
        self.metrics_port = free_port()
        self._log = log.open("wb")
        args = [sys.executable, __file__, "--serve", kube_url, oakestra_url, "--resync-seconds", str(resync),
                "--metrics-port", str(self.metrics_port)] + (["--legacy"] if legacy else []) + (
                    ["--profile", profile] if profile else [])
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def rss_mb(self) -> float:
        match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{self.process.pid}/status").read_text())
        return int(match.group(1)) / 1024 if match else float("nan")

    def looks(self) -> tuple[float, float]:
        """(observes, resyncs) so far: flops_platform_calls{operation="observe"} (one per pass of a look, counted as
        it starts) and flops_reconciles{trigger="resync"} (one per look the timer made, counted as it ends)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30) as rsp:
                text = rsp.read().decode()
        except OSError:
            return 0.0, 0.0
        observes = r'^flops_platform_calls_total\{[^}]*operation="observe"[^}]*\} (\S+)'
        resyncs = r'^flops_reconciles_total\{[^}]*trigger="resync"[^}]*\} (\S+)'
        return tuple(sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))  # type: ignore[return-value]
                     for pattern in (observes, resyncs))

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def phases(custom: kubernetes.client.CustomObjectsApi) -> Counter:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
    out = Counter()
    for item in items:
        status = item.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        out[status.get("phase") or "-"] += 1
        if status.get("phase") == "Completed" and ready.get("status") == "True":
            out["settled"] += 1
    return out


def wait_for(check, what: str, operator: Operator, timeout: float = APPLY_TIMEOUT, every: float = 1.0) -> float:
    started = time.monotonic()
    while True:
        last = check()
        if last is True:
            return time.monotonic() - started
        if not operator.alive():
            raise RuntimeError(f"the operator exited ({operator.process.returncode}) while waiting for {what}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"never came true within {timeout:.0f} s: {what}; last seen {last}")
        time.sleep(every)


def one_run(n: int, idle_seconds: float, resync: float, legacy: bool, log: Path, profile: str | None = None) -> dict:
    from flops_operator.platforms.oakestra.names import app_name
    from flops_operator.models import ProjectRef

    with ExitStack() as stack:
        kube_url, kube = stack.enter_context(kubernetes_in_thread())
        oak = EmulatorProcess()
        stack.callback(oak.stop)
        operator = Operator(kube_url, oak.url, resync, legacy, log, profile)
        stack.callback(operator.stop)
        api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=kube_url))
        stack.callback(api.close)
        custom = kubernetes.client.CustomObjectsApi(api)
        poll = max(1.0, n / 200)  # a list of every project costs the API server too

        started = time.monotonic()
        refs = []
        for i in range(n):
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FLOpsProject",
                    "metadata": {"name": f"p{i:04d}", "namespace": NAMESPACE}, "spec": spec()}
            made = custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)["metadata"]
            refs.append(ProjectRef(NAMESPACE, made["name"], made["uid"]))
        applied = time.monotonic() - started

        def all_training():
            seen = phases(custom)
            return True if seen["Training"] == n else dict(seen)
        to_training = applied + wait_for(all_training, f"all {n} projects Training", operator, every=poll)

        # Every training ends: the aggregator exits 0; the project becomes Completed (settled).
        oak.ask("complete", [app_name(ref) for ref in refs])
        wait_for(lambda: True if phases(custom)["settled"] == n else dict(phases(custom)),
                 f"all {n} projects Completed and Ready", operator, every=poll)
        time.sleep(SETTLE_SECONDS)

        # The idle window: nothing but the operator talks to either server.
        k_before, o_before = Counter(kube.tally), oak.ask("count")
        if profile:
            operator.process.send_signal(signal.SIGUSR1)
        looks_before, cpu_before, at = operator.looks(), operator.cpu_seconds(), time.monotonic()
        time.sleep(idle_seconds)
        if profile:
            operator.process.send_signal(signal.SIGUSR2)
        seconds = time.monotonic() - at
        cpu = operator.cpu_seconds() - cpu_before
        after = operator.looks()
        looks, resyncs = after[0] - looks_before[0], after[1] - looks_before[1]
        kinds = Counter(kube.tally) - k_before
        oak_calls = oak.ask("calls_since", o_before)
        rss = operator.rss_mb()
    kinds = Counter({f"{action.value.lower()} {plural or '?'}": count for (action, plural), count in kinds.items()})
    reads = sum(1 for method, _ in oak_calls if method == "GET")
    return {"n": n, "to_training": to_training, "applied": applied, "seconds": seconds,
            "kube_rate": sum(kinds.values()) / seconds, "kinds": kinds, "oak_rate": len(oak_calls) / seconds,
            "oak_reads": reads, "oak_writes": len(oak_calls) - reads, "looks": looks, "resyncs": resyncs,
            "reads_per_look": reads / resyncs if resyncs else 0.0, "cpu": 100 * cpu / seconds, "rss": rss,
            "load": os.getloadavg()[0]}


def spread(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.mean(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--projects", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=90.0)
    parser.add_argument("--resync-seconds", type=float, default=30.0, help="the operator's (its default: 30)")
    parser.add_argument("--legacy", action="store_true", help="the operator as before (ticks, uncached Secret)")
    parser.add_argument("--profile", help="write a cProfile of the operator over the idle window here")
    parser.add_argument("--serve", nargs=2, metavar=("KUBE_URL", "OAKESTRA_URL"), help=argparse.SUPPRESS)
    parser.add_argument("--metrics-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped (a smoke test's timeout): clean up
    if args.serve:
        serve_operator(*args.serve, resync=args.resync_seconds, metrics_port=args.metrics_port, legacy=args.legacy,
                       profile=args.profile)
        return

    print(f"Operator scale benchmark: kopf operator{' (legacy: ticks, uncached Secret)' if args.legacy else ''} "
          f"in its own process over kmock + Oakestra emulator; resync {args.resync_seconds:g} s, idle window "
          f"{args.idle_seconds:g} s, {args.repeats} run(s) per size; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="operator-scale-") as tmp:
        for n in args.projects:
            runs = []
            for repeat in range(1, args.repeats + 1):
                log = Path(tmp) / f"operator-{n}-{repeat}.log"
                try:
                    run = one_run(n, args.idle_seconds, args.resync_seconds, args.legacy, log, args.profile)
                except Exception:
                    if log.exists():
                        sys.stderr.write(f"--- operator log ({n} projects, run {repeat}):\n"
                                         f"{log.read_text(errors='replace')[-5000:]}\n")
                    raise
                runs.append(run)
                top = ", ".join(f"{kind} {count / run['seconds']:.2f}" for kind, count in run["kinds"].most_common(4))
                print(f"{n} projects, run {repeat}: apply->Training {run['to_training']:.1f} s (created in "
                      f"{run['applied']:.1f} s); idle {run['seconds']:.0f} s: kubernetes {run['kube_rate']:.2f} req/s "
                      f"({top or 'none'}), oakestra {run['oak_rate']:.2f} req/s ({run['oak_reads']} reads, "
                      f"{run['oak_writes']} other) = {run['reads_per_look']:.2f} reads per project resync "
                      f"({run['resyncs']:.0f} resyncs, {run['looks']:.0f} observes); CPU {run['cpu']:.1f} % of a core; RSS {run['rss']:.0f} MB; "
                      f"load average {run['load']:.2f}", flush=True)
            kube = [r["kube_rate"] for r in runs]
            reads = [r["reads_per_look"] for r in runs]
            cpu = [r["cpu"] for r in runs]
            rss = [r["rss"] for r in runs]
            print(f"{n} projects, mean [min-max] of {len(runs)} run(s): kubernetes {spread(kube, '{:.2f}')} req/s "
                  f"(target <= 40: {verdict(max(kube), 40)}); oakestra reads per project per resync "
                  f"{spread(reads, '{:.2f}')} (target <= 1: {verdict(round(max(reads), 2), 1)}); CPU {spread(cpu, '{:.1f}')} % "
                  f"(target <= 10: {verdict(max(cpu), 10)}); RSS {spread(rss, '{:.0f}')} MB (target <= 300: "
                  f"{verdict(max(rss), 300)}); apply->Training {spread([r['to_training'] for r in runs], '{:.1f}')} s",
                  flush=True)
    print("load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()

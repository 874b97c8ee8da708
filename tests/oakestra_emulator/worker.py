"""The emulator's container worker (opt-in): scheduled instances run as real containers, as Oakestra's
node engine runs them (go_node_engine/virtualization/ContainersManagement.go at the commit oakestra-api.md
describes), on a podman network whose subnet is the emulator's service-IP range.

What it does as the node engine does:
- the image must be there, or be pulled from one of the registries the worker is given (a test's own registry:
  no other is reachable here): else the instance is FAILED with the reason, which the cluster re-deploys every
  15 s;
- the SLA's `cmd`, when given, replaces the image's ENTRYPOINT and CMD; `environment` is added to the
  image's, with HOSTNAME=instance-<n>; memory (MB) and vcpus become limits;
- a container that exits is DEAD whatever its code, except a one-shot one exiting 0 (COMPLETED); the
  exit code is not reported (the node engine does not either); the instance's `logs` carry the
  container's last lines, refreshed while it runs and once more when it ends;
- undeploy kills the container (SIGKILL, as the node engine's task delete does) and removes it.
What it does instead of Oakestra's overlay: the container's address *is* the service's round-robin IP
(one instance per service), and each `port` mapping host:container is a TCP relay on the cluster's
public IP (127.0.0.1 in tests) to the container's address.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .podman import Network, PodmanError, podman

if TYPE_CHECKING:
    from .model import SystemManager

log = logging.getLogger(__name__)
Key = tuple[str, int]
LOG_LINES = 30
LOG_REFRESH_SECONDS = 5.0


def container_name(job: dict, number: int) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{job['job_name']}.instance.{number}")


def podman_run_args(job: dict, number: int, *, name: str, network: str, label: str) -> list[str]:
    """`podman run` arguments for one instance of a service document (or an SLA microservice), as
    the node engine would run it; the environment goes separately (env_file_text)."""
    args = ["run", "-d", "--name", name, "--label", label, "--network", network,
            "--hostname", f"instance-{number}", "--no-healthcheck", "--log-driver", "k8s-file"]
    rr_ip = service_address(job)
    if rr_ip:
        args += ["--ip", rr_ip]
    if int(job.get("memory") or 0) > 0:
        args += ["--memory", f"{int(job['memory'])}m"]
    if int(job.get("vcpus") or 0) > 0:
        args += ["--cpus", str(int(job["vcpus"]))]
    if job.get("cmd"):
        # The node engine's WithProcessArgs: the SLA's cmd replaces ENTRYPOINT and CMD both.
        args += ["--entrypoint", json.dumps(list(job["cmd"]))]
    return args


def env_file_text(job: dict, number: int) -> str:
    return "\n".join([f"HOSTNAME=instance-{number}", *(job.get("environment") or [])]) + "\n"


def service_address(job: dict) -> str | None:
    return job.get("RR_ip") or (job.get("addresses") or {}).get("rr_ip")


def port_mappings(port: str | None) -> list[tuple[int, int]]:
    """Oakestra's `port`: "host[:container][/proto]" items separated by ';' -> (host, container) TCP pairs."""
    pairs = []
    for item in (port or "").split(";"):
        item = item.strip()
        if not item or item.endswith("/udp"):
            continue
        host, _, container = item.split("/")[0].partition(":")
        pairs.append((int(host), int(container or host)))
    return pairs


class Relay:
    """host:port on the cluster's public IP -> the container's address (what `port` publishes)."""

    def __init__(self, listen_host: str, listen_port: int, target_host: str, target_port: int):
        self.listen = (listen_host, listen_port)
        self.target = (target_host, target_port)
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, *self.listen, reuse_address=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 10)
        except (OSError, asyncio.TimeoutError):
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass
class Running:
    """One instance the worker started."""

    name: str
    job_id: str
    one_shot: bool
    relays: list[Relay] = field(default_factory=list)
    logs_at: float = 0.0
    reported: str = "CREATING"


class ContainerWorker:
    """Set as the emulator's runtime (Lifecycle.runtime); runs on the emulator's event loop."""

    def __init__(self, network: Network, *, label: str, log_dir: Path, public_host: str = "127.0.0.1",
                 poll_seconds: float = 0.5, registries: dict[str, tuple[str, str] | None] | None = None):
        self.network, self.label, self.log_dir = network, label, log_dir
        self.registries = registries or {}
        """host:port -> login of the registries images may be pulled from (plain HTTP, as a test's registry)."""
        self.pulled: list[str] = []
        self.public_host = public_host
        self.poll_seconds = poll_seconds
        self.sm: SystemManager | None = None
        self._queue: list[tuple[str, Key, dict | None]] = []
        self._lock = threading.Lock()
        self._running: dict[Key, Running] = {}
        self._task: asyncio.Task | None = None
        self.events: list[tuple[float, str, str]] = []
        """(time, container, what happened): for a test's failure output."""

    # Called by the emulator's Lifecycle, from whichever thread ticks it: queued, done by the loop.
    def deploy(self, key: Key, job: dict) -> None:
        with self._lock:
            self._queue.append(("deploy", key, {k: v for k, v in job.items() if k != "instance_list"}))

    def undeploy(self, key: Key) -> None:
        with self._lock:
            self._queue.append(("undeploy", key, None))

    # The loop.
    def start(self, sm: SystemManager) -> None:
        self.sm = sm
        self._task = asyncio.get_running_loop().create_task(self._run(), name="container-worker")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for key in list(self._running):
            await self._remove(key, "worker closed")
        # What it pulled goes too: a test leaves no image behind that it did not build.
        for image in self.pulled:
            await podman("rmi", "-f", image, check=False)

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving; the test sees the instance stuck and the log says why
                log.exception("container worker step failed")
            await asyncio.sleep(self.poll_seconds)

    async def _step(self) -> None:
        with self._lock:
            queue, self._queue = self._queue, []
        for action, key, job in queue:
            if action == "deploy":
                await self._deploy(key, job)
            else:
                await self._remove(key, "undeployed")
        if self._running:
            await self._observe()

    def _report(self, key: Key, status: str, detail: str = "", logs: str | None = None) -> None:
        assert self.sm is not None
        lifecycle, now = self.sm.lifecycle, time.time()
        if key not in lifecycle.on_cluster:
            return  # undeployed meanwhile
        instance = lifecycle.on_cluster[key]
        if logs is not None:
            instance["logs"] = logs
        if status == "RUNNING":
            lifecycle.set_status(key, "RUNNING", now, self.sm.jobs)
        else:
            # FAILED/DEAD are re-deployed by the cluster after Timing.redeploy_after; COMPLETED is final.
            lifecycle.finish(key, status, detail, now, self.sm.jobs, stay=status == "COMPLETED")

    async def _deploy(self, key: Key, job: dict) -> None:
        await self._remove(key, "re-deployed")
        name = container_name(job, key[1])
        image, rr_ip = job.get("image") or job.get("code"), service_address(job)
        exists = await podman("image", "exists", image, check=False)
        if exists.code != 0 and not await self._pull(name, image):
            self.events.append((time.time(), name, f"image {image} not found"))
            self._report(key, "FAILED", f"failed to pull image {image}: not found and no registry reachable")
            return
        args = podman_run_args(job, key[1], name=name, network=self.network.name, label=self.label)
        # Values (passwords among them) go through a private file, not podman's argv.
        with tempfile.NamedTemporaryFile("w", prefix="flops-env-", suffix=".env", delete=True) as env_file:
            env_file.write(env_file_text(job, key[1]))
            env_file.flush()
            if rr_ip:
                self.network.forget_neighbour(rr_ip)
            started = await podman(*args, "--env-file", env_file.name, image, check=False)
        if started.code != 0:
            self.events.append((time.time(), name, f"start failed: {started.err.strip()[-300:]}"))
            await podman("rm", "-f", "-t", "0", name, check=False)
            self._report(key, "FAILED", f"container could not start: {started.err.strip()[-300:]}")
            return
        running = Running(name, job["microserviceID"], bool(job.get("one_shot")))
        self._running[key] = running
        self.events.append((time.time(), name, f"started at {rr_ip}"))
        for host_port, container_port in port_mappings(job.get("port")):
            relay = Relay(self.public_host, host_port, rr_ip, container_port)
            try:
                await relay.start()
            except OSError as exc:
                self.events.append((time.time(), name, f"host port {host_port} unavailable: {exc}"))
                continue
            running.relays.append(relay)

    async def _pull(self, name: str, image: str) -> bool:
        """Pull `image` from one of the worker's registries, as the node engine pulls what is not there."""
        host = image.split("/", 1)[0]
        if host not in self.registries:
            return False
        login = self.registries[host]
        # The login goes through a private auth file, not podman's argv.
        with tempfile.NamedTemporaryFile("w", prefix="flops-auth-", suffix=".json", delete=True) as auth_file:
            token = base64.b64encode(":".join(login).encode()).decode() if login else ""
            json.dump({"auths": {host: {"auth": token}} if login else {}}, auth_file)
            auth_file.flush()
            self.events.append((time.time(), name, f"pulling {image}"))
            pulled = await podman("pull", "-q", "--tls-verify=false", "--authfile", auth_file.name, image,
                                  check=False, timeout=600)
        self.events.append((time.time(), name, f"pulled {image}" if pulled.code == 0 else
                            f"pull of {image} failed: {pulled.err.strip()[-300:]}"))
        if pulled.code == 0:
            self.pulled.append(image)
        return pulled.code == 0

    async def _observe(self) -> None:
        listing = await podman("ps", "-a", "--filter", f"label={self.label}", "--format", "json", check=False)
        if listing.code != 0:  # no answer is no news: never read it as "every container is gone"
            return
        states = {}
        for entry in json.loads(listing.out or "[]"):
            for name in entry.get("Names") or []:
                states[name] = entry
        now = time.time()
        for key, running in list(self._running.items()):
            entry = states.get(running.name)
            state = (entry or {}).get("State", "missing")
            if state == "running":
                if running.reported != "RUNNING":
                    running.reported = "RUNNING"
                    self._report(key, "RUNNING", logs=await self._tail(running.name))
                    running.logs_at = now
                elif now - running.logs_at >= LOG_REFRESH_SECONDS:
                    running.logs_at = now
                    self._report(key, "RUNNING", logs=await self._tail(running.name))
            elif state in ("exited", "stopped", "missing"):
                code = (entry or {}).get("ExitCode")
                status = "COMPLETED" if running.one_shot and code == 0 else "DEAD"
                self.events.append((now, running.name, f"exited with code {code}: {status}"))
                logs = await self._tail(running.name)
                await self._remove(key, f"exited ({code})")
                self._report(key, status, logs=logs)

    async def _tail(self, name: str) -> str:
        done = await podman("logs", "--tail", str(LOG_LINES), name, check=False)
        return (done.out + done.err)[-4000:]

    async def _remove(self, key: Key, why: str) -> None:
        running = self._running.pop(key, None)
        if running is None:
            return
        for relay in running.relays:
            await relay.close()
        try:
            full = await podman("logs", running.name, check=False)
            (self.log_dir / f"{running.name}.log").write_text(full.out + full.err)
            await podman("rm", "-f", "-t", "0", running.name, check=False)
        except PodmanError as exc:
            log.warning("removing %s: %s", running.name, exc)
        self.events.append((time.time(), running.name, f"removed ({why})"))

    def snapshot(self) -> dict[str, Any]:
        return {"running": {r.name: r.reported for r in self._running.values()},
                "events": [f"{t:.1f} {name}: {what}" for t, name, what in self.events]}

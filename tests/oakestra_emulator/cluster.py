"""Root scheduler and cluster side of the emulator: scheduling answers and instance lifecycles.

What the real system does asynchronously (scheduler callback, 15 s cluster reports) happens here
when `tick(now)` runs, which the HTTP layer calls before every request: no background tasks, so a
test's ManualClock fully decides what a client sees.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

ROOT_NEGATIVE = ("TargetClusterNotFound", "TargetClusterNotActive", "NoActiveClusterWithCapacity")
PROGRESSION = ("CLUSTER_SCHEDULED", "NODE_SCHEDULED", "CREATING", "RUNNING")


@dataclass
class Cluster:
    name: str
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    location: str = "munich"
    vcpus: int = 4096
    memory: int = 16 * 1024 * 1024
    virtualization: tuple[str, ...] = ("docker",)
    active: bool = True
    publicip: str = "192.0.2.10"
    """Its workers' public IP: instances' `publicip` (use 127.0.0.1 if something should connect)."""
    workers: int = 3

    def fits(self, job: dict) -> bool:
        return (job.get("virtualization", "docker") in self.virtualization
                and int(job.get("memory") or 0) <= self.memory and int(job.get("vcpus") or 0) <= self.vcpus)

    def document(self) -> dict:
        return {"_id": self.id, "cluster_name": self.name, "cluster_location": self.location,
                "vcpus": self.vcpus, "memory": self.memory, "virtualization": list(self.virtualization),
                "active": self.active, "ip": self.publicip}


def schedule(job: dict, clusters: list[Cluster]) -> Cluster | str:
    """The Go root scheduler (bestCpuMemFit): honours only the `direct` constraint."""
    direct = [c.get("cluster") for c in job.get("constraints") or [] if c.get("type") == "direct"]
    if direct:
        named = [c for c in clusters if c.name == direct[0]]
        if not named:
            return "TargetClusterNotFound"
        if not named[0].active:
            return "TargetClusterNotActive"
        return named[0] if named[0].fits(job) else "NoActiveClusterWithCapacity"
    active = [c for c in clusters if c.active]
    if not active:
        return "TargetClusterNotActive"
    fitting = [c for c in active if c.fits(job)]
    return fitting[0] if fitting else "NoActiveClusterWithCapacity"


@dataclass
class Timing:
    """Configurable clock of the asynchronous parts (seconds on the emulator's clock)."""

    schedule_delay: float = 0.0
    """POST .../instance -> scheduler answer (CLUSTER_SCHEDULED or a negative status)."""
    step_delay: float = 0.0
    """Each further step: NODE_SCHEDULED, CREATING, RUNNING."""
    redeploy_after: float = 15.0
    """The cluster re-deploys FAILED/DEAD instances this long after they failed (unless told not to)."""
    orphan_cleanup_after: float = 15.0
    """Instances the root forgot without telling the cluster die with the next cluster report."""


class Runtime(Protocol):
    """What runs instances for real (worker.ContainerWorker); without one, the clock decides."""

    def deploy(self, key: tuple[str, int], job: dict) -> None:
        """Start the instance; the runtime then reports RUNNING, DEAD, COMPLETED or FAILED itself."""

    def undeploy(self, key: tuple[str, int]) -> None: ...


@dataclass
class Lifecycle:
    """Per-instance timers, keyed by (job_id, instance_number); the documents live in the jobs."""

    timing: Timing
    runtime: Runtime | None = None
    requests: list[tuple[float, str]] = field(default_factory=list)
    since: dict[tuple[str, int], float] = field(default_factory=dict)
    progressing: set[tuple[str, int]] = field(default_factory=set)
    failed: dict[tuple[str, int], bool] = field(default_factory=dict)
    """Failed instances -> whether they stay failed (True) or get re-deployed."""
    orphaned: dict[tuple[str, int], float] = field(default_factory=dict)
    on_cluster: dict[tuple[str, int], dict] = field(default_factory=dict)
    """What really runs on the clusters, whether or not the root still lists it."""

    def request(self, job_id: str, now: float) -> None:
        self.requests.append((now + self.timing.schedule_delay, job_id))

    def cluster_delete(self, key: tuple[str, int]) -> None:
        if self.runtime is not None and key in self.on_cluster:
            self.runtime.undeploy(key)
        for table in (self.since, self.failed, self.orphaned, self.on_cluster):
            table.pop(key, None)
        self.progressing.discard(key)

    def orphan(self, key: tuple[str, int], now: float) -> None:
        if key in self.on_cluster:
            self.orphaned.setdefault(key, now)

    def tick(self, now: float, jobs: dict[str, dict], clusters: list[Cluster]) -> None:
        due = sorted(r for r in self.requests if r[0] <= now)
        self.requests = [r for r in self.requests if r[0] > now]
        for at, job_id in due:
            job = jobs.get(job_id)
            if job is not None:
                self._answer(job, schedule(job, clusters), at)
        for key in sorted(self.progressing):
            self._advance(key, now, jobs, clusters)
        for key, stay in list(self.failed.items()):
            if not stay and now >= self.since[key] + self.timing.redeploy_after:
                del self.failed[key]
                self._create(key, self.since[key] + self.timing.redeploy_after, jobs)
                self._advance(key, now, jobs, clusters)
        for key, at in list(self.orphaned.items()):
            if now >= at + self.timing.orphan_cleanup_after:
                self.cluster_delete(key)

    def _answer(self, job: dict, decision: Cluster | str, at: float) -> None:
        if isinstance(decision, str):
            # A negative answer sets the job-level status only; no instance entry.
            job["status"] = decision
            return
        number = job["next_instance_progressive_number"]
        job["next_instance_progressive_number"] = number + 1
        instance = {"instance_number": number, "cluster_id": decision.id, "cluster_location": decision.location,
                    "status": "CLUSTER_SCHEDULED"}
        job["instance_list"].append(instance)
        job["status"] = "CLUSTER_SCHEDULED"
        key = (job["microserviceID"], number)
        self.on_cluster[key] = instance
        self.since[key] = at
        self.progressing.add(key)

    def _advance(self, key: tuple[str, int], now: float, jobs: dict[str, dict], clusters: list[Cluster]) -> None:
        instance = self.on_cluster.get(key)
        if instance is None:
            self.progressing.discard(key)
            return
        if key not in self.progressing:  # a runtime runs it: its reports move it on, not the clock
            return
        step = self.timing.step_delay
        while instance["status"] in PROGRESSION[:-1] and now >= self.since[key] + step:
            at = self.since[key] + step
            following = PROGRESSION[PROGRESSION.index(instance["status"]) + 1]
            if following == "NODE_SCHEDULED":
                cluster = next((c for c in clusters if c.id == instance["cluster_id"]), None)
                ip = cluster.publicip if cluster else "192.0.2.99"
                instance.update({"status_detail": "", "publicip": ip, "host_ip": ip, "host_port": 50011,
                                 "worker_id": f"worker{key[1] % (cluster.workers if cluster else 1)}"})
            if following == "RUNNING":
                instance.update({"cpu_percent": 1.5, "memory_percent": 2.0, "disk": 0, "logs": "",
                                 "cpu_history": [], "memory_history": []})
            if following == "CREATING":
                self._create(key, at, jobs)
            else:
                self._set(key, following, at, jobs)
            if key not in self.progressing:
                return
        if instance["status"] not in PROGRESSION[:-1]:
            self.progressing.discard(key)

    def _create(self, key: tuple[str, int], at: float, jobs: dict[str, dict]) -> None:
        """The node starts the instance: on the clock, or by the runtime, which then reports on it."""
        self._set(key, "CREATING", at, jobs)
        if self.runtime is None:
            self.progressing.add(key)
            return
        self.progressing.discard(key)
        job = jobs.get(key[0])
        if job is not None:
            self.runtime.deploy(key, job)

    def set_status(self, key: tuple[str, int], status: str, now: float, jobs: dict[str, dict]) -> None:
        """A runtime's report (RUNNING); finish() takes the ends."""
        if key in self.on_cluster and self.on_cluster[key]["status"] != status:
            if status == "RUNNING":
                self.on_cluster[key].setdefault("cpu_percent", 0.0)
            self._set(key, status, now, jobs)

    def _set(self, key: tuple[str, int], status: str, at: float, jobs: dict[str, dict]) -> None:
        instance = self.on_cluster[key]
        instance["status"] = status
        instance["last_modified_timestamp"] = at
        self.since[key] = at
        job = jobs.get(key[0])
        if job is not None and any(i is instance for i in job["instance_list"]):
            # The cluster's rule: the job takes each non-RUNNING status as it arrives, RUNNING
            # only once every instance runs. status_detail is left alone (it goes stale).
            if status != "RUNNING":
                job["status"] = status
            elif all(i["status"] == "RUNNING" for i in job["instance_list"]):
                job["status"] = "RUNNING"

    def finish(self, key: tuple[str, int], status: str, detail: str, now: float, jobs: dict[str, dict],
               *, stay: bool) -> None:
        """A container exited (COMPLETED/FAILED) or died (DEAD)."""
        instance = self.on_cluster[key]
        self.progressing.discard(key)
        instance["status_detail"] = detail
        self._set(key, status, now, jobs)
        if status in ("FAILED", "DEAD"):
            self.failed[key] = stay
        else:
            self.failed.pop(key, None)

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"job_id": k[0], "instance_number": k[1], "status": v["status"], "orphan": k in self.orphaned}
                for k, v in sorted(self.on_cluster.items())]

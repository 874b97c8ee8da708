"""An in-process emulator of Oakestra's System Manager API (docs/oakestra-api.md), quirks included.

    async with run_emulator() as emu:                 # http://127.0.0.1:<free port>, user Admin/Admin
        OakestraConfig(url=emu.url, username="Admin", password="Admin")
        ...
    with emulator_in_thread() as emu: ...              # same, on its own loop in a background thread
    with emulator_in_process() as emu: ...             # in a process of its own (emu.calls(), emu.world())

Knobs (keyword arguments of both): clock (e.g. ManualClock(); wall-clock seconds by default),
timing=Timing(schedule_delay, step_delay, redeploy_after, orphan_cleanup_after) for the instance
lifecycle REQUESTED -> CLUSTER_SCHEDULED -> NODE_SCHEDULED -> CREATING -> RUNNING (all 0 by
default: RUNNING by the next call), token_ttl (600 s), latency (seconds per call),
faults=Faults(rate, kinds, after_effect, hang, seed, script), clusters=[Cluster(...)] (capacity,
activity: negative scheduling), list_write_gap (seconds between reading an app's service list and
writing it back; writes to one app that overlap there lose an id, §13.13). Also settable later:
emu.latency, emu.faults.rate, emu.set_on_request(hook); emu.restart() (new signing key, as after a
System Manager restart).

Records: emu.calls (method, path, route template, status, injected fault, whether it took
effect), emu.count(method, route), emu.writes(), emu.reads(); the world: emu.apps(), emu.jobs(),
emu.job(name), emu.cluster_instances() (what runs on clusters, orphans included), emu.sm.rr_ips,
emu.sm.upserts / emu.sm.instance_requests (effects applied per job_name),
emu.sm.overlapping_list_writes (per app) / emu.sm.peak_list_writers, emu.lost_services(). Steering:
emu.complete(job_id, exit_code), emu.fail_instance(job_id, n, status, detail, stay).
"""

from .cluster import ROOT_NEGATIVE, Cluster, Timing
from .http import Call, Faults
from .model import ApiError, SystemManager
from .process import EmulatorProcess, emulator_in_process
from .server import Emulator, ManualClock, emulator_in_thread, run_emulator

__all__ = ["ROOT_NEGATIVE", "ApiError", "Call", "Cluster", "Emulator", "EmulatorProcess", "Faults", "ManualClock",
           "SystemManager", "Timing", "emulator_in_process", "emulator_in_thread", "run_emulator"]

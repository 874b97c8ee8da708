"""The warm ClientApp launcher: the SuperExec of one learner's SuperNode under Flower's `process` isolation.

In its default `subprocess` isolation, Flower 1.42's SuperNode starts `flower-superexec`, which acquires each
task from the SuperNode's Runtime API and starts a fresh `flwr-clientapp` process for it: an interpreter that
imports Flower, torch and the task again for every message (seconds each; Flower issue #3670). With
`--isolation process` the SuperNode leaves that role to a process the deployer runs beside it; this is ours.
It imports all of that once and loads this learner's task and data, then polls the Runtime API as SuperExec
does and, for each task, forks a child that runs Flower's own ClientApp runtime (`run_clientapp`) with the
task's token. Every message still runs in a process of its own (a crash cannot take the SuperNode down);
only the start-up is gone. Flower's pieces are used as they are: its executor protocol, exec plugin, Runtime
API client and ClientApp runtime.

    python -m flops_learner.warm_clientapp --runtime-api-address HOST:PORT --node-config-json JSON
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import signal
import time

from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=no-name-in-module
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult
from flwr.supercore.superexec.plugin.base_exec_plugin import BaseExecPlugin
from flwr.supernode.runtime.run_clientapp import run_clientapp

from flops_runtime import flower_pulls, proc
from flops_runtime.logs import own_logger

from .client_app import prepare
from .supernode import ACTIVE_WINDOW_SECONDS
from .task import warm_up

log = logging.getLogger("flops_learner")

# Within a training (since the start, or a task launched in the last ACTIVE_WINDOW_SECONDS) as often as the
# SuperExec of the `subprocess` isolation polls (flops_runtime.proc.SUPEREXEC_POLL_SECONDS); otherwise as Flower's
# SuperExec does by default, so an idle learner costs little.
POLL_SECONDS = 0.1
IDLE_POLL_SECONDS = 1.0
CHILD_STOP_SECONDS = 5


class ClientAppPlugin(BaseExecPlugin):
    """Flower's exec plugin, for ClientApp tasks only (a SuperNode hands out no other)."""

    supported_task_types = frozenset({TaskType.CLIENT_APP})


def run_task(spec: ExecutionSpec) -> None:
    """In the forked child: Flower's ClientApp runtime, as `flwr-clientapp --token ...` would run it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the launcher's own handler must not outlive the fork
    proc.die_with_parent()
    run_clientapp(runtime_api_address=spec.runtime_api_address, token=spec.token, insecure=spec.insecure,
                  parent_pid=spec.parent_pid, runtime_dependency_install=spec.runtime_dependency_install)


class ForkExecutor:
    """Flower's SuperExec executor protocol (flwr.supercore.superexec.executor.Executor): a forked child per task."""

    def __init__(self) -> None:
        self.context = multiprocessing.get_context("fork")
        self.children: list = []

    def get_eligible_capacity(self, supported_task_types, **_) -> tuple[set, set[str]]:
        return set(supported_task_types), set()

    def wait_for_capacity(self, *_, **__) -> None:
        return None

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        child = self.context.Process(target=run_task, args=(spec,), name=f"flwr-clientapp-{spec.task_id}")
        child.start()
        self.children.append(child)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        self.children = [c for c in self.children if c.is_alive()]  # is_alive() reaps the finished ones

    def close(self) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            child.join(CHILD_STOP_SECONDS)
            if child.is_alive():
                child.kill()


def _stop(signum, frame):
    # Raised, not flagged: the signal may come while a Runtime API call waits out the SuperNode's own stop.
    raise SystemExit(128 + signum)


def serve(address: str, poll_seconds: float = POLL_SECONDS, idle_poll_seconds: float = IDLE_POLL_SECONDS) -> None:
    """Acquire and launch ClientApp tasks until SIGTERM/SIGINT (then the running ClientApps are stopped)."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    executor = ForkExecutor()
    client = RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker())
    plugin = ClientAppPlugin(runtime_api_address=address, insecure=True, root_certificates_path=None,
                             executor=executor)
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    active_until = time.monotonic() + ACTIVE_WINDOW_SECONDS  # started for a training
    try:
        while True:
            executor.reconcile()
            answer = client.AcquireTask(request)
            if answer.HasField("task") and answer.token:
                plugin.launch_task(token=answer.token, task=answer.task)
                active_until = time.monotonic() + ACTIVE_WINDOW_SECONDS
                continue  # another task may be waiting already
            time.sleep(poll_seconds if time.monotonic() < active_until else idle_poll_seconds)
    finally:
        executor.close()
        client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime-api-address", required=True, help="host:port of the SuperNode's Runtime API")
    parser.add_argument("--node-config-json", required=True,
                        help="the SuperNode's node config as JSON (partition, task and data files)")
    args = parser.parse_args(argv)
    own_logger("flops_learner", "flops-clientapp-launcher")
    # What every ClientApp would otherwise do first: the forked children find it done.
    task, _, _ = prepare(json.loads(args.node_config_json))
    warm_up(task)
    flower_pulls.install()  # the forked ClientApps pull their message's objects from the SuperNode
    # Every message's ClientApp is a fork of this process: with the objects loaded so far out of the
    # collector's reach, a child's garbage collections do not touch (and so copy) the parent's pages.
    gc.freeze()
    log.info("ClientApp launcher ready (task, data and imports loaded); polling %s", args.runtime_api_address)
    serve(args.runtime_api_address)


if __name__ == "__main__":
    main()

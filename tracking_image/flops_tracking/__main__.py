"""Console script `flops-tracking-server ARGS...`: set the project's users and permissions up
(bootstrap.prepare), then run `mlflow server --app-name basic-auth ARGS...`.

Without FLOPS_ALLOWED_HOSTS_TAG the entrypoint becomes MLflow (exec: signals and the exit code are MLflow's own).
With it, it stays as MLflow's parent: it reads that experiment tag over loopback and restarts MLflow with the
hosts the tag adds to --allowed-hosts (flops_tracking.allowed_hosts says why), forwards SIGTERM/SIGINT and
exits with MLflow's exit code.

The store URIs come from MLflow's own variables (MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION),
the rest from the contract (flops_tracking.contract).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

from . import allowed_hosts
from .bootstrap import config_path, prepare
from .contract import ADMIN_USER, TrackingEnv

BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"
log = logging.getLogger("flops_tracking")

POLL_SECONDS = 2.0
"""How often the tag is read until it has been applied once."""
SETTLED_POLL_SECONDS = 30.0
"""... and after: a public address changes only with a new container, i.e. a new entrypoint."""
STOP_SECONDS = 20.0


def server_argv(args: Sequence[str]) -> list[str]:
    mlflow = Path(sys.executable).parent / "mlflow"
    program = str(mlflow) if mlflow.exists() else (shutil.which("mlflow") or "mlflow")
    return [program, "server", "--app-name", "basic-auth", *args]


class Supervisor:
    """MLflow as a child, started again with more allowed hosts when the experiment's tag names new ones."""

    def __init__(self, args: Sequence[str], env: TrackingEnv) -> None:
        self.args = list(args)
        self.env = env
        self.base = allowed_hosts.base_hosts(args)
        self.hosts = self.base
        self.port = allowed_hosts.option(args, "--port") or "5000"
        self.stopping = threading.Event()
        self.child: subprocess.Popen | None = None

    def _start(self) -> None:
        command = server_argv(allowed_hosts.with_option(self.args, allowed_hosts.OPTION, ",".join(self.hosts)))
        self.child = subprocess.Popen(command)

    def _stop_child(self, sig: int = signal.SIGTERM) -> int:
        assert self.child is not None
        if self.child.poll() is None:
            self.child.send_signal(sig)
        try:
            return self.child.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.child.kill()
            return self.child.wait()

    def stop(self, signum: int, _frame: object = None) -> None:
        self.stopping.set()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def _wanted(self) -> tuple[str, ...] | None:
        assert self.env.allowed_hosts_tag
        value = allowed_hosts.read_tag(self.port, self.env.experiment, self.env.allowed_hosts_tag,
                                       (ADMIN_USER, self.env.admin_password))
        return None if value is None else allowed_hosts.merged(self.base, allowed_hosts.parse(value))

    def run(self) -> int:
        self._start()
        applied = False
        while True:
            assert self.child is not None
            try:
                code = self.child.wait(timeout=SETTLED_POLL_SECONDS if applied else POLL_SECONDS)
            except subprocess.TimeoutExpired:
                code = None
            if self.stopping.is_set():
                return self._stop_child() if code is None else code
            if code is not None:
                log.error("mlflow server exited with %s", code)
                return code
            wanted = self._wanted()
            if wanted is None or wanted == self.hosts:
                applied = applied or wanted is not None
                continue
            log.info("allowed hosts now %s (tag %s): restarting mlflow server", ",".join(wanted),
                     self.env.allowed_hosts_tag)
            self._stop_child()
            if self.stopping.is_set():
                return 0
            self.hosts = wanted
            self._start()
            applied = True


def exit_code(code: int) -> int:
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        env = TrackingEnv.from_env(dict(os.environ))
    except ValueError as exc:
        raise SystemExit(f"flops-tracking-server: {exc}") from None
    backend = os.environ.get(BACKEND_ENV)
    if not backend:
        raise SystemExit(f"flops-tracking-server: {BACKEND_ENV} is not set")
    if not env.allowed_hosts_tag or allowed_hosts.base_hosts(args) == ("*",):
        os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(prepare(env, backend))
        command = server_argv(args)
        os.execv(command[0], command)
    # The set-up in a child: MLflow's stores would otherwise stay resident here beside the server.
    done = subprocess.run([sys.executable, "-m", "flops_tracking.bootstrap"])
    if done.returncode:
        raise SystemExit(done.returncode)
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(config_path(Path(env.workdir)))  # written by the set-up
    supervisor = Supervisor(args, env)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, supervisor.stop)
    sys.exit(exit_code(supervisor.run()))


if __name__ == "__main__":
    main()

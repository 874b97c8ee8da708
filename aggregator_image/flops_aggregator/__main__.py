"""`flops-aggregator`: one FLOps training = a Flower SuperLink plus one run of this package's ServerApp.

It starts its own SuperLink (runtime dependency installation disabled: the image holds every package), takes the
learners' certificates and registers the keys they name (flops_aggregator.enrollment, .admission), submits the run
with `flwr run` (a thin app bundle binding the pre-installed apps), waits for the run to finish, reads its final status with `flwr ls` (`flwr run --stream` exits 0 even when the ServerApp raised),
stops the SuperLink and exits 0 only if the run completed (with the model logged and registered when
MLflow is on). The SuperLink's port answering TCP is the readiness signal.
SIGTERM/SIGINT stop the training: the Flower children are stopped as at the end, then the MLflow run, if
one was started and is not over, ends KILLED (tag flops.end_reason), within a few seconds at most.
Exit codes: 0 success; 1 failed run; 2 invalid configuration; 3 SuperLink did not start or died;
128+signal number (143 SIGTERM, 130 SIGINT) when stopped by a signal.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from flops_runtime import proc
from flops_learner.loading import load_task

from . import bundle, mlflow_run
from .admission import LEARNERS_FILE, Admitted, FlowerRegistry, TlsFiles, check, requested_learners, write_tls
from .contract import (ENV_ENROLL_ADDRESS, ENV_FLOWER_CA_CERT, ENV_SUPERLINK_ADDRESS, ENV_SUPERLINK_CERT,
                       ENV_SUPERLINK_KEY, FlowerAdmission)
from .enrollment import Enrollment
from .settings import CONFIG_ENV, TRACKING_ENV, WORKDIR_ENV, Settings, parse

log = logging.getLogger("flops_aggregator")
cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

CONNECTION = "flops"
STARTUP_SECONDS = 60
STATUS_POLL_SECONDS = 0.5
RUN_STARTED = re.compile(r"Successfully started run (\d+)")
# Ending the MLflow run after a signal: the tracking server may be gone, and the runtime's patience
# (e.g. 10 s between docker's SIGTERM and SIGKILL) is mostly spent stopping the Flower children.
MLFLOW_END_SECONDS = 4


class Failure(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Stopped(Failure):
    """SIGTERM/SIGINT arrived while the training was under way."""

    def __init__(self, signum: int):
        self.reason = f"signal {signal.Signals(signum).name}"
        super().__init__(128 + signum, f"stopped by {self.reason}")


def local_address(address: str) -> str:
    """Where this container's own Flower tools reach the SuperLink."""
    host, port = proc.split_address(address)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def flwr_home_config(address: str, ca_cert: Path | None) -> str:
    tls = f'root-certificates = "{ca_cert}"' if ca_cert is not None else "insecure = true"
    return (f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "{local_address(address)}"\n{tls}\n')


class Aggregator:
    def __init__(self, settings: Settings, address: str, admission: FlowerAdmission | None = None):
        self.settings, self.address, self.admission = settings, address, admission
        self.home = settings.workdir / "flwr-home"
        self.superlink: subprocess.Popen | None = None
        self.tls: TlsFiles | None = None
        self.admitted: Admitted | None = None
        self.registry: FlowerRegistry | None = None
        self.enrollment: Enrollment | None = None
        # Set by the signal handler, acted on by the wait loops: raising from the handler itself could
        # interrupt the children's cleanup halfway.
        self.signalled: int | None = None

    def check_signal(self) -> None:
        if self.signalled is not None:
            raise Stopped(self.signalled)

    def env(self) -> dict[str, str]:
        env = proc.flower_env({"FLWR_HOME": str(self.home), CONFIG_ENV: self.settings.config.dumps(),
                               WORKDIR_ENV: str(self.settings.workdir), TRACKING_ENV: self.settings.tracking_uri})
        # The SuperLink reads its key from the file; no other process needs it.
        env.pop(ENV_SUPERLINK_KEY, None)
        return env

    def flwr(self, *args: str) -> dict:
        done = subprocess.run([proc.script("flwr"), *args, "--format", "json"], env=self.env(),
                              capture_output=True, text=True, timeout=120)
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError:
            raise Failure(1, f"flwr {args[0]} gave no JSON (exit {done.returncode}): {done.stdout}{done.stderr}") from None

    def start_superlink(self) -> None:
        host, port = proc.split_address(self.address)
        self.home.mkdir(parents=True, exist_ok=True)
        if self.admission is not None:
            self.tls = write_tls(self.admission, self.settings.workdir / "tls")
        (self.home / "config.toml").write_text(flwr_home_config(self.address, self.tls and self.tls.ca_cert))
        security = self.tls.superlink_args() if self.tls is not None else ["--insecure"]
        # Flower's SuperLink with only its Fleet API open beyond loopback (flops_aggregator.superlink).
        command = [sys.executable, "-m", "flops_aggregator.superlink", *security, "--host", host, "--port", str(port),
                   "--disable-runtime-dependency-installation"]
        log.info("starting %s", " ".join(command))
        self.superlink = proc.start(command, self.env())

        @retry(retry=retry_if_result(lambda up: not up and self.superlink.poll() is None and self.signalled is None),
               wait=wait_fixed(0.2), stop=stop_after_delay(STARTUP_SECONDS), retry_error_callback=lambda state: False)
        def ready() -> bool:
            return proc.reachable(self.address)

        up = ready()
        self.check_signal()
        if not up or self.superlink.poll() is not None:
            raise Failure(3, f"SuperLink did not come up on {self.address} (exit {self.superlink.poll()})")
        log.info("SuperLink ready on %s (%s)", self.address,
                 "TLS, SuperNode authentication" if self.tls is not None else "insecure: anyone may join")
        if self.tls is not None:
            # Learners are admitted as they present their certificates (admission.py, enrollment.py).
            self.registry = FlowerRegistry(local_address(self.address), self.tls.ca_cert)
            self.admitted = Admitted(self.registry, self.admission.ca_cert, self.settings.config.num_learners)
            try:
                self.enrollment = Enrollment(self.admission.enroll_address, self.tls, self.admitted.offer)
            except OSError as exc:
                raise Failure(3, f"enrollment address {self.admission.enroll_address} not usable: {exc}") from exc

    def submit_and_wait(self, bound: float) -> str:
        """`flwr run --stream`: submits the run and streams its logs until it ends (exit 0 whatever the
        outcome, hence the status check after). Returns the run id."""
        app_dir = bundle.write(self.settings.workdir / "app")
        stream = subprocess.Popen([proc.script("flwr"), "run", str(app_dir), CONNECTION, "--stream"], env=self.env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        run_ids: list[str] = []

        def relay() -> None:
            for line in stream.stdout:
                sys.stdout.write(line)
                if not run_ids and (found := RUN_STARTED.search(line)):
                    run_ids.append(found.group(1))

        reader = threading.Thread(target=relay, daemon=True)
        reader.start()
        deadline = time.monotonic() + bound
        try:
            while stream.poll() is None:
                self.check_signal()
                if self.superlink.poll() is not None:
                    raise Failure(3, f"SuperLink died (exit {self.superlink.returncode}) during the run")
                if time.monotonic() > deadline:
                    raise Failure(1, f"the run did not finish within {bound:.0f}s")
                self.follow_learner_count()
                time.sleep(STATUS_POLL_SECONDS)
        finally:
            if stream.poll() is None:
                proc.stop_tree(stream, timeout=5)
            reader.join(timeout=5)
        if not run_ids:
            raise Failure(1, f"flwr run did not start a run (exit {stream.returncode})")
        return run_ids[0]

    def follow_learner_count(self) -> None:
        """Learners added or removed while training: admit exactly the count the operator last asked for."""
        wanted = requested_learners(self.settings.workdir)
        if self.admitted is None or wanted is None or wanted == self.admitted.count:
            return
        try:
            self.admitted.admit(wanted)
        except Exception as exc:  # the next look tries again; the learners already admitted keep training
            log.warning("admitting %d learners failed: %s", wanted, exc)

    def final_status(self, run_id: str) -> dict:
        answer = self.flwr("ls", CONNECTION, "--run-id", run_id)
        runs = answer.get("runs") or []
        if not answer.get("success") or not runs:
            raise Failure(1, f"flwr ls knows no run {run_id}: {answer.get('error-message', '')}")
        return runs[0]

    def stop(self) -> None:
        if self.enrollment is not None:
            self.enrollment.close()
        if self.registry is not None:
            self.registry.close()
        if self.superlink is not None:
            code = proc.stop_tree(self.superlink)
            log.info("SuperLink stopped (%s)", code)


def run_bound(settings: Settings) -> float:
    """The longest a run can legitimately take: each round waits at most the round timeout for
    learners to appear, then for train replies, then for evaluate replies."""
    return settings.rounds * 3 * settings.round_timeout + 600


@cli.command(help=__doc__)
def aggregator(
    config: Annotated[str, typer.Option(envvar=CONFIG_ENV, help="JSON training config (contract.AggregatorConfig).")],
    superlink_address: Annotated[str, typer.Option(
        envvar=ENV_SUPERLINK_ADDRESS, help="host:port the SuperLink listens on (Fleet, Control, Runtime APIs).")] = "0.0.0.0:8000",
    workdir: Annotated[Path, typer.Option(envvar=WORKDIR_ENV, help="Writable directory (FLWR_HOME, best model, result.json).")] = Path("/tmp/flops-aggregator"),
    tracking_uri: Annotated[str, typer.Option(
        envvar=TRACKING_ENV, help="MLflow tracking server; empty: bare mode, nothing logged.")] = "",
    flower_ca_cert: Annotated[str, typer.Option(
        envvar=ENV_FLOWER_CA_CERT, show_default=False,
        help="The project's CA certificate (base64 of PEM). With the next three: TLS and admitted learners only.")] = "",
    superlink_cert: Annotated[str, typer.Option(
        envvar=ENV_SUPERLINK_CERT, show_default=False,
        help="The SuperLink's TLS certificate, issued by that CA (base64 of PEM).")] = "",
    superlink_key: Annotated[str, typer.Option(
        envvar=ENV_SUPERLINK_KEY, show_default=False, help="The SuperLink's TLS key (base64 of PKCS#8 PEM).")] = "",
    enroll_address: Annotated[str, typer.Option(
        envvar=ENV_ENROLL_ADDRESS, help="host:port where learners present their certificates (HTTPS).")] = "",
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s flops-aggregator %(levelname)s %(message)s")
    try:
        settings = parse(config, workdir.resolve(), tracking_uri)
        load_task(settings.config.task.to_wire())
        proc.split_address(superlink_address)
        admission = admission_from(flower_ca_cert, superlink_cert, superlink_key, enroll_address)
    except Exception as exc:
        log.error("invalid aggregator configuration: %s", exc)
        raise typer.Exit(2) from exc
    try:
        settings.workdir.mkdir(parents=True, exist_ok=True)
        (settings.workdir / "result.json").unlink(missing_ok=True)
        (settings.workdir / LEARNERS_FILE).unlink(missing_ok=True)
        mlflow_run.forget(settings.workdir)
    except OSError as exc:
        log.error("work directory %s (%s) is not usable: %s", settings.workdir, WORKDIR_ENV, exc)
        raise typer.Exit(2) from exc
    agg = Aggregator(settings, superlink_address, admission)

    def on_term(signum, frame):
        if agg.signalled is None:  # a second signal must not rename why we stop
            agg.signalled = signum
            mlflow_run.record_stop(settings.workdir, Stopped(signum).reason)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    stopped: Stopped | None = None
    try:
        agg.start_superlink()
        run_id = agg.submit_and_wait(run_bound(settings))
        final = agg.final_status(run_id)
        if final["status"] != "finished:completed":
            raise Failure(1, f"run {run_id} ended {final['status']}: {final.get('status-details', '')}")
        log.info("run %s completed in %.1fs", run_id, float(final.get("elapsed", 0)))
        code = 0
    except Failure as failure:
        log.error("%s", failure)
        code = failure.code
        stopped = failure if isinstance(failure, Stopped) else None
    finally:
        agg.stop()
    if stopped is not None:
        end_stopped_run(settings, stopped.reason)
    raise typer.Exit(code)


def admission_from(ca_cert: str, cert: str, key: str, enroll_address: str) -> FlowerAdmission | None:
    """All four set: TLS and admitted learners; none: insecure; anything between is a configuration error."""
    given = {ENV_FLOWER_CA_CERT: ca_cert, ENV_SUPERLINK_CERT: cert, ENV_SUPERLINK_KEY: key,
             ENV_ENROLL_ADDRESS: enroll_address}
    if not any(given.values()):
        log.warning("no %s: the SuperLink runs without TLS and admits any SuperNode", ENV_FLOWER_CA_CERT)
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise ValueError(f"{', '.join(missing)} not set: TLS and admission need {', '.join(given)}")
    admission = FlowerAdmission(ca_cert=ca_cert, cert=cert, key=key, enroll_address=enroll_address)
    check(admission)  # certificates or a key that do not fit fail here, as bad configuration
    proc.split_address(enroll_address)
    return admission


def end_stopped_run(settings: Settings, reason: str) -> None:
    """After the children are gone (the ServerApp can no longer write): end the MLflow run KILLED."""
    if not settings.tracking_uri:
        return
    run_id = mlflow_run.recorded(settings.workdir)
    if run_id is None:
        log.info("no MLflow run was started: nothing to end")
        return
    mlflow_run.end_killed(settings.tracking_uri, run_id, reason, MLFLOW_END_SECONDS)


def main() -> None:
    """Console script `flops-aggregator`."""
    cli()


if __name__ == "__main__":
    main()

"""`flops-learner`: one FLOps learner = a Flower SuperNode running this package's ClientApp.

It checks the task and its data first (a broken learner fails fast, non-zero), presents its certificate to the
aggregator (flops_learner.enrollment: its key is admitted, or it is refused and exits 1), starts Flower's SuperNode
(with --clientapp warm, beside it the launcher that forks each ClientApp from a warm interpreter, under
Flower's `process` isolation; with --idle-poll-seconds, through flops_learner.supernode, which shortens the
SuperNode's idle wait), and stops them once the training run is over (the ClientApp recorded the last message
of the last round and the aggregator's SuperLink went away) or once the aggregator has been unreachable for
--max-wait-seconds.
Exit codes: 0 when training is over or the aggregator is gone; 1 on the learner's own failure (bad task or
data, SuperNode crash); 143 when stopped by SIGTERM before the end.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Callable

import typer

from flops_runtime import pki, proc
from .client_app import PROGRESS_FILE
from .contract import (ENV_CLIENTAPP, ENV_CLIENTAPPIO, ENV_ENROLL_ADDRESS, ENV_IDLE_POLL, ENV_MAX_WAIT,
                       ENV_NUM_PARTITIONS, ENV_PARTITION_ID, ENV_ROOT_CERT, ENV_SUPERLINK, ENV_SUPERNODE_CERT,
                       ENV_SUPERNODE_KEY, ENV_TASK, ENV_WORKDIR, LearnerAdmission, LearnerEnv, LearnerTask)
from .enrollment import FINAL, enroll, enroll_until_answered
from .supervisor import Supervisor
from .loading import load_task

log = logging.getLogger("flops_learner")
cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def security_args(admission: LearnerAdmission | None, directory: Path) -> list[str]:
    """The SuperNode's flags for reaching the SuperLink: the project's CA and this learner's key (written to files
    only this user reads), or --insecure."""
    if admission is None:
        return ["--insecure"]
    ca = pki.write_private(directory / "ca.pem", pki.pem(admission.root_cert))
    key = pki.write_private(directory / "supernode.key", pki.openssh_private(admission.supernode_key))
    return ["--root-certificates", str(ca), "--auth-supernode-private-key", str(key)]


def enroller(admission: LearnerAdmission, ca_file: Path) -> Callable[[], None]:
    """Presents this learner's certificate once more (the supervisor's hook); a failure is only logged."""

    def again() -> None:
        try:
            answer = enroll(admission.enroll_address, admission.supernode_cert, ca_file)
            log.info("enrollment at %s: %s (%s)", admission.enroll_address, answer.verdict, answer.message)
        except OSError as exc:
            log.warning("enrollment at %s not answered: %s", admission.enroll_address, exc)

    return again


def children(settings: LearnerEnv, node_config: dict[str, object], security: list[str]) -> dict[str, list[str]]:
    """The processes of this learner, in the order they are stopped."""
    host, port = proc.split_address(settings.clientappio_address)
    flower = [*security, "--superlink", settings.superlink, "--host", host, "--port", str(port),
              "--node-config", " ".join(f"{k}={json.dumps(v)}" for k, v in node_config.items())]
    if settings.clientapp == "warm":
        flower += ["--isolation", "process"]
    if settings.idle_poll_seconds is None:
        supernode = [proc.script("flower-supernode"), *flower]
    else:
        supernode = [sys.executable, "-m", "flops_learner.supernode",
                     "--idle-poll-seconds", f"{settings.idle_poll_seconds:g}", "--", *flower]
    commands = {}
    if settings.clientapp == "warm":
        commands["ClientApp launcher"] = [sys.executable, "-m", "flops_learner.warm_clientapp",
                                          "--runtime-api-address", settings.clientappio_address,
                                          "--node-config-json", json.dumps(node_config)]
    commands["flower-supernode"] = supernode
    return commands


@cli.command(help=__doc__)
def learner(
    task: Annotated[str, typer.Option(envvar=ENV_TASK, help='JSON {"task": {...}, "data": {...}} (contract.LearnerTask).')],
    superlink: Annotated[str, typer.Option(envvar=ENV_SUPERLINK, help="host:port of the aggregator's SuperLink.")],
    partition_id: Annotated[int, typer.Option(envvar=ENV_PARTITION_ID, min=0, help="This learner's partition (0-based).")],
    num_partitions: Annotated[int, typer.Option(envvar=ENV_NUM_PARTITIONS, min=1, help="Number of learners/partitions.")],
    clientappio_address: Annotated[str, typer.Option(
        envvar=ENV_CLIENTAPPIO, help="host:port of the SuperNode's own local (ClientApp IO) API.")] = "127.0.0.1:9094",
    workdir: Annotated[Path, typer.Option(envvar=ENV_WORKDIR, help="Writable directory.")] = Path("/tmp/flops-learner"),
    max_wait_seconds: Annotated[float, typer.Option(
        envvar=ENV_MAX_WAIT, min=1,
        help="Give up (exit 0) once the aggregator has been unreachable this long.")] = 600.0,
    clientapp: Annotated[str, typer.Option(
        envvar=ENV_CLIENTAPP, help="warm: fork each ClientApp from a launcher that holds the imports, task and "
                                   "data (Flower's `process` isolation); subprocess: Flower's fresh process per "
                                   "message.")] = "warm",
    idle_poll_seconds: Annotated[float | None, typer.Option(
        envvar=ENV_IDLE_POLL, help="The SuperNode's wait after a pull that found no message (unset: Flower's 3 s; "
                                   "applied for the pinned Flower version only).")] = None,
    root_cert: Annotated[str, typer.Option(
        envvar=ENV_ROOT_CERT, show_default=False,
        help="The project's CA certificate (base64 of PEM), the only one trusted. With --supernode-key: TLS and admission.")] = "",
    supernode_key: Annotated[str, typer.Option(
        envvar=ENV_SUPERNODE_KEY, show_default=False, help="This learner's SuperNode key (base64 of PKCS#8 PEM).")] = "",
    supernode_cert: Annotated[str, typer.Option(
        envvar=ENV_SUPERNODE_CERT, show_default=False,
        help="The certificate the project's CA issued for that key (base64 of PEM), presented to the aggregator.")] = "",
    enroll_address: Annotated[str, typer.Option(
        envvar=ENV_ENROLL_ADDRESS, help="host:port where the aggregator takes learner certificates (HTTPS).")] = "",
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s flops-learner %(levelname)s %(message)s")
    try:
        settings = LearnerEnv(task=LearnerTask.model_validate_json(task), superlink=superlink,
                              partition_id=partition_id, num_partitions=num_partitions,
                              clientappio_address=clientappio_address, workdir=str(workdir),
                              max_wait_seconds=max_wait_seconds, clientapp=clientapp,
                              idle_poll_seconds=idle_poll_seconds,
                              admission=(LearnerAdmission(root_cert=root_cert, supernode_key=supernode_key,
                                                          supernode_cert=supernode_cert, enroll_address=enroll_address)
                                         if root_cert or supernode_key or supernode_cert or enroll_address else None))
        if settings.admission is None:
            log.warning("no %s: the SuperNode connects without TLS or authentication", ENV_ROOT_CERT)
        wire = settings.task.to_wire()
        user_task = load_task(wire["task"])
        data = user_task.load_data(wire["data"], partition_id, num_partitions)
        proc.split_address(clientappio_address)
    except Exception as exc:  # the learner's own failure: report it plainly and exit non-zero
        log.error("invalid learner setup: %s", exc)
        raise typer.Exit(1) from exc
    task_ref = settings.task.task
    log.info("task %s, partition %d/%d: %d train / %d test examples",
             task_ref.name or task_ref.module or task_ref.entrypoint, partition_id, num_partitions,
             len(data.y_train), len(data.y_test))

    state_dir = workdir / "state"
    task_file = workdir / "task.json"
    data_file = workdir / "data.npz"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / PROGRESS_FILE).unlink(missing_ok=True)
        task_file.write_text(json.dumps(wire))
        data.save(data_file)
    except OSError as exc:
        log.error("work directory %s (%s) is not usable: %s", workdir, ENV_WORKDIR, exc)
        raise typer.Exit(1) from exc
    try:
        security = security_args(settings.admission, workdir / "tls")
    except (OSError, ValueError) as exc:
        log.error("TLS and SuperNode key (%s, %s) not usable: %s", ENV_ROOT_CERT, ENV_SUPERNODE_KEY, exc)
        raise typer.Exit(1) from exc
    enroll_again: Callable[[], None] | None = None
    if settings.admission is not None:
        # Admitted first: a SuperNode whose key the aggregator does not hold yet is refused (and started again).
        admission, ca_file = settings.admission, workdir / "tls" / "ca.pem"
        answer = enroll_until_answered(admission.enroll_address, admission.supernode_cert, ca_file, max_wait_seconds)
        if answer is None:
            raise typer.Exit(0)  # the aggregator is gone, as the supervisor would conclude
        if answer.verdict in FINAL:
            log.error("the aggregator does not admit this learner's key (%s): %s", answer.verdict, answer.message)
            raise typer.Exit(1)
        enroll_again = enroller(admission, ca_file)
    node_config = {"partition-id": partition_id, "num-partitions": num_partitions,
                   "flops-task-file": str(task_file), "flops-state-dir": str(state_dir),
                   "flops-data-file": str(data_file)}
    started: dict = {}
    env = proc.flower_env()
    env.pop(ENV_SUPERNODE_KEY, None)  # the SuperNode reads its key from the file
    commands = children(settings, node_config, security)
    for name, command in commands.items():
        log.info("starting %s: %s", name, " ".join(command))
        started[name] = proc.start(command, env)
    supervisor = Supervisor(started, superlink, state_dir, max_wait_seconds,
                            restart_supernode=lambda: proc.start(commands["flower-supernode"], env),
                            enroll=enroll_again)

    def on_term(signum, frame):
        supervisor.terminated = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        code = supervisor.run()
    finally:
        supervisor.stop_all()
    raise typer.Exit(code)


def main() -> None:
    """Console script `flops-learner`."""
    cli()


if __name__ == "__main__":
    main()

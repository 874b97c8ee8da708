"""`flops-learner`: one FLOps learner = a Flower SuperNode running this package's ClientApp.

It checks the task and its data first (a broken learner fails fast, non-zero), starts `flower-supernode`,
and stops it once the training run is over (the ClientApp recorded the last message of the last round and
the aggregator's SuperLink went away) or once the aggregator has been unreachable for --max-wait-seconds.
Exit codes: 0 when training is over or the aggregator is gone; 1 on the learner's own failure (bad task or
data, SuperNode crash); 143 when stopped by SIGTERM before the end.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from flops_runtime import proc
from .client_app import PROGRESS_FILE
from .contract import (ENV_CLIENTAPPIO, ENV_MAX_WAIT, ENV_NUM_PARTITIONS, ENV_PARTITION_ID, ENV_SUPERLINK, ENV_TASK,
                       ENV_WORKDIR, LearnerEnv, LearnerTask)
from .task import load_task

log = logging.getLogger("flops_learner")
cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

CHECK_SECONDS = 0.5


class Supervisor:
    """Watches the SuperNode, the ClientApp's progress file and the aggregator's reachability."""

    def __init__(self, supernode, superlink: str, state_dir: Path, max_wait: float):
        self.supernode, self.superlink, self.state_dir, self.max_wait = supernode, superlink, state_dir, max_wait
        self.terminated = False

    def final_round_done(self) -> bool:
        try:
            return bool(json.loads((self.state_dir / PROGRESS_FILE).read_text()).get("final"))
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    def run(self) -> int:
        last_seen = time.monotonic()
        final_since = None
        while True:
            code = self.supernode.poll()
            final = self.final_round_done()
            # A signal to our process group reaches the SuperNode too: its exit is then not a failure.
            if self.terminated or (code is not None and self._signalled()):
                proc.stop_tree(self.supernode)
                return 0 if final else 143
            if code is not None:
                log.error("flower-supernode exited with %s", code)
                proc.stop_tree(self.supernode)
                return 0 if final else 1
            now = time.monotonic()
            up = proc.reachable(self.superlink)
            if up:
                last_seen = now
            if final and final_since is None:
                final_since = now
            if final and not up:
                log.info("training run over and the aggregator has stopped: stopping the SuperNode")
                return self._stop()
            if final and now - final_since > self.max_wait:
                log.info("training run over; the aggregator is still up after %.0fs: stopping anyway", self.max_wait)
                return self._stop()
            if not up and now - last_seen > self.max_wait:
                log.warning("aggregator %s unreachable for %.0fs: giving up", self.superlink, self.max_wait)
                return self._stop()
            time.sleep(CHECK_SECONDS)

    def _signalled(self) -> bool:
        time.sleep(CHECK_SECONDS)  # let our own handler run if the same signal is on its way to us
        return self.terminated

    def _stop(self) -> int:
        code = proc.stop_tree(self.supernode)
        log.info("flower-supernode stopped (%s)", code)
        return 0


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
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s flops-learner %(levelname)s %(message)s")
    try:
        settings = LearnerEnv(task=LearnerTask.model_validate_json(task), superlink=superlink,
                              partition_id=partition_id, num_partitions=num_partitions,
                              clientappio_address=clientappio_address, workdir=str(workdir),
                              max_wait_seconds=max_wait_seconds)
        wire = settings.task.to_wire()
        user_task = load_task(wire["task"])
        data = user_task.load_data(wire["data"], partition_id, num_partitions)
        host, port = proc.split_address(clientappio_address)
    except Exception as exc:  # the learner's own failure: report it plainly and exit non-zero
        log.error("invalid learner setup: %s", exc)
        raise typer.Exit(1) from exc
    log.info("task %s, partition %d/%d: %d train / %d test examples", settings.task.task.name or settings.task.task.module,
             partition_id, num_partitions, len(data.y_train), len(data.y_test))

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
    node_config = " ".join([
        f"partition-id={partition_id}", f"num-partitions={num_partitions}",
        f"flops-task-file={json.dumps(str(task_file))}", f"flops-state-dir={json.dumps(str(state_dir))}",
        f"flops-data-file={json.dumps(str(data_file))}",
    ])
    command = [proc.script("flower-supernode"), "--insecure", "--superlink", superlink,
               "--node-config", node_config, "--host", host, "--port", str(port)]
    log.info("starting %s", " ".join(command))
    supernode = proc.start(command, proc.flower_env())
    supervisor = Supervisor(supernode, superlink, state_dir, max_wait_seconds)

    def on_term(signum, frame):
        supervisor.terminated = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        code = supervisor.run()
    finally:
        proc.stop_tree(supernode)
    raise typer.Exit(code)


def main() -> None:
    """Console script `flops-learner`."""
    cli()


if __name__ == "__main__":
    main()

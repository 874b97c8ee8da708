"""The training's MLflow run as the entrypoint sees it when a signal stops the training.

The ServerApp records the run id in the workdir as soon as it has started the run, so the entrypoint can
end a run that the stopped ServerApp left RUNNING without searching the tracking server. This module only
imports mlflow when it has to: the entrypoint does not need it otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("flops_aggregator")

RUN_FILE = "mlflow-run.json"
# Why the entrypoint stops the training, written the moment the signal arrives: the stopped ServerApp tags
# the run with it too, so whichever of the two writes last, the run says why it ended.
STOP_FILE = "stop-reason"
END_REASON_TAG = "flops.end_reason"


def record(workdir: Path, run_id: str, flower_run_id: int) -> None:
    """Write the run file; by rename, so a reader never sees half of it."""
    path = workdir / RUN_FILE
    partial = path.with_name(RUN_FILE + ".partial")
    partial.write_text(json.dumps({"run_id": run_id, "flower_run_id": flower_run_id}))
    os.replace(partial, path)


def recorded(workdir: Path) -> str | None:
    """The run id the ServerApp recorded, None if it never started a run."""
    try:
        return json.loads((workdir / RUN_FILE).read_text())["run_id"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def forget(workdir: Path) -> None:
    """At startup: files left by an earlier training in the same workdir name someone else's run."""
    (workdir / RUN_FILE).unlink(missing_ok=True)
    (workdir / STOP_FILE).unlink(missing_ok=True)


def record_stop(workdir: Path, reason: str) -> None:
    try:
        (workdir / STOP_FILE).write_text(reason)
    except OSError as exc:  # the entrypoint still tags the run itself once the children are gone
        log.warning("could not record the stop reason in %s: %s", workdir, exc)


def stop_reason(workdir: Path) -> str | None:
    try:
        return (workdir / STOP_FILE).read_text() or None
    except OSError:
        return None


def _end_killed(tracking_uri: str, run_id: str, reason: str) -> tuple[str, str]:
    """(status found, status left)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    status = client.get_run(run_id).info.status
    # FINISHED or FAILED happened before the signal and stays the truth. KILLED means the ServerApp ended
    # it when Flower passed the stop on; only we know why, so the reason is ours either way.
    if status not in ("RUNNING", "KILLED"):
        return status, status
    client.set_tag(run_id, END_REASON_TAG, reason)
    if status == "RUNNING":
        client.set_terminated(run_id, "KILLED")
    return status, "KILLED"


def end_killed(tracking_uri: str, run_id: str, reason: str, bound: float) -> str | None:
    """End the run KILLED with `reason` unless it already ended otherwise; returns its final status.

    Gives up after `bound` seconds (None): the tracking server may be gone or hung, and MLflow's client
    retries for minutes. The worker is a daemon thread, so giving up does not keep the process alive.
    """
    outcome: list[tuple[str, str] | Exception] = []

    def work() -> None:
        try:
            outcome.append(_end_killed(tracking_uri, run_id, reason))
        except Exception as exc:  # reported below: the caller exits either way
            outcome.append(exc)

    worker = threading.Thread(target=work, name="end-mlflow-run", daemon=True)
    worker.start()
    worker.join(bound)
    if not outcome:
        log.warning("MLflow run %s: no answer from %s within %.0fs; left as it was", run_id, tracking_uri, bound)
        return None
    if isinstance(outcome[0], Exception):
        log.warning("MLflow run %s could not be ended: %s", run_id, outcome[0])
        return None
    found, left = outcome[0]
    log.info("MLflow run %s: found %s, left %s (%s)", run_id, found, left, reason)
    return left

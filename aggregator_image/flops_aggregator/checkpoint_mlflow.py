"""Checkpoints in the MLflow run's artifacts (the artifact store): uploaded in the background after each
reported round, found and read back by the next aggregator of the same training.

Two slots, `checkpoint/a` and `checkpoint/b`: each upload goes to the slot the run's tag does not name, and
the tag (`flops.checkpoint` = "<round>:<slot>") moves only once the upload is complete, so the tag always
names a whole checkpoint and the store holds at most two.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import checkpoint

log = logging.getLogger("flops_aggregator")

TAG = "flops.checkpoint"
# Set by the operator on the running run when spec.suspend asks the training to stop at its next round
# boundary; read off the round's path, by the upload thread: at each round boundary (one request) and every
# STOP_POLL_SECONDS.
STOP_TAG = "flops.stop.requested"
STOP_POLL_SECONDS = 5.0
# Uploads are spaced at least this far apart (the latest waiting checkpoint goes when the time comes): with
# rounds of about a second, one upload per round was 4 requests per second to the tracking server, competing for
# the CPU with the round. A training that is stopped (SIGTERM, spec.suspend) uploads its latest at once (wait);
# only a hard crash can lose up to this much progress.
CHECKPOINT_INTERVAL_SECONDS = 10.0
SLOTS = ("a", "b")
# Runs a new aggregator of the same training may take over: stopped from outside (KILLED) or left RUNNING by
# one that died without a word. A FAILED run failed; resuming it would fail again.
RESUMABLE_STATUSES = ("KILLED", "RUNNING")


@dataclass(frozen=True)
class Saved:
    round: int
    slot: str

    @classmethod
    def parse(cls, tag: str | None) -> Saved | None:
        try:
            round_, slot = str(tag).split(":")
            return cls(int(round_), slot) if slot in SLOTS else None
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.round}:{self.slot}"

    @property
    def path(self) -> str:
        return f"{checkpoint.ARTIFACT_PATH}/{self.slot}"


def resumable(client: Any, experiment_id: str, uid: str, training_id: str) -> tuple[str, Saved] | None:
    """The latest run of this training, if it can be taken over and has a checkpoint."""
    runs = client.search_runs([experiment_id], f"tags.`flops.project.uid` = '{uid}' AND "
                                               f"tags.`flops.training.id` = '{training_id}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs or runs[0].info.status not in RESUMABLE_STATUSES:
        return None
    saved = Saved.parse(runs[0].data.tags.get(TAG))
    return (runs[0].info.run_id, saved) if saved is not None else None


def download(client: Any, run_id: str, saved: Saved, workdir: Path) -> checkpoint.Checkpoint:
    """Raises RuntimeError saying which run and round could not be read back (the artifact store lost it)."""
    try:
        local = client.download_artifacts(run_id, saved.path, str(workdir))
        loaded = checkpoint.load(Path(local))
    except Exception as exc:
        raise RuntimeError(f"the checkpoint of round {saved.round} of MLflow run {run_id} ({saved.path}) cannot be "
                           f"read back from the artifact store: {type(exc).__name__}: {exc}") from exc
    if loaded.round != saved.round:
        raise RuntimeError(f"MLflow run {run_id}: {saved.path} holds round {loaded.round}, its tag says {saved.round}")
    return loaded


class Uploader:
    """One background thread; only the latest checkpoint waits (an older one still waiting is dropped), and
    uploads are at least `interval` seconds apart unless someone waits for them."""

    def __init__(self, client: Any, run_id: str, current: Saved | None,
                 interval: float = CHECKPOINT_INTERVAL_SECONDS,
                 on_tags: Callable[[dict[str, str]], None] | None = None) -> None:
        self.client, self.run_id, self.current, self.interval = client, run_id, current, interval
        self.on_tags = on_tags
        """Given the run's tags at each read (what else the operator asks of the running training)."""
        self._latest: checkpoint.Checkpoint | None = None
        self._lock = threading.Condition()
        self._busy = False
        self._uploaded_at: float | None = None
        self._urgent = False
        self._look = False
        """A round ended: read the stop request now."""
        self.error: Exception | None = None
        self.stop_request: str | None = None
        """The run's stop request (STOP_TAG), once read."""
        self._closed = False
        threading.Thread(target=self._work, name="upload-checkpoint", daemon=True).start()

    def offer(self, ckpt: checkpoint.Checkpoint) -> None:
        with self._lock:
            self._latest, self._look = ckpt, True
            self._lock.notify_all()

    def wait(self, bound: float) -> bool:
        """Upload the latest now; until nothing waits or uploads (True), or `bound` seconds (False)."""
        with self._lock:
            self._urgent = True
            self._lock.notify_all()
            try:
                return self._lock.wait_for(lambda: self._latest is None and not self._busy, timeout=bound)
            finally:
                self._urgent = False

    def close(self) -> None:
        """The run is over: nothing more to upload or read."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def _not_yet(self) -> float:
        """Seconds until the next upload may start (0: now)."""
        if self._urgent or self._uploaded_at is None:
            return 0.0
        return max(0.0, self._uploaded_at + self.interval - time.monotonic())

    def _work(self) -> None:
        while True:
            with self._lock:
                timeout = STOP_POLL_SECONDS if self._latest is None else min(STOP_POLL_SECONDS, self._not_yet())
                self._lock.wait_for(lambda: self._closed or self._look
                                    or (self._latest is not None and not self._not_yet()), timeout=timeout)
                if self._closed:
                    return
                ckpt, self._look = None, False
                if self._latest is not None and not self._not_yet():
                    ckpt, self._latest = self._latest, None
                self._busy = True
            try:
                if ckpt is not None:
                    self._uploaded_at = time.monotonic()
                    self._upload(ckpt)
                self._read_run()
            except Exception as exc:  # a later round tries again; the training does not depend on it
                if ckpt is not None:
                    self.error = exc
                    log.warning("checkpoint of round %d not uploaded: %s", ckpt.round, exc)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _read_run(self) -> None:
        if self.stop_request is not None and self.on_tags is None:
            return
        tags = self.client.get_run(self.run_id).data.tags
        if self.stop_request is None:
            self.stop_request = tags.get(STOP_TAG)
        if self.on_tags is not None:
            try:
                self.on_tags(tags)
            except Exception as exc:  # never the checkpoint's failure
                log.warning("acting on the run's tags failed: %s", exc)

    def _upload(self, ckpt: checkpoint.Checkpoint) -> None:
        slot = SLOTS[1] if self.current is not None and self.current.slot == SLOTS[0] else SLOTS[0]
        target = Saved(ckpt.round, slot)
        with tempfile.TemporaryDirectory(prefix="flops-checkpoint-") as tmp:
            directory = checkpoint.save(Path(tmp) / slot, ckpt)
            self.client.log_artifacts(self.run_id, str(directory), target.path)
        self.client.set_tag(self.run_id, TAG, str(target))
        self.current = target

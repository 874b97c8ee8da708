"""The MLflow contract (the aggregator writes, the operator's progress gatherer reads; see
flops_operator/progress.py). Only the aggregator talks to MLflow; the tracking URI and any credentials come
from the environment, never from the Flower run config that every learner receives."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Protocol

from . import admission, checkpoint, checkpoint_mlflow, mlflow_run, model_logger
from .best import Best
from .final_model import FinalModelLogging
from .registry import Registration, look_up, register_and_promote
from .settings import Settings
from .strategies import RoundResult

log = logging.getLogger("flops_aggregator")

TRAINING_ID_TAG = "flops.training.id"
# System metrics every few seconds: MLflow's monitor publishes only after a whole interval, so a training shorter
# than it logs none (its default, 10 s, and 5 s leave the demo's trainings of a few seconds with nothing). Each
# sample costs the tracking server two requests (the monitor reads the run back, then logs): 0.43 s of server CPU
# per 20 s at 2 s, with logins.
SYSTEM_METRICS_INTERVAL_SECONDS = 2


# How MLflow's client behaves in the ServerApp (MLflow reads these at each use):
MLFLOW_CLIENT_ENV = {
    # Asynchronous writes are buffered (whole seconds): a round's metrics and tag go out in one request, and
    # ending the run no longer waits out the logging thread's 1 s queue poll (measured: end_run 0.28 s
    # unbuffered, 0.06 s buffered on a quiet machine; 0.8-0.9 s unbuffered inside a training).
    "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS": "1",
    # end_run would fetch the run once more only to print its URL.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # No usage reports from an edge node (Flower's are off too); and no telemetry consumer threads whose locks
    # the forked model logger (model_logger.py) could inherit held.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}

# A stopped training waits this long at most for its last checkpoint to reach the artifact store.
CHECKPOINT_UPLOAD_BOUND_SECONDS = 5.0
# A suspended one is not in a hurry (nothing kills it): its checkpoint is what the resumed training starts from.
SUSPEND_UPLOAD_BOUND_SECONDS = 120.0


class Recorder(Protocol):
    def start(self, flower_run_id: int) -> checkpoint.Checkpoint | None:
        """Start (or take over) the training's run; the checkpoint to resume from, if any."""
        ...
    def prepare(self, task: Any, model: Any) -> None: ...
    def log_ahead(self, round_: int, weights: Any) -> None:
        """The final evaluate is out: log round `round_`'s model now, in case it is the best."""
        ...
    def log_round(self, result: RoundResult) -> None: ...
    def checkpoint(self, ckpt: checkpoint.Checkpoint) -> None: ...
    def stop_requested(self) -> str | None:
        """Why the training is asked to stop at this round boundary (spec.suspend), if it is."""
        ...
    def suspend(self, round_: int, reason: str) -> None:
        """Stop at the end of `round_`, its checkpoint uploaded: the run ends KILLED, resumable."""
        ...
    def finish(self, best: Best, model: Any, task: Any) -> Registration | None: ...
    def fail(self, error: BaseException) -> None: ...


class BareRecorder:
    """No MLflow at all (MLFLOW_TRACKING_URI unset): the benchmark's baseline."""

    def start(self, flower_run_id: int) -> checkpoint.Checkpoint | None:
        return None

    def checkpoint(self, ckpt: checkpoint.Checkpoint) -> None:
        pass

    def stop_requested(self) -> str | None:
        return None  # the request comes through MLflow: without it, nothing asks

    def suspend(self, round_: int, reason: str) -> None:
        pass

    def prepare(self, task: Any, model: Any) -> None:
        pass

    def log_ahead(self, round_: int, weights: Any) -> None:
        pass

    def log_round(self, result: RoundResult) -> None:
        pass

    def finish(self, best: Best, model: Any, task: Any) -> Registration | None:
        return None

    def fail(self, error: BaseException) -> None:
        pass


class MlflowRecorder(FinalModelLogging):
    def __init__(self, settings: Settings):
        # Where MLflow's time goes on the training's path (result.json, printed by bench/mlflow_overhead.py).
        self.seconds: dict[str, float] = {}
        with self.timed("import"):
            import mlflow
            from mlflow.tracking import MlflowClient

        self.settings, self.mlflow = settings, mlflow
        for variable, value in MLFLOW_CLIENT_ENV.items():
            os.environ.setdefault(variable, value)
        mlflow.set_tracking_uri(settings.tracking_uri)
        self.client = MlflowClient(settings.tracking_uri)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        # Async mode: each round's logging returns at once; the futures are waited on before the run ends, so
        # a failed write still fails the training (at its end instead of in the middle of a round).
        self.synchronous = not settings.async_logging
        self.pending: list = []
        self.prepared: Future | None = None
        self.spare: tuple[Any, Any] | None = None
        """Async mode: the task and a model of the recorder's own, for logging ahead (log_ahead)."""
        self.logger: model_logger.ForkedLogger | None = None
        """Async mode with a tracking server: the child that rehearses the export and logs the final model."""
        self.ahead: tuple[Future, threading.Event] | None = None
        """The model being logged ahead: its (round, ModelInfo) to come, and set once it took the run."""
        self.uploader: checkpoint_mlflow.Uploader | None = None

    @contextmanager
    def timed(self, phase: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.monotonic() - started

    def _experiment_id(self) -> str:
        s, project = self.settings, self.settings.config.project
        tags = {"flops.project.namespace": project.namespace, "flops.project.name": project.name,
                "flops.project.uid": project.uid}
        experiment = self.client.get_experiment_by_name(s.experiment)
        if experiment is None:
            return self.client.create_experiment(s.experiment, tags=tags)
        for key, value in tags.items():
            if experiment.tags.get(key) != value:
                self.client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id

    def start(self, flower_run_id: int) -> checkpoint.Checkpoint | None:
        with self.timed("start"):
            return self._start(flower_run_id)

    def _start(self, flower_run_id: int) -> checkpoint.Checkpoint | None:
        s, mlflow = self.settings, self.mlflow
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_SECONDS)
        mlflow.set_system_metrics_samples_before_logging(1)
        experiment_id = self._experiment_id()
        found = checkpoint_mlflow.resumable(self.client, experiment_id, s.config.project.uid, s.config.training_id)
        resumed = None
        if found is not None:
            # Read back before the run is taken over: a checkpoint that is gone fails here, saying so.
            run_id, saved = found
            resumed = checkpoint_mlflow.download(self.client, run_id, saved, s.workdir / "resume")
            run = mlflow.start_run(run_id=run_id, log_system_metrics=True)
            mlflow.set_tags({"flops.flower.run_id": str(flower_run_id), checkpoint.RESUMED_TAG: str(saved.round),
                             admission.LEARNERS_TAG: str(s.config.num_learners)})
            for over in (checkpoint_mlflow.STOP_TAG, mlflow_run.END_REASON_TAG):  # the stop it ended for
                if over in run.data.tags:
                    self.client.delete_tag(run_id, over)
        else:
            run = mlflow.start_run(
                experiment_id=experiment_id,
                run_name=f"{s.config.project.name}-flower-{flower_run_id}",
                tags={"flops.project.uid": s.config.project.uid, TRAINING_ID_TAG: s.config.training_id,
                      "flops.flower.run_id": str(flower_run_id),
                      "flops.total_rounds": str(s.rounds), "flops.round": "0",
                      # the learner count this aggregator admits; the operator changes it to scale (admission.py)
                      admission.LEARNERS_TAG: str(s.config.num_learners)},
                log_system_metrics=True,
            )
        self.run_id, self.experiment_id = run.info.run_id, run.info.experiment_id
        # Before anything else can fail or be interrupted: a signalled entrypoint ends the run from this file.
        mlflow_run.record(s.workdir, self.run_id, flower_run_id)
        if resumed is None:
            mlflow.log_params(s.params())  # params cannot change; a taken-over run has them
            log.info("MLflow run %s in experiment %r", self.run_id, s.experiment)
        else:
            log.info("MLflow run %s resumed after round %d", self.run_id, resumed.round)
        self.uploader = checkpoint_mlflow.Uploader(self.client, self.run_id, found[1] if found else None,
                                                   on_tags=lambda tags: admission.request_learners(s.workdir, tags))
        return resumed

    def checkpoint(self, ckpt: checkpoint.Checkpoint) -> None:
        if self.uploader is not None:
            self.uploader.offer(ckpt)

    def stop_requested(self) -> str | None:
        return self.uploader.stop_request if self.uploader is not None else None

    def suspend(self, round_: int, reason: str) -> None:
        self._close_logger()
        if self.uploader is not None and not self.uploader.wait(SUSPEND_UPLOAD_BOUND_SECONDS):
            log.warning("the checkpoint of round %d did not reach the artifact store in %.0fs; an earlier one stays",
                        round_, SUSPEND_UPLOAD_BOUND_SECONDS)
        if self.uploader is not None:
            self.uploader.close()
        try:
            self.settle()
            self.mlflow.set_tag(mlflow_run.END_REASON_TAG, f"suspended after round {round_} ({reason})")
        finally:
            self.mlflow.end_run("KILLED")

    def log_round(self, result: RoundResult) -> None:
        metrics = dict(result.metrics)
        metrics.update(num_train_learners=result.num_train_learners, num_eval_learners=result.num_eval_learners,
                       round_duration_seconds=result.duration_seconds,
                       round_overhead_seconds=result.overhead_seconds)
        operations = [self.mlflow.log_metrics(metrics, step=result.round, synchronous=self.synchronous),
                      self.mlflow.set_tag("flops.round", str(result.round), synchronous=self.synchronous)]
        self.pending += [op for op in operations if op is not None]

    def settle(self) -> None:
        """Send the buffered asynchronous writes now and wait for them; raises if one of them failed."""
        pending, self.pending = self.pending, []
        if pending:
            self.mlflow.flush_async_logging()
        for operation in pending:
            operation.wait()

    def finish(self, best: Best, model: Any, task: Any) -> Registration:
        s = self.settings
        if self.uploader is not None:
            self.uploader.close()  # the model logged below supersedes any checkpoint
        metric, mode = s.best_metric
        with self.timed("register"):
            # While the model logged ahead may still be uploading: what registering it needs besides the model.
            holder = look_up(self.client, s.config.registry.model_name, s.config.registry.alias, metric)
        with self.timed("log_model"):
            info = self._kept_ahead(best.round)
            if info is None:
                info = self._log_best(task, model, best.round)
        self._close_logger()
        best_metrics = {"best_round": best.round, **{f"best_{k}": v for k, v in best.metrics.items()
                                                     if k.startswith("eval_")}}
        # Written (settle) before anything is registered: the champion comparison of a later training reads them.
        # Attached to the model too: they are its evaluation.
        done = self.mlflow.log_metrics(best_metrics, synchronous=self.synchronous, model_id=info.model_id)
        self.pending += [done] if done is not None else []
        # A round's write that failed fails the training before anything is registered.
        with self.timed("settle"):
            self.settle()
        with self.timed("register"):
            registration = register_and_promote(self.client, info.model_uri, info.model_id, self.run_id,
                                                s.config.registry.model_name, s.config.registry.alias,
                                                metric, mode, best.value, holder)
        self._end(registration, best)
        return registration

    def _end(self, registration: Registration, best: Best) -> None:
        mlflow = self.mlflow
        with self.timed("tags"):
            mlflow.set_tags({
                "flops.best_round": str(best.round),
                "flops.model.name": registration.name,
                "flops.model.version": registration.version,
                "flops.model.alias": registration.alias,
                "flops.model.uri": registration.uri,
                "flops.model.promoted": "true" if registration.promoted else "false",
            })
        with self.timed("end_run"):
            mlflow.end_run("FINISHED")

    def fail(self, error: BaseException) -> None:
        stopped = stopped_from_outside(error)
        if self.mlflow.active_run() is None:
            self._close_logger(CHECKPOINT_UPLOAD_BOUND_SECONDS)
            return
        self._drop_ahead(CHECKPOINT_UPLOAD_BOUND_SECONDS if stopped else None)
        self._close_logger(CHECKPOINT_UPLOAD_BOUND_SECONDS if stopped else model_logger.EXIT_BOUND_SECONDS)
        if stopped and self.uploader is not None and not self.uploader.wait(CHECKPOINT_UPLOAD_BOUND_SECONDS):
            log.warning("the last checkpoint did not reach the artifact store in %.0fs; an earlier one stays",
                        CHECKPOINT_UPLOAD_BOUND_SECONDS)
        if self.uploader is not None:
            self.uploader.close()
        try:
            if stopped:
                reason = mlflow_run.stop_reason(self.settings.workdir)
                self.mlflow.set_tag(mlflow_run.END_REASON_TAG,
                                    reason or f"ServerApp stopped ({type(error).__name__} {error})")
            else:
                self.mlflow.set_tag("flops.error", f"{type(error).__name__}: {error}"[:5000])
        finally:
            self.mlflow.end_run("KILLED" if stopped else "FAILED")


def stopped_from_outside(error: BaseException) -> bool:
    """Flower turns SIGTERM/SIGINT in the ServerApp process into SystemExit (flwr_exit): the training was
    stopped, it did not fail. (Left active, the run would be ended FINISHED by mlflow's atexit hook.)"""
    return isinstance(error, (SystemExit, KeyboardInterrupt))


def make_recorder(settings: Settings) -> Recorder:
    return MlflowRecorder(settings) if settings.tracking_uri else BareRecorder()

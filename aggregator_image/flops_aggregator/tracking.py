"""The MLflow contract (the aggregator writes, the operator's progress gatherer reads; see
flops_operator/progress.py). Only the aggregator talks to MLflow; the tracking URI and any credentials come
from the environment, never from the Flower run config that every learner receives."""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any, Protocol

from . import mlflow_run
from .best import Best
from .registry import Registration, register_and_promote
from .settings import Settings
from .strategies import RoundResult

log = logging.getLogger("flops_aggregator")

# System metrics are sampled every few seconds (MLflow's default, 10 s, leaves short runs with nothing).
SYSTEM_METRICS_INTERVAL_SECONDS = 2


class Recorder(Protocol):
    def start(self, flower_run_id: int) -> None: ...
    def log_round(self, result: RoundResult) -> None: ...
    def finish(self, best: Best, model: Any, task: Any) -> Registration | None: ...
    def fail(self, error: BaseException) -> None: ...


class BareRecorder:
    """No MLflow at all (MLFLOW_TRACKING_URI unset): the benchmark's baseline."""

    def start(self, flower_run_id: int) -> None:
        pass

    def log_round(self, result: RoundResult) -> None:
        pass

    def finish(self, best: Best, model: Any, task: Any) -> Registration | None:
        return None

    def fail(self, error: BaseException) -> None:
        pass


def pinned(*distributions: str) -> list[str]:
    """Pip requirements pinned to what is installed here (MLflow's own inference takes seconds)."""
    out = []
    for dist in distributions:
        version = metadata.version(dist).split("+")[0]
        out.append(f"{dist}=={version}")
    return out


class MlflowRecorder:
    def __init__(self, settings: Settings):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.settings, self.mlflow = settings, mlflow
        mlflow.set_tracking_uri(settings.tracking_uri)
        self.client = MlflowClient(settings.tracking_uri)
        self.run_id: str | None = None

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

    def start(self, flower_run_id: int) -> None:
        s, mlflow = self.settings, self.mlflow
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_SECONDS)
        mlflow.set_system_metrics_samples_before_logging(1)
        run = mlflow.start_run(
            experiment_id=self._experiment_id(),
            run_name=f"{s.config.project.name}-flower-{flower_run_id}",
            tags={"flops.project.uid": s.config.project.uid, "flops.flower.run_id": str(flower_run_id),
                  "flops.total_rounds": str(s.rounds), "flops.round": "0"},
            log_system_metrics=True,
        )
        self.run_id = run.info.run_id
        # Before anything else can fail or be interrupted: a signalled entrypoint ends the run from this file.
        mlflow_run.record(s.workdir, self.run_id, flower_run_id)
        mlflow.log_params(s.params())
        log.info("MLflow run %s in experiment %r", self.run_id, s.experiment)

    def log_round(self, result: RoundResult) -> None:
        metrics = dict(result.metrics)
        metrics.update(num_train_learners=result.num_train_learners, num_eval_learners=result.num_eval_learners,
                       round_duration_seconds=result.duration_seconds)
        self.mlflow.log_metrics(metrics, step=result.round)
        self.mlflow.set_tag("flops.round", str(result.round))

    def finish(self, best: Best, model: Any, task: Any) -> Registration:
        from mlflow.models import infer_signature

        s, mlflow = self.settings, self.mlflow
        metric, mode = s.best_metric
        mlflow.log_metrics({"best_round": best.round, **{f"best_{k}": v for k, v in best.metrics.items()
                                                        if k.startswith("eval_")}})
        example = task.input_example()
        info = task.log_model(model, name="model", input_example=example,
                              signature=infer_signature(example, task.predict(model, example)),
                              pip_requirements=task_requirements(task))
        registration = register_and_promote(self.client, info.model_uri, info.model_id, self.run_id,
                                            s.config.registry.model_name, s.config.registry.alias,
                                            metric, mode, best.value)
        mlflow.set_tags({
            "flops.best_round": str(best.round),
            "flops.model.name": registration.name,
            "flops.model.version": registration.version,
            "flops.model.alias": registration.alias,
            "flops.model.uri": registration.uri,
            "flops.model.promoted": "true" if registration.promoted else "false",
        })
        mlflow.end_run("FINISHED")
        return registration

    def fail(self, error: BaseException) -> None:
        if self.mlflow.active_run() is None:
            return
        stopped = stopped_from_outside(error)
        try:
            if stopped:
                self.mlflow.set_tag(mlflow_run.END_REASON_TAG, f"ServerApp stopped ({type(error).__name__} {error})")
            else:
                self.mlflow.set_tag("flops.error", f"{type(error).__name__}: {error}"[:5000])
        finally:
            self.mlflow.end_run("KILLED" if stopped else "FAILED")


def stopped_from_outside(error: BaseException) -> bool:
    """Flower turns SIGTERM/SIGINT in the ServerApp process into SystemExit (flwr_exit): the training was
    stopped, it did not fail. (Left active, the run would be ended FINISHED by mlflow's atexit hook.)"""
    return isinstance(error, (SystemExit, KeyboardInterrupt))


def task_requirements(task: Any) -> list[str]:
    return pinned("mlflow", *getattr(task, "pip_packages", ()))


def make_recorder(settings: Settings) -> Recorder:
    return MlflowRecorder(settings) if settings.tracking_uri else BareRecorder()

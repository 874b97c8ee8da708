"""The ServerApp: runs the spec's strategy for the spec's rounds, records every round, keeps the best
global model and, at the end, logs/registers it (MLflow mode) and writes a result file in the workdir."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from flops_learner.client_app import from_record, to_record
from flops_runtime import flower_pulls
from flops_runtime.logs import own_logger
from flops_learner.loading import load_task

from . import settings as settings_mod
from .best import BestKeeper
from .checkpoint import Checkpoint
from .grid import BoundedGrid
from .strategies import RoundResult, build
from .tracking import make_recorder

log = logging.getLogger("flops_aggregator")
RESULT_FILE = "result.json"

app = ServerApp()


class StopRequested(Exception):
    """spec.suspend: the training stops after `round` (its checkpoint saved) and resumes from it later."""

    def __init__(self, round_: int, reason: str):
        super().__init__(f"stop requested after round {round_}: {reason}")
        self.round, self.reason = round_, reason


class Rounds:
    """Observer: each finished round goes to the recorder and the best-model keeper, and becomes the
    checkpoint a later aggregator of this training resumes from."""

    def __init__(self, recorder, keeper: BestKeeper, total: int):
        self.recorder, self.keeper, self.total, self.history, self.timings = recorder, keeper, total, [], []

    def on_round(self, result: RoundResult) -> None:
        self.history.append({"round": result.round, **result.metrics,
                             "num_train_learners": result.num_train_learners,
                             "num_eval_learners": result.num_eval_learners,
                             "round_duration_seconds": result.duration_seconds,
                             "round_overhead_seconds": result.overhead_seconds})
        # Kept by reference: the bookkeeping of this very call is added to the timing after it returns.
        self.timings.append(result.timing)
        if self.keeper.offer(result):
            log.info("round %d is the best so far (%s=%s)", result.round, self.keeper.metric,
                     result.metrics[self.keeper.metric])
        self.recorder.log_round(result)
        if result.arrays is not None:
            self.recorder.checkpoint(Checkpoint(result.round, from_record(result.arrays), self.keeper.kept()))
            # A round boundary with its checkpoint on the way: where a suspension stops (the last round ends
            # the training instead).
            reason = self.recorder.stop_requested() if result.round < self.total else None
            if reason:
                raise StopRequested(result.round, reason)

    def on_final_evaluate(self, result: RoundResult) -> None:
        # Most trainings' last model is their best: logged while the learners evaluate it, the end only
        # registers it (the recorder logs the best one instead if the evaluation says otherwise).
        if result.arrays is not None:
            self.recorder.log_ahead(result.round, from_record(result.arrays))


def train(grid: Grid, context: Context, settings: settings_mod.Settings) -> dict:
    if settings.training.object_pulls == "quick":
        flower_pulls.install()  # the replies' objects, pulled from the SuperLink
    t = settings.training
    recorder = make_recorder(settings)
    started = time.monotonic()
    try:
        # The task's import (torch: seconds of CPU) overlaps MLflow's start (requests: mostly waiting).
        with ThreadPoolExecutor(1, thread_name_prefix="load-task") as pool:
            loading = pool.submit(load_task, settings.config.task.to_wire())
            resumed = recorder.start(context.run_id)
            task = loading.result()
        done = resumed.round if resumed is not None else 0
        metric, mode = settings.best_metric
        keeper = BestKeeper(metric, mode, settings.workdir)
        if resumed is not None and resumed.best is not None:
            keeper.restore(resumed.best)
        rounds = Rounds(recorder, keeper, settings.rounds)
        strategy = build(settings, rounds, offset=done)
        model = task.build_model(seed=settings.seed)
        # A model of its own: the background preparation must not race the training's use of `model`.
        recorder.prepare(task, task.build_model(seed=settings.seed))
        common = {"num-rounds": settings.rounds, "evaluates": settings.evaluates, "seed": settings.seed}
        train_config = ConfigRecord({**common, "lr": t.learning_rate, "local-epochs": t.local_epochs,
                                     "batch-size": t.batch_size})
        min_nodes = settings.min_learners()[2]
        remaining = settings.rounds - done
        if remaining > 0:  # none: stopped after its last round, before the model was logged
            try:
                strategy.start(
                    grid=BoundedGrid(grid, min_nodes=min_nodes, wait_timeout=settings.round_timeout),
                    initial_arrays=to_record(resumed.weights if resumed is not None else task.get_weights(model)),
                    num_rounds=remaining,
                    timeout=settings.round_timeout,
                    train_config=train_config,
                    evaluate_config=ConfigRecord(common),
                )
            except StopRequested as stop:
                return suspended(recorder, settings, context, stop, rounds, started)
        if len(rounds.history) != remaining:
            raise RuntimeError(f"{done + len(rounds.history)} of {settings.rounds} rounds completed")
        best = rounds.keeper.best
        if best is None:
            raise RuntimeError(f"no round produced {metric}: no learner answered")
        task.set_weights(model, rounds.keeper.weights())
        registration = recorder.finish(best, model, task)
    except BaseException as error:
        recorder.fail(error)
        raise
    result = {
        "flower_run_id": context.run_id, "rounds": rounds.history, "best_round": best.round,
        "best_metrics": best.metrics, "wall_seconds": time.monotonic() - started,
        "timing": [timing.to_json() for timing in rounds.timings],
        "mlflow_run_id": getattr(recorder, "run_id", None),
        "mlflow_seconds": getattr(recorder, "seconds", {}),
        "model": None if registration is None else {"name": registration.name, "version": registration.version,
                                                     "alias": registration.alias, "uri": registration.uri,
                                                     "promoted": registration.promoted},
    }
    (settings.workdir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    return result


def suspended(recorder, settings: settings_mod.Settings, context: Context, stop: StopRequested, rounds: Rounds,
              started: float) -> dict:
    log.info("%s: suspending", stop)
    recorder.suspend(stop.round, stop.reason)
    result = {"flower_run_id": context.run_id, "rounds": rounds.history, "suspended_after_round": stop.round,
              "wall_seconds": time.monotonic() - started, "mlflow_run_id": getattr(recorder, "run_id", None)}
    (settings.workdir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    return result


@app.main()
def main(grid: Grid, context: Context) -> None:
    # Only our own logger: the root at INFO would log (and push to the SuperLink) every HTTP request.
    own_logger("flops_aggregator", "flops-serverapp")
    result = train(grid, context, settings_mod.from_env())
    if "suspended_after_round" in result:
        log.info("training suspended after round %s: a new aggregator resumes it from there",
                 result["suspended_after_round"])
    else:
        log.info("training finished: best round %s %s", result["best_round"], result["best_metrics"])

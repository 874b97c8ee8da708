"""The final model's logging, for MlflowRecorder: rehearsed while the rounds run (a forked child, model_logger.py,
or a thread), logged ahead while the learners evaluate it, and kept only if its round is the best; a training
that does not finish keeps none."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as futures_wait
from functools import partial
from typing import Any

from . import model_logger
from .model_logging import accepts_model_id, in_background, logging_inputs, outside_the_run, rehearsed_logging_inputs

log = logging.getLogger("flops_aggregator")


class FinalModelLogging:
    """Mixed into MlflowRecorder, whose attributes it uses: settings, mlflow, client, run_id, experiment_id,
    synchronous, timed(); and its own: prepared, spare, logger, ahead (set in MlflowRecorder.__init__)."""

    def prepare(self, task: Any, model: Any) -> None:
        """Async mode: what the final model logging needs is computed, and the export rehearsed, while the rounds
        run; the final log_model is then mostly an upload. With a tracking server, in a forked child
        (model_logger.py), which also logs the final model; otherwise (a local store, or no fork) in a thread."""
        if self.synchronous:
            return
        self.spare = (task, model)
        if self.settings.tracking_uri.startswith(("http://", "https://")):  # a local store's files are not fork-safe
            try:
                self.logger = model_logger.start(partial(self._prepare_in_child, task, model),
                                                 partial(self._log_in_child, task, model))
                return
            except OSError as exc:
                log.warning("could not fork the model logger (%s): the export is rehearsed in a thread", exc)
        self.prepared = in_background(rehearsed_logging_inputs, task, model)

    def _prepare_in_child(self, task: Any, model: Any) -> tuple[Any, Any, list[str]]:
        """In the model logger's child: its MLflow client proven to work (one request), the export rehearsed."""
        self.client.get_run(self.run_id)
        return rehearsed_logging_inputs(task, model)

    def _log_in_child(self, task: Any, model: Any, inputs: tuple[Any, Any, list[str]], round_: int,
                      weights: Any) -> Any:
        """In the model logger's child: the model with `weights`, logged with the rehearsed inputs."""
        self.prepared = Future()
        self.prepared.set_result(inputs)
        task.set_weights(model, weights)
        return self._log_model(task, model, round_)

    def log_ahead(self, round_: int, weights: Any) -> None:
        """Async mode, called while the learners evaluate the final model: log that model now, in the background
        (the ServerApp's thread goes on to collect the evaluation). finish() keeps it when its round is the best
        (so the end only registers it), and otherwise deletes it and logs the best. A failure here only loses the
        head start."""
        if self.spare is None:
            return
        task, model = self.spare
        started = threading.Event()
        self.ahead = (in_background(self._log_ahead, round_, weights, task, model, started), started)

    def _log_ahead(self, round_: int, weights: Any, task: Any, model: Any,
                   started: threading.Event) -> tuple[int, Any]:
        with self.timed("log_ahead"):
            if self.logger is not None:
                started.set()  # the child logs: this process's run stays as it is
                return round_, self.logger.log(round_, weights)
            try:
                if not accepts_model_id(task):
                    # MLflow keeps the active run per thread: this one takes the training's run (already RUNNING).
                    self.mlflow.start_run(run_id=self.run_id, log_system_metrics=False)
            finally:
                started.set()
            # The rehearsal, in another thread, exports this same model object (torch.export swaps its parameters
            # for fake tensors while it traces): its weights may change only once that is over.
            if self.prepared is not None:
                futures_wait([self.prepared])
            task.set_weights(model, weights)
            return round_, self._log_model(task, model, round_)

    def _log_model(self, task: Any, model: Any, round_: int) -> Any:
        """The task's log_model into this run. MLflow's log_model, called with the run active, also copies
        every metric the run has at the model's step onto the model: one request per metric name, 15-20 of
        them here (0.7 s of a 1.6 s warm log_model). So, when the task takes a `model_id`, the LoggedModel
        is initialized here (source run, the run's params), logged into from a thread with no active run,
        and linked to the run as its output at the round's step; its metrics are the best round's, attached
        by finish()."""
        from mlflow.entities import LoggedModelOutput

        example, signature, requirements = self._logging_inputs(task, model)
        inputs = {"name": "model", "input_example": example, "signature": signature,
                  "pip_requirements": requirements}
        if not accepts_model_id(task):  # every caller's thread has the run active (_log_ahead starts it in its own)
            return task.log_model(model, **inputs)
        logged = self.mlflow.initialize_logged_model(
            name="model", source_run_id=self.run_id, experiment_id=self.experiment_id,
            params={key: str(value) for key, value in self.settings.params().items()})
        try:
            info = outside_the_run(lambda: task.log_model(model, model_id=logged.model_id, **inputs))
            self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step=round_)])
        except BaseException:
            self._delete_logged(logged.model_id)
            raise
        return info

    def _log_best(self, task: Any, model: Any, round_: int) -> Any:
        if self.logger is not None:
            try:
                return self.logger.log(round_, task.get_weights(model))
            except model_logger.LoggerGone as exc:
                log.warning("%s: the model is logged by the ServerApp", exc)
        return self._log_model(task, model, round_)

    def _close_logger(self, bound: float = model_logger.EXIT_BOUND_SECONDS) -> None:
        logger, self.logger = self.logger, None
        if logger is not None:
            logger.close(bound)

    def _kept_ahead(self, best_round: int) -> Any:
        """The model logged ahead if it is the best round's; any other is deleted (one model per run)."""
        ahead, self.ahead = self.ahead, None
        if ahead is None:
            return None
        with self.timed("wait_ahead"):
            try:
                round_, info = ahead[0].result()
            except Exception as exc:
                log.warning("logging the final model ahead failed (%s): it is logged now", exc)
                return None
        if round_ == best_round:
            return info
        log.info("round %d's model, logged ahead, is not the best (round %d): deleted", round_, best_round)
        self._delete_logged(info.model_id)
        return None

    def _drop_ahead(self, bound: float | None) -> None:
        """A training that did not finish keeps no model: the one being logged ahead is awaited and deleted.
        `bound`: a stopped training's process is on its way out and waits this long at most."""
        ahead, self.ahead = self.ahead, None
        if ahead is None:
            return
        future, started = ahead
        # Before the run is ended: its start_run must not find the run ended and mark it RUNNING again.
        started.wait(bound)
        try:
            _, info = future.result(timeout=bound)
        except FutureTimeout:
            log.warning("the final model being logged ahead did not finish in %.0fs: it may stay in the run, "
                        "unregistered", bound)
            return
        except Exception:  # nothing was logged
            return
        self._delete_logged(info.model_id)

    def _delete_logged(self, model_id: str) -> None:
        try:
            self.client.delete_logged_model(model_id)
        except Exception as exc:  # an extra, unregistered model in the run: untidy, not wrong
            log.warning("could not delete logged model %s: %s", model_id, exc)

    def _logging_inputs(self, task: Any, model: Any) -> tuple[Any, Any, list[str]]:
        if self.prepared is not None:
            try:
                return self.prepared.result()
            except Exception as exc:  # computed again below: a real problem raises there, in order
                log.warning("preparing the model logging in the background failed: %s", exc)
        return logging_inputs(task, model)

"""What logging the final model needs (input example, signature, pinned requirements), prepared off the round's
path: in low-priority background threads, while the rounds run and while the final evaluation is out."""

from __future__ import annotations

import inspect
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata
from typing import Any

log = logging.getLogger("flops_aggregator")


def pinned(*distributions: str) -> list[str]:
    """Pip requirements pinned to what is installed here (MLflow's own inference takes seconds)."""
    out = []
    for dist in distributions:
        version = metadata.version(dist).split("+")[0]
        out.append(f"{dist}=={version}")
    return out


def task_requirements(task: Any) -> list[str]:
    return pinned("mlflow", *getattr(task, "pip_packages", ()))


def logging_inputs(task: Any, model: Any) -> tuple[Any, Any, list[str]]:
    """Input example, signature and pinned requirements of the logged model: they depend on the task and the
    model's shape, not its weights."""
    from mlflow.models import infer_signature

    example = task.input_example()
    return example, infer_signature(example, task.predict(model, example)), task_requirements(task)


def rehearsed_logging_inputs(task: Any, model: Any) -> tuple[Any, Any, list[str]]:
    example, signature, requirements = inputs = logging_inputs(task, model)
    rehearse = getattr(task, "rehearse_log_model", None)
    if callable(rehearse):
        try:
            rehearse(model, input_example=example, signature=signature, pip_requirements=requirements)
        except Exception as exc:  # only a head start: the real log_model reports real problems
            log.warning("rehearsing the model export failed: %s", exc)
    return inputs


def accepts_model_id(task: Any) -> bool:
    """Whether the task's log_model takes `model_id` (the LoggedModel to log into); a user task written
    before it existed does not, and is called as before, into the active run."""
    try:
        parameters = inspect.signature(task.log_model).parameters
    except (TypeError, ValueError):
        return False
    return "model_id" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def outside_the_run(function):
    """function() in a thread of its own: MLflow's active run is per thread, so none is active there, and
    MLflow's log_model does not copy the run's metrics onto the model."""
    with ThreadPoolExecutor(1, thread_name_prefix="log-model") as pool:
        return pool.submit(function).result()


def in_background(function, *args) -> Future:
    """A daemon thread's result: an unfinished one never holds up the process's exit (e.g. on SIGTERM). The thread
    runs at the lowest CPU priority: its work (the export rehearsal, seconds of CPU) is a head start for the end
    and must not take CPU from the rounds, whose learners share the machine on one-machine deployments."""
    future: Future = Future()

    def run() -> None:
        lowest_priority()
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # handed to whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=run, name="prepare-model-logging", daemon=True).start()
    return future


def lowest_priority() -> None:
    """Nice 19 for the calling thread only (Linux schedules threads, and setpriority takes a thread id)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError as exc:  # e.g. a seccomp profile that refuses it: the head start still works, at normal priority
        log.debug("could not lower the background thread's priority: %s", exc)

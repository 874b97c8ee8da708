"""The task contract: what a user implements to bring a model to FLOps.

A task is an object with the methods of `Task` below. Built-in tasks live in `builtin.py`; a user task is a
module (shipped in a user image) whose attribute `task` is such an object, or `make_task()` returns one.
Weights travel as an ordered mapping name -> numpy array (the ClientApp wraps them into an ArrayRecord).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """One learner's local data, already split; never leaves the learner."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def save(self, path) -> None:
        np.savez(path, x_train=self.x_train, y_train=self.y_train, x_test=self.x_test, y_test=self.y_test)

    @classmethod
    def load(cls, path) -> Dataset:
        with np.load(path) as stored:
            return cls(stored["x_train"], stored["y_train"], stored["x_test"], stored["y_test"])


@dataclass(frozen=True)
class TrainConfig:
    """What the aggregator asks for in a training round (sent in the round's ConfigRecord)."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    proximal_mu: float = 0.0
    """FedProx: weight of the proximal term pulling local weights toward the round's global weights."""
    seed: int = 0


@dataclass(frozen=True)
class Evaluation:
    loss: float
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    """Extra metrics (e.g. accuracy), reported by the aggregator as eval_<name>."""


class Task(ABC):
    """Bring a model: build it, move its weights, load data, train, evaluate, log it."""

    name: str = "task"
    default_dataset: str | None = None
    """The built-in dataset this task trains on when the spec names none."""
    pip_packages: tuple[str, ...] = ()
    """Distributions the logged model needs to load (pinned to the installed versions at log time)."""

    @abstractmethod
    def build_model(self, seed: int) -> Any:
        """A freshly initialised model, deterministic from the seed."""

    @abstractmethod
    def get_weights(self, model: Any) -> OrderedDict[str, np.ndarray]: ...

    @abstractmethod
    def set_weights(self, model: Any, weights: OrderedDict[str, np.ndarray]) -> None: ...

    @abstractmethod
    def load_data(self, data: dict, partition_id: int, num_partitions: int) -> Dataset:
        """This learner's data from the spec's `data` (wire shape: dataset|path, labelColumn, partitioning)."""

    @abstractmethod
    def train(self, model: Any, data: Dataset, config: TrainConfig) -> float:
        """Train in place for config.epochs; return the mean training loss."""

    @abstractmethod
    def evaluate(self, model: Any, data: Dataset) -> Evaluation: ...

    @abstractmethod
    def input_example(self) -> np.ndarray:
        """A few rows of model input, used for the logged model's signature and input example."""

    @abstractmethod
    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        """Model output for a batch of inputs (used to infer the logged model's signature)."""

    @abstractmethod
    def log_model(self, model: Any, *, name: str, input_example: np.ndarray, signature: Any,
                  pip_requirements: list[str], model_id: str | None = None) -> Any:
        """Log the model (mlflow.<flavor>.log_model, passing `model_id` on); returns its ModelInfo. With
        `model_id`, the aggregator has made the LoggedModel (with its source run) and links it to the run; without
        it, log to the active run. A task whose log_model lacks the parameter is called without it."""

    def warm_up(self) -> None:
        """Optional: import what the first train/evaluate call would import lazily. The warm ClientApp launcher
        calls it once and forks every message's ClientApp after it, so they all skip that cost. Imports only:
        run no computation here (a thread pool started before a fork does not survive into the children)."""

    def rehearse_log_model(self, model: Any, *, input_example: np.ndarray, signature: Any,
                           pip_requirements: list[str]) -> None:
        """Optional: what log_model does, without logging anything (e.g. save the model to a scratch
        directory). The aggregator calls it in the background while the rounds run, so that the first-call
        costs (imports, tracing an export) are paid before the final log_model, which then only uploads."""


def warm_up(task: Task) -> None:
    """A user task need not have the optional hook."""
    hook = getattr(task, "warm_up", None)
    if callable(hook):
        hook()


def load_task(wire: dict) -> Task:
    """The task named by the spec's `task` (wire shape {"name": ...} or {"module": ..., "image": ...})."""
    if wire.get("name"):
        from .builtin import BUILTIN_TASKS

        try:
            return BUILTIN_TASKS[wire["name"]]()
        except KeyError:
            raise ValueError(f"unknown built-in task {wire['name']!r} (known: {', '.join(BUILTIN_TASKS)})") from None
    if wire.get("module"):
        module = importlib.import_module(wire["module"])
        if hasattr(module, "make_task"):
            task = module.make_task()
        elif hasattr(module, "task"):
            task = module.task
        else:
            raise ValueError(f"module {wire['module']!r} has neither `task` nor `make_task()`")
        missing = [m for m in Task.__abstractmethods__ if not callable(getattr(task, m, None))]
        if missing:
            raise ValueError(f"task from {wire['module']!r} lacks {', '.join(sorted(missing))}")
        return task
    raise ValueError("task needs a name (built-in) or a module")

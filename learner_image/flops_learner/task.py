"""The task contract: what a user implements to bring a model to FLOps.

A task is an object with the methods of `Task` below. Built-in tasks live in `builtin.py`; a user task is named by
an entrypoint "module:attribute" (the attribute a task, a Task subclass or a zero-argument callable returning a
task; flops_learner.loading), or, the older way, a module whose attribute `task` is a task or `make_task()` returns
one. Most people write neither by hand: flops_learner.torch_task and flops_learner.sklearn_task implement the
contract from a model and a data function. Weights travel as an ordered mapping name -> numpy array (the ClientApp
wraps them into an ArrayRecord).
"""

from __future__ import annotations

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


class TaskError(ValueError):
    """A task that cannot be loaded or breaks the contract; the message names the module, attribute, method or
    file (and line) at fault, in words a person can act on."""


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


CONTRACT_METHODS = ("build_model", "get_weights", "set_weights", "load_data", "train", "evaluate", "input_example",
                    "predict", "log_model")
"""The methods every task has (Task's abstract methods, in the order a training uses them)."""


def warm_up(task: Task) -> None:
    """A user task need not have the optional hook."""
    hook = getattr(task, "warm_up", None)
    if callable(hook):
        hook()

"""What the torch and scikit-learn adapters share: turning a person's data function into the contract's
load_data, and finding the logged model's input example.

A data function is either
  - `load() -> (x, y)`: the whole dataset (a public one every learner can read, e.g. scikit-learn's bundled
    copies). Every learner loads it and keeps its own share, cut by the spec's data.partitioning exactly as the
    built-in datasets are (flops_learner.data.partition: IID or Dirichlet label skew, the same on every learner),
    then split into train and test; or
  - `load(data, partition_id, num_partitions) -> ...`: this learner's own data (a node-local file named by
    data["path"], say); it returns a Dataset, (x_train, y_train, x_test, y_test), or (x, y) to be split here.
An object with `.data` and `.target` (a scikit-learn Bunch) counts as (x, y).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from .data import partition, train_test_split
from .task import Dataset, Task, TaskError

DEFAULT_PARTITIONING = {"scheme": "iid", "alpha": 0.5, "seed": 42}
"""The spec's default data.partitioning (flops_operator.models.spec.Partitioning)."""
EXAMPLE_ROWS = 5
"""Rows in the logged model's input example."""


def wants_spec(function: Callable) -> bool:
    """Whether a data function takes (data, partition_id, num_partitions) rather than nothing."""
    try:
        parameters = [p for p in inspect.signature(function).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or p.kind is p.VAR_POSITIONAL]
    except (TypeError, ValueError):
        return True
    return bool(parameters)


def as_arrays(result: Any, where: str) -> tuple[Any, ...]:
    """A data function's result as a tuple of 2 (x, y) or 4 (x_train, y_train, x_test, y_test) arrays."""
    if isinstance(result, Dataset):
        return (result.x_train, result.y_train, result.x_test, result.y_test)
    if hasattr(result, "data") and hasattr(result, "target"):
        return (result.data, result.target)
    if isinstance(result, (tuple, list)) and len(result) in (2, 4):
        return tuple(result)
    raise TaskError(f"{where} returned {type(result).__name__}; expected (x, y), (x_train, y_train, x_test, y_test) "
                    "or a flops_learner.task.Dataset")


class AdaptedTask(Task):
    """The contract's data side for a model written by a person; subclasses add the framework."""

    feature_dtype: Any = np.float32
    label_dtype: Any = np.int64

    def __init__(self, data: Callable[..., Any], *, example: Any = None, name: str | None = None):
        if not callable(data):
            raise TaskError(f"{type(self).__name__}: data must be a function (load() or load(data, partition_id, "
                            f"num_partitions)), not {type(data).__name__}")
        self.data_function = data
        self.example = example
        if name:
            self.name = name
        self._whole: tuple[np.ndarray, np.ndarray] | None = None

    def load_data(self, data: dict, partition_id: int, num_partitions: int) -> Dataset:
        if not 0 <= partition_id < num_partitions:
            raise ValueError(f"partition id {partition_id} is outside 0..{num_partitions - 1}")
        scheme = {**DEFAULT_PARTITIONING, **(data.get("partitioning") or {})}
        seed = int(scheme["seed"])
        if wants_spec(self.data_function):
            arrays = as_arrays(self.data_function(data, partition_id, num_partitions), self._data_name())
            if len(arrays) == 4:
                return self.converted(*arrays)
            x, y = self.converted_xy(*arrays)
            return train_test_split(x, y, seed + partition_id)
        x, y = self.whole_dataset()
        mine = partition(y, num_partitions, scheme["scheme"], float(scheme["alpha"]), seed)[partition_id]
        return train_test_split(x[mine], y[mine], seed + partition_id)

    def whole_dataset(self) -> tuple[np.ndarray, np.ndarray]:
        """A zero-argument data function's dataset, loaded once per process."""
        if self._whole is None:
            arrays = as_arrays(self.data_function(), self._data_name())
            if len(arrays) != 2:
                raise TaskError(f"{self._data_name()} takes no arguments, so it returns the whole dataset as (x, y); "
                                f"it returned {len(arrays)} arrays")
            self._whole = self.converted_xy(*arrays)
        return self._whole

    def input_example(self) -> np.ndarray:
        """The example given, else the first rows of the data. The aggregator has no learner data: a data function
        that reads node-local files needs `example=` (an array, or a function returning one)."""
        if self.example is not None:
            example = self.example() if callable(self.example) else self.example
            return np.asarray(example, dtype=self.feature_dtype)[:EXAMPLE_ROWS]
        if not wants_spec(self.data_function):
            return self.whole_dataset()[0][:EXAMPLE_ROWS]
        try:
            dataset = self.load_data({"partitioning": DEFAULT_PARTITIONING}, 0, 1)
        except Exception as exc:
            raise TaskError(f"{type(self).__name__}: no input example: {self._data_name()} could not load data here "
                            f"({type(exc).__name__}: {exc}); pass example= (a few rows of model input)") from exc
        return dataset.x_train[:EXAMPLE_ROWS]

    def converted(self, x_train: Any, y_train: Any, x_test: Any, y_test: Any) -> Dataset:
        x_train, y_train = self.converted_xy(x_train, y_train)
        x_test, y_test = self.converted_xy(x_test, y_test)
        return Dataset(x_train, y_train, x_test, y_test)

    def converted_xy(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """numpy arrays of the adapter's dtypes (np.savez keeps the learner's prepared data: no objects)."""
        x, y = np.asarray(x, dtype=self.feature_dtype), np.asarray(y)
        if len(x) != len(y):
            raise ValueError(f"{self._data_name()}: {len(x)} rows of features but {len(y)} labels")
        numeric = np.issubdtype(y.dtype, np.number) or y.dtype == bool
        if self.label_dtype is np.int64 and y.size and not (numeric and np.all(np.mod(y, 1) == 0)):
            raise ValueError(f"{self._data_name()}: class labels must be integers (0, 1, ...), got {y.dtype}")
        return x, y.astype(self.label_dtype)

    def _data_name(self) -> str:
        return f"data function {getattr(self.data_function, '__qualname__', repr(self.data_function))}"

"""Check a task folder before training it: import, contract, and one simulated round of 2 learners, in seconds.

    python -m flops_learner.check FOLDER [--entrypoint module:attribute] [--import-only] [--export]

What it does, in process (the folder put first on sys.path, as the images' PYTHONPATH does): finds the entrypoint
(the option, else FOLDER/pyproject.toml [tool.flops] task), imports the task, checks its methods and their
parameters, then does what a training does once: builds the model, gives each of 2 learners its data, trains each
one epoch from the same weights, averages their weights (FedAvg, by training examples), evaluates the average on
each learner's data and predicts the input example (and infers the logged model's signature from it, as the
aggregator does). --export also rehearses the final model's export (torch.export: seconds more).
--import-only stops after the contract (the image builder runs it with the task's dependencies on PYTHONPATH).
Output: what was checked on stderr; on stdout one line per problem, naming what is wrong; exit 1 on any problem.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import sys
import time
import tomllib
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .loading import describe, location, source
from .loading import load_task
from .task import CONTRACT_METHODS, TaskError, TrainConfig

LEARNERS = 2
DEFAULT_DATA = {"partitioning": {"scheme": "iid", "alpha": 0.5, "seed": 42}}
"""The spec's `data` as a learner gets it when a project names nothing (the task's default dataset added)."""
CHECK_TRAINING = TrainConfig(epochs=1, batch_size=32, learning_rate=0.05, proximal_mu=0.01)
"""One short epoch; a small proximal term, so a task that handles FedProx runs that code too."""
# How the contract's methods are called (flops_learner.client_app, flops_aggregator): each must accept these.
CALLS: dict[str, tuple[tuple, dict]] = {
    "build_model": (("seed",), {}), "get_weights": (("model",), {}), "set_weights": (("model", "weights"), {}),
    "load_data": (("data", "partition_id", "num_partitions"), {}), "train": (("model", "data", "config"), {}),
    "evaluate": (("model", "data"), {}), "input_example": ((), {}), "predict": (("model", "x"), {}),
    "log_model": (("model",), {"name": 0, "input_example": 0, "signature": 0, "pip_requirements": 0}),
}


@dataclass
class CheckReport:
    folder: Path
    entrypoint: str | None = None
    done: list[str] = field(default_factory=list)
    """What was checked, one line each (with seconds where it took time)."""
    problems: list[str] = field(default_factory=list)
    """What is wrong, one line each, naming the method, weight, file or line."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


class _Stop(Exception):
    """A step failed (its problem is recorded): the steps that need its result are skipped."""


def default_entrypoint(folder: Path) -> str | None:
    """pyproject.toml's [tool.flops] task, if any (a TOML error is raised as TaskError naming the file)."""
    file = folder / "pyproject.toml"
    if not file.is_file():
        return None
    try:
        value = tomllib.loads(file.read_text()).get("tool", {}).get("flops", {}).get("task")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TaskError(f"{file}: not valid TOML: {exc}") from None
    if value is not None and not isinstance(value, str):
        raise TaskError(f"{file}: [tool.flops] task must be a string \"module:attribute\"")
    return value


def check_task(folder: Path, entrypoint: str | None = None, *, import_only: bool = False, export: bool = False,
               data: dict | None = None, learners: int = LEARNERS) -> CheckReport:
    """Check the task in `folder`; problems are returned in the report, not raised."""
    folder = Path(folder).resolve()
    report = CheckReport(folder=folder, entrypoint=entrypoint)
    started = time.monotonic()
    try:
        if not folder.is_dir():
            raise _problem(report, f"{folder}: no such folder")
        try:
            report.entrypoint = entrypoint or default_entrypoint(folder)
        except TaskError as exc:
            raise _problem(report, str(exc)) from None
        if not report.entrypoint:
            raise _problem(report, f"no entrypoint: pass --entrypoint module:attribute or set [tool.flops] task = "
                                   f"\"module:attribute\" in {folder / 'pyproject.toml'}")
        with on_path(folder):
            started_import = time.monotonic()
            task = _run(report, f"import {report.entrypoint}", lambda: _load(report.entrypoint))
            report.done.append(f"imported {report.entrypoint}: {type(task).__name__} "
                               f"({_seconds(started_import)})")
            _check_contract(report, task)
            if not import_only:
                model = _simulate(report, task, data if data is not None else _default_data(task), learners)
                _check_example(report, task, model, export)
    except _Stop:
        pass
    report.seconds = time.monotonic() - started
    return report


@contextmanager
def on_path(folder: Path) -> Iterator[None]:
    """The folder first on sys.path, its modules imported afresh (an edited file, or another folder's module of
    the same name, is not taken from an earlier import in this process)."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(folder):
            del sys.modules[name]
    packages = {p.name for p in folder.iterdir() if (p / "__init__.py").exists()}
    for top in {p.stem for p in folder.glob("*.py")} | packages:
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
    importlib.invalidate_caches()
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        if str(folder) in sys.path:
            sys.path.remove(str(folder))


def _load(entrypoint: str) -> Any:
    try:
        return load_task({"entrypoint": entrypoint})
    except TaskError as exc:
        raise _Reported(str(exc)) from None


class _Reported(Exception):
    """A failure whose message already says where: reported as is."""


def _run(report: CheckReport, what: str, action: Callable[[], Any]) -> Any:
    """action(); a failure becomes a problem naming `what` and where it happened (a TaskError, from the loader or
    an adapter, already says what is wrong)."""
    try:
        return action()
    except _Reported as exc:
        raise _problem(report, str(exc)) from None
    except TaskError as exc:
        raise _problem(report, f"{what}: {exc}") from None
    except Exception as exc:
        raise _problem(report, f"{what} failed at {location(exc)}: {describe(exc)}") from None


def _problem(report: CheckReport, message: str) -> _Stop:
    report.problems.append(message)
    return _Stop(message)


def _check_contract(report: CheckReport, task: Any) -> None:
    for method in CONTRACT_METHODS:
        args, kwargs = CALLS[method]
        function = getattr(task, method)
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            continue  # a builtin or C callable: nothing to check ahead
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            call = ", ".join([*args, *(f"{k}=..." for k in kwargs)])
            report.problems.append(f"method {method}{signature} ({source(function)}) cannot be called as "
                                   f"{method}({call}): {exc}")
    for dist in getattr(task, "pip_packages", ()):
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            report.problems.append(f"pip_packages names {dist!r}, which is not installed here: the logged model's "
                                   "requirements are pinned to installed distributions (use the pip name)")
    if report.problems:
        raise _Stop()
    report.done.append(f"contract: the {len(CONTRACT_METHODS)} methods, each callable as a training calls it")


def _simulate(report: CheckReport, task: Any, data: dict, learners: int) -> Any:
    """One round of `learners` learners from the same initial weights; returns the model holding their average."""
    initial = _weights(report, "get_weights(build_model(seed=0))", lambda: task.get_weights(task.build_model(seed=0)))
    model = _run(report, "build_model(seed=1)", lambda: task.build_model(seed=1))
    # Values no freshly built model has: a set_weights that loads nothing (or not all) shows.
    probe = OrderedDict((k, v + 0.5 if np.issubdtype(v.dtype, np.floating) else v) for k, v in initial.items())
    _run(report, "set_weights(model, weights)", lambda: task.set_weights(model, probe))
    back = _weights(report, "get_weights after set_weights", lambda: task.get_weights(model))
    _compare(report, back, probe, "after set_weights, get_weights", "the weights set")
    if unloaded := [k for k in probe if not np.allclose(back[k], probe[k])]:
        raise _problem(report, f"set_weights then get_weights gives other values than the weights set "
                               f"({', '.join(unloaded)}): set_weights must load every weight get_weights returns")
    report.done.append(f"weights: {_shapes(initial)}; set_weights then get_weights gives them back")
    shares, trained = [], []
    for i in range(learners):
        started = time.monotonic()
        dataset = _run(report, f"learner {i}: load_data(data, {i}, {learners})",
                       lambda: task.load_data(data, i, learners))
        shares.append(_check_dataset(report, i, dataset))
        local = _run(report, f"learner {i}: build_model and set_weights", lambda: _received(task, initial))
        config = TrainConfig(**{**CHECK_TRAINING.__dict__, "seed": i})
        loss = _run(report, f"learner {i}: train one epoch", lambda: task.train(local, dataset, config))
        _finite(report, f"learner {i}: train returned loss", loss)
        trained.append(_weights(report, f"learner {i}: get_weights after train", lambda: task.get_weights(local)))
        report.done.append(f"learner {i}: {len(dataset.y_train)} training / {len(dataset.y_test)} test rows, one "
                           f"epoch: loss {float(loss):.4g} ({_seconds(started)})")
    for i in range(1, learners):
        _compare(report, trained[i], trained[0], f"learner {i}'s weights", "learner 0's", between_learners=True)
    _compare(report, trained[0], initial, "the trained weights", "the initial model's (build_model)")
    average = fedavg(trained, [len(d.y_train) for d in shares])
    _run(report, f"set_weights(model, FedAvg of {learners} learners' weights)",
         lambda: task.set_weights(model, average))
    results = []
    for i, dataset in enumerate(shares):
        result = _run(report, f"learner {i}: evaluate the average", lambda: task.evaluate(model, dataset))
        results.append(_check_evaluation(report, i, result))
    report.done.append(f"FedAvg of the {learners} learners, evaluated: " +
                       "; ".join(f"learner {i} {_summary(r)}" for i, r in enumerate(results)))
    return model


def _received(task: Any, weights: Mapping[str, np.ndarray]) -> Any:
    """A learner's model as a round starts: built, then given the round's global weights (as client_app does)."""
    model = task.build_model(seed=0)
    task.set_weights(model, weights)
    return model


def _check_example(report: CheckReport, task: Any, model: Any, export: bool) -> None:
    """The aggregator's part at the end: input example -> prediction -> signature (-> export)."""
    started = time.monotonic()
    example = _run(report, "input_example()", task.input_example)
    if not hasattr(example, "__len__") or len(example) == 0:
        raise _problem(report, f"input_example() returned {type(example).__name__} without rows: it must return a "
                               "few rows of model input (a numpy array)")
    prediction = _run(report, "predict(model, input_example())", lambda: task.predict(model, example))
    if not hasattr(prediction, "__len__") or len(prediction) != len(example):
        rows = len(prediction) if hasattr(prediction, "__len__") else type(prediction).__name__
        raise _problem(report, f"predict(model, input_example()) returned {rows} rows for {len(example)} example rows")

    def signature() -> Any:
        from mlflow.models import infer_signature

        return infer_signature(example, prediction)

    inferred = _run(report, "the logged model's signature (mlflow infer_signature)", signature)
    report.done.append(f"input example {np.shape(example)} -> prediction {np.shape(prediction)}, signature inferred "
                       f"({_seconds(started)})")
    rehearse = getattr(task, "rehearse_log_model", None)
    if export and callable(rehearse):
        requirements = [f"mlflow=={metadata.version('mlflow')}"]
        started = time.monotonic()
        _run(report, "export of the final model (rehearse_log_model)",
             lambda: rehearse(model, input_example=example, signature=inferred, pip_requirements=requirements))
        report.done.append(f"final model exported to a scratch folder ({_seconds(started)})")


def fedavg(weights: list[Mapping[str, np.ndarray]], examples: list[int]) -> OrderedDict[str, np.ndarray]:
    """The example-weighted mean of each weight, in the first learner's names and dtypes (as Flower's FedAvg)."""
    total = float(sum(examples)) or 1.0
    out = OrderedDict()
    for name, first in weights[0].items():
        mean = sum(np.asarray(w[name], dtype=np.float64) * (n / total) for w, n in zip(weights, examples))
        out[name] = (np.rint(mean) if np.issubdtype(first.dtype, np.integer) else mean).astype(first.dtype)
    return out


def weight_differences(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> list[str]:
    """What differs in names and shapes between two weight mappings, one phrase each."""
    out = []
    if missing := [k for k in b if k not in a]:
        out.append(f"lack {', '.join(missing)}")
    if extra := [k for k in a if k not in b]:
        out.append(f"have extra {', '.join(extra)}")
    out += [f"{k} has shape {tuple(np.shape(a[k]))}, not {tuple(np.shape(b[k]))}"
            for k in a if k in b and np.shape(a[k]) != np.shape(b[k])]
    if not out and list(a) != list(b):
        out.append(f"are in another order ({', '.join(a)} vs {', '.join(b)})")
    return out


def _compare(report: CheckReport, a: Mapping, b: Mapping, label_a: str, label_b: str,
             between_learners: bool = False) -> None:
    differences = weight_differences(a, b)
    if differences:
        why = (": every learner's model must have the same weights (names and shapes) for them to be averaged; "
               "do they depend on the learner's data?") if between_learners else ""
        raise _problem(report, f"weights differ: {label_a} {'; '.join(differences)} (vs {label_b}){why}")


def _weights(report: CheckReport, what: str, action: Callable[[], Any]) -> OrderedDict[str, np.ndarray]:
    weights = _run(report, what, action)
    if not isinstance(weights, Mapping) or not weights:
        raise _problem(report, f"{what}: returned {type(weights).__name__}; get_weights must return a non-empty "
                               "ordered mapping name -> numpy array")
    for name, value in weights.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray) or value.dtype == object:
            kind = f"{type(value).__name__}{' of objects' if isinstance(value, np.ndarray) else ''}"
            raise _problem(report, f"{what}: weight {name!r} is {kind}; each weight must be a numeric numpy array "
                                   "under a string name")
    return OrderedDict(weights)


def _check_dataset(report: CheckReport, i: int, dataset: Any) -> Any:
    fields = ("x_train", "y_train", "x_test", "y_test")
    if not all(hasattr(dataset, f) for f in fields):
        raise _problem(report, f"learner {i}: load_data returned {type(dataset).__name__}, not a "
                               "flops_learner.task.Dataset (x_train, y_train, x_test, y_test)")
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        if len(getattr(dataset, x)) != len(getattr(dataset, y)):
            raise _problem(report, f"learner {i}: load_data's {x} has {len(getattr(dataset, x))} rows, {y} "
                                   f"{len(getattr(dataset, y))}")
    if len(dataset.y_train) == 0 or len(dataset.y_test) == 0:
        raise _problem(report, f"learner {i}: load_data gave {len(dataset.y_train)} training and {len(dataset.y_test)} "
                               "test rows; each learner needs both")
    return dataset


def _check_evaluation(report: CheckReport, i: int, result: Any) -> Any:
    if not all(hasattr(result, f) for f in ("loss", "num_examples", "metrics")):
        raise _problem(report, f"learner {i}: evaluate returned {type(result).__name__}, not a "
                               "flops_learner.task.Evaluation(loss, num_examples, metrics)")
    _finite(report, f"learner {i}: evaluate's loss", result.loss)
    if not isinstance(result.num_examples, (int, np.integer)) or result.num_examples < 1:
        raise _problem(report, f"learner {i}: evaluate's num_examples is {result.num_examples!r}, not a positive count")
    for name, value in dict(result.metrics).items():
        _finite(report, f"learner {i}: evaluate's metric {name!r}", value)
    return result


def _finite(report: CheckReport, what: str, value: Any) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _problem(report, f"{what} is {type(value).__name__}, not a number") from None
    if not math.isfinite(number):
        raise _problem(report, f"{what} is {number}: the model diverged or the loss is undefined on this data")


def _default_data(task: Any) -> dict:
    dataset = getattr(task, "default_dataset", None)
    return {**DEFAULT_DATA, "dataset": dataset} if dataset else dict(DEFAULT_DATA)


def _shapes(weights: Mapping[str, np.ndarray]) -> str:
    shown = [f"{k} {tuple(v.shape)}" for k, v in list(weights.items())[:4]]
    more = len(weights) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _summary(result: Any) -> str:
    metrics = "".join(f", {k} {float(v):.3g}" for k, v in dict(result.metrics).items())
    return f"loss {float(result.loss):.4g}{metrics}"


def _seconds(started: float) -> str:
    return f"{time.monotonic() - started:.2f}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flops_learner.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the task's source folder")
    parser.add_argument("--entrypoint", help="module:attribute (default: pyproject.toml [tool.flops] task)")
    parser.add_argument("--import-only", action="store_true", help="import and contract only, no training")
    parser.add_argument("--export", action="store_true", help="also rehearse the final model's export")
    args = parser.parse_args(argv)
    report = check_task(args.folder, args.entrypoint, import_only=args.import_only, export=args.export)
    for line in report.done:
        print(f"ok: {line}", file=sys.stderr)
    for line in report.problems:
        print(line, flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

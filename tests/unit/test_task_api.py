"""The task API for people: TaskRef's entrypoint, load_task's forms and errors, and the data side the torch and
scikit-learn adapters share (flops_learner.adapter). The adapters' models: test_task_adapters.py."""

from __future__ import annotations

import re
import sys
import textwrap

import numpy as np
import pytest
from pydantic import ValidationError

from flops_learner.adapter import AdaptedTask, as_arrays, wants_spec
from flops_learner.contract import TaskRef
from flops_learner.loading import load_task
from flops_learner.task import CONTRACT_METHODS, Dataset, Task, TaskError

CONTRACT = """
import numpy as np
from collections import OrderedDict
from flops_learner.task import Dataset, Evaluation, Task

class Linear(Task):
    def build_model(self, seed): return {"w": np.zeros(3)}
    def get_weights(self, model): return OrderedDict(w=model["w"].copy())
    def set_weights(self, model, weights): model["w"] = np.array(weights["w"])
    def load_data(self, data, partition_id, num_partitions):
        return Dataset(np.ones((4, 3)), np.zeros(4, dtype=np.int64), np.ones((2, 3)), np.zeros(2, dtype=np.int64))
    def train(self, model, data, config): return 0.0
    def evaluate(self, model, data): return Evaluation(loss=0.0, num_examples=2)
    def input_example(self): return np.ones((2, 3))
    def predict(self, model, x): return x @ model["w"]
    def log_model(self, model, *, name, input_example, signature, pip_requirements, model_id=None): return None
"""


@pytest.fixture
def module(tmp_path, monkeypatch):
    """write(name, source): a module on sys.path, forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return str(tmp_path / f"{name}.py")

    yield write
    for name in written:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("fields, ok", [
    ({"name": "digits-mlp"}, True),
    ({"entrypoint": "wine_task:task"}, True),
    ({"entrypoint": "pkg.tasks:factory.make"}, True),
    ({"module": "mytask", "image": "registry.example/t:1"}, True),
    ({}, False),
    ({"name": "digits-mlp", "entrypoint": "wine_task:task"}, False),
    ({"module": "mytask", "entrypoint": "wine_task:task"}, False),
    ({"entrypoint": "wine_task"}, False),
    ({"entrypoint": "wine-task:task"}, False),
    ({"entrypoint": "wine_task:"}, False),
])
def test_task_ref_has_exactly_one_of_name_module_entrypoint(fields, ok):
    if ok:
        assert TaskRef.model_validate(fields).to_wire() == fields
    else:
        with pytest.raises(ValidationError):
            TaskRef.model_validate(fields)


@pytest.mark.parametrize("attribute, tail", [
    ("task", "task = Linear()"),
    ("Linear", ""),
    ("make", "def make():\n    return Linear()"),
    ("factories.make", "class factories:\n    make = staticmethod(lambda: Linear())"),
])
def test_an_entrypoint_names_a_task_a_task_class_or_a_factory(module, attribute, tail):
    module("ep_forms", CONTRACT + "\n" + tail + "\n")
    task = load_task({"entrypoint": f"ep_forms:{attribute}"})
    assert type(task).__name__ == "Linear" and all(callable(getattr(task, m)) for m in CONTRACT_METHODS)


def test_the_older_module_form_still_loads(module):
    module("legacy_task", CONTRACT + "\ndef make_task():\n    return Linear()\n")
    assert type(load_task({"module": "legacy_task"})).__name__ == "Linear"


LINE_OF_RAISE = 3


@pytest.mark.parametrize("source, entrypoint, pattern", [
    ("", "ep_bad", r"entrypoint 'ep_bad' is not module:attribute"),
    ("", "no_such_module_here:task", r"no module named 'no_such_module_here' on the path"),
    ("import numpy\n\nraise RuntimeError('no GPU here')\n", "ep_bad:task",
     r"importing ep_bad failed at .*ep_bad\.py:3: RuntimeError: no GPU here"),
    ("import not_a_dependency_we_have\n", "ep_bad:task",
     r"ep_bad\.py:1: ModuleNotFoundError: No module named 'not_a_dependency_we_have' \(a dependency missing"),
    ("def broken(:\n    pass\n", "ep_bad:task", r"importing ep_bad failed at .*ep_bad\.py:1: SyntaxError"),
    (CONTRACT + "task = Linear()\n", "ep_bad:tsak", r"module ep_bad \(.*ep_bad\.py\) has no attribute 'tsak'; it has: .*task"),
    (CONTRACT + "def make(size):\n    return Linear()\n", "ep_bad:make", r"make \(.*ep_bad\.py:\d+\) needs argument\(s\) size"),
    (CONTRACT + "def make():\n    return {}['x']\n", "ep_bad:make", r"make\(\) failed at .*ep_bad\.py:\d+: KeyError"),
    (CONTRACT + "def make():\n    return 3\n", "ep_bad:make", r"make\(\) \(.*\) returned int, not a task"),
    ("from flops_learner.task import Task\nclass Half(Task):\n    def build_model(self, seed): pass\n", "ep_bad:Half",
     r"class Half \(.*ep_bad\.py:2\) lacks method\(s\) evaluate, get_weights, input_example, load_data, log_model"),
    ("class Duck:\n    def build_model(self, seed): pass\ntask = Duck()\n", "ep_bad:task",
     r"the task \(Duck, .*ep_bad\.py:1\) lacks method\(s\) get_weights, set_weights, load_data, train, evaluate"),
])
def test_load_task_errors_name_module_attribute_file_and_line(module, source, entrypoint, pattern):
    module("ep_bad", source)
    with pytest.raises(TaskError, match=pattern) as raised:
        load_task({"entrypoint": entrypoint})
    assert isinstance(raised.value, ValueError)  # callers that caught ValueError still do


def test_an_unknown_builtin_is_a_task_error():
    with pytest.raises(TaskError, match="unknown built-in task 'resnet'"):
        load_task({"name": "resnet"})


# The data side of the adapters.
X = np.arange(200, dtype=np.float64).reshape(100, 2)
Y = np.arange(100) % 4


class Data(AdaptedTask):
    """The adapter's data side alone (the model side is the framework's)."""

    build_model = get_weights = set_weights = train = evaluate = predict = log_model = None


def test_a_whole_dataset_is_partitioned_disjointly_by_the_spec():
    calls = []
    task = Data(lambda: calls.append(1) or (X, Y))
    shares = [task.load_data({"partitioning": {"scheme": "iid", "seed": 3}}, i, 3) for i in range(3)]
    rows = np.concatenate([np.concatenate([s.x_train, s.x_test]) for s in shares])
    assert len(rows) == 100 and len(np.unique(rows[:, 0])) == 100  # every row in exactly one learner's share
    assert all(s.x_train.dtype == np.float32 and s.y_train.dtype == np.int64 and len(s.y_test) > 0 for s in shares)
    assert calls == [1]  # loaded once per process
    again = Data(lambda: (X, Y)).load_data({"partitioning": {"scheme": "iid", "seed": 3}}, 1, 3)
    assert np.array_equal(again.x_train, shares[1].x_train)  # the same on every learner
    skewed = [task.load_data({"partitioning": {"scheme": "dirichlet", "alpha": 0.1, "seed": 3}}, i, 2) for i in range(2)]
    assert sum(len(s.y_train) + len(s.y_test) for s in skewed) == 100


@pytest.mark.parametrize("returned", [
    (X[:80], Y[:80], X[80:], Y[80:]),
    Dataset(X[:80], Y[:80], X[80:], Y[80:]),
    (X, Y),
    type("Bunch", (), {"data": X, "target": Y})(),
], ids=["four-arrays", "dataset", "x-y-split-here", "bunch"])
def test_a_learners_own_data_function_may_return_any_of_the_shapes(returned):
    seen = []

    def load(data, partition_id, num_partitions):
        seen.append((data.get("path"), partition_id, num_partitions))
        return returned

    dataset = Data(load).load_data({"path": "/data/mine.csv", "partitioning": {"seed": 1}}, 1, 2)
    assert seen == [("/data/mine.csv", 1, 2)]
    assert len(dataset.y_train) + len(dataset.y_test) == 100 and dataset.x_test.dtype == np.float32


@pytest.mark.parametrize("returned, pattern", [
    ("x", r"returned str; expected \(x, y\)"),
    ((X, Y[:5]), r"100 rows of features but 5 labels"),
    ((X, np.full(100, 0.5)), r"class labels must be integers"),
    ((X, np.array(["a"] * 100)), r"class labels must be integers"),
])
def test_bad_data_is_named(returned, pattern):
    with pytest.raises(ValueError, match=pattern):
        Data(lambda d, p, n: returned).load_data({}, 0, 1)


@pytest.mark.parametrize("function, wants", [
    (lambda: 0, False), (lambda data, partition_id, num_partitions: 0, True), (lambda *args: 0, True)])
def test_the_data_functions_arguments_say_which_form_it_is(function, wants):
    assert wants_spec(function) is wants


def test_input_example_is_given_or_taken_from_the_data():
    assert Data(lambda: (X, Y)).input_example().shape == (5, 2)
    assert Data(lambda: (X, Y), example=X[:2]).input_example().tolist() == X[:2].tolist()
    assert Data(lambda d, p, n: (X, Y), example=lambda: X[:7]).input_example().shape == (5, 2)
    assert Data(lambda d, p, n: (X, Y)).input_example().shape == (5, 2)


def test_no_input_example_where_the_data_is_node_local_names_the_fix():
    def load(data, partition_id, num_partitions):
        return np.loadtxt(data["path"])

    with pytest.raises(TaskError, match=re.escape("could not load data here (KeyError: 'path'); pass example=")):
        Data(load).input_example()


def test_whole_data_must_be_two_arrays():
    with pytest.raises(TaskError, match="returns the whole dataset as \\(x, y\\); it returned 4"):
        Data(lambda: (X, Y, X, Y)).load_data({}, 0, 1)


def test_as_arrays_takes_datasets_tuples_and_bunches():
    assert len(as_arrays(Dataset(X, Y, X, Y), "f")) == 4 and len(as_arrays([X, Y], "f")) == 2


def test_task_is_still_the_abstract_contract():
    assert set(Task.__abstractmethods__) == set(CONTRACT_METHODS)

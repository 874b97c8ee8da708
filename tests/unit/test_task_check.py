"""flops_learner.check: each bad task is named for what is wrong; a good one (the wine example) passes and trains."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flops_learner.check import check_task, default_entrypoint, weight_differences
from flops_learner.task import TaskError

REPO = Path(__file__).resolve().parents[2]
WINE = REPO / "manifests" / "examples" / "tasks" / "wine"

# A full-contract task in numpy (no framework: the check's own logic, fast). Variants below override one thing.
BASE = """
import numpy as np
from collections import OrderedDict
from flops_learner.task import Dataset, Evaluation, Task


class Linear(Task):
    pip_packages = ("numpy",)

    def build_model(self, seed):
        return {"w": np.zeros((3, 2)), "b": np.zeros(2)}

    def get_weights(self, model):
        return OrderedDict((k, v.copy()) for k, v in model.items())

    def set_weights(self, model, weights):
        model.update({k: np.array(v) for k, v in weights.items()})

    def load_data(self, data, partition_id, num_partitions):
        x = np.random.default_rng(partition_id).normal(size=(40, 3 + self.extra_features(partition_id)))
        y = (x[:, 0] > 0).astype(np.int64)
        return Dataset(x[:30], y[:30], x[30:], y[30:])

    def extra_features(self, partition_id):
        return 0

    def train(self, model, data, config):
        model["w"] = model["w"] + 0.01
        return 0.5

    def evaluate(self, model, data):
        return Evaluation(loss=0.4, num_examples=len(data.y_test), metrics={"accuracy": 0.9})

    def input_example(self):
        return np.zeros((5, 3))

    def predict(self, model, x):
        return x @ model["w"] + model["b"]

    def log_model(self, model, *, name, input_example, signature, pip_requirements, model_id=None):
        return None
"""


def folder_with(tmp_path: Path, source: str, module: str = "case_task", pyproject: bool = True) -> Path:
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    if pyproject:
        (folder / "pyproject.toml").write_text(f'[tool.flops]\ntask = "{module}:task"\n')
    return folder


def variant(body: str) -> str:
    """BASE plus a subclass overriding what `body` says; the entrypoint's `task` is its instance."""
    return BASE + "\n\nclass Case(Linear):\n" + textwrap.indent(textwrap.dedent(body), "    ") + "\n\ntask = Case()\n"


GOOD = variant("pass")

CASES = [
    # (id, module source, expected problem as a regular expression)
    ("missing-method", BASE.replace("    def predict(self, model, x):\n        return x @ model[\"w\"] + model[\"b\"]\n", "")
     + "\ntask = Linear\n",
     r"class Linear \(.*case_task\.py:\d+\) lacks method\(s\) predict of the task contract"),
    ("missing-method-duck-typed", "class Half:\n    def build_model(self, seed):\n        return {}\n\ntask = Half()\n",
     r"the task \(Half, .*case_task\.py:1\) lacks method\(s\) get_weights, set_weights, load_data, train, evaluate, "
     r"input_example, predict, log_model"),
    ("shape-differs-between-learners", variant("""
        def extra_features(self, partition_id):
            return partition_id
        def train(self, model, data, config):
            model["w"] = np.zeros((data.x_train.shape[1], 2))
            return 0.5
        """),
     r"weights differ: learner 1's weights w has shape \(4, 2\), not \(3, 2\) \(vs learner 0's\): every learner's "
     r"model must have the same weights"),
    ("names-differ-between-learners", variant("""
        def train(self, model, data, config):
            model[f"extra{data.x_train[0, 0]:.6f}"] = np.zeros(1)  # differs by learner
            return 0.5
        """),
     r"weights differ: learner 1's weights lack extra[-.\d]+; have extra extra[-.\d]+ \(vs learner 0's\)"),
    ("example-does-not-predict", variant("""
        def input_example(self):
            return np.zeros((5, 7))
        """),
     r"predict\(model, input_example\(\)\) failed at .*case_task\.py:\d+: ValueError: matmul"),
    ("prediction-rows", variant("""
        def predict(self, model, x):
            return (x @ model["w"])[:1]
        """),
     r"predict\(model, input_example\(\)\) returned 1 rows for 5 example rows"),
    ("module-raises-on-import", "import numpy\n\nraise RuntimeError('needs a GPU')\n",
     r"importing case_task failed at .*case_task\.py:3: RuntimeError: needs a GPU"),
    ("dependency-not-installed", "import surely_not_installed_xyz\n",
     r"case_task\.py:1: ModuleNotFoundError: No module named 'surely_not_installed_xyz' \(a dependency missing from "
     r"requirements\.txt\?\)"),
    ("syntax-error", "def broken(:\n", r"importing case_task failed at .*case_task\.py:1: SyntaxError"),
    ("no-such-attribute", BASE + "\nmy_task = Linear()\n", r"has no attribute 'task'; it has: Linear, my_task"),
    ("wrong-parameters", variant("""
        def train(self, model, data):
            return 0.5
        """),
     r"method train\(model, data\) \(.*case_task\.py:\d+\) cannot be called as train\(model, data, config\)"),
    ("pip-package-not-installed", variant("pip_packages = ('sklearn',)"),
     r"pip_packages names 'sklearn', which is not installed here"),
    ("set-weights-ignores-weights", variant("""
        def set_weights(self, model, weights):
            pass
        """),
     r"set_weights then get_weights gives other values than the weights set"),
    ("weights-not-arrays", variant("""
        def get_weights(self, model):
            return {k: v.tolist() for k, v in model.items()}
        """),
     r"get_weights\(build_model\(seed=0\)\): weight 'w' is list; each weight must be a numeric numpy array"),
    ("data-not-a-dataset", variant("""
        def load_data(self, data, partition_id, num_partitions):
            return np.zeros((4, 3)), np.zeros(4)
        """),
     r"learner 0: load_data returned tuple, not a flops_learner\.task\.Dataset"),
    ("train-raises", variant("""
        def train(self, model, data, config):
            raise FloatingPointError("exploded")
        """),
     r"learner 0: train one epoch failed at .*case_task\.py:\d+: FloatingPointError: exploded"),
    ("adapter-misused", "from sklearn.linear_model import SGDClassifier\nfrom flops_learner.sklearn_task import "
     "SklearnTask\ntask = SklearnTask(model=SGDClassifier, data=lambda: ([[0.0]], [0]), n_features=1)\n",
     r"get_weights\(build_model\(seed=0\)\): SklearnTask: SGDClassifier is a classifier: pass classes="),
    ("loss-not-finite", variant("""
        def evaluate(self, model, data):
            return Evaluation(loss=float("nan"), num_examples=10)
        """),
     r"learner 0: evaluate's loss is nan"),
]


@pytest.mark.parametrize("source, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_bad_task_is_named_for_what_is_wrong(tmp_path, source, pattern):
    report = check_task(folder_with(tmp_path, source))
    assert not report.ok
    assert len(report.problems) == 1 and re.search(pattern, report.problems[0]), report.problems


def test_a_good_task_passes_every_step(tmp_path):
    report = check_task(folder_with(tmp_path, GOOD))
    assert report.ok, report.problems
    assert report.entrypoint == "case_task:task"
    text = "\n".join(report.done)
    for step in ("imported case_task:task", "contract", "weights: w (3, 2), b (2,)", "learner 0: 30 training",
                 "learner 1:", "FedAvg of the 2 learners", "input example (5, 3) -> prediction (5, 2)"):
        assert step in text


@pytest.mark.parametrize("setup, entrypoint, pattern", [
    (lambda f: None, None, r"no entrypoint: pass --entrypoint module:attribute or set \[tool\.flops\] task"),
    (lambda f: (f / "pyproject.toml").write_text("[tool.flops\n"), None, r"pyproject\.toml: not valid TOML"),
    (lambda f: (f / "pyproject.toml").write_text("[tool.flops]\ntask = 3\n"), None, r"task must be a string"),
    (lambda f: None, "case_task", r"entrypoint 'case_task' is not module:attribute"),
    (lambda f: None, "other:task", r"no module named 'other' on the path"),
])
def test_entrypoint_problems_are_named(tmp_path, setup, entrypoint, pattern):
    folder = folder_with(tmp_path, GOOD, pyproject=False)
    setup(folder)
    report = check_task(folder, entrypoint)
    assert len(report.problems) == 1 and re.search(pattern, report.problems[0]), report.problems


def test_a_missing_folder_is_named(tmp_path):
    assert check_task(tmp_path / "nope").problems == [f"{tmp_path / 'nope'}: no such folder"]


def test_the_entrypoint_option_wins_over_pyproject(tmp_path):
    folder = folder_with(tmp_path, GOOD + "\nother = Case()\n")
    assert check_task(folder, "case_task:other", import_only=True).entrypoint == "case_task:other"


def test_an_edited_module_is_imported_afresh(tmp_path):
    folder = folder_with(tmp_path, GOOD)
    assert check_task(folder, import_only=True).ok
    (folder / "case_task.py").write_text("raise ImportError('edited')\n")
    assert "ImportError: edited" in check_task(folder, import_only=True).problems[0]
    assert str(folder) not in sys.path  # the folder was on the path for the check only


def test_import_only_trains_nothing(tmp_path):
    report = check_task(folder_with(tmp_path, variant("""
        def train(self, model, data, config):
            raise AssertionError("import-only must not train")
        """)), import_only=True)
    assert report.ok and len(report.done) == 2


@pytest.mark.parametrize("a, b, expected", [
    ({"w": (3, 2)}, {"w": (3, 2)}, []),
    ({"w": (4, 2)}, {"w": (3, 2)}, ["w has shape (4, 2), not (3, 2)"]),
    ({"w": (3,)}, {"w": (3,), "b": (2,)}, ["lack b"]),
    ({"w": (3,), "c": (1,)}, {"w": (3,)}, ["have extra c"]),
    ({"b": (1,), "w": (3,)}, {"w": (3,), "b": (1,)}, ["are in another order (b, w vs w, b)"]),
])
def test_weight_differences(a, b, expected):
    import numpy as np

    def arrays(shapes):
        return {k: np.zeros(s) for k, s in shapes.items()}

    assert weight_differences(arrays(a), arrays(b)) == expected


def test_default_entrypoint_reads_tool_flops_task(tmp_path):
    assert default_entrypoint(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert default_entrypoint(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[tool.flops]\ntask = "m:t"\n')
    assert default_entrypoint(tmp_path) == "m:t"
    (tmp_path / "pyproject.toml").write_text("[tool.flops]\ntask = [1]\n")
    with pytest.raises(TaskError):
        default_entrypoint(tmp_path)


def test_the_wine_example_passes_the_check_and_trains_well_in_three_rounds():
    report = check_task(WINE)
    assert report.ok, report.problems
    from flops_learner.check import fedavg, on_path
    from flops_learner.loading import load_task
    from flops_learner.task import TrainConfig

    with on_path(WINE.resolve()):
        task = load_task({"entrypoint": report.entrypoint})
    for scheme, learners in (("iid", 2), ("iid", 3), ("dirichlet", 3)):
        data = {"partitioning": {"scheme": scheme, "alpha": 0.5, "seed": 42}}
        shares = [task.load_data(data, i, learners) for i in range(learners)]
        weights = task.get_weights(task.build_model(seed=0))
        for r in range(3):
            trained = []
            for i, share in enumerate(shares):
                model = task.build_model(seed=0)
                task.set_weights(model, weights)
                task.train(model, share, TrainConfig(seed=r * 1009 + i))  # the spec's defaults: 1 epoch
                trained.append(task.get_weights(model))
            weights = fedavg(trained, [len(s.y_train) for s in shares])
        model = task.build_model(seed=0)
        task.set_weights(model, weights)
        results = [task.evaluate(model, s) for s in shares]
        accuracy = sum(e.metrics["accuracy"] * e.num_examples for e in results) / sum(e.num_examples for e in results)
        assert accuracy > 0.9, (scheme, learners, accuracy)


def test_the_module_runs_as_a_command_with_one_line_per_problem(tmp_path):
    bad = folder_with(tmp_path, "raise RuntimeError('broken')\n")
    done = subprocess.run([sys.executable, "-m", "flops_learner.check", str(bad), "--import-only"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert re.fullmatch(r"entrypoint case_task:task: importing case_task failed at .*case_task\.py:1: "
                        r"RuntimeError: broken\n", done.stdout), done.stdout
    good = subprocess.run([sys.executable, "-m", "flops_learner.check", str(WINE), "--import-only"],
                          capture_output=True, text=True, timeout=120)
    assert (good.returncode, good.stdout) == (0, "") and "ok: imported wine_task:task" in good.stderr

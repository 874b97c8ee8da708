"""The files `flops init` writes: a task folder that trains as it is, for a person to edit.

Strings rather than package data: nothing to declare for the wheel, and each template reads as the file it becomes.
Placeholders: {name} (the folder), {module} (the task module), {framework}.
"""

from __future__ import annotations

TORCH_TASK = '''\
"""{name}: a FLOps task (torch). Edit the two functions: the model and the data.

`flops task check .` tries it in seconds (2 simulated learners, one round); `flops run project.yaml` trains it.
TorchTask does the rest: weights, training (SGD, FedProx), evaluation (loss, accuracy), the logged model.
"""

from sklearn.datasets import load_digits
from torch import nn

from flops_learner.torch_task import TorchTask


def make_model() -> nn.Module:
    """A fresh, untrained model. Here: 8x8 images of digits (64 pixels) -> one score per digit (10 classes)."""
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def load_data():
    """The whole dataset as (features, labels); every learner keeps its own share (spec.data.partitioning).
    Data that lives on the learners instead: take (data, partition_id, num_partitions), return this learner's
    (x, y), and give TorchTask example= (a few rows of input). Labels are class ids 0..9."""
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


task = TorchTask(model=make_model, data=load_data, name="{name}")
'''

SKLEARN_TASK = '''\
"""{name}: a FLOps task (scikit-learn). Edit the two functions: the model and the data.

`flops task check .` tries it in seconds (2 simulated learners, one round); `flops run project.yaml` trains it.
SklearnTask does the rest: weights (coef_, intercept_), training (partial_fit), evaluation, the logged model.
"""

from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import SGDClassifier

from flops_learner.sklearn_task import SklearnTask

FEATURES = 30  # columns of x
CLASSES = [0, 1]  # every class of the whole federation, even those a learner lacks


def make_model() -> SGDClassifier:
    """A fresh linear model (sklearn.linear_model). Here: logistic regression learned by SGD, with a constant step
    (each round starts from the averaged weights)."""
    return SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.05)


def load_data():
    """The whole dataset as (features, labels); every learner keeps its own share (spec.data.partitioning).
    Here: 30 measurements of a breast tumour -> malignant (0) or benign (1), standardised.
    Data that lives on the learners instead: take (data, partition_id, num_partitions), return this learner's
    (x, y), and give SklearnTask example= (a few rows of input)."""
    x, y = load_breast_cancer(return_X_y=True)
    return (x - x.mean(axis=0)) / x.std(axis=0), y


task = SklearnTask(model=make_model, data=load_data, n_features=FEATURES, classes=CLASSES, name="{name}")
'''

REQUIREMENTS = '''\
# What this task needs beyond the FLOps images (Python 3.11 with torch, scikit-learn, numpy, pandas, mlflow, flwr),
# in pip's syntax, one per line. Those are never installed again; anything here is, once, and cached.
'''

PYPROJECT = '''\
[project]
name = "{name}"
version = "0.1.0"
description = "A FLOps task ({framework})"
requires-python = ">=3.11"

[tool.flops]
task = "{module}:task"
'''

PROJECT = '''\
# Trains this folder's task on this machine: flops run project.yaml
apiVersion: flops.oakestra.io/v1alpha1
kind: FLOpsProject
metadata: {{name: {name}}}
spec:
  platform: local
  task:
    source: {{local: .}}   # this folder; on Oakestra: git: {{url: ..., ref: main, path: ...}}
  learners: {{replicas: 2}}
  training: {{rounds: 3}}
'''

TEST = '''\
"""`pytest` here runs what `flops task check .` runs: import, contract, 2 simulated learners for one round."""

from pathlib import Path

from flops_learner.check import check_task


def test_the_task_trains_one_simulated_round():
    report = check_task(Path(__file__).parent)
    assert report.ok, "\\n".join(report.problems)
'''

README = '''\
# {name}

A federated-learning task for FLOps ({framework}). The model and the data are yours; the adapter
(`{adapter}`) does the rest: weights, local training, evaluation, the logged MLflow model.

## Edit two functions in `{module}.py`

- `make_model()` returns a fresh, untrained model.
- `load_data()` returns the whole dataset as `(features, labels)`: each learner keeps its own share,
  cut by the project's `spec.data.partitioning` (IID, or Dirichlet label skew). Data that lives on the
  learners' nodes instead: write `load_data(data, partition_id, num_partitions)` returning this
  learner's `(x, y)` (`data["path"]` is the project's `spec.data.path`), and pass `example=` (a few
  rows of model input) to the adapter, for the logged model's signature.

Packages beyond the FLOps images (torch, scikit-learn, numpy, pandas, mlflow) go in
`requirements.txt`. Anything else (another framework, another training loop): implement the 9
methods of `flops_learner.task.Task` yourself and point `[tool.flops] task` in `pyproject.toml` at it.

## Check it, train it

```sh
flops task check .          # import, contract, 2 simulated learners x 1 round: seconds
pytest                      # the same, as a test
flops run project.yaml      # a real training on this machine: MLflow, 2 learners, 3 rounds
```

`flops task check` names what is wrong: a missing method, weights whose names or shapes differ
between learners, an input example the model cannot predict, an import error with its file and line.
On Oakestra, push this folder to a Git repository and name it in the project:
`task: {{source: {{git: {{url: ..., ref: main, path: ...}}}}}}`; the operator builds the images.
'''

FRAMEWORKS = {
    "torch": (TORCH_TASK, "flops_learner.torch_task.TorchTask"),
    "sklearn": (SKLEARN_TASK, "flops_learner.sklearn_task.SklearnTask"),
}


def render(name: str, module: str, framework: str) -> dict[str, str]:
    """The folder's files by relative path."""
    task, adapter = FRAMEWORKS[framework]
    values = {"name": name, "module": module, "framework": framework, "adapter": adapter}
    return {
        f"{module}.py": task.replace("{name}", name),
        "requirements.txt": REQUIREMENTS,
        "pyproject.toml": PYPROJECT.format(**values),
        "project.yaml": PROJECT.format(**values),
        f"test_{module}.py": TEST,
        "README.md": README.format(**values),
    }

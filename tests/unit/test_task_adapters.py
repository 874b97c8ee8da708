"""TorchTask and SklearnTask: what the learners and the aggregator call on them (weights, training, evaluation,
prediction, the logged model) works from a model and a data function only."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict

import mlflow
import numpy as np
import pytest
from mlflow.models import infer_signature

from flops_aggregator.model_logging import task_requirements
from flops_learner.check import fedavg
from flops_learner.data import load_builtin
from flops_learner.sklearn_task import SklearnTask
from flops_learner.task import TaskError, TrainConfig
from flops_learner.torch_task import TorchTask

IRIS = load_builtin("iris")
SPEC_DATA = {"partitioning": {"scheme": "iid", "alpha": 0.5, "seed": 42}}


def torch_task(**options) -> TorchTask:
    from torch import nn

    return TorchTask(model=lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), data=lambda: IRIS,
                     **options)


def sklearn_task(model=None, **options) -> SklearnTask:
    from sklearn.linear_model import SGDClassifier

    return SklearnTask(model=model or (lambda: SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.05)),
                       data=lambda: IRIS, n_features=4, classes=[0, 1, 2], **options)


def rounds(task, learners: int = 2, count: int = 3, mu: float = 0.0) -> list[float]:
    """Accuracy of the averaged model after each of `count` FedAvg rounds, as client_app and the strategy run it."""
    shares = [task.load_data(SPEC_DATA, i, learners) for i in range(learners)]
    weights = task.get_weights(task.build_model(seed=7))
    accuracy = []
    for r in range(count):
        trained = []
        for i, data in enumerate(shares):
            model = task.build_model(seed=0)
            task.set_weights(model, weights)
            task.train(model, data, TrainConfig(epochs=5, batch_size=16, learning_rate=0.05, proximal_mu=mu, seed=r + i))
            trained.append(task.get_weights(model))
        weights = fedavg(trained, [len(d.y_train) for d in shares])
        model = task.build_model(seed=0)
        task.set_weights(model, weights)
        results = [task.evaluate(model, d) for d in shares]
        accuracy.append(sum(e.metrics["accuracy"] * e.num_examples for e in results) / sum(e.num_examples for e in results))
    return accuracy


def breast_cancer_task() -> SklearnTask:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import SGDClassifier

    def load():
        x, y = load_breast_cancer(return_X_y=True)
        return (x - x.mean(axis=0)) / x.std(axis=0), y

    return SklearnTask(model=lambda: SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.05), data=load,
                       n_features=30, classes=[0, 1])


@pytest.mark.parametrize("make, mu, floor", [(torch_task, 0.0, 0.8), (torch_task, 0.1, 0.8),
                                             (breast_cancer_task, 0.0, 0.9)], ids=["torch", "torch-fedprox", "sklearn"])
def test_an_adapted_classifier_learns_federated(make, mu, floor):
    accuracy = rounds(make(), mu=mu)
    assert accuracy[-1] > floor and accuracy[-1] >= accuracy[0], accuracy


def test_torch_weights_are_the_state_dict_and_build_model_is_seeded():
    task = torch_task()
    a, b = task.get_weights(task.build_model(seed=1)), task.get_weights(task.build_model(seed=1))
    assert list(a) == ["0.weight", "0.bias", "2.weight", "2.bias"] and a["0.weight"].shape == (8, 4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    model = task.build_model(seed=2)
    task.set_weights(model, a)
    assert all(np.array_equal(task.get_weights(model)[k], a[k]) for k in a)


def test_torch_regressor_and_custom_loss():
    import torch
    from torch import nn

    x = np.random.default_rng(0).normal(size=(120, 3)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], dtype=np.float32)
    task = TorchTask(model=lambda: nn.Linear(3, 1), data=lambda: (x, y), classifier=False)
    data = task.load_data(SPEC_DATA, 0, 1)
    assert data.y_train.dtype == np.float32
    model = task.build_model(seed=0)
    before = task.evaluate(model, data).loss
    task.train(model, data, TrainConfig(epochs=20, batch_size=16, learning_rate=0.05))
    after = task.evaluate(model, data)
    assert after.loss < before / 10 and after.metrics == {}
    custom = TorchTask(model=lambda: nn.Linear(3, 1), data=lambda: (x, y), classifier=False,
                       loss=lambda out, target: torch.nn.functional.l1_loss(out.squeeze(1), target))
    assert custom.train(custom.build_model(seed=0), data, TrainConfig()) > 0


@pytest.mark.parametrize("factory, classes, shapes", [
    ("SGDClassifier", [0, 1, 2], {"coef": (3, 4), "intercept": (3,)}),
    ("SGDClassifier", [0, 1], {"coef": (1, 4), "intercept": (1,)}),
    ("LogisticRegression", [3, 5, 7], {"coef": (3, 4), "intercept": (3,)}),
    ("SGDRegressor", None, {"coef": (4,), "intercept": (1,)}),
    ("LinearRegression", None, {"coef": (4,), "intercept": (1,)}),
    ("Ridge", None, {"coef": (4,), "intercept": (1,)}),
])
def test_sklearn_weights_have_their_shapes_before_and_after_fitting(factory, classes, shapes):
    import sklearn.linear_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = (np.asarray(classes)[rng.integers(0, len(classes), 60)] if classes else x @ np.ones(4))
    task = SklearnTask(model=getattr(sklearn.linear_model, factory), data=lambda: (x, y), n_features=4, classes=classes)
    model = task.build_model(seed=0)
    initial = task.get_weights(model)
    assert {k: v.shape for k, v in initial.items()} == shapes and not any(v.any() for v in initial.values())
    assert len(task.predict(model, x[:3])) == 3  # the aggregator's model predicts without being fitted
    data = task.load_data(SPEC_DATA, 0, 1)
    task.train(model, data, TrainConfig(seed=1))
    assert {k: v.shape for k, v in task.get_weights(model).items()} == shapes
    assert np.isfinite(task.evaluate(model, data).loss)


def test_a_partial_fit_learner_lacking_a_class_keeps_every_class():
    task = sklearn_task()
    data = task.load_data(SPEC_DATA, 0, 1)
    only_two = type(data)(data.x_train[data.y_train < 2], data.y_train[data.y_train < 2], data.x_test, data.y_test)
    model = task.build_model(seed=0)
    task.train(model, only_two, TrainConfig())
    assert task.get_weights(model)["coef"].shape == (3, 4)


def test_a_fit_only_model_lacking_a_class_names_the_fix():
    from sklearn.linear_model import LogisticRegression

    task = sklearn_task(model=LogisticRegression)
    data = task.load_data(SPEC_DATA, 0, 1)
    only_two = type(data)(data.x_train[data.y_train < 2], data.y_train[data.y_train < 2], data.x_test, data.y_test)
    with pytest.raises(ValueError, match=r"has \[0, 1\] of \[0, 1, 2\]: use a model with partial_fit"):
        task.train(task.build_model(seed=0), only_two, TrainConfig())


@pytest.mark.parametrize("model, classes, pattern", [
    ("RandomForestClassifier", [0, 1, 2], "handles linear models .*not RandomForestClassifier"),
    ("SGDClassifier", None, "SGDClassifier is a classifier: pass classes="),
    ("SGDRegressor", [0, 1, 2], "SGDRegressor is a regressor: leave out classes="),
])
def test_sklearn_models_it_cannot_adapt_are_refused_by_name(model, classes, pattern):
    import sklearn.ensemble
    import sklearn.linear_model

    factory = getattr(sklearn.linear_model, model, None) or getattr(sklearn.ensemble, model)
    with pytest.raises(TaskError, match=pattern):
        SklearnTask(model=factory, data=lambda: IRIS, n_features=4, classes=classes).build_model(seed=0)


def test_labels_outside_the_classes_are_refused():
    task = sklearn_task()
    data = task.load_data(SPEC_DATA, 0, 1)
    bad = type(data)(data.x_train, data.y_train + 5, data.x_test, data.y_test)
    with pytest.raises(ValueError, match=r"labels \[5, 6, 7\] are not among classes \[0, 1, 2\]"):
        task.train(task.build_model(seed=0), bad, TrainConfig())


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real MLflow store: SQLite backend and local artifacts."""
    folder = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = mlflow.create_experiment("adapters", artifact_location=(folder / "artifacts").as_uri())
    try:
        yield experiment
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


@pytest.mark.parametrize("make", [torch_task, sklearn_task], ids=["torch", "sklearn"])
def test_the_logged_model_serves_what_predict_says(store, make):
    task = make()
    model = task.build_model(seed=0)
    task.train(model, task.load_data(SPEC_DATA, 0, 1), TrainConfig(epochs=3))
    example = task.input_example()
    signature = infer_signature(example, task.predict(model, example))
    task.rehearse_log_model(model, input_example=example, signature=signature, pip_requirements=task_requirements(task))
    with mlflow.start_run(experiment_id=store):
        info = task.log_model(model, name="model", input_example=example, signature=signature,
                              pip_requirements=task_requirements(task))
    served = mlflow.pyfunc.load_model(info.model_uri).predict(example)
    assert np.allclose(np.asarray(served), task.predict(model, example), atol=1e-5)


def test_importing_an_adapter_imports_no_framework():
    code = ("import sys, flops_learner.torch_task, flops_learner.sklearn_task; "
            "print(','.join(m for m in ('torch', 'sklearn', 'mlflow') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


def test_fedavg_weights_by_examples_and_keeps_dtypes():
    a = OrderedDict(w=np.array([0.0, 2.0]), n=np.array([1], dtype=np.int64))
    b = OrderedDict(w=np.array([4.0, 2.0]), n=np.array([4], dtype=np.int64))
    out = fedavg([a, b], [3, 1])
    assert out["w"].tolist() == [1.0, 2.0] and out["n"].dtype == np.int64 and out["n"].tolist() == [2]

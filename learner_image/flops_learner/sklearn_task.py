"""SklearnTask: the task contract for a scikit-learn linear model, from a model factory and a data function.

    from sklearn.datasets import load_wine
    from sklearn.linear_model import SGDClassifier
    from flops_learner.sklearn_task import SklearnTask

    task = SklearnTask(model=lambda: SGDClassifier(loss="log_loss"), data=lambda: load_wine(return_X_y=True),
                       n_features=13, classes=[0, 1, 2])

Linear models only (sklearn.linear_model, LinearSVC/LinearSVR): the weights are `coef_` and `intercept_`. Every
learner and the aggregator must agree on their shapes before any data is seen, so the model starts from zeros of
the shapes that `n_features` and `classes` (the classes of the whole federation, not of one learner) give.
A learner trains with `partial_fit` (SGDClassifier, SGDRegressor, Perceptron, ...: `epochs` passes over its data,
the classes always given, so a learner that lacks a class still keeps every row) or, lacking it, with `fit` from the
received weights (`warm_start` models such as LogisticRegression; these need every class on every learner). The
model's own hyperparameters apply: the spec's learning rate, batch size and FedProx term are torch's. The final
model is logged with mlflow.sklearn in the skops format (no pickle). scikit-learn is imported when first used.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np

from .adapter import AdaptedTask
from .task import Dataset, Evaluation, TaskError, TrainConfig

SERIALIZATION_FORMAT = "skops"
LINEAR_SVMS = ("LinearSVC", "LinearSVR")


class SklearnTask(AdaptedTask):
    """model: a function (or estimator class) returning a fresh, unfitted linear estimator; data: see
    flops_learner.adapter. n_features: columns of x. classes: every class id of the federation (a classifier);
    None for a regressor. example: the logged model's input example when the data cannot give one at the
    aggregator."""

    feature_dtype = np.float64
    pip_packages = ("scikit-learn", "numpy", "skops")

    def __init__(self, model: Callable[[], Any], data: Callable[..., Any], *, n_features: int,
                 classes: Sequence[int] | None = None, example: Any = None, name: str = "sklearn-task"):
        super().__init__(data, example=example, name=name)
        if not callable(model):
            raise TaskError(f"SklearnTask: model must be a function returning an estimator, not {type(model).__name__}")
        if int(n_features) < 1:
            raise TaskError(f"SklearnTask: n_features must be at least 1, not {n_features}")
        self.model_factory, self.n_features = model, int(n_features)
        self.classes = None if classes is None else np.unique(np.asarray(classes))
        if self.classes is not None and len(self.classes) < 2:
            raise TaskError(f"SklearnTask: a classifier needs at least 2 classes, not {list(self.classes)}")
        self.label_dtype = np.int64 if classes is not None else np.float64

    def build_model(self, seed: int) -> Any:
        from sklearn.base import is_classifier

        model = self.model_factory()
        kind = type(model)
        if not any(c.__module__.startswith("sklearn.linear_model") or c.__name__ in LINEAR_SVMS for c in kind.__mro__):
            raise TaskError(f"SklearnTask handles linear models (coef_ and intercept_), not {kind.__name__}: write the "
                            "task contract's methods yourself (flops_learner.task.Task)")
        if is_classifier(model) != (self.classes is not None):
            raise TaskError(f"SklearnTask: {kind.__name__} is a {'classifier' if is_classifier(model) else 'regressor'}"
                            f": {'pass' if is_classifier(model) else 'leave out'} classes=")
        if "random_state" in model.get_params() and model.get_params()["random_state"] is None:
            model.set_params(random_state=seed)  # SGD's shuffles: reproducible
        if "warm_start" in model.get_params() and not hasattr(model, "partial_fit"):
            model.set_params(warm_start=True)  # fit starts from the received weights
        self.set_weights(model, self.initial_weights())
        return model

    def initial_weights(self) -> OrderedDict[str, np.ndarray]:
        """Zeros, of the shapes scikit-learn gives after fitting (one row for two classes, as it does)."""
        rows = 1 if self.classes is None or len(self.classes) == 2 else len(self.classes)
        coef = np.zeros(self.n_features) if self.classes is None else np.zeros((rows, self.n_features))
        return OrderedDict(coef=coef, intercept=np.zeros(rows))

    def get_weights(self, model: Any) -> OrderedDict[str, np.ndarray]:
        # A regressor's intercept_ is a float for some models (LinearRegression), a (1,) array for others.
        return OrderedDict(coef=np.array(model.coef_, dtype=np.float64),
                           intercept=np.atleast_1d(np.array(model.intercept_, dtype=np.float64)))

    def set_weights(self, model: Any, weights: OrderedDict[str, np.ndarray]) -> None:
        model.coef_ = np.array(weights["coef"], dtype=np.float64)
        model.intercept_ = np.array(weights["intercept"], dtype=np.float64)
        model.n_features_in_ = self.n_features
        if self.classes is not None:
            model.classes_ = self.classes

    def warm_up(self) -> None:
        import sklearn.linear_model  # noqa: F401
        import sklearn.metrics  # noqa: F401

    def train(self, model: Any, data: Dataset, config: TrainConfig) -> float:
        x, y = data.x_train, data.y_train
        if len(y) == 0:
            raise ValueError("no training data on this learner")
        self._check_labels(y)
        if hasattr(model, "partial_fit"):
            rng = np.random.default_rng(config.seed)
            extra = {} if self.classes is None else {"classes": self.classes}
            for _ in range(config.epochs):
                order = rng.permutation(len(y))
                model.partial_fit(x[order], y[order], **extra)
        else:
            if self.classes is not None and len(np.unique(y)) != len(self.classes):
                raise ValueError(f"{type(model).__name__} learns with fit(), which needs every class on each learner; "
                                 f"this one has {np.unique(y).tolist()} of {self.classes.tolist()}: use a model with "
                                 "partial_fit (e.g. SGDClassifier(loss='log_loss'))")
            model.fit(x, y)
        return self._loss(model, x, y)

    def evaluate(self, model: Any, data: Dataset) -> Evaluation:
        if len(data.y_test) == 0:
            raise ValueError("no test data on this learner")
        metrics = {}
        if self.classes is not None:
            metrics["accuracy"] = float(np.mean(model.predict(data.x_test) == data.y_test))
        return Evaluation(loss=self._loss(model, data.x_test, data.y_test), num_examples=len(data.y_test),
                          metrics=metrics)

    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(np.asarray(x, dtype=self.feature_dtype)))

    def _loss(self, model: Any, x: np.ndarray, y: np.ndarray) -> float:
        """Log loss for a classifier with probabilities, else its error rate; mean squared error for a regressor."""
        if self.classes is None:
            return float(np.mean((model.predict(x) - y) ** 2))
        if hasattr(model, "predict_proba"):  # SGDClassifier has it for log_loss and modified_huber only
            from sklearn.metrics import log_loss

            return float(log_loss(y, model.predict_proba(x), labels=self.classes))
        return float(np.mean(model.predict(x) != y))

    def _check_labels(self, y: np.ndarray) -> None:
        if self.classes is not None:
            unknown = np.setdiff1d(np.unique(y), self.classes)
            if unknown.size:
                raise ValueError(f"labels {unknown.tolist()} are not among classes {self.classes.tolist()}")

    def log_model(self, model: Any, *, name: str, input_example: np.ndarray, signature: Any,
                  pip_requirements: list[str], model_id: str | None = None) -> Any:
        import mlflow.sklearn

        return mlflow.sklearn.log_model(model, name=name, signature=signature, input_example=input_example,
                                        pip_requirements=pip_requirements, serialization_format=SERIALIZATION_FORMAT,
                                        model_id=model_id)

    def rehearse_log_model(self, model: Any, *, input_example: np.ndarray, signature: Any,
                           pip_requirements: list[str]) -> None:
        import tempfile

        import mlflow.sklearn

        with tempfile.TemporaryDirectory(prefix="flops-model-rehearsal-") as scratch:
            mlflow.sklearn.save_model(model, f"{scratch}/model", signature=signature, input_example=input_example,
                                      pip_requirements=pip_requirements, serialization_format=SERIALIZATION_FORMAT)

"""TorchTask: the task contract for a torch model, from a model factory and a data function.

    from torch import nn
    from flops_learner.torch_task import TorchTask
    from sklearn.datasets import load_digits

    def make_model() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def load_data():
        x, y = load_digits(return_X_y=True)
        return x / 16.0, y

    task = TorchTask(model=make_model, data=load_data)

The rest is done here as the built-in tasks do it: weights are the state_dict's arrays, training is SGD (momentum
0.9) with the spec's learning rate, batch size and epochs plus FedProx's proximal term, evaluation reports the loss
(and accuracy for a classifier), and the final model is logged with mlflow.pytorch in torch.export's "pt2" format
(serving it needs torch only, not this package). Data functions and the input example: flops_learner.adapter.
torch is imported when first used, so importing this module costs nothing for a scikit-learn task.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from .adapter import AdaptedTask
from .task import Dataset, Evaluation, TaskError, TrainConfig

# The logged model is saved with torch.export ("pt2"): loading it needs torch, not this package.
SERIALIZATION_FORMAT = "pt2"
EVAL_BATCH = 4096
"""Rows per forward pass in evaluate and predict: bounded memory on a large test set."""


class TorchTask(AdaptedTask):
    """model: a function (or nn.Module class) returning a fresh nn.Module; data: see flops_learner.adapter.

    classifier: the model outputs one logit per class and labels are class ids (cross-entropy, accuracy); False:
    a regressor (mean squared error, float targets). loss: your own loss(outputs, targets) instead.
    optimizer: optimizer(parameters, learning_rate) instead of SGD with momentum. example: the logged model's input
    example when the data function cannot give one where the aggregator runs. threads: torch's intra-op threads
    (small models train faster with one, above all with several learners on one machine)."""

    pip_packages = ("torch", "numpy")

    def __init__(self, model: Callable[[], Any], data: Callable[..., Any], *, classifier: bool = True,
                 loss: Callable[[Any, Any], Any] | None = None,
                 optimizer: Callable[[Any, float], Any] | None = None, example: Any = None,
                 name: str = "torch-task", momentum: float = 0.9, threads: int | None = 1):
        super().__init__(data, example=example, name=name)
        if not callable(model):
            raise TaskError(f"TorchTask: model must be a function returning an nn.Module, not {type(model).__name__}")
        self.model_factory, self.classifier, self.loss_function = model, classifier, loss
        self.optimizer_factory, self.momentum, self.threads = optimizer, momentum, threads
        self.label_dtype = np.int64 if classifier else np.float32

    def build_model(self, seed: int) -> Any:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(seed)
        model = self.model_factory()
        if not isinstance(model, torch.nn.Module):
            raise TaskError(f"TorchTask: the model function returned {type(model).__name__}, not a torch nn.Module")
        return model

    def warm_up(self) -> None:
        # torch.optim imports torch._dynamo when the first optimizer is made: seconds, in every fresh process.
        import torch._dynamo  # noqa: F401

    def get_weights(self, model: Any) -> OrderedDict[str, np.ndarray]:
        return OrderedDict((k, v.detach().cpu().numpy().copy()) for k, v in model.state_dict().items())

    def set_weights(self, model: Any, weights: OrderedDict[str, np.ndarray]) -> None:
        import torch

        model.load_state_dict(OrderedDict((k, torch.from_numpy(np.asarray(v).copy())) for k, v in weights.items()))

    def train(self, model: Any, data: Dataset, config: TrainConfig) -> float:
        import torch

        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = (self.optimizer_factory(parameters, config.learning_rate) if self.optimizer_factory else
                     torch.optim.SGD(parameters, lr=config.learning_rate, momentum=self.momentum))
        return fit(model, parameters, optimizer, self._loss, data, config)

    def evaluate(self, model: Any, data: Dataset) -> Evaluation:
        import torch

        if len(data.y_test) == 0:
            raise ValueError("no test data on this learner")
        outputs = torch.from_numpy(self.predict(model, data.x_test))
        y = torch.from_numpy(data.y_test)
        with torch.no_grad():
            loss = float(self._loss(outputs, y).item())
        metrics = {"accuracy": float((outputs.argmax(dim=1) == y).float().mean().item())} if self.classifier else {}
        return Evaluation(loss=loss, num_examples=len(data.y_test), metrics=metrics)

    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        import torch

        model.eval()
        x = np.asarray(x, dtype=self.feature_dtype)
        with torch.no_grad():
            parts = [model(torch.from_numpy(x[i:i + EVAL_BATCH])).numpy() for i in range(0, len(x), EVAL_BATCH)]
        return np.concatenate(parts) if parts else np.empty((0,), dtype=self.feature_dtype)

    def _loss(self, outputs: Any, targets: Any) -> Any:
        import torch

        if self.loss_function is not None:
            return self.loss_function(outputs, targets)
        if self.classifier:
            return torch.nn.functional.cross_entropy(outputs, targets)
        if outputs.dim() == 2 and outputs.shape[1] == 1 and targets.dim() == 1:
            targets = targets.unsqueeze(1)  # a one-output regressor's (n, 1) against (n,) targets
        return torch.nn.functional.mse_loss(outputs, targets)

    def log_model(self, model: Any, *, name: str, input_example: np.ndarray, signature: Any,
                  pip_requirements: list[str], model_id: str | None = None) -> Any:
        return log_torch_model(model, name=name, input_example=input_example, signature=signature,
                               pip_requirements=pip_requirements, model_id=model_id)

    def rehearse_log_model(self, model: Any, *, input_example: np.ndarray, signature: Any,
                           pip_requirements: list[str]) -> None:
        rehearse_torch_model(model, input_example=input_example, signature=signature,
                             pip_requirements=pip_requirements)


def fit(model: Any, parameters: list, optimizer: Any, loss_function: Callable[[Any, Any], Any], data: Dataset,
        config: TrainConfig) -> float:
    """config.epochs of minibatch training in place, FedProx-aware; the mean training loss. The built-in tasks
    train with it too."""
    import torch

    if len(data.y_train) == 0:
        raise ValueError("no training data on this learner")
    generator = torch.Generator().manual_seed(config.seed)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    anchor = [p.detach().clone() for p in parameters] if config.proximal_mu > 0 else None
    model.train()
    total, count = 0.0, 0
    for _ in range(config.epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), config.batch_size):
            batch = order[start:start + config.batch_size]
            optimizer.zero_grad()
            loss = loss_function(model(x[batch]), y[batch])
            total += loss.item() * len(batch)
            count += len(batch)
            if anchor is not None:
                # FedProx: keep the local update near the global model it started from.
                drift = sum(((p - a) ** 2).sum() for p, a in zip(parameters, anchor))
                loss = loss + 0.5 * config.proximal_mu * drift
            loss.backward()
            optimizer.step()
    return total / count


def log_torch_model(model: Any, *, name: str, input_example: np.ndarray, signature: Any,
                    pip_requirements: list[str], model_id: str | None = None) -> Any:
    """mlflow.pytorch.log_model with torch.export ("pt2"): loading it needs torch, not this package."""
    import mlflow.pytorch

    model.eval()
    return mlflow.pytorch.log_model(
        model, name=name, signature=signature, input_example=input_example,
        pip_requirements=pip_requirements, serialization_format=SERIALIZATION_FORMAT, model_id=model_id,
    )


def rehearse_torch_model(model: Any, *, input_example: np.ndarray, signature: Any,
                         pip_requirements: list[str]) -> None:
    """What log_torch_model does, into a scratch directory: the export's first-call costs paid ahead."""
    import tempfile

    import mlflow.pytorch

    model.eval()
    with tempfile.TemporaryDirectory(prefix="flops-model-rehearsal-") as scratch:
        mlflow.pytorch.save_model(model, f"{scratch}/model", signature=signature, input_example=input_example,
                                  pip_requirements=pip_requirements, serialization_format=SERIALIZATION_FORMAT)

"""Built-in tasks: small torch classifiers on scikit-learn's bundled datasets."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import load_builtin, load_learner_data
from .task import Dataset, Evaluation, Task, TrainConfig
from .torch_task import fit, log_torch_model, rehearse_torch_model

# The built-in models are tiny (one 64-wide hidden layer): torch's default of one intra-op thread per core only
# adds contention, above all with several learners on one machine. Measured with the demo's 3 learners on 2
# cores: the slowest learner's fit + evaluate took 0.4-2.9 s per round with the default, 0.02-0.2 s with one.
INTRA_OP_THREADS = 1


class TorchClassifierTask(Task):
    """A torch classifier trained with SGD on cross-entropy, FedProx-aware."""

    num_features: int
    num_classes: int
    pip_packages = ("torch", "numpy")

    def make_module(self) -> nn.Module:
        raise NotImplementedError

    def build_model(self, seed: int) -> nn.Module:
        torch.set_num_threads(INTRA_OP_THREADS)  # every process that trains, evaluates or exports builds one first
        torch.manual_seed(seed)
        return self.make_module()

    def warm_up(self) -> None:
        # torch.optim imports torch._dynamo when the first optimizer is made: seconds, in every fresh process.
        import torch._dynamo  # noqa: F401

    def get_weights(self, model: nn.Module) -> OrderedDict[str, np.ndarray]:
        return OrderedDict((k, v.detach().cpu().numpy().copy()) for k, v in model.state_dict().items())

    def set_weights(self, model: nn.Module, weights: OrderedDict[str, np.ndarray]) -> None:
        model.load_state_dict(OrderedDict((k, torch.from_numpy(np.asarray(v))) for k, v in weights.items()))

    def load_data(self, data: dict, partition_id: int, num_partitions: int) -> Dataset:
        dataset = load_learner_data(data, partition_id, num_partitions, self.default_dataset)
        if dataset.x_train.shape[1] != self.num_features:
            raise ValueError(f"{self.name} expects {self.num_features} features, data has {dataset.x_train.shape[1]}")
        labels = np.concatenate([dataset.y_train, dataset.y_test])
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{self.name} expects labels in 0..{self.num_classes - 1}")
        return dataset

    def train(self, model: nn.Module, data: Dataset, config: TrainConfig) -> float:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=0.9)
        return fit(model, list(model.parameters()), optimizer, nn.CrossEntropyLoss(), data, config)

    def evaluate(self, model: nn.Module, data: Dataset) -> Evaluation:
        if len(data.y_test) == 0:
            raise ValueError("no test data on this learner")
        model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(data.x_test))
            y = torch.from_numpy(data.y_test)
            loss = nn.functional.cross_entropy(logits, y).item()
            accuracy = (logits.argmax(dim=1) == y).float().mean().item()
        return Evaluation(loss=loss, num_examples=len(data.y_test), metrics={"accuracy": accuracy})

    def input_example(self) -> np.ndarray:
        # The aggregator holds no learner data: the example comes from the public built-in dataset.
        return load_builtin(self.default_dataset)[0][:5]

    def predict(self, model: nn.Module, x: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy()

    def log_model(self, model: nn.Module, *, name: str, input_example: np.ndarray, signature: Any,
                  pip_requirements: list[str], model_id: str | None = None) -> Any:
        return log_torch_model(model, name=name, input_example=input_example, signature=signature,
                               pip_requirements=pip_requirements, model_id=model_id)

    def rehearse_log_model(self, model: nn.Module, *, input_example: np.ndarray, signature: Any,
                           pip_requirements: list[str]) -> None:
        rehearse_torch_model(model, input_example=input_example, signature=signature,
                             pip_requirements=pip_requirements)


class DigitsMLP(TorchClassifierTask):
    """digits-mlp: 8x8 digit images (64 features) -> 10 classes, one hidden layer."""

    name = "digits-mlp"
    default_dataset = "digits"
    num_features = 64
    num_classes = 10
    hidden = 64

    def make_module(self) -> nn.Module:
        return nn.Sequential(nn.Linear(self.num_features, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.num_classes))


class IrisLogReg(TorchClassifierTask):
    """iris-logreg: multinomial logistic regression, 4 standardised features -> 3 species."""

    name = "iris-logreg"
    default_dataset = "iris"
    num_features = 4
    num_classes = 3

    def make_module(self) -> nn.Module:
        return nn.Linear(self.num_features, self.num_classes)


BUILTIN_TASKS: dict[str, type[Task]] = {DigitsMLP.name: DigitsMLP, IrisLogReg.name: IrisLogReg}

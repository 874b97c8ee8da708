"""Learner data: built-in datasets partitioned IID or by Dirichlet label skew, or a node-local file.

Every learner computes the same partitioning of the whole dataset from the seed and keeps its own slice, so
partitions are disjoint and reproducible without any coordination.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from .task import Dataset

TEST_FRACTION = 0.2
# Dirichlet draws are repeated until every partition holds at least this many samples (as Flower Datasets does).
MIN_PARTITION_SIZE = 10
MAX_DIRICHLET_DRAWS = 1000


def bundled_file(name: str) -> Path:
    """A data file scikit-learn ships (sklearn/datasets/data), found without importing sklearn: importing
    sklearn.datasets costs about 1.2 s of CPU in every process that loads a built-in dataset (each learner, and
    the aggregator for the logged model's input example); reading the file takes 0.02 s."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-learn is not installed: the built-in datasets are its bundled copies")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


def load_builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32, scaled) and integer labels of a scikit-learn bundled dataset (the same arrays as
    sklearn.datasets.load_digits / load_iris; a test holds them equal)."""
    if name == "digits":
        with gzip.open(bundled_file("digits.csv.gz"), "rt") as f:
            table = np.loadtxt(f, delimiter=",")
        x, y = table[:, :-1] / 16.0, table[:, -1]
    elif name == "iris":
        # First line: sample count, feature count, class names; then features and the class index per row.
        table = np.loadtxt(bundled_file("iris.csv"), delimiter=",", skiprows=1)
        features = table[:, :-1]
        x, y = (features - features.mean(axis=0)) / features.std(axis=0), table[:, -1]
    else:
        raise ValueError(f"unknown built-in dataset {name!r} (known: digits, iris)")
    return x.astype(np.float32), y.astype(np.int64)


def iid_partitions(num_samples: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def dirichlet_partitions(labels: np.ndarray, num_partitions: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Per class, split its samples across partitions in proportions drawn from Dirichlet(alpha).

    Smaller alpha means each partition is dominated by fewer classes. Draws repeat until every partition
    has at least min(MIN_PARTITION_SIZE, n // (2 * partitions)) samples.
    """
    if num_partitions > len(labels):
        raise ValueError(f"{num_partitions} partitions for {len(labels)} samples: some would be empty")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    min_size = max(1, min(MIN_PARTITION_SIZE, len(labels) // (2 * num_partitions)))
    for _ in range(MAX_DIRICHLET_DRAWS):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for k in classes:
            idx = rng.permutation(np.flatnonzero(labels == k))
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for pid, chunk in enumerate(np.split(idx, cuts)):
                parts[pid].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) draw in {MAX_DIRICHLET_DRAWS} gave every one of {num_partitions} "
        f"partitions {min_size} samples: raise alpha or use fewer learners"
    )


def partition(labels: np.ndarray, num_partitions: int, scheme: str, alpha: float, seed: int) -> list[np.ndarray]:
    if num_partitions < 1:
        raise ValueError("num_partitions must be at least 1")
    if scheme == "iid":
        return iid_partitions(len(labels), num_partitions, seed)
    if scheme == "dirichlet":
        return dirichlet_partitions(labels, num_partitions, alpha, seed)
    raise ValueError(f"unknown partitioning scheme {scheme!r} (iid, dirichlet)")


def train_test_split(x: np.ndarray, y: np.ndarray, seed: int) -> Dataset:
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = max(1, int(round(len(y) * TEST_FRACTION))) if len(y) > 1 else 0
    test, train = order[:n_test], order[n_test:]
    return Dataset(x[train], y[train], x[test], y[test])


def read_local_file(path: str, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    """A node-local CSV/Parquet file: numeric feature columns and an integer label column."""
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"data file {path} does not exist on this node")
    frame = pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
    if label_column not in frame.columns:
        raise ValueError(f"label column {label_column!r} not in {path} (columns: {', '.join(map(str, frame.columns))})")
    labels = frame.pop(label_column)
    if not pd.api.types.is_integer_dtype(labels):
        raise ValueError(f"label column {label_column!r} must hold integer class ids")
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise ValueError(f"feature columns must be numeric; not: {', '.join(map(str, non_numeric))}")
    return frame.to_numpy(dtype=np.float32), labels.to_numpy(dtype=np.int64)


def load_learner_data(data: dict, partition_id: int, num_partitions: int, default_dataset: str | None) -> Dataset:
    """This learner's split data from the spec's `data` wire shape."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition id {partition_id} is outside 0..{num_partitions - 1}")
    scheme = data.get("partitioning", {})
    seed = int(scheme.get("seed", 42))
    if data.get("path"):
        x, y = read_local_file(data["path"], data["labelColumn"])
        return train_test_split(x, y, seed + partition_id)
    name = data.get("dataset") or default_dataset
    if not name:
        raise ValueError("data needs a dataset or a path")
    x, y = load_builtin(name)
    parts = partition(y, num_partitions, scheme.get("scheme", "iid"), float(scheme.get("alpha", 0.5)), seed)
    mine = parts[partition_id]
    return train_test_split(x[mine], y[mine], seed + partition_id)


def label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each partition's label distribution and the whole's (0 = IID)."""
    classes = np.unique(labels)
    overall = np.array([(labels == k).mean() for k in classes])
    distances = []
    for part in parts:
        local = np.array([(labels[part] == k).mean() for k in classes])
        distances.append(0.5 * np.abs(local - overall).sum())
    return float(np.mean(distances))

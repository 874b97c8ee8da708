"""Learner data: Dirichlet/IID partitions of the built-in datasets, and node-local files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flops_learner.data import (
    dirichlet_partitions, iid_partitions, label_skew, load_builtin, load_learner_data, partition)


@pytest.fixture(scope="module")
def digits_labels() -> np.ndarray:
    return load_builtin("digits")[1]


@pytest.mark.parametrize(("name", "scale"), [
    ("digits", lambda x: x / 16.0),
    ("iris", lambda x: (x - x.mean(axis=0)) / x.std(axis=0)),
])
def test_builtin_datasets_read_from_sklearns_files_equal_sklearns_loaders(name, scale):
    """The bundled files are read without importing sklearn.datasets; an sklearn that moves or changes them
    fails here, not in a training."""
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    x, y = load_builtin(name)
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x, scale(bunch.data).astype(np.float32))
    np.testing.assert_array_equal(y, bunch.target)


def test_an_unknown_builtin_dataset_is_named():
    with pytest.raises(ValueError, match="unknown built-in dataset 'mnist'"):
        load_builtin("mnist")


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.5, 1.0, 100.0])
@pytest.mark.parametrize("num_partitions", [2, 5, 10])
def test_dirichlet_partitions_are_non_empty_disjoint_and_cover_everything(digits_labels, alpha, num_partitions):
    parts = dirichlet_partitions(digits_labels, num_partitions, alpha, seed=3)
    assert len(parts) == num_partitions
    assert all(len(p) > 0 for p in parts)
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined)) == len(digits_labels)


def test_label_skew_grows_as_alpha_falls(digits_labels):
    def mean_skew(alpha: float) -> float:
        # Averaged over seeds so the comparison is about alpha, not one lucky draw.
        return float(np.mean([label_skew(digits_labels, dirichlet_partitions(digits_labels, 5, alpha, seed))
                              for seed in range(5)]))

    skews = [mean_skew(alpha) for alpha in (100.0, 1.0, 0.1)]
    assert skews[0] < skews[1] < skews[2]
    iid = label_skew(digits_labels, iid_partitions(len(digits_labels), 5, seed=0))
    assert iid < skews[1]


def test_partitioning_is_deterministic_from_the_seed(digits_labels):
    a = partition(digits_labels, 4, "dirichlet", 0.3, seed=11)
    b = partition(digits_labels, 4, "dirichlet", 0.3, seed=11)
    c = partition(digits_labels, 4, "dirichlet", 0.3, seed=12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_learners_get_disjoint_slices_split_into_train_and_test():
    wire = {"dataset": "iris", "partitioning": {"scheme": "iid", "seed": 5}}
    sets = [load_learner_data(wire, pid, 3, None) for pid in range(3)]
    rows = [np.concatenate([d.x_train, d.x_test]) for d in sets]
    assert sum(len(r) for r in rows) == 150
    assert all(len(d.y_test) > 0 and len(d.y_train) > len(d.y_test) for d in sets)
    x, _ = load_builtin("iris")
    def by_rows(a: np.ndarray) -> np.ndarray:
        return a[np.lexsort(a.T)]

    for pid, part in enumerate(iid_partitions(150, 3, seed=5)):
        # Each learner holds exactly its partition's rows (iris has duplicate rows: compare as sorted rows).
        assert np.array_equal(by_rows(rows[pid]), by_rows(x[part]))


def test_impossible_dirichlet_request_is_refused():
    with pytest.raises(ValueError, match="partitions"):
        dirichlet_partitions(np.array([0, 1, 0]), 5, 0.5, seed=0)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_node_local_file_with_a_label_column(tmp_path, suffix):
    frame = pd.DataFrame({"a": np.arange(20, dtype=float), "b": np.ones(20), "target": np.arange(20) % 3})
    path = tmp_path / f"data{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    data = load_learner_data({"path": str(path), "labelColumn": "target"}, 0, 1, None)
    assert data.x_train.shape[1] == 2
    assert len(data.y_train) + len(data.y_test) == 20
    assert set(np.concatenate([data.y_train, data.y_test])) == {0, 1, 2}


def test_node_local_file_without_the_label_column_is_refused(tmp_path):
    path = tmp_path / "data.csv"
    pd.DataFrame({"a": [1.0, 2.0]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="label column"):
        load_learner_data({"path": str(path), "labelColumn": "y"}, 0, 1, None)

"""Datasets: the real loaders, user files, and every kind of malformed input."""

import io

import numpy as np
import pytest

from influence_core import DatasetError, available_datasets, dataset_from_arrays, load_dataset, load_npz


def test_digits_is_split_stratified_standardised_and_deterministic(digits):
    assert digits.n_train + digits.n_test == 1797 and digits.image_shape == (8, 8)
    assert digits.X_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    np.testing.assert_allclose(digits.X_train.mean(0), 0, atol=1e-5)
    assert set(np.unique(digits.y_test)) == set(range(10))
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.X_train, digits.X_train)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.y_train, digits.y_train)
    raw = digits.inverse_transform(digits.X_test[:3])
    np.testing.assert_allclose(digits.transform(raw), digits.X_test[:3], atol=1e-5)
    assert raw.min() >= -1e-6 and raw.max() <= 16 + 1e-6  # back to pixel values


@pytest.mark.slow
def test_mnist5k_and_mnist1d_ship_or_generate_locally():
    mnist = load_dataset("mnist5k")
    assert (mnist.n_train, mnist.n_test, mnist.n_features, mnist.image_shape) == (4000, 1000, 784, (28, 28))
    one_d = load_dataset("mnist1d", num_samples=400)
    assert (one_d.n_train, one_d.n_test, one_d.n_features, one_d.image_shape) == (320, 80, 40, None)
    assert one_d.n_classes == 10
    np.testing.assert_array_equal(load_dataset("mnist1d", num_samples=400).X_train, one_d.X_train)


def test_npz_round_trip_from_path_and_bytes(tmp_path):
    gen = np.random.default_rng(0)
    X = gen.normal(size=(50, 4, 4))
    y = np.repeat(np.arange(5), 10)
    path = tmp_path / "mine.npz"
    np.savez(path, X_train=X, y_train=y, class_names=np.array(list("abcde")))
    ds = load_npz(path)
    assert ds.name == "mine" and ds.image_shape == (4, 4) and ds.class_names == tuple("abcde")
    assert ds.n_train == 40 and ds.n_test == 10
    from_bytes = load_dataset("npz", path=path)
    np.testing.assert_array_equal(from_bytes.X_train, ds.X_train)
    np.testing.assert_array_equal(load_npz(path.read_bytes()).X_test, ds.X_test)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"X_train": np.zeros((4, 2))}, "misses"),
        ({"X_train": np.zeros((4, 2)), "y_train": np.zeros(3)}, "must match"),
        ({"X_train": np.full((4, 2), np.nan), "y_train": [0, 1, 0, 1]}, "NaN"),
        ({"X_train": np.zeros((4, 2)), "y_train": [0, -1, 0, 1]}, "negative labels"),
        ({"X_train": np.zeros((4, 2)), "y_train": [0.5, 1, 0, 1]}, "integer"),
        ({"X_train": np.zeros((6, 2)), "y_train": [0, 2, 0, 2, 0, 2]}, r"class\(es\) \[1\] have no training"),
        ({"X_train": np.zeros((4, 2)), "y_train": [1, 1, 1, 1]}, "no training examples|at least 2 classes"),
        (
            {"X_train": np.zeros((4, 2)), "y_train": [0, 1, 0, 1], "X_test": np.zeros((2, 3)), "y_test": [0, 1]},
            "features",
        ),
        ({"X_train": np.zeros((4, 2)), "y_train": [0, 1, 0, 1], "X_test": np.zeros((2, 2))}, "both X_test"),
    ],
)
def test_malformed_npz_is_refused_with_a_clear_message(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(DatasetError, match=message):
        load_npz(path)


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, X_train=np.array([{"a": 1}] * 4, dtype=object), y_train=np.array([0, 1, 0, 1]))
    with pytest.raises(DatasetError, match="object arrays"):
        load_npz(path)


def test_size_limit_and_garbage_files(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, X_train=np.zeros((100, 10)), y_train=np.tile([0, 1], 50))
    with pytest.raises(DatasetError, match="above the"):
        load_npz(buf.getvalue(), max_bytes=1000)
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_npz(b"this is not a zip file")
    with pytest.raises(DatasetError, match="no such file"):
        load_npz(tmp_path / "missing.npz")


def test_unknown_dataset_and_bad_options():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    assert "digits" in available_datasets()
    with pytest.raises(DatasetError, match="bad option"):
        load_dataset("digits", colour=True)
    with pytest.raises(DatasetError, match="num_samples"):
        load_dataset("mnist1d", num_samples=5)
    with pytest.raises(DatasetError, match="needs path"):
        load_dataset("npz")


def test_from_arrays_keeps_given_test_set_and_constant_features():
    X = np.c_[np.arange(10.0), np.ones(10)]
    y = np.tile([0, 1], 5)
    ds = dataset_from_arrays(X[:8], y[:8], X[8:], y[8:])
    assert ds.n_test == 2 and np.all(np.isfinite(ds.X_train))
    np.testing.assert_array_equal(ds.X_train[:, 1], 0.0)  # a constant feature stays 0, no division by zero


# ------------------------------------------------------------------------------------------ hostile options
X8 = np.random.default_rng(0).normal(size=(40, 4))
Y8 = np.arange(40) % 2


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: dataset_from_arrays(X8, Y8, test_fraction="0.2"),
            r"test_fraction must be a finite number in \(0, 1\)",
        ),
        (lambda: dataset_from_arrays(X8, Y8, seed=-1), r"seed must be an integer in \[0, 4294967295\]"),
        (lambda: dataset_from_arrays(X8, Y8, seed=2**40), r"seed must be an integer in \[0, 4294967295\]"),
        (lambda: dataset_from_arrays(X8, Y8, seed=1.5), "seed must be an integer"),
        (lambda: load_dataset("digits", seed=-1), "seed must be an integer"),
        (lambda: dataset_from_arrays([[1.0, 2.0], [3.0]] * 20, Y8), "X_train could not be converted to an array"),
        (
            lambda: dataset_from_arrays(X8, np.where(Y8 == 1, np.uint64(2**63 + 5), np.uint64(0)), X8, Y8),
            "too large to be class numbers",
        ),  # was "negative labels" (wrapped to int64)
        (lambda: load_dataset("mnist1d", num_samples=10**9), r"num_samples must be an integer in \[20, 100000\]"),
        (lambda: load_dataset("mnist1d", num_samples=2500.5), "num_samples must be an integer"),
        (lambda: load_dataset("mnist1d", train_split=1.5), r"train_split must be a finite number in \(0, 1\)"),
        (lambda: load_dataset("mnist1d", num_samples=20, train_split=0.3), "leaves 6 of 20 examples for training"),
    ],
)
def test_options_are_checked_for_type_and_range_where_they_enter(make, message):
    with pytest.raises(DatasetError, match=message):
        make()


def test_load_npz_names_what_it_was_given(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.npz")
    (tmp_path / "zero.npz").symlink_to("/dev/zero")
    (tmp_path / "dangling.npz").symlink_to(tmp_path / "nothing.npz")
    for source, message in [
        (io.StringIO("hello"), "binary source"),
        (5, "takes a path, bytes or a binary file"),
        (tmp_path, "is a directory"),
        (tmp_path / "pipe.npz", "not a regular file"),
        (tmp_path / "zero.npz", "not a regular file"),
        (tmp_path / "dangling.npz", "broken symbolic link"),
        (tmp_path / "missing.npz", "no such file"),
    ]:
        with pytest.raises(DatasetError, match=message):
            load_npz(source)

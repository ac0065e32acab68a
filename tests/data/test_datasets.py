"""Datasets: the real loaders, user files, and every kind of malformed or hostile input (decompression bombs and huge
labels are refused under a memory limit, before anything large is built)."""

import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from influence_core import DatasetError, available_datasets, dataset_from_arrays, load_dataset, load_npz

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npz_bombs import lying_header, npz_bytes, zeros_bomb  # noqa: E402  (tests/data is on sys.path)

ROOT = Path(__file__).resolve().parents[2]


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


# ------------------------------------------------------------------------- memory exhaustion: bombs, huge labels
# Bad and hostile input is refused with a clear, short message, never turned into a silent wrong number or a crash;
# one test per class of defect, each parametrized case one bad input.
def _run_limited(code: str, headroom_mb: int = 400, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python whose address space is limited to what it uses after importing the package
    plus ``headroom_mb``: an allocation beyond that raises MemoryError instead of taking the machine down."""
    prelude = textwrap.dedent(f"""
        import resource, sys
        import influence_core
        from influence_core.data.datasets import DatasetError, load_npz
        size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        limit = size + {headroom_mb} * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    """)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def bomb_file(tmp_path_factory):
    """324 MB of float32 zeros (9000 x 9000, above the 256 MiB cap) in a 0.3 MB .npz."""
    path = tmp_path_factory.mktemp("bombs") / "bomb.npz"
    path.write_bytes(zeros_bomb((9000, 9000)))
    return path


def test_decompression_bomb_is_refused_from_its_header_under_a_memory_limit(bomb_file):
    assert bomb_file.stat().st_size < 1_000_000
    proc = _run_limited(f"""
        import time
        start = time.perf_counter()
        try:
            load_npz({str(bomb_file)!r})
        except DatasetError as exc:
            print("refused", round(time.perf_counter() - start, 3), exc)
    """)
    assert proc.returncode == 0 and proc.stdout.startswith("refused"), proc.stderr[-2000:]
    assert "MiB" in proc.stdout and "(9000, 9000)" in proc.stdout
    assert float(proc.stdout.split()[1]) < 2.0  # from the header: no decompression


def test_huge_label_is_refused_before_any_table_sized_by_it(tmp_path):
    path = tmp_path / "label.npz"
    y = np.zeros(200, dtype=np.int64)
    y[1::2] = 1
    y[7] = 10**9
    np.savez_compressed(path, X_train=np.random.default_rng(0).normal(size=(200, 8)), y_train=y)
    proc = _run_limited(f"""
        try:
            load_npz({str(path)!r})
        except DatasetError as exc:
            print("refused", exc)
    """)
    assert proc.returncode == 0 and proc.stdout.startswith("refused"), proc.stderr[-2000:]
    assert "1000000000" in proc.stdout and len(proc.stdout) < 400


@pytest.mark.parametrize("label", [10**6, 5000])
def test_label_errors_stay_short(label):
    y = Y8.copy()
    y[[3, 5]] = label  # twice, so the stratified split itself would accept it
    start = time.perf_counter()
    with pytest.raises(DatasetError) as info:
        dataset_from_arrays(X8, y)
    assert len(str(info.value)) < 400 and time.perf_counter() - start < 5


def test_many_missing_classes_are_listed_briefly():
    y = np.repeat([0, 39], 20)  # classes 1..38 missing (labels below n_train, so not refused by range)
    with pytest.raises(DatasetError, match=r"class\(es\) \[1, 2, .*\.\.\.\] \(38 in all\)") as info:
        dataset_from_arrays(X8, y)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: zeros_bomb((4000, 4000)), "expands to more than 16 MiB"),  # small cap
        (lambda: lying_header((100000, 1000)), "damaged"),  # forged header
        (lambda: npz_bytes(X_train=np.zeros((4, 2), complex), y_train=[0, 1, 0, 1]), "complex"),
        (lambda: npz_bytes(X_train=np.zeros((4, 1, 1, 1, 2)), y_train=[0, 1, 0, 1]), "shape"),  # 5-D
        (lambda: npz_bytes(X_train=np.array([["a", "b"]] * 4), y_train=[0, 1, 0, 1]), "dtype"),  # strings
        (lambda: npz_bytes(X_train=np.zeros((4, 2)), y_train=np.zeros((4, 1))), "1-D"),  # 2-D labels
        (lambda: npz_bytes(X_train=np.zeros((4, 2)), y_train=np.array([0, 1, 0, 1], "U1")), "dtype"),
        (lambda: npz_bytes(X_train=X8, y_train=Y8, class_names=np.array(["c"] * 100)), "class_names"),
    ],
)
def test_hostile_npz_members_are_refused_before_decompressing(make, message):
    with pytest.raises(DatasetError, match=message):
        load_npz(make(), max_decompressed=16 * 2**20)


# ------------------------------------------------------------------------------------------ silent wrong results
@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros((40, 0)), "no features"),
        (X8 + 1j * X8, "complex"),
        (X8 * 1e306, "too large"),  # finite, but the standardisation overflows
        (np.where(X8 > 0, 1e200, -1e200), "too large"),  # variance overflows in float64
    ],
)
def test_inputs_that_would_train_a_wrong_model_are_refused(X, message):
    with pytest.raises(DatasetError, match=message):
        dataset_from_arrays(X, Y8, X, Y8)


@pytest.mark.parametrize("shape", [(-2, -2), (0, 4), (2, 2, 1), (1.5, 2), (2, 3)])
def test_bad_image_shape_is_refused(shape):
    with pytest.raises(DatasetError, match="image_shape"):
        dataset_from_arrays(X8, Y8, image_shape=shape)


@pytest.mark.parametrize(
    "y, message",
    [
        (Y8 + 0.7, "integer"),
        (Y8 - 0.5, "integer"),
        (np.full(40, 1e300), "integer|too large"),
    ],
)
def test_float_labels_are_never_truncated(y, message):
    with pytest.raises(DatasetError, match=message):
        dataset_from_arrays(X8, y, X8, Y8)
    with pytest.raises(DatasetError, match=message):  # test labels are checked the same way
        dataset_from_arrays(X8, Y8, X8, y)

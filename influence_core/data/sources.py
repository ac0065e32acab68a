"""Data sources: where the engine reads training (and test) points from, one chunk of indices at a time.

A source is anything with ``len(source)`` and ``fetch(indices) -> (inputs, labels)`` (the :class:`DataSource`
protocol): ``indices`` is a 1-D int64 numpy array, ``inputs`` a tensor (c, ...) and ``labels`` a long tensor (c,),
both on the CPU or already on the model's device. The engine (per-sample gradients, HVPs, forward-mode scoring,
sampler inputs, class-gradient sums) moves each chunk to the model's device itself, so a training set never has to
fit in device memory, and an executor receives the source (a picklable object), not a copy of its data.

Adapters (:func:`as_source` picks one):

- :class:`ArraySource`: numpy arrays or tensors (X (n, ...), y (n,)); the simple path. Floating inputs are cast
  once to the model's dtype (as before); integer inputs (token ids for an ``nn.Embedding``) are kept as integers.
- :class:`DatasetSource`: a map-style ``torch.utils.data.Dataset`` whose items are ``(input, label)``; a batch is
  ``collate_fn([dataset[i] for i in indices])`` (``default_collate`` unless given). A map-style ``DataLoader`` is
  read through its ``dataset`` and ``collate_fn`` (its sampler, shuffling and batch size are not used: the engine
  chooses the indices). Iterable-style datasets cannot be indexed and are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["DataSource", "ArraySource", "DatasetSource", "as_source", "source_labels"]


@runtime_checkable
class DataSource(Protocol):
    """n points addressable by index: ``fetch(indices (c,)) -> (inputs (c, ...), labels (c,))``."""

    def __len__(self) -> int: ...

    def fetch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


def _as_tensor(a: Any) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach()
    arr = np.asarray(a)
    if arr.dtype == object:
        raise TypeError(
            "inputs must be numeric arrays or tensors; got an object array (ragged or mixed data). "
            "Wrap your data in a torch Dataset with a collate_fn instead"
        )
    return torch.as_tensor(arr)


class ArraySource:
    """Arrays or tensors X (n, ...) and y (n,) held in memory (numpy inputs are not copied unless cast).

    ``dtype``: the floating dtype to cast floating inputs to (the model's); integer inputs keep their dtype."""

    def __init__(self, X: Any, y: Any, dtype: torch.dtype | None = None):
        X, y = _as_tensor(X), _as_tensor(y)
        if X.is_floating_point() and dtype is not None:
            X = X.to(dtype)
        elif X.is_complex():
            raise ValueError(
                "inputs are complex numbers; the engine needs real inputs (take .real or .abs() explicitly)"
            )
        elif X.dtype == torch.bool:
            X = X.to(dtype or torch.float32)
        if X.ndim < 1 or y.ndim != 1 or len(X) != len(y):
            raise ValueError(
                f"X must be (n, ...) and y (n,) with the same n; got {tuple(X.shape)} and {tuple(y.shape)}"
            )
        if y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"labels must be integer class ids; got {y.dtype} labels")
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise ValueError(
                "labels must be integer class ids; got non-integer floats (e.g. "
                f"{float(y[(y != y.round()).nonzero()[0, 0]])})"
            )
        self.X, self.y = X, y.long()

    def __len__(self) -> int:
        return len(self.y)

    def fetch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.X.device)
        return self.X[idx], self.y[idx.to(self.y.device)]

    def labels(self) -> torch.Tensor:
        """All n labels (long)."""
        return self.y


class DatasetSource:
    """A map-style ``torch.utils.data.Dataset`` of ``(input, label)`` items; ``collate_fn`` stacks a batch."""

    def __init__(self, dataset: Any, collate_fn: Callable[[list], Any] | None = None):
        from torch.utils.data import IterableDataset, default_collate

        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"{type(dataset).__name__} is not a map-style dataset (no __getitem__ by index); "
                "influence needs random access to training points: use a map-style Dataset, or load "
                "the data into arrays"
            )
        try:
            self.n = len(dataset)
        except TypeError:
            raise TypeError(f"{type(dataset).__name__} has no __len__; a data source needs a known length") from None
        self.dataset = dataset
        self.collate_fn = collate_fn or default_collate
        self._labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n

    def fetch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.collate_fn([self.dataset[int(i)] for i in np.asarray(indices).reshape(-1)])
        if isinstance(batch, dict):
            keys = [k for k in ("input", "inputs", "x") if k in batch]
            label_keys = [k for k in ("label", "labels", "y", "target") if k in batch]
            if not keys or not label_keys:
                raise ValueError(
                    f"a collated batch is a dict with keys {sorted(batch)}; a data source needs "
                    "(inputs, labels): return (input, label) items or a collate_fn that does"
                )
            batch = (batch[keys[0]], batch[label_keys[0]])
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            size = f" of {len(batch)}" if isinstance(batch, (tuple, list)) else ""
            raise ValueError(
                f"dataset items must be (input, label) pairs; a collated batch is a "
                f"{type(batch).__name__}{size}. Wrap the dataset so that __getitem__ returns "
                "(input, label)"
            )
        x, y = batch
        return _as_tensor(x), _as_tensor(y).long().reshape(-1)

    def labels(self) -> torch.Tensor:
        """All n labels (long), read once in chunks of 1024 (from ``dataset.targets`` when it has them)."""
        if self._labels is None:
            targets = getattr(self.dataset, "targets", None)
            if targets is not None and len(targets) == self.n:
                self._labels = _as_tensor(targets).long().reshape(-1)
            else:
                self._labels = (
                    torch.cat([self.fetch(np.arange(s, min(s + 1024, self.n)))[1] for s in range(0, self.n, 1024)])
                    if self.n
                    else torch.zeros(0).long()
                )
        return self._labels

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)


def as_source(data: Any, labels: Any | None = None, dtype: torch.dtype | None = None) -> Any:
    """A data source for ``data``: a source (returned as is), a ``DataLoader`` (its dataset and collate_fn), a
    map-style ``Dataset``, or arrays/tensors ``data`` (n, ...) with ``labels`` (n,)."""
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset

    if isinstance(data, DataLoader):
        if labels is not None:
            raise ValueError("a DataLoader carries its own labels; do not pass y as well")
        return DatasetSource(data.dataset, data.collate_fn)
    if isinstance(data, TorchDataset):
        if labels is not None:
            raise ValueError("a torch Dataset carries its own labels; do not pass y as well")
        return DatasetSource(data)
    if labels is None and isinstance(data, DataSource) and not isinstance(data, (np.ndarray, torch.Tensor)):
        return data
    if labels is None:
        raise ValueError("pass labels y with arrays or tensors X (or a Dataset/DataLoader of (input, label) items)")
    return ArraySource(data, labels, dtype)


def source_labels(source: Any) -> torch.Tensor:
    """All labels of a source (n,), long, on the CPU: ``source.labels()`` if it has one, else fetched in chunks."""
    if hasattr(source, "labels"):
        return source.labels().reshape(-1).long().cpu()
    n = len(source)
    return torch.cat(
        [source.fetch(np.arange(s, min(s + 1024, n)))[1].reshape(-1).long().cpu() for s in range(0, n, 1024)]
    )

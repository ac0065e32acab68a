"""A keyed on-disk store of arrays: results computed once and found again by their full configuration.

One entry is one ``.npz`` file ``<root>/<kind>/<key>.npz`` holding the entry's arrays plus a member ``__meta__``: a
UTF-8 JSON document stored as a uint8 array (so the file is read with ``allow_pickle=False``: nothing in it is ever
unpickled). The key is the first 32 hex digits of SHA-256 over the canonical JSON of ``{kind, config,
code_version}``, where ``code_version`` names the code that produced the arrays (:func:`code_version`: a hash of
the source of the modules involved and the library versions), so a change of code or of any setting finds a
different entry instead of a stale one.

Files are written atomically (temporary file in the same directory, fsync, rename: :func:`io_safety.atomic_write`),
so concurrent writers and interruptions leave either no file or a complete one. A file that cannot be read, that
is not one of this store's files, or whose recorded kind, key, configuration or code version differ from what was
asked (a *foreign* file, e.g. copied from elsewhere or renamed) raises :class:`StoreFileError` with the reason;
:meth:`ArrayStore.get_or_compute` reports it, removes the file and recomputes.

The store knows nothing about models or the app: callers turn their results into arrays and back.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .io_safety import atomic_write, load_error

__all__ = ["ArrayStore", "StoreFileError", "StoredEntry", "code_version", "entry_key", "FORMAT"]

FORMAT = "influence-explorer-array-store"
FORMAT_VERSION = 1
META = "__meta__"


class StoreFileError(ValueError):
    """A store file that is corrupt or foreign; the message names the file and the reason."""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"configuration value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def code_version(*modules: str) -> str:
    """A short hash of the source text of ``modules`` (dotted names) and the numpy/torch versions: changes when
    the code that produces an entry changes, so old entries are not reused."""
    digest = hashlib.sha256()
    for name in modules:
        digest.update(name.encode())
        digest.update(inspect.getsource(importlib.import_module(name)).encode())
    digest.update(np.__version__.encode())
    try:
        import torch

        digest.update(torch.__version__.encode())
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return digest.hexdigest()[:16]


def entry_key(kind: str, config: Mapping[str, Any], version: str) -> str:
    """32 hex digits of SHA-256 over the canonical JSON of (kind, config, code version)."""
    return hashlib.sha256(_canonical({"kind": kind, "config": config, "code_version": version}).encode()).hexdigest()[
        :32
    ]


@dataclass(frozen=True)
class StoredEntry:
    """One file of the store, as listed by :meth:`ArrayStore.entries` (``meta`` is None for an unreadable file)."""

    kind: str
    key: str
    path: Path
    bytes: int
    meta: dict[str, Any] | None
    problem: str | None = None

    @property
    def label(self) -> str:
        return (self.meta or {}).get("label") or self.key


class ArrayStore:
    """Entries of arrays under ``root``, keyed by (kind, configuration, code version). Thread- and process-safe
    for readers and writers (atomic renames); a per-key lock lets :meth:`get_or_compute` compute each entry once
    per process even when several threads ask at once."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    # ------------------------------------------------------------------ paths
    def path(self, kind: str, config: Mapping[str, Any], version: str) -> Path:
        if not kind or not kind.replace("_", "").isalnum():
            raise ValueError(f"kind must be a non-empty name of letters, digits and '_', got {kind!r}")
        return self.root / kind / f"{entry_key(kind, config, version)}.npz"

    def lock(self, kind: str, config: Mapping[str, Any], version: str) -> threading.Lock:
        """The lock of one entry (created on first use)."""
        key = f"{kind}/{entry_key(kind, config, version)}"
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())

    # ------------------------------------------------------------------ read / write
    def save(
        self,
        kind: str,
        config: Mapping[str, Any],
        version: str,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write one entry atomically; ``arrays`` are numeric/bool numpy arrays (no objects), ``meta`` is
        JSON-serialisable (e.g. a training report). Returns the file's path."""
        path = self.path(kind, config, version)
        bad = [name for name, a in arrays.items() if name == META or np.asarray(a).dtype.hasobject]
        if bad:
            raise ValueError(f"cannot store {bad}: the name {META!r} is reserved and object arrays are refused")
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "key": path.stem,
            "config": json.loads(_canonical(config)),
            "code_version": version,
            "created": time.time(),
            "meta": json.loads(_canonical(dict(meta or {}))),
            "arrays": sorted(arrays),
        }
        if "label" in (meta or {}):
            record["label"] = str(meta["label"])
        blob = np.frombuffer(_canonical(record).encode("utf-8"), dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as fh:
            np.savez(fh, **{name: np.asarray(a) for name, a in arrays.items()}, **{META: blob})
        return path

    @staticmethod
    def read_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, record) of a store file, never unpickling; :class:`StoreFileError` when it is not a readable
        store file."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                if not hasattr(npz, "files"):
                    raise StoreFileError(f"{path} is a bare array, not a store file")
                if META not in npz.files:
                    raise StoreFileError(f"{path} is not a file of this store (no {META} record)")
                record = json.loads(bytes(npz[META]).decode("utf-8"))
                arrays = {name: npz[name] for name in npz.files if name != META}
        except StoreFileError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
            raise StoreFileError(f"{path} cannot be read ({load_error(exc)})") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise StoreFileError(
                f"{path} is not a file of this store (format {str(record.get('format'))[:40]!r})"
                if isinstance(record, dict)
                else f"{path} has a malformed {META} record"
            )
        if record.get("format_version") != FORMAT_VERSION:
            raise StoreFileError(
                f"{path} has store format version {record.get('format_version')!r}, this code reads {FORMAT_VERSION}"
            )
        return arrays, record

    def load(
        self, kind: str, config: Mapping[str, Any], version: str
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """(arrays, meta) of the entry, or None when there is none. :class:`StoreFileError` when the file is
        corrupt, or foreign: its record names another kind, key, configuration or code version."""
        path = self.path(kind, config, version)
        if not path.exists():
            return None
        arrays, record = self.read_file(path)
        expected = {"kind": kind, "key": path.stem, "config": json.loads(_canonical(config)), "code_version": version}
        wrong = [name for name, value in expected.items() if record.get(name) != value]
        if wrong or sorted(arrays) != record.get("arrays"):
            raise StoreFileError(
                f"{path} does not hold the entry its name says (different {', '.join(wrong) or 'arrays'}):"
                " a foreign or renamed file"
            )
        return arrays, record.get("meta", {})

    def get_or_compute(
        self,
        kind: str,
        config: Mapping[str, Any],
        version: str,
        compute: Callable[[], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]],
        on_problem: Callable[[str], None] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
        """The entry's (arrays, meta, loaded) where ``loaded`` says it came from disk; otherwise ``compute()``
        (returning arrays and meta) runs once per process per entry and its result is saved. A corrupt or foreign
        file is reported to ``on_problem(message)``, removed, and recomputed."""
        with self.lock(kind, config, version):
            try:
                found = self.load(kind, config, version)
            except StoreFileError as exc:
                if on_problem is not None:
                    on_problem(f"{exc}; it was removed and the result is computed again")
                self.path(kind, config, version).unlink(missing_ok=True)
                found = None
            if found is not None:
                return found[0], found[1], True
            arrays, meta = compute()
            arrays = {name: np.asarray(a) for name, a in arrays.items()}
            self.save(kind, config, version, arrays, meta)
            return arrays, dict(meta), False

    # ------------------------------------------------------------------ listing
    def entries(self) -> list[StoredEntry]:
        """Every ``.npz`` file under the root (newest first), with its record, or the problem that stops
        reading it."""
        out = []
        if not self.root.is_dir():
            return out
        for path in self.root.glob("*/*.npz"):
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # removed meanwhile
                continue
            try:
                _, record = self.read_file(path)
                out.append(StoredEntry(path.parent.name, path.stem, path, size, record))
            except StoreFileError as exc:
                out.append(StoredEntry(path.parent.name, path.stem, path, size, None, str(exc)))
        return sorted(out, key=lambda e: -(e.meta or {}).get("created", 0.0))

    def total_bytes(self) -> int:
        return sum(e.bytes for e in self.entries())

    def clear(self, kind: str | None = None) -> int:
        """Remove every entry (or every entry of ``kind``) and leftover temporary files; returns the number of
        entries removed."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.glob(f"{kind or '*'}/*"):
            if path.is_file() and (path.suffix == ".npz" or path.name.endswith(".tmp.npz")):
                path.unlink(missing_ok=True)
                removed += not path.name.startswith(".")
        return removed

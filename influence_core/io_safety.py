"""Output paths checked before any work starts, and results written atomically.

Every command and study calls :func:`check_outputs` (or :func:`check_output_file` / :func:`check_output_dir`)
on *all* the paths it will write before loading data or training, so a typo in ``--out`` or ``--json`` costs a
second, not the whole run: the path must not lie in a kernel pseudo-filesystem (``/proc``, ``/sys``, ``/dev``), must
not be a symbolic link (a result is never written through a link: it would overwrite the file the link points to),
a directory where a file is expected (or a file where a directory is expected) or a FIFO/device, and its directory
must exist and accept a new file (probed by creating and removing a temporary file, so permissions, read-only mounts
and quotas are all caught the same way). Nothing is created here: a missing folder of an output *file* is an error
(the user did not ask for it); an output *directory* itself is created only when the results are written. File names
inside an output directory (``--name``) are names, not paths (:func:`check_output_name`).

Results are then written with :func:`atomic_write` / :func:`atomic_path`: into a temporary file in the same
directory, flushed to disk, and renamed over the target with ``os.replace`` (atomic on POSIX), so an interruption
leaves either the old file or the new one, never half a file.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "OutputPathError",
    "InputPathError",
    "check_output_file",
    "check_output_dir",
    "check_output_name",
    "check_outputs",
    "check_input_file",
    "load_array",
    "load_error",
    "atomic_write",
    "atomic_path",
    "short_repr",
]

_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names the option and what to do."""


class InputPathError(ValueError):
    """An input file that cannot be read as asked; the message names the option and what to do."""


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages never print huge arrays or strings)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _in_pseudo_fs(path: Path) -> str | None:
    resolved = str(path.resolve())
    for root in _PSEUDO_FILESYSTEMS:
        if resolved == root or resolved.startswith(root + "/"):
            return root
    return None


def _probe_writable(directory: Path, what: str, path: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
    except OSError as exc:
        raise OutputPathError(
            f"{what} {path}: cannot write into {directory} ({exc.strerror or exc}); choose a writable location"
        ) from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check that a file can be written at ``path`` (see the module docstring); returns it as a Path.

    Raises :class:`OutputPathError` (a ``ValueError``) with a one-line message; creates nothing.
    """
    if path is None or not isinstance(path, (str, os.PathLike)) or str(path).strip() == "":
        raise OutputPathError(f"{what} needs a file path, got {short_repr(path)}")
    p = Path(os.path.expanduser(os.fspath(path)))
    if p.is_symlink():
        raise OutputPathError(
            f"{what} {p} is a symbolic link; results are never written through a link (that "
            "would overwrite the file it points to): remove the link or give the real path"
        )
    root = _in_pseudo_fs(p)
    if root is not None:
        raise OutputPathError(f"{what} {p} lies in {root}, a kernel pseudo-filesystem; choose a normal file path")
    if p.is_dir():
        raise OutputPathError(f"{what} {p} is a directory; give a file name inside it, e.g. {p / 'result'}")
    if p.exists() and not p.is_file():
        raise OutputPathError(f"{what} {p} is not a regular file (a FIFO, socket or device); choose a file path")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputPathError(f"{what} {p} exists and is not writable; choose another path or fix its permissions")
    parent = p.parent
    if not parent.exists():
        raise OutputPathError(f"{what} {p}: the folder {parent} does not exist; create it first (mkdir -p {parent})")
    if not parent.is_dir():
        raise OutputPathError(f"{what} {p}: {parent} is a file, not a folder; choose another path")
    _probe_writable(parent, what, p)
    return p


def check_output_name(name: Any, what: str = "--name") -> str:
    """A file name (stem) for outputs inside a chosen directory: a name, never a path (no ``/``, not ``.``/``..``),
    so the outputs stay in the directory given. Returns it."""
    if not isinstance(name, str) or not name.strip():
        raise OutputPathError(f"{what} needs a non-empty file name, got {short_repr(name)}")
    if "/" in name or "\\" in name or "\x00" in name or name in (".", "..") or name.startswith("~"):
        raise OutputPathError(
            f"{what} {name!r} is a file name, not a path: it must not contain '/' (or be '.' or "
            "'..'); choose the folder with --out and give a plain name, e.g. my_run"
        )
    if len(name) > 200:
        raise OutputPathError(f"{what} is {len(name)} characters long; use at most 200")
    return name


def check_output_dir(path: str | os.PathLike, what: str = "--out", files: Any = ()) -> Path:
    """Check that ``path`` is (or can be created as) a writable directory and that each of ``files`` (names) can
    be written inside it (no symlink, directory or device in its place); nothing is created here."""
    if path is None or not isinstance(path, (str, os.PathLike)) or str(path).strip() == "":
        raise OutputPathError(f"{what} needs a directory path, got {short_repr(path)}")
    p = Path(os.path.expanduser(os.fspath(path)))
    root = _in_pseudo_fs(p)
    if root is not None:
        raise OutputPathError(f"{what} {p} lies in {root}, a kernel pseudo-filesystem; choose a normal directory")
    if p.is_symlink() and not p.exists():
        raise OutputPathError(f"{what} {p} is a broken symbolic link; remove it or choose another directory")
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{what} {p} is a file, not a directory; choose a directory path")
    existing = p
    while not existing.exists():  # the nearest existing ancestor must accept a new directory
        if existing.is_symlink():
            raise OutputPathError(f"{what} {p}: {existing} is a broken symbolic link; choose another directory")
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{what} {p}: {existing} is a file, not a folder; choose another path")
    _probe_writable(existing, what, p)
    for name in files:
        target = p / name
        if os.path.lexists(target):
            check_output_file(target, f"{what} (file {name})")
    return p


def check_outputs(
    files: dict[str, Any] | None = None, dirs: dict[str, Any] | None = None, names: dict[str, Any] | None = None
) -> None:
    """Check every output of one command before any work: ``files`` {option: file path}, ``dirs`` {option: dir
    path or (dir path, [file names written inside])}, ``names`` {option: file-name stem}; None values are skipped.
    Raises the first :class:`OutputPathError`."""
    for what, name in (names or {}).items():
        if name is not None:
            check_output_name(name, what)
    for what, path in (files or {}).items():
        if path is not None:
            check_output_file(path, what)
    for what, value in (dirs or {}).items():
        if value is None:
            continue
        path, inside = value if isinstance(value, tuple) else (value, ())
        if path is not None:
            check_output_dir(path, what, inside)


def check_input_file(path: Any, what: str) -> Path:
    """A readable regular file at ``path`` (a directory, FIFO or device, e.g. a link to /dev/zero, is refused
    with what it is, not as missing)."""
    if path is None or not isinstance(path, (str, os.PathLike)) or str(path).strip() == "":
        raise InputPathError(f"{what} needs a file path, got {short_repr(path)}")
    p = Path(os.path.expanduser(os.fspath(path)))
    if p.is_symlink() and not p.exists():
        raise InputPathError(f"{what} {p} is a broken symbolic link; give the path of the file")
    if not p.exists():
        raise InputPathError(f"{what} {p}: no such file")
    if p.is_dir():
        raise InputPathError(f"{what} {p} is a directory; give the path of a file inside it")
    if not p.is_file():
        raise InputPathError(f"{what} {p} is not a regular file (a FIFO, socket or device); give a saved file")
    if not os.access(p, os.R_OK):
        raise InputPathError(f"{what} {p} is not readable; fix its permissions")
    return p


def load_error(exc: BaseException, limit: int = 120) -> str:
    """Why numpy could not read a file, in a few words, without numpy's advice to load with ``allow_pickle=True``
    (which would run code from the file)."""
    text = str(exc)
    if "pickle" in text.lower():
        return "it holds pickled Python objects or is not a numpy file; such data are never loaded"
    return f"{type(exc).__name__}: {text[:limit]}"


def load_array(path: Any, what: str, key: str | None = None) -> Any:
    """A numeric array from a ``.npy`` file, or member ``key`` of a ``.npz``, read with ``allow_pickle=False``;
    a file of Python objects, text or damaged data is refused in one line naming ``what`` (numpy's advice to
    load unsafely is never passed on)."""
    import zipfile

    import numpy as np

    p = check_input_file(path, what)
    if p.suffix not in (".npy", ".npz"):
        raise InputPathError(f"{what} must be a .npy or .npz file, got {p}")
    with open(p, "rb") as fh:  # numpy reads anything without its header as a pickle: look before it does
        magic = fh.read(6)
    if (p.suffix == ".npy" and magic != b"\x93NUMPY") or (p.suffix == ".npz" and not zipfile.is_zipfile(p)):
        raise InputPathError(
            f"{what} {p} is not a readable {p.suffix} array file (no {p.suffix} header: text or "
            "other data); save it with np.save / np.savez"
        )
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as f:
                if key not in f.files:
                    raise InputPathError(f"{what} {p} has no array named {key!r} (found {f.files[:10]})")
                arr = np.asarray(f[key])
        else:
            arr = np.load(p, allow_pickle=False)
    except InputPathError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        if "pickle" in str(exc).lower():
            raise InputPathError(
                f"{what} {p} holds Python objects, which are never loaded (unpickling runs code); "
                "save a plain numeric array (np.save(path, scores.astype(float)))"
            ) from None
        raise InputPathError(
            f"{what} {p} is not a readable {p.suffix} array file ({type(exc).__name__}); save it "
            "with np.save / np.savez"
        ) from None
    if not isinstance(arr, np.ndarray) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputPathError(f"{what} {p} holds a {getattr(arr, 'dtype', type(arr).__name__)} array; save numbers")
    return arr


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it is fsynced and renamed onto ``path``
    (for writers that take a path, e.g. ``fig.savefig``); on an error it is removed and ``path`` is untouched."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` that writes a temporary file and renames it onto ``path`` only when the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types, for every record the engine writes: dict keys as strings, tuples and arrays
    (numpy, torch) as lists, numpy scalars as Python numbers, NaN as null and ±inf as the strings "inf"/"-inf"
    (JSON has no such numbers); objects with ``to_dict()`` through it; anything else unchanged."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars, torch tensors
        if hasattr(value, "detach"):
            value = value.detach().cpu()
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return jsonable(value.to_dict())
    return value

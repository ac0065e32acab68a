"""Output paths checked before any work starts, and results written atomically.

Every command and study calls :func:`check_output_file` / :func:`check_output_dir` on each path it will write
*before* loading data or training, so a typo in ``--out`` or ``--json`` costs a second, not the whole run: the path
must not lie in a kernel pseudo-filesystem (``/proc``, ``/sys``, ``/dev``), must not be a directory where a file is
expected (or a file where a directory is expected), and its directory must exist (or be creatable, for output
directories) and accept a new file (probed by creating and removing a temporary file, so permissions, read-only
mounts and quotas are all caught the same way).

Results are then written with :func:`atomic_write` / :func:`atomic_path`: into a temporary file in the same
directory, flushed to disk, and renamed over the target with ``os.replace`` (atomic on POSIX), so an interruption
leaves either the old file or the new one, never half a file.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["OutputPathError", "check_output_file", "check_output_dir", "atomic_write", "atomic_path",
           "short_repr"]

_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names the option and what to do."""


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
        raise OutputPathError(f"{what} {path}: cannot write into {directory} ({exc.strerror or exc}); "
                              "choose a writable location") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path: str | os.PathLike, what: str = "--out", *, create_parent: bool = False) -> Path:
    """Check that a file can be written at ``path`` (see the module docstring); returns it as a Path.

    ``create_parent``: create a missing parent directory (else a missing directory is an error).
    Raises :class:`OutputPathError` (a ``ValueError``) with a one-line message.
    """
    if path is None or str(path).strip() == "":
        raise OutputPathError(f"{what} needs a file path")
    p = Path(os.path.expanduser(os.fspath(path)))
    root = _in_pseudo_fs(p)
    if root is not None:
        raise OutputPathError(f"{what} {p} lies in {root}, a kernel pseudo-filesystem; choose a normal file path")
    if p.is_dir():
        raise OutputPathError(f"{what} {p} is a directory; give a file name inside it, e.g. {p / 'result'}")
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputPathError(f"{what} {p} exists and is not writable; choose another path or fix its permissions")
    parent = p.parent
    if not parent.exists():
        if not create_parent:
            raise OutputPathError(f"{what} {p}: the folder {parent} does not exist; create it first "
                                  f"(mkdir -p {parent})")
        check_output_dir(parent, what)
        parent.mkdir(parents=True, exist_ok=True)
    elif not parent.is_dir():
        raise OutputPathError(f"{what} {p}: {parent} is a file, not a folder; choose another path")
    _probe_writable(parent, what, p)
    return p


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check that ``path`` is (or can be created as) a writable directory; nothing is created here."""
    if path is None or str(path).strip() == "":
        raise OutputPathError(f"{what} needs a directory path")
    p = Path(os.path.expanduser(os.fspath(path)))
    root = _in_pseudo_fs(p)
    if root is not None:
        raise OutputPathError(f"{what} {p} lies in {root}, a kernel pseudo-filesystem; choose a normal directory")
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{what} {p} is a file, not a directory; choose a directory path")
    existing = p
    while not existing.exists():  # the nearest existing ancestor must accept a new directory
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{what} {p}: {existing} is a file, not a folder; choose another path")
    _probe_writable(existing, what, p)
    return p


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


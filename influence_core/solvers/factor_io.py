"""Saving fitted curvature factors (K-FAC, EK-FAC, Arnoldi) as ``.npz`` files, never pickle, keyed by configuration.

A factor file holds named float arrays and one JSON header (a 0-d unicode array ``__header__``) with a ``format``
tag, the fitting configuration and its key. :func:`read_factor_file` opens it with ``allow_pickle=False`` and raises
:class:`FactorFileError` (a ``ValueError``) saying what is wrong for a missing, truncated, corrupt or foreign file.

The key of a configuration is the first 16 hex digits of the SHA-256 of its canonical JSON; :func:`fingerprint`
hashes the arrays (parameters, sample, data) the configuration depends on, so a file fitted on another model or
sample has another key and is refused on load.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from influence_core.io_safety import atomic_path
from influence_core.keys import content_key, digest

__all__ = [
    "FactorFileError",
    "config_key",
    "fingerprint",
    "write_factor_file",
    "read_factor_file",
    "factor_file_path",
    "save_path",
    "load_or_fit",
]


class FactorFileError(ValueError):
    """A factor file is missing, corrupt, of another format, or was fitted for another model/configuration."""


fingerprint = digest
"""SHA-256 (hex) of arrays/tensors and JSON-able values, in order (:func:`influence_core.keys.digest`)."""

FACTOR_KEY_DIGITS = 16
"""Length of the key in factor file names (kept: it names files already on disk)."""


def config_key(config: dict[str, Any]) -> str:
    """The content key of a configuration, naming its factor file (:func:`influence_core.keys.content_key`)."""
    return content_key(config, digits=FACTOR_KEY_DIGITS)


def write_factor_file(
    path: str | os.PathLike, format_tag: str, header: dict[str, Any], arrays: dict[str, np.ndarray]
) -> Path:
    """Write ``arrays`` and the JSON ``header`` (with ``format`` = ``format_tag``) to ``path`` atomically (a temporary
    file renamed into place, so an interrupted save never leaves a half-written file under the final name)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"factor files are .npz archives; give a path ending in .npz, got {str(path)!r}")
    if "__header__" in arrays:
        raise ValueError("'__header__' is reserved for the file header")
    from influence_core.io_safety import check_output_file

    check_output_file(path, "factor_file")  # no folder is created, no symlink followed
    text = json.dumps({**header, "format": format_tag}, sort_keys=True, default=str)
    with atomic_path(path) as tmp:  # tmp + fsync + rename
        np.savez(tmp, __header__=np.array(text), **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return path


def read_factor_file(
    path: str | os.PathLike, format_tag: str, required: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, arrays) of a factor file written by :func:`write_factor_file` with the same ``format_tag``.

    Raises :class:`FactorFileError` if the file is missing, not a readable ``.npz`` archive, has no or another
    header/format, lacks a ``required`` array, or holds non-finite values."""
    path = Path(path)
    if not path.exists():
        raise FactorFileError(f"no factor file at {str(path)!r}; fit the factors first and save them")
    if not path.is_file():
        raise FactorFileError(f"factor_file {str(path)!r} is not a regular file (a directory, FIFO or device)")
    if not zipfile.is_zipfile(path):  # else numpy would read the bytes as a pickle and advise allow_pickle=True
        raise FactorFileError(
            f"factor_file {str(path)!r} is not a readable factor file (not an .npz archive: "
            "corrupt or truncated, or another kind of file); delete it and fit the factors again, "
            "or give another factor_file"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as err:
        why = (
            "it holds Python objects, which are never loaded"
            if "pickle" in str(err).lower()
            else f"corrupt or truncated .npz: {type(err).__name__}"
        )
        raise FactorFileError(
            f"factor_file {str(path)!r} is not a readable factor file ({why}); delete it and fit the factors again"
        ) from None
    if "__header__" not in arrays:
        raise FactorFileError(
            f"{str(path)!r} is an .npz archive but not a factor file (no header); it was not written by influence_core"
        )
    try:
        header = json.loads(str(arrays.pop("__header__")))
    except (json.JSONDecodeError, TypeError) as err:
        raise FactorFileError(f"{str(path)!r} has a corrupt header ({err}); fit the factors again") from err
    if not isinstance(header, dict) or header.get("format") != format_tag:
        found = header.get("format") if isinstance(header, dict) else None
        raise FactorFileError(
            f"{str(path)!r} holds {found!r} data, not {format_tag!r}; load it with the class that wrote it"
        )
    missing = [k for k in required if k not in arrays]
    if missing:
        raise FactorFileError(f"{str(path)!r} lacks the arrays {missing}; the file is incomplete, fit again")
    for k, v in arrays.items():
        if not np.issubdtype(v.dtype, np.number):
            raise FactorFileError(f"{str(path)!r}: array {k!r} is not numeric (dtype {v.dtype})")
        if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
            raise FactorFileError(f"{str(path)!r}: array {k!r} contains NaN or inf; the file is corrupt, fit again")
    return header, arrays


def check_fitted_for(path: Any, config: dict[str, Any], objective: Any, what: str) -> None:
    """Refuse a factor file fitted for another parameter layout, other parameter values or another weight decay
    than ``objective``'s; ``what`` names what to fit again (e.g. "the factors")."""
    layout = [[n, list(s)] for n, s in zip(objective.names, objective.shapes)]
    if layout != config["layout"]:
        raise FactorFileError(f"{str(path)!r} was fitted for a model with another parameter layout")
    if fingerprint(objective.theta) != config["model"]:
        raise FactorFileError(
            f"{str(path)!r} was fitted for other parameter values (another training run "
            f"or checkpoint); fit {what} for this model"
        )
    if float(objective.weight_decay) != float(config["weight_decay"]):
        raise FactorFileError(
            f"{str(path)!r} was fitted with weight decay {config['weight_decay']}, this "
            f"objective has {objective.weight_decay}"
        )


def factor_file_path(factor_file: str | os.PathLike | None, stem: str) -> Path | None:
    """Where a solver's factors live: None (not saved); a path ending in ``.npz`` (that file); or a directory
    (``<dir>/<stem>.npz``, one file per configuration, ``stem`` = ``<method>-<key>``)."""
    if factor_file is None:
        return None
    if not isinstance(factor_file, (str, os.PathLike)) or not str(factor_file).strip():
        raise ValueError(f"factor_file must be a path (a .npz file or a directory), got {factor_file!r}")
    path = Path(os.path.expanduser(os.fspath(factor_file)))
    return path if path.suffix == ".npz" else path / f"{stem}.npz"


def save_path(path: str | os.PathLike, stem: str) -> Path:
    """The file a ``save(path)`` writes: ``path`` itself (``.npz``) or ``<path>/<stem>.npz`` for a directory, which
    is created when missing (only it: its parent must exist, so a typo never creates a tree of folders)."""
    path = Path(os.path.expanduser(os.fspath(path)))
    if path.suffix == ".npz":
        return path
    if not path.is_dir():
        if not path.parent.is_dir():
            raise FactorFileError(
                f"factor_file {str(path)!r}: the folder {str(path.parent)!r} does not exist; create it first"
            )
        from influence_core.io_safety import check_output_dir

        check_output_dir(path, "factor_file")
        path.mkdir()
    return path / f"{stem}.npz"


def load_or_fit(
    factor_file: str | os.PathLike | None,
    stem: str,
    config: dict[str, Any],
    load: Callable[[Path], Any],
    fit: Callable[[], Any],
) -> tuple[Any, dict[str, Any]]:
    """Reuse the factors saved at ``factor_file`` (see :func:`factor_file_path`) when the file exists, else fit
    them and save them there (the path is checked before fitting). A file holding another configuration's
    factors (another sample, Fisher type, rank, ...) is refused with :class:`FactorFileError`, never overwritten.
    Returns (inverse, {"factor_file": path or None, "loaded": bool})."""
    from influence_core.io_safety import check_output_dir, check_output_file

    path = factor_file_path(factor_file, stem)
    if path is not None and path.is_file():
        inverse = load(path)
        if inverse.key != config_key(config):
            differs = sorted(k for k in set(config) | set(inverse.config) if config.get(k) != inverse.config.get(k))
            raise FactorFileError(
                f"{str(path)!r} holds factors of another configuration (differs in {differs}); "
                "pass another factor_file, a directory (one file per configuration), or delete "
                "the file to fit again"
            )
        return inverse, {"factor_file": str(path), "loaded": True}
    directory = path is not None and path.suffix == ".npz" and Path(os.fspath(factor_file)).suffix != ".npz"
    if path is not None:
        if directory:  # a directory named by the user is made (its parent must exist); nothing else is
            if not path.parent.parent.is_dir():
                raise FactorFileError(
                    f"factor_file {str(path.parent)!r}: the folder {str(path.parent.parent)!r} "
                    "does not exist; create it first"
                )
            check_output_dir(path.parent, "factor_file")
        else:
            check_output_file(path, "factor_file")
    inverse = fit()
    if path is not None:
        if directory:
            path.parent.mkdir(exist_ok=True)  # the directory the user named (checked above); nothing above it
        inverse.save(path)
    return inverse, {"factor_file": None if path is None else str(path), "loaded": False}

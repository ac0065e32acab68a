"""Hand-made hostile ``.npz`` files for the bad-input tests (shared by the API and app test modules)."""

from __future__ import annotations

import io
import zipfile

import numpy as np


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def zeros_bomb(shape: tuple[int, ...], dtype: str = "<f4", extra: dict | None = None) -> bytes:
    """A valid, honest ``.npz`` whose ``X_train`` is an all-zero array of ``shape`` (deflated: ~1 MB per GB).
    Written by streaming zeros through zlib, so building it never holds the array in memory."""
    buf = io.BytesIO()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": tuple(shape)}
    )
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("X_train.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            chunk = bytes(1 << 22)
            left = nbytes
            while left:
                member.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
        for key, value in (extra or {"y_train": np.zeros(shape[0], dtype=np.int64)}).items():
            arr = io.BytesIO()
            np.save(arr, value)
            z.writestr(f"{key}.npy", arr.getvalue())
    return buf.getvalue()


def lying_header(declared: tuple[int, ...]) -> bytes:
    """An ``.npz`` whose X_train header declares ``declared`` but whose data are 10 floats (a forged member)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": declared})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("X_train.npy", header.getvalue() + np.zeros(10, np.float32).tobytes())
        arr = io.BytesIO()
        np.save(arr, np.zeros(declared[0], dtype=np.int64))
        z.writestr("y_train.npy", arr.getvalue())
    return buf.getvalue()

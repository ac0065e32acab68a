"""Content keys: one SHA-256 scheme for everything the package names or checks by content.

:func:`digest` hashes arrays/tensors (dtype, shape and bytes) and JSON-able values (canonical JSON: sorted keys,
``str`` for anything else), in order; :func:`content_key` is its first :data:`KEY_DIGITS` hex digits. Keys that
already name files on disk keep the length they were written with, so existing files stay valid: factor files
(``solvers.factor_io.config_key``, 16 digits) and the LDS retrain cache (``evaluation.lds.cache_key``, 24 digits).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

__all__ = ["KEY_DIGITS", "digest", "content_key"]

KEY_DIGITS = 32
"""Hex digits of a content key (128 bits)."""


def digest(*parts: Any) -> str:
    """SHA-256 (64 hex digits) of arrays/tensors (dtype, shape and bytes) and JSON-able values, in order."""
    h = hashlib.sha256()
    for part in parts:
        if hasattr(part, "detach") and hasattr(part, "cpu"):  # a torch tensor (torch is not imported here)
            part = part.detach().cpu().contiguous().numpy()
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).data)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def content_key(*parts: Any, digits: int = KEY_DIGITS) -> str:
    """The first ``digits`` hex digits of :func:`digest` of ``parts``."""
    return digest(*parts)[:digits]

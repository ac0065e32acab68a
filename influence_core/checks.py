"""Checks of numeric options where they enter the engine: type, range and finiteness, with the bound in the message.

Nothing is rounded or truncated: ``2.5`` is not an integer (never ``2``), ``True`` is not a number, a string is not a
number, and NaN/inf are refused unless a caller allows them. Every message names the option, what was wrong and the
allowed range, so it can be shown to the user as it is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["check_int", "check_real", "check_seed", "check_model_storage", "MAX_SEED"]

MAX_SEED = 2**32 - 1
"""Seeds go to numpy, scikit-learn and torch alike; numpy's and scikit-learn's take 0 .. 2**32 − 1."""


def _num(x: Any) -> str:
    return str(x) if isinstance(x, (int, np.integer)) else f"{x:g}"


def _range(low: Any, high: Any, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_num(low)}"
    return f"{'<' if high_open else '<='} {_num(high)}" if high is not None else ""


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; floats (even 3.0), booleans and strings are refused."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        where = "" if low is None and high is None else " " + _range(low, high)
        raise ValueError(f"{name} must be an integer{where}, got {_shown(value)}")
    return int(value)


def check_real(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the range (``low_open``/``high_open``: the bound itself excluded)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if ok:
        v = float(value)
        ok = (
            math.isfinite(v)
            and not (low is not None and (v < low or (low_open and v == low)))
            and not (high is not None and (v > high or (high_open and v == high)))
        )
    if not ok:
        raise ValueError(
            f"{name} must be a finite number {_range(low, high, low_open, high_open)}".rstrip()
            + f", got {_shown(value)}"
        )
    return float(value)


def check_seed(name: str, value: Any) -> int:
    """A seed: an integer in [0, 2**32 − 1] (what numpy, scikit-learn and torch all accept)."""
    return check_int(name, value, 0, MAX_SEED)


def _shown(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return text if isinstance(value, (int, float, np.number, bool)) else f"{text} ({type(value).__name__})"


def check_model_storage(model: Any) -> None:
    """A model whose parameters hold values in a precision the solvers can use: not on the ``meta`` device, not
    float16/bfloat16 (their 3 significant digits make curvature solves meaningless, whatever the damping)."""
    import torch

    for name, p in model.named_parameters():
        if p.is_meta:
            raise ValueError(
                f"the model's parameter {name!r} is on the 'meta' device and holds no values; "
                "initialise or load the weights on a real device first (e.g. model.to_empty(device="
                "'cpu') then model.load_state_dict(...))"
            )
        if p.dtype in (torch.float16, torch.bfloat16):
            raise ValueError(
                f"the model's parameters are {str(p.dtype).replace('torch.', '')}; influence needs "
                "float32 or float64 (half precision is too coarse for curvature solves, whatever the "
                "damping): pass model.float()"
            )

"""``--solver-option KEY=VALUE`` (repeatable) for every command that chooses a solver: the registered solver's
options (e.g. ``fisher=empirical``, ``damping_rule=heuristic``, ``rank=100``, ``factor_file=factors/``), checked
against the solver's option names before any work."""

from __future__ import annotations

import argparse
import ast
from typing import Any

from influence_core.solvers.registry import SOLVER_REGISTRY, available_solvers


def add_solver_option_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--solver-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the chosen solver (repeatable), e.g. fisher=empirical, "
        "damping_rule=heuristic, rank=100, factor_file=DIR_OR_FILE.npz, tol=1e-6",
    )


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)  # numbers, True/False/None, quoted strings; never executes code
    except (ValueError, SyntaxError):
        return text  # a bare word or path


def parse_solver_options(items: list[str] | None, solver: str) -> dict[str, Any]:
    """{key: value} from ``KEY=VALUE`` strings; unknown keys for ``solver`` are refused with its option names."""
    if solver not in SOLVER_REGISTRY:
        raise ValueError(f"unknown solver {solver!r}; choose one of {available_solvers()}")
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--solver-option takes KEY=VALUE, got {item!r} (e.g. --solver-option fisher=empirical)")
        options[key] = _value(value.strip())
    known = SOLVER_REGISTRY[solver].options
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"solver {solver!r} takes no options {unknown}; its options are "
            f"{sorted(known) or 'none'} (--solver-option KEY=VALUE)"
        )
    return options

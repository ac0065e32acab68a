"""Command-line flags of :class:`~influence_core.config.InfluenceConfig`, generated from its fields so that every
command shows the same help and reads its defaults from one preset (``--preset``, then the flags given).

A flag left out is None in the parsed arguments and keeps the preset's value; :func:`config_from_args` builds the
configuration. The parser's own defaults are therefore never a second copy of the configuration's.
"""

from __future__ import annotations

import argparse
from typing import Any

from influence_core.cli.solver_options import add_solver_option_argument, parse_solver_options
from influence_core.config import PRESETS, InfluenceConfig, field_help

__all__ = ["add_config_arguments", "config_from_args", "CONFIG_FLAGS"]

CONFIG_FLAGS = {
    "curvature": "--curvature",
    "damping": "--damping",
    "solver": "--solver",
    "sampler": "--sampler",
    "m": "--m",
    "seed": "--sampler-seed",
}
"""Configuration field -> flag (``solver_options`` via ``--solver-option KEY=VALUE``)."""

_TYPES = {"damping": float, "m": int, "seed": int}


def add_config_arguments(
    parser: argparse.ArgumentParser, preset: str = "default", fields: tuple[str, ...] = tuple(CONFIG_FLAGS)
) -> None:
    """Add ``--preset`` and one flag per configuration field in ``fields`` (default None = the preset's value)."""
    base = InfluenceConfig.preset(preset)
    parser.add_argument(
        "--preset",
        default=preset,
        choices=list(PRESETS),
        help=f"named influence configuration the other flags override (default: {preset})",
    )
    for name in fields:
        shown = getattr(base, name)
        parser.add_argument(
            CONFIG_FLAGS[name],
            dest=name,
            type=_TYPES.get(name, str),
            default=None,
            help=f"{field_help(name)} (default: {'all' if shown is None else shown})",
        )
    add_solver_option_argument(parser)
    parser.set_defaults(_config_fields=tuple(fields))


def config_from_args(args: argparse.Namespace, **extra_options: Any) -> InfluenceConfig:
    """The preset ``args.preset`` with the flags given (not None) applied; ``--solver-option`` items and
    ``extra_options`` (non-None values) are merged over the solver's options."""
    base = InfluenceConfig.preset(args.preset)
    changes = {
        name: getattr(args, name)
        for name in getattr(args, "_config_fields", CONFIG_FLAGS)
        if getattr(args, name, None) is not None
    }
    config = base.replace(**changes) if changes else base
    options = {k: v for k, v in extra_options.items() if v is not None}
    options.update(parse_solver_options(getattr(args, "solver_option", None), config.solver))
    return config.replace(solver_options={**config.solver_options, **options}) if options else config

"""Command line: ``python -m influence_core COMMAND ...``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; this file only
wires them together (add a command by adding a line to ``COMMANDS``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "influence": ("influence_core.commands.influence", "influence of training points on chosen test points"),
    "validate": ("influence_core.commands.validate", "leave-one-out retraining check on logistic regression"),
    "faithfulness": ("influence_core.faithfulness", "sampler faithfulness study against the full-data influence"),
    "removal": ("influence_core.removal_study", "class-removal experiment: samplers x m x seeds x classes"),
    "lds": ("influence_core.commands.lds", "linear datamodeling score: attributions vs retraining on subsets"),
    "bench": ("influence_core.bench", "benchmarks: query (vs forward+backward), compare (vs pyDVL), scale"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m influence_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            if exc.name and exc.name.startswith(module.rsplit(".", 1)[0]) and exc.name == module:
                continue  # command not installed in this checkout
            raise
        mod.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
        sub.choices[name].set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, RuntimeError) as exc:  # bad input and solver failures: a clear message, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

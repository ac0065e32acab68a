"""Command line: ``python -m influence_core COMMAND ...``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; this file only
wires them together (add a command by adding a line to ``COMMANDS``). A command's module (and torch with it) is
imported only when that command runs, so ``python -m influence_core --help`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "influence": ("influence_core.cli.influence", "influence of training points on chosen test points"),
    "validate": ("influence_core.cli.validate", "leave-one-out retraining check on logistic regression"),
    "faithfulness": (
        "influence_core.cli.faithfulness",
        "sampler faithfulness study against the full-data influence",
    ),
    "removal": ("influence_core.cli.removal", "class-removal experiment: samplers x m x seeds x classes"),
    "lds": ("influence_core.cli.lds", "linear datamodeling score: attributions vs retraining on subsets"),
    "bench": (
        "influence_core.bench",
        "benchmarks: query (vs forward+backward), compare (vs pyDVL), scale, kfac-compare (vs Kronfluence)",
    ),
}

MAX_MESSAGE_CHARS = 2000
"""Error messages are cut to this length (a message must never print a whole array)."""


def _chosen_command(argv: list[str]) -> str | None:
    """The first positional argument, if it names a command (options of the top-level parser take no values)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported and adds its arguments (all of them when it is "all")."""
    parser = argparse.ArgumentParser(prog="python -m influence_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command in (name, "all"):
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def _say(message: str) -> None:
    message = str(message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + " ..."
    print(f"error: {message}", file=sys.stderr)


def _resume_hint(args: argparse.Namespace) -> str:
    """How to continue after an interruption: commands writing a resumable score file name --resume."""
    if getattr(args, "out", None) and hasattr(args, "resume"):
        return f"; the finished blocks are saved in {args.out}: rerun the same command with --resume to continue"
    return ""


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failures that the engine explains in its message (bad input, a solver or training that failed and says why,
    a lost cluster): one ``error:`` line, no traceback. Anything else is a bug and keeps its traceback."""
    from influence_core.bench.common import MissingExtraError
    from influence_core.influence.calculator import NotFittedError
    from influence_core.influence.executors import ClusterLostError, SchedulerUnreachableError
    from influence_core.models.training import TrainingDivergedError
    from influence_core.solvers.base import SolverError

    return (
        ValueError,
        SolverError,
        NotFittedError,
        TrainingDivergedError,
        ClusterLostError,
        SchedulerUnreachableError,
        MissingExtraError,
    )


def main(argv: list[str] | None = None) -> int:
    """Run a command. Exit codes: 0 done, 2 bad input or failed computation (one ``error:`` line on stderr),
    1 out of memory or an operating-system error, 130 interrupted (Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_chosen_command(argv)).parse_args(argv)
    expected = _expected_errors()
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except expected as exc:
        _say(f"{exc}{_resume_hint(args) if _is_cluster_loss(exc) else ''}")
        return 2
    except MemoryError:
        _say(
            "out of memory; use smaller chunks (--chunk-size, --test-chunk-size), fewer test points or a smaller "
            "dataset"
        )
        return 1
    except OSError as exc:  # disk full, permission changed during the run, ...
        _say(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return 1


def _is_cluster_loss(exc: BaseException) -> bool:
    from influence_core.influence.executors import ClusterLostError

    return isinstance(exc, ClusterLostError) and "--resume" not in str(exc)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

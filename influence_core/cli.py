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


MAX_MESSAGE_CHARS = 2000
"""Error messages are cut to this length (a message must never print a whole array)."""


def _say(message: str) -> None:
    message = str(message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + " ..."
    print(f"error: {message}", file=sys.stderr)


def _resume_hint(args: argparse.Namespace) -> str:
    """How to continue after an interruption: commands writing a resumable score file name --resume."""
    if getattr(args, "out", None) and hasattr(args, "resume"):
        return (f"; the finished blocks are saved in {args.out}: rerun the same command with --resume to continue")
    return ""


def main(argv: list[str] | None = None) -> int:
    """Run a command. Exit codes: 0 done, 2 bad input or failed computation (one ``error:`` line on stderr),
    1 out of memory or an operating-system error, 130 interrupted (Ctrl-C)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError) as exc:  # bad input and solver failures: a clear message, no traceback
        _say(f"{exc}{_resume_hint(args) if _is_cluster_loss(exc) else ''}")
        return 2
    except MemoryError:
        _say("out of memory; use smaller chunks (--chunk-size, --test-chunk-size), fewer test points or a smaller "
             "dataset")
        return 1
    except OSError as exc:  # disk full, permission changed during the run, ...
        _say(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return 1


def _is_cluster_loss(exc: BaseException) -> bool:
    from .parallel import ClusterLostError

    return isinstance(exc, ClusterLostError) and "--resume" not in str(exc)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

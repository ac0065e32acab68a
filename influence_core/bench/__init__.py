"""``python -m influence_core bench {query,compare,scale,kfac-compare}``: benchmarks that print a table and, with
``--out``, write Markdown/JSON reports (docs/BENCHMARKS.md is written from them).

- ``query``: one influence query (one test point against all training points) as a ratio to one forward+backward
  pass over the training set, per solver, split into iHVP and scoring (:mod:`influence_core.bench.query`).
- ``compare``: our exact/CG/LiSSA against pyDVL's DirectInfluence/CgInfluence/LissaInfluence: rank correlation of
  the scores and time at equal accuracy (:mod:`influence_core.bench.compare`; needs the optional ``compare`` extra).
- ``scale``: scoring time and peak memory as n_train and n_test grow; sequential vs Dask
  (:mod:`influence_core.bench.scale`).
- ``kfac-compare``: our K-FAC/EK-FAC/Arnoldi against the exact Gauss-Newton influence, Kronfluence's ekfac and
  pyDVL's EkfacInfluence/ArnoldiInfluence, each library in its own environment
  (:mod:`influence_core.bench.kfac_compare`; ``--kronfluence-python``, ``--pydvl-python``).

Every timing run should hold ``/tmp/influence-bench.lock`` (``flock /tmp/influence-bench.lock python -m ...``) so
that benchmarks on a shared machine do not overlap.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "query": ("influence_core.bench.query", "influence query time / forward+backward time, per solver"),
    "compare": (
        "influence_core.bench.compare",
        "our exact/CG/LiSSA vs pyDVL: rank correlation, time at equal accuracy",
    ),
    "scale": (
        "influence_core.bench.scale",
        "scoring time and peak memory as n_train and n_test grow; sequential vs Dask",
    ),
    "resnet": (
        "influence_core.bench.resnet",
        "ResNet-18 on mnist5k through the public API: query, class removal "
        "(CG, LiSSA), samplers x m: time and peak memory",
    ),
    "kfac-compare": (
        "influence_core.bench.kfac_compare",
        "our K-FAC/EK-FAC/Arnoldi vs exact, Kronfluence and pyDVL: rank correlation, fit and query time",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (module, help_text) in SUBCOMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(
            name,
            help=help_text,
            description=(mod.__doc__ or help_text).strip().splitlines()[0],
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_bench_run=mod.run)


def run(args: argparse.Namespace) -> int:
    return int(args._bench_run(args) or 0)

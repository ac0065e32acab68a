"""``python -m influence_core removal``: the class-removal study (:mod:`influence_core.studies.removal`), samplers ×
m × seeds × removed classes, or (``--report``) the Markdown report of finished runs.

The solve's flags (``--solver``, ``--damping``, ``--curvature``, ``--tol``, ``--max-iter``, ``--solver-option``)
default to the ``"study"`` preset of :class:`~influence_core.config.InfluenceConfig`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from influence_core.cli.config_args import add_config_arguments, config_from_args
from influence_core.config import InfluenceConfig
from influence_core.data.datasets import available_datasets
from influence_core.io_safety import check_output_dir, check_output_file
from influence_core.models.zoo import ARCHITECTURES
from influence_core.sampling.samplers import available_samplers
from influence_core.studies import removal as study

PRESET = "study"
_GRID = study.RemovalStudyConfig(out="")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    preset = InfluenceConfig.preset(PRESET)
    parser.add_argument("--dataset", default="digits", help=f"one of {available_datasets()} (npz needs --path)")
    parser.add_argument("--path", help="path of a .npz file when --dataset npz")
    parser.add_argument("--arch", default="mlp", choices=ARCHITECTURES)
    parser.add_argument("--train-seed", type=int, default=0, help="seed of the split and of the training")
    parser.add_argument("--epochs", type=int, default=None, help="Adam epochs of the training (default: training's)")
    parser.add_argument(
        "--samplers",
        nargs="+",
        default=list(_GRID.samplers),
        help=f"Hessian samplers to compare, from {available_samplers()}; 'random' is the baseline",
    )
    parser.add_argument("--m", nargs="+", type=int, default=list(_GRID.m), help="Hessian sample sizes")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(_GRID.seeds), help="sampler seeds")
    parser.add_argument("--classes", nargs="+", type=int, default=None, help="classes to remove (default: all)")
    add_config_arguments(parser, PRESET, fields=("curvature", "damping", "solver"))
    parser.add_argument(
        "--tol",
        type=float,
        default=None,
        help=f"relative residual at which CG/LiSSA stop (default: {preset.solver_options['tol']:g})",
    )
    parser.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help=f"iteration budget of CG/LiSSA (default: {preset.solver_options['max_iter']})",
    )
    parser.add_argument(
        "--alphas",
        nargs="+",
        type=float,
        default=None,
        help="step sizes α of the path (default: 2^(k/4) from 1/8 to 128)",
    )
    parser.add_argument(
        "--chunk-size",
        "--hessian-batch",
        dest="chunk_size",
        type=int,
        default=None,
        help="points per vectorised chunk of the Hessian sample (default: the whole sample; "
        "--hessian-batch is its former name)",
    )
    parser.add_argument(
        "--memory-configs",
        type=int,
        default=_GRID.memory_configs,
        help="(class, seed) configurations per (sampler, m) whose solve's peak memory is measured "
        "in a fresh process (0: skip)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip retraining without each class")
    parser.add_argument("--no-full", action="store_true", help="skip the whole-pool Hessian reference")
    parser.add_argument(
        "--threads", type=int, default=_GRID.threads, help="torch threads (timings are per thread count)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny grid for tests and smoke runs (for grid options not given): samplers random+logit, "
        "m 32 64, seeds 0 1, class 0, 5 epochs, one memory measurement per (sampler, m)",
    )
    parser.add_argument("--out", help="directory for the run's CSV/JSON/Markdown/plots")
    parser.add_argument(
        "--embed-plotlyjs",
        action="store_true",
        help="embed plotly.js in the HTML plots (offline viewing) instead of loading it from the CDN when opened",
    )
    parser.add_argument(
        "--report", help="write the Markdown report of finished runs (--runs) to this file; runs nothing"
    )
    parser.add_argument("--runs", nargs="+", default=None, help="run directories for --report")
    parser.add_argument(
        "--lds",
        nargs="+",
        default=None,
        metavar="JSON",
        help="LDS study results (lds study --out, *.json) summarised in the --report: which sampler wins by LDS",
    )


def study_config(args: argparse.Namespace) -> study.RemovalStudyConfig:
    """The study's configuration from parsed arguments (``--quick`` fills the grid options left at default)."""
    if args.quick:  # the small grid, for every grid option left at its default
        defaults = _defaults()
        for key, value in study.QUICK.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    base = config_from_args(args)
    iterative = base.solver in ("cg", "lissa")
    preset = InfluenceConfig.preset(PRESET).solver_options
    extra = (
        {
            "tol": args.tol if args.tol is not None else preset["tol"],
            "max_iter": args.max_iter if args.max_iter is not None else preset["max_iter"],
        }
        if iterative
        else {}
    )
    influence = base.replace(solver_options={**base.solver_options, **extra}) if extra else base
    return study.RemovalStudyConfig(
        out=args.out,
        dataset=args.dataset,
        path=args.path,
        arch=args.arch,
        train_seed=args.train_seed,
        epochs=args.epochs,
        samplers=args.samplers,
        m=args.m,
        seeds=args.seeds,
        classes=args.classes,
        influence=influence,
        alphas=args.alphas,
        chunk_size=args.chunk_size,
        memory_configs=args.memory_configs,
        reference=not args.no_reference,
        full=not args.no_full,
        threads=args.threads,
        embed_plotlyjs=args.embed_plotlyjs,
    )


def run(args: argparse.Namespace) -> int:
    if args.report:
        if not args.runs:
            raise ValueError("--report needs --runs DIR [DIR ...]: directories written by earlier runs with --out")
        check_output_file(args.report, "--report")  # its folder must exist: none is created
        study.write_report([Path(r) for r in args.runs], Path(args.report), [Path(f) for f in args.lds or []])
        print(f"wrote {args.report}")
        return 0
    if not args.out:
        raise ValueError("--out DIR is required: the directory where the run's tables and plots go")
    check_output_dir(args.out, "--out")  # before the study, not after it
    config = study_config(args)  # bad settings refused before training
    threads = torch.get_num_threads()
    torch.set_num_threads(int(config.threads))
    try:
        record = study.run_study(config)
    finally:
        torch.set_num_threads(threads)
    print(
        f"wrote {config.out}/results.csv, memory.csv, results.json, samples.json, summary.md and plots "
        f"({record['seconds']['total']:.0f} s)"
    )
    print(study.format_savings_text(record))
    return 0


def _defaults() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args([]))

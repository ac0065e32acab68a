"""``python -m influence_core faithfulness``: the sampler faithfulness study
(:mod:`influence_core.studies.faithfulness`) from the command line, and the study configuration that ``lds study``
shares with it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from influence_core.cli.solver_options import add_solver_option_argument
from influence_core.curvature.objective import CURVATURE_MODES
from influence_core.data.datasets import available_datasets
from influence_core.influence.executors import get_executor
from influence_core.models.zoo import ARCHITECTURES
from influence_core.sampling.samplers import available_samplers
from influence_core.studies.faithfulness import (
    DEFAULT_MS,
    LEGACY_SOLVER_NAMES,
    StudyConfig,
    check_study_outputs,
    markdown,
    reference_solvers,
    run_study,
    subset_solvers,
    write_outputs,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m influence_core faithfulness``."""
    d = StudyConfig.__dataclass_fields__
    parser.add_argument("--dataset", default="digits", help=f"one of {available_datasets()} (npz needs --path)")
    parser.add_argument("--path", help="path of a .npz file when --dataset npz")
    parser.add_argument("--arch", default="mlp", choices=ARCHITECTURES)
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split and of training")
    parser.add_argument(
        "--samplers",
        nargs="+",
        default=None,
        help=f"Hessian samplers to compare (default: all registered, {available_samplers()})",
    )
    parser.add_argument("--m", type=int, nargs="+", default=list(DEFAULT_MS), help="Hessian sample sizes")
    parser.add_argument("--seeds", type=int, default=d["n_seeds"].default, help="sampler seeds 0..N-1 per (sampler, m)")
    parser.add_argument(
        "--test-points",
        type=int,
        default=d["n_test_points"].default,
        help="number of test points scored (drawn once with --test-seed)",
    )
    parser.add_argument("--test-seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=d["k"].default, help="size of the top-k helpful/harmful sets")
    parser.add_argument(
        "--damping",
        type=float,
        default=d["damping"].default,
        help="δ added to the Hessian, for the subsets and the reference alike",
    )
    parser.add_argument(
        "--curvature",
        default=d["curvature"].default,
        choices=CURVATURE_MODES,
        help="gauss_newton (PSD; default) or hessian (indefinite on small samples of an MLP)",
    )
    parser.add_argument(
        "--solver",
        default="auto",
        choices=[*subset_solvers(), *LEGACY_SOLVER_NAMES],
        help="subset solver: auto = low_rank (exact Woodbury) for gauss_newton, else exact (p<=20000) or cg "
        "(woodbury: the former name of low_rank)",
    )
    parser.add_argument(
        "--reference-solver",
        default="auto",
        choices=reference_solvers(),
        help="auto = exact for p <= 20000, else CG; or any registered solver (e.g. ekfac)",
    )
    add_solver_option_argument(parser)
    parser.add_argument("--tol", type=float, default=d["tol"].default, help="relative residual of subset CG/LiSSA")
    parser.add_argument(
        "--reference-tol", type=float, default=d["reference_tol"].default, help="relative residual of the reference CG"
    )
    parser.add_argument("--max-iter", type=int, default=d["max_iter"].default, help="iteration cap of CG/LiSSA")
    parser.add_argument(
        "--hessian-reference", action="store_true", help="also score against the exact full-data Hessian (p <= 20000)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the training epochs")
    parser.add_argument("--hidden", type=int, nargs="+", default=None, help="override the MLP hidden widths")
    parser.add_argument("--chunk-size", type=int, default=d["chunk_size"].default)
    parser.add_argument(
        "--gram-budget-mb",
        type=float,
        default=d["gram_budget_mb"].default,
        help="memory allowed for the precomputed Gauss-Newton Gram matrix (0 = per subset)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        help="score in blocks on a local Dask cluster of N single-threaded workers (needs .[dask])",
    )
    where.add_argument(
        "--scheduler", default=None, help="score in blocks on a running Dask scheduler, e.g. tcp://host:8786"
    )
    parser.add_argument(
        "--train-chunk-size",
        type=int,
        default=None,
        help="training points per scoring block with --workers/--scheduler (bounds memory)",
    )
    parser.add_argument("--out", default="docs/faithfulness", help="output directory")
    parser.add_argument("--name", default=None, help="file name stem (default: DATASET_ARCH)")
    parser.add_argument(
        "--plotlyjs",
        default="inline",
        choices=("inline", "cdn"),
        help="embed plotly.js in the HTML (works offline) or load it from the CDN (small file)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")


def _cli_solver_options(args: argparse.Namespace) -> dict[str, Any]:
    from influence_core.cli.solver_options import parse_solver_options

    items = getattr(args, "solver_option", None)
    if items and args.solver == "auto":
        raise ValueError(f"--solver-option needs a registered --solver (e.g. ekfac), not {args.solver!r}")
    return parse_solver_options(items, args.solver) if items else {}


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Training overrides from ``--epochs``, ``--hidden`` and (where the command has it) ``--dtype``, which defaults
    to float64 for logistic regression."""
    settings: dict[str, Any] = {}
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.hidden is not None:
        settings["hidden"] = tuple(args.hidden)
    if hasattr(args, "dtype"):
        dtype = args.dtype or ("float64" if args.arch == "logreg" else None)
        if dtype:
            settings["dtype"] = dtype
    return settings


def dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    """``load_dataset`` options: the file of ``--dataset npz`` (required there)."""
    if args.dataset == "npz" and not args.path:
        raise ValueError("--dataset npz needs --path FILE.npz")
    return {"path": args.path} if args.dataset == "npz" else {}


def study_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`StudyConfig` fields that ``faithfulness`` and ``lds study`` read from the same arguments: the data,
    the model, the samplers and sample sizes, the test points and the algorithm."""
    options = dataset_options(args)
    return dict(
        dataset=args.dataset,
        arch=args.arch,
        seed=args.seed,
        samplers=tuple(args.samplers or ()),
        ms=tuple(args.m),
        n_test_points=args.test_points,
        test_seed=args.test_seed,
        damping=args.damping,
        curvature=args.curvature,
        solver=args.solver,
        reference_solver=args.reference_solver,
        solver_options=_cli_solver_options(args),
        dataset_options=options,
        train_settings=train_settings(args),
    )


def run(args: argparse.Namespace) -> int:
    """Build the config from ``args``, run the study, write the outputs and print the Markdown table."""
    fields = study_fields(args)
    name = f"{args.dataset}_{args.arch}" if args.name is None else args.name
    check_study_outputs(args.out, name)  # every output file, before the study, not after it
    config = StudyConfig(
        **fields,
        n_seeds=args.seeds,
        k=args.k,
        tol=args.tol,
        max_iter=args.max_iter,
        reference_tol=args.reference_tol,
        hessian_reference=args.hessian_reference,
        chunk_size=args.chunk_size,
        gram_budget_mb=args.gram_budget_mb,
    )

    def progress(fraction: float, message: str) -> None:
        print(f"[{fraction:5.1%}] {message}", file=sys.stderr, flush=True)

    if args.train_chunk_size is not None and args.train_chunk_size < 1:
        raise ValueError(f"--train-chunk-size must be a positive integer, got {args.train_chunk_size}")
    if args.workers is None and args.scheduler is None:
        result = run_study(config, progress=None if args.quiet else progress)
    else:
        with get_executor(workers=args.workers, scheduler=args.scheduler) as executor:
            result = run_study(
                config,
                progress=None if args.quiet else progress,
                executor=executor,
                train_chunk_size=args.train_chunk_size,
            )
    paths = write_outputs(result, args.out, args.name, args.plotlyjs)
    print(markdown(result))
    print(f"total {result.context['total_seconds']:.1f} s; wrote " + ", ".join(str(p) for p in paths.values()))
    return 0

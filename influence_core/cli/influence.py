"""``python -m influence_core influence``: train (or reuse) a model, draw a Hessian sample, and print the most
helpful and harmful training points for chosen test points (optionally saving the score matrix).

The influence settings (``--preset``, ``--solver``, ``--damping``, ``--curvature``, ``--sampler``, ``--m``,
``--solver-option``) are :class:`~influence_core.config.InfluenceConfig`'s fields, with its defaults."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from influence_core.cli.config_args import add_config_arguments, config_from_args
from influence_core.config import InfluenceConfig
from influence_core.data.datasets import available_datasets, load_dataset
from influence_core.influence.calculator import InfluenceCalculator, top_influences
from influence_core.influence.executors import Executor, get_executor
from influence_core.influence.scoring import manifest_path
from influence_core.io_safety import check_output_file, check_outputs
from influence_core.models.training import train_model
from influence_core.models.zoo import ARCHITECTURES
from influence_core.sampling.samplers import available_samplers
from influence_core.sampling.subsets import sample_hessian_subset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", help=f"one of {available_datasets()} (npz needs --path)")
    parser.add_argument("--path", help="path of a .npz file when --dataset npz")
    parser.add_argument("--arch", default="mlp", choices=ARCHITECTURES)
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the training and the sampler")
    parser.add_argument("--test-index", type=int, nargs="+", default=[0], help="test point(s) to explain")
    add_config_arguments(parser, "default", fields=("curvature", "damping", "solver", "sampler", "m"))
    parser.add_argument(
        "--params",
        default=None,
        metavar="NAMES",
        help="parameters influence is computed over: 'last_layer' or comma-separated parameter "
        "names/prefixes (e.g. head.weight,head.bias); default: all",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=256,
        help="training points per vectorised chunk and per score block (memory bound)",
    )
    parser.add_argument(
        "--test-chunk-size", type=int, default=128, help="test points per iHVP batch and per score block (memory bound)"
    )
    parser.add_argument("--top", type=int, default=5, help="how many helpful/harmful points to list")
    parser.add_argument("--out", help="write the (n_test, n_train) score matrix to this .npy file, block by block")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="with --out: continue an interrupted run of the same problem instead of starting afresh",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        help="score on a local Dask cluster of N single-threaded worker processes (needs the dask extra)",
    )
    where.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="score on a running Dask cluster, e.g. tcp://host:8786 (start it with 'dask scheduler' "
        "and 'dask worker ADDRESS --nthreads 1')",
    )
    parser.add_argument("--quiet", action="store_true", help="do not show scoring progress on stderr")


def _check(args: argparse.Namespace) -> None:
    """Fail on impossible settings before any training happens."""
    if args.dataset == "npz" and not args.path:
        raise ValueError("--dataset npz needs --path FILE.npz (the arrays X_train, y_train, ...)")
    if args.sampler is not None and args.sampler not in available_samplers():
        raise ValueError(f"unknown sampler {args.sampler!r}; choose one of {available_samplers()}")
    if args.damping is not None and not (args.damping >= 0 and math.isfinite(args.damping)):
        raise ValueError(f"--damping must be a finite number >= 0, got {args.damping}")
    if args.top < 1:
        raise ValueError(f"--top must be >= 1 (points listed per kind), got {args.top}")
    if args.m is not None and args.m < 1:
        raise ValueError(f"--m must be >= 1, got {args.m}")
    if args.sampler is not None and args.m is None and _config(args).full:
        raise ValueError(
            f"--sampler {args.sampler} needs --m N, the Hessian sample size (without --m the whole "
            "training set is used)"
        )
    if args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.test_chunk_size < 1:
        raise ValueError(f"--test-chunk-size must be >= 1, got {args.test_chunk_size}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1 (local Dask worker processes), got {args.workers}")
    if args.resume and not args.out:
        raise ValueError("--resume needs --out (the .npy file of the interrupted run)")
    if args.out:
        if not args.out.endswith(".npy"):
            raise ValueError(
                f"--out must be a .npy file path (the score matrix), got {args.out}; e.g. "
                f"{args.out.rstrip('/')}/scores.npy or {args.out.rstrip('/')}.npy"
            )
        check_output_file(args.out, "--out")
        if args.resume and os.path.exists(args.out) and not manifest_path(args.out).is_file():
            raise ValueError(
                f"--out {args.out} exists but is not a score file of this package (no manifest "
                f"{manifest_path(args.out).name}), so --resume neither continues nor overwrites it; "
                "choose another --out, or run without --resume to replace it"
            )
        check_outputs(
            files={"--out (its manifest)": manifest_path(args.out)} if os.path.lexists(manifest_path(args.out)) else {}
        )
    _config(args)


def _config(args: argparse.Namespace) -> InfluenceConfig:
    """The influence settings: ``--preset`` with the flags given; the sampler's seed is ``--seed``."""
    return config_from_args(args).replace(seed=args.seed)


def _progress_printer(stream: Any = None) -> Callable[[float, str], None]:
    """Show scoring progress on stderr: a rewritten line on a terminal, else one line per 10%."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    last = [-1]

    def show(fraction: float, message: str) -> None:
        if tty:
            stream.write(f"\r[{fraction:4.0%}] {message}\x1b[K" + ("\n" if fraction >= 1 else ""))
            stream.flush()
        elif int(fraction * 10) > last[0]:
            last[0] = int(fraction * 10)
            print(f"[{fraction:4.0%}] {message}", file=stream, flush=True)

    return show


def run(args: argparse.Namespace) -> int:
    _check(args)
    with get_executor(workers=args.workers, scheduler=args.scheduler) as executor:  # an unreachable scheduler
        return _run(args, executor)  # fails here, before training


def _run(args: argparse.Namespace, executor: Executor) -> int:
    options = {"path": args.path} if args.dataset == "npz" else {}
    dataset = load_dataset(args.dataset, seed=args.seed, **options)
    test_idx = np.asarray(args.test_index)
    if test_idx.min() < 0 or test_idx.max() >= dataset.n_test:
        raise ValueError(f"--test-index must lie in [0, {dataset.n_test}) for {dataset.name}")
    config = _config(args)
    if not config.full and config.m > dataset.n_train:
        raise ValueError(
            f"--m {config.m} is larger than the {dataset.n_train} training points of {dataset.name}; "
            "choose a smaller Hessian sample"
        )
    model = train_model(dataset, args.arch, seed=args.seed)
    hessian = None
    if not config.full:
        hessian = sample_hessian_subset(
            model, dataset, config.sampler, config.m, seed=config.seed, **config.sampler_options
        )
    params = (
        None
        if not args.params
        else args.params
        if args.params == "last_layer"
        else [p.strip() for p in args.params.split(",") if p.strip()]
    )
    calc = InfluenceCalculator(model, dataset.X_train, dataset.y_train, chunk_size=args.chunk_size, params=params)
    calc.fit(hessian, config=config)
    start = time.perf_counter()
    scores = calc.scores(
        dataset.X_test[test_idx],
        dataset.y_test[test_idx],
        None,
        None if args.quiet else _progress_printer(),
        test_chunk_size=args.test_chunk_size,
        train_chunk_size=args.chunk_size,
        executor=executor,
        out=args.out or None,
        resume=args.resume,
    )
    seconds = time.perf_counter() - start
    for row, t in zip(scores, test_idx):
        top = top_influences(row, args.top)
        print(f"test point {t} (label {dataset.class_names[dataset.y_test[t]]}):")
        for kind in ("helpful", "harmful"):
            items = ", ".join(
                f"{j} ({dataset.class_names[dataset.y_train[j]]}, {s:+.3g})"
                for j, s in zip(top[kind], top[f"{kind}_scores"])
            )
            print(f"  {kind}: {items}")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "torch_threads": torch.get_num_threads(),
                "solve": None if calc.last_solve is None else calc.last_solve.summary(),
                "scoring": calc.last_scoring.to_dict(),
                "params": calc.objective.names,
                "hessian_sample": None if hessian is None else {"sampler": config.sampler, "m": config.m},
                "config": config.to_dict(),
            }
        )
    )
    return 0

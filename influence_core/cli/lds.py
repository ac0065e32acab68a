"""``python -m influence_core lds score|study|ground-truth``: the linear datamodeling score against retraining.

``lds score`` scores one configuration (full-data influence and gradient dot always, plus a sampled Hessian with
``--sampler/--m`` and/or your own score matrix with ``--scores FILE.npy``); with ``--ground-truth NAME_OR_PATH
--scores FILE.npy`` it scores the matrix against a shipped ground-truth file instead, in seconds, without training or
retraining. ``lds study`` runs the sampler study (samplers × m × sampler seeds) scored by LDS next to the proxy
metrics. ``lds ground-truth NAME`` builds (or with ``--check`` regenerates and compares) a shipped ground-truth file
from the retrain cache, retraining what is missing. All print the noise ceiling.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from influence_core.cli.faithfulness import dataset_options, study_fields, train_settings
from influence_core.cli.solver_options import add_solver_option_argument, parse_solver_options
from influence_core.config import preset_values
from influence_core.data.datasets import available_datasets, load_dataset
from influence_core.evaluation.lds import OUTPUTS, RetrainPlan, default_cache_dir, retrain_outputs
from influence_core.influence.calculator import InfluenceCalculator
from influence_core.influence.executors import get_executor
from influence_core.io_safety import atomic_path, atomic_write, check_outputs, jsonable, load_array
from influence_core.models.training import train_model
from influence_core.models.zoo import ARCHITECTURES
from influence_core.sampling.samplers import available_samplers, draw_sample
from influence_core.sampling.subsets import sampler_inputs
from influence_core.studies.faithfulness import LEGACY_SOLVER_NAMES, StudyConfig, reference_solvers, subset_solvers
from influence_core.studies.lds import (
    _lds_record,
    baselines_markdown,
    check_study_outputs,
    full_data_scores,
    gradient_dot_scores,
    markdown,
    run_lds_study,
    write_outputs,
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", help=f"one of {available_datasets()} (npz needs --path)")
    p.add_argument("--path", default=None, help="path of a .npz file when --dataset npz")
    p.add_argument("--arch", default="mlp", choices=ARCHITECTURES)
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of the model's training")
    p.add_argument("--epochs", type=int, default=None, help="override the training epochs")
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="override the MLP hidden widths")
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=None,
        help="training dtype (default: float64 for logreg, which L-BFGS then trains to the optimum)",
    )
    p.add_argument("--test-points", type=int, default=100, help="test points scored (drawn with --test-seed)")
    p.add_argument("--test-seed", type=int, default=0)
    study = preset_values("study")
    p.add_argument(
        "--damping",
        type=float,
        default=study["damping"],
        help="δ of the influence solves (default: the study preset's)",
    )
    p.add_argument("--curvature", default=study["curvature"], choices=("gauss_newton", "hessian"))
    d = RetrainPlan()
    p.add_argument("--subsets", type=int, default=d.n_subsets, help="K random training subsets")
    p.add_argument("--alpha", type=float, default=d.alpha, help="fraction of the training set in each subset")
    p.add_argument(
        "--retrain-seeds", type=int, default=d.n_seeds, help="R retrain seeds per subset (>= 2 for the noise ceiling)"
    )
    p.add_argument("--subsets-seed", type=int, default=d.subsets_seed)
    p.add_argument("--output", default="loss", choices=OUTPUTS, help="test output f_t: loss or (negated) margin")
    p.add_argument("--cache", default=None, help=f"retrain cache directory (default {default_cache_dir()})")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, help="retrain on a local Dask cluster of N workers")
    where.add_argument("--scheduler", default=None, help="retrain on a running Dask scheduler (tcp://host:8786)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads of this process (0 = unchanged); each retrain uses 1 thread",
    )
    p.add_argument("--quiet", action="store_true", help="no progress messages")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lds_mode", required=True)
    score = sub.add_parser("score", help="LDS of one configuration (+ baselines and noise ceiling)")
    _common(score)
    score.add_argument(
        "--solvers",
        nargs="+",
        default=["auto"],
        choices=reference_solvers(),
        help="full-data influence with each of these solvers (auto = exact for p <= 20000, else CG); "
        "e.g. --solvers auto ekfac",
    )
    add_solver_option_argument(score)
    score.add_argument("--sampler", default=None, help=f"also score a sampled Hessian: one of {available_samplers()}")
    score.add_argument("--m", type=int, default=None, help="Hessian sample size for --sampler")
    score.add_argument("--sampler-seed", type=int, default=0)
    score.add_argument(
        "--scores",
        default=None,
        help="also score your own (T, n_train) matrix, rows in the order of the chosen test points "
        "(.npy, or .npz with one array 'scores'); see --save-test-indices",
    )
    score.add_argument("--save-test-indices", default=None, help="write the chosen test indices to this .npy")
    score.add_argument("--json", default=None, help="write the results to this JSON file")
    score.add_argument(
        "--ground-truth",
        default=None,
        metavar="NAME_OR_PATH",
        help="score --scores against a shipped ground-truth file (a name in ground_truth/, e.g. "
        "digits_mlp, or a path): no training, no retraining; rows in the order of its "
        "test_indices",
    )
    gt = sub.add_parser(
        "ground-truth",
        help="build a shipped ground-truth file from the retrain cache (retraining "
        "what is missing), or --check it against the committed one",
    )
    from influence_core.evaluation.ground_truth import GROUND_TRUTHS

    gt.add_argument("name", choices=sorted(GROUND_TRUTHS), help="which registered ground truth")
    gt.add_argument("--cache", default=None, help=f"retrain cache directory (default {default_cache_dir()})")
    gt.add_argument(
        "--max-retrains",
        type=int,
        default=None,
        help="run at most N missing retrains, then write the finished prefix of subsets (a partial file "
        "marked partial; rerun to continue); 0 = use the cache only",
    )
    gt.add_argument("--out", default=None, help="write NAME.npz (+ NAME.json) here (default: the ground_truth/ folder)")
    gt.add_argument(
        "--check",
        action="store_true",
        help="regenerate and compare with the committed file instead of writing it (exit 2 if they differ)",
    )
    gt_where = gt.add_mutually_exclusive_group()
    gt_where.add_argument("--workers", type=int, default=None, help="retrain on a local Dask cluster of N workers")
    gt_where.add_argument("--scheduler", default=None, help="retrain on a running Dask scheduler")
    gt.add_argument("--threads", type=int, default=1, help="torch threads of this process (each retrain uses 1)")
    gt.add_argument("--quiet", action="store_true", help="no progress messages")
    study = sub.add_parser("study", help="samplers × m × sampler seeds scored by LDS")
    _common(study)
    study.add_argument("--samplers", nargs="+", default=None, help="samplers (default: all registered)")
    study.add_argument("--m", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    study.add_argument("--sampler-seeds", type=int, default=5, help="sampler seeds 0..N-1 per (sampler, m)")
    study.add_argument(
        "--solver",
        default="auto",
        choices=[*subset_solvers(), *LEGACY_SOLVER_NAMES],
        help="subset solver (auto = low_rank, the exact Woodbury solve, for gauss_newton; woodbury is its former "
        "name); e.g. ekfac",
    )
    study.add_argument(
        "--reference-solver",
        default="auto",
        choices=reference_solvers(),
        help="the full-data influence the verdict and the proxy metrics use; e.g. ekfac",
    )
    study.add_argument(
        "--also-full",
        nargs="*",
        default=[],
        choices=reference_solvers(),
        help="more full-data solvers scored by LDS beside the reference, e.g. exact",
    )
    add_solver_option_argument(study)
    study.add_argument("--out", default="docs/lds", help="output directory")
    study.add_argument("--name", default=None, help="file name stem (default DATASET_ARCH)")


def _plan(args: argparse.Namespace) -> RetrainPlan:
    try:
        return RetrainPlan(
            n_subsets=args.subsets, alpha=args.alpha, n_seeds=args.retrain_seeds, subsets_seed=args.subsets_seed
        )
    except ValueError as exc:  # name the options, not the dataclass fields
        text = str(exc)
        for field_name, option in (
            ("n_subsets (K)", "--subsets (K)"),
            ("n_seeds (R)", "--retrain-seeds (R)"),
            ("subsets_seed", "--subsets-seed"),
            ("alpha (", "--alpha ("),
        ):
            text = text.replace(field_name, option)
        raise ValueError(text) from None


def _progress(args: argparse.Namespace) -> Any:
    if args.quiet:
        return None
    return lambda f, msg: print(f"[{f:5.1%}] {msg}", file=sys.stderr, flush=True)


MAX_THREADS = 1024


def _check_common(args: argparse.Namespace) -> None:
    """Options both modes share, checked before any work: threads, the cache folder, the retrain plan."""
    if not 0 <= args.threads <= MAX_THREADS:
        raise ValueError(f"--threads must be in [0, {MAX_THREADS}] (0 = leave torch's setting), got {args.threads}")
    if args.lds_mode == "ground-truth":  # its own options: the recipe comes from the registered name
        check_outputs(dirs={"--cache": args.cache})
        return
    if args.test_points < 1:
        raise ValueError(f"--test-points must be >= 1, got {args.test_points}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1 (local Dask worker processes), got {args.workers}")
    if args.epochs is not None and args.epochs < 0:
        raise ValueError(f"--epochs must be >= 0, got {args.epochs}")
    if args.hidden is not None and min(args.hidden) < 1:
        raise ValueError(f"--hidden widths must be >= 1, got {args.hidden}")
    check_outputs(dirs={"--cache": args.cache})
    _plan(args)


def _load_user_scores(path: str) -> np.ndarray:
    """--scores: a .npy, or a .npz with an array 'scores' (never unpickled)."""
    return load_array(path, "--scores", key="scores" if Path(path).suffix == ".npz" else None)


def _options_per_solver(items: list[str], solvers: list[str]) -> dict[str, dict[str, Any]]:
    """Each --solver-option goes to every listed solver that takes it; one that none of them takes is refused."""
    from influence_core.solvers.registry import SOLVER_REGISTRY

    if not items:
        return {}
    if not solvers:
        raise ValueError("--solver-option needs a registered solver in --solvers (e.g. --solvers auto ekfac)")
    parsed = {
        k: v
        for s in solvers
        for k, v in parse_solver_options(
            [i for i in items if i.partition("=")[0].strip().replace("-", "_") in SOLVER_REGISTRY[s].options], s
        ).items()
    }
    unknown = sorted({i.partition("=")[0].strip() for i in items} - set(parsed))
    if unknown:
        raise ValueError(f"no solver in --solvers {solvers} takes the options {unknown}")
    return {s: {k: v for k, v in parsed.items() if k in SOLVER_REGISTRY[s].options} for s in solvers}


def _score_ground_truth(args: argparse.Namespace) -> int:
    from influence_core.evaluation.ground_truth import lds_against, load_ground_truth

    if not args.scores:
        raise ValueError("--ground-truth needs --scores FILE.npy, the (n_test, n_train) matrix to score")
    if args.sampler is not None:
        raise ValueError(
            "--ground-truth scores a given --scores matrix; --sampler is not used with it (compute the "
            "sampled scores and save them with np.save)"
        )
    check_outputs(files={"--json": args.json})
    t0 = time.perf_counter()
    gt = load_ground_truth(args.ground_truth)
    S = _load_user_scores(args.scores)
    result = lds_against(S, gt, args.output)
    r = gt.recipe
    print(
        f"LDS of {Path(args.scores).name} against ground truth {gt.name} ({r['dataset']['name']} / "
        f"{r['model']['arch']}, {len(gt.test_indices)} test points, K = {gt.k_done}"
        f"{' of ' + str(r['plan']['n_subsets']) + ' (partial)' if gt.partial else ''}, alpha = "
        f"{r['plan']['alpha']}, R = {r['plan']['n_seeds']}, output {args.output}): LDS {result.lds:.3f} "
        f"(std over test points {np.nanstd(result.per_test):.3f}), noise ceiling {result.ceiling:.3f}, "
        f"seed-vs-seed {result.seed_agreement:.3f}; {time.perf_counter() - t0:.1f} s"
    )
    if args.json:
        from influence_core.studies.output import write_json

        write_json(
            args.json,
            {
                "ground_truth": gt.name,
                "path": str(args.ground_truth),
                "scores": str(args.scores),
                "result": result.to_dict(),
                "recipe": r,
                "test_indices": gt.test_indices.tolist(),
            },
            indent=1,
        )
    return 0


def _ground_truth(args: argparse.Namespace) -> int:
    from influence_core.evaluation.ground_truth import (
        build_ground_truth,
        compare_ground_truths,
        ground_truth_dir,
        load_ground_truth,
        save_ground_truth,
    )

    t0 = time.perf_counter()
    with get_executor(workers=args.workers, scheduler=args.scheduler) as ex:
        gt = build_ground_truth(
            args.name, cache_dir=args.cache, executor=ex, max_retrains=args.max_retrains, progress=_progress(args)
        )
    r = gt.recipe
    done = f"{gt.k_done} of {r['plan']['n_subsets']} subsets" + (" (partial)" if gt.partial else "")
    if args.check:
        committed = load_ground_truth(args.name)
        c = compare_ground_truths(committed, gt)
        print(
            f"{args.name}: regenerated {done} (cache key {r['cache_key']}) against the committed "
            f"{committed.k_done} subsets: compared {c['subsets_compared']}, recipe differs in "
            f"{c['recipe_differs_in'] or 'nothing'}, max |delta logit| {c['max_abs_logit_diff']:.3g}, output "
            f"agreement (Spearman over k) {c['output_agreement']:.3f} (needs >= {c['threshold']:.3f}): "
            f"{'OK' if c['ok'] else 'DIFFERENT'}; {time.perf_counter() - t0:.0f} s"
        )
        if not c["ok"]:
            raise ValueError(f"the regenerated {args.name} does not match the committed file (see the line above)")
        return 0
    path = save_ground_truth(gt, Path(args.out or ground_truth_dir()) / f"{args.name}.npz")
    ceil = r["noise_ceiling"]["loss"]
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {done}, cache key {r['cache_key']}, noise ceiling "
        f"{ceil['ceiling']:.3f} (seed-vs-seed {ceil['seed_agreement']:.3f}); {time.perf_counter() - t0:.0f} s"
    )
    return 0


def _score(args: argparse.Namespace) -> int:
    if args.ground_truth:
        return _score_ground_truth(args)
    t0 = time.perf_counter()
    plan = _plan(args)
    check_outputs(files={"--json": args.json, "--save-test-indices": args.save_test_indices})
    if args.save_test_indices and not args.save_test_indices.endswith(".npy"):
        raise ValueError(f"--save-test-indices must end in .npy (numpy's format), got {args.save_test_indices}")
    if args.sampler is not None and args.m is None:
        raise ValueError("--sampler needs --m (the Hessian sample size)")
    if args.m is not None and args.m < 1:
        raise ValueError(f"--m must be >= 1, got {args.m}")
    options = _options_per_solver(args.solver_option, [s for s in args.solvers if s != "auto"])
    user = _load_user_scores(args.scores) if args.scores else None  # before training: a bad file costs a second
    dataset = load_dataset(args.dataset, seed=args.seed, **dataset_options(args))
    if not 1 <= args.test_points <= dataset.n_test:
        raise ValueError(f"--test-points must be in [1, {dataset.n_test}]")
    if user is not None and (user.ndim != 2 or user.shape != (args.test_points, dataset.n_train)):
        raise ValueError(
            f"--scores must be a (--test-points, n_train) = ({args.test_points}, {dataset.n_train}) "
            f"matrix, got shape {user.shape}"
        )
    model = train_model(dataset, args.arch, seed=args.seed, **train_settings(args))
    idx = np.sort(np.random.default_rng(args.test_seed).choice(dataset.n_test, args.test_points, replace=False))
    if args.save_test_indices:
        with atomic_path(args.save_test_indices) as tmp:
            np.save(tmp, idx)
    calc = InfluenceCalculator(model, dataset.X_train, dataset.y_train)
    p = calc.objective.n_params
    X_t, y_t = dataset.X_test[idx], dataset.y_test[idx]
    methods: dict[str, np.ndarray] = {}
    for solver in args.solvers:
        used, S = full_data_scores(
            model, dataset, idx, solver, damping=args.damping, curvature=args.curvature, options=options.get(solver)
        )
        methods[f"full-data influence ({used})"] = S
    methods["gradient dot"] = gradient_dot_scores(model, dataset, idx)
    if args.sampler is not None:
        sample = draw_sample(args.sampler, sampler_inputs(model, dataset), args.m, seed=args.sampler_seed)
        calc.fit(sample, solver="exact", damping=args.damping, curvature=args.curvature)
        methods[f"{args.sampler} m={args.m} seed={args.sampler_seed}"] = calc.scores(X_t, y_t)
    if user is not None:
        methods[f"your scores ({Path(args.scores).name})"] = user
    with get_executor(workers=args.workers, scheduler=args.scheduler) as ex:
        retrained = retrain_outputs(model, dataset, plan, cache_dir=args.cache, executor=ex, progress=_progress(args))
    records = [_lds_record(name, S, retrained, idx, args.output) for name, S in methods.items()]
    info = retrained.info
    print(
        f"LDS on {args.dataset} / {args.arch} (p = {p}, damping {args.damping}, {args.curvature}), "
        f"{len(idx)} test points, K = {plan.n_subsets}, alpha = {plan.alpha}, R = {plan.n_seeds}, output "
        f"{args.output}; retrains: {info['retrained']} run + {info['cached']} cached, mean "
        f"{info['retrain_seconds_mean']:.1f} s each; total {time.perf_counter() - t0:.0f} s"
    )
    print("\n".join(baselines_markdown(records)))
    if args.json:
        with atomic_write(args.json) as fh:
            fh.write(
                json.dumps(
                    jsonable(
                        {
                            "records": records,
                            "retrain": info,
                            "test_indices": idx.tolist(),
                            "args": vars(args) | {"_run": None},
                            "total_seconds": time.perf_counter() - t0,
                        }
                    ),
                    indent=1,
                )
            )
    return 0


def _study(args: argparse.Namespace) -> int:
    fields = study_fields(args)
    name = f"{args.dataset}_{args.arch}" if args.name is None else args.name
    check_study_outputs(args.out, name)  # every output file, before the study, not after it
    config = StudyConfig(**fields, n_seeds=args.sampler_seeds)
    with get_executor(workers=args.workers, scheduler=args.scheduler) as ex:
        result = run_lds_study(
            config,
            _plan(args),
            output=args.output,
            cache_dir=args.cache,
            executor=ex,
            progress=_progress(args),
            also_full=tuple(args.also_full),
        )
    paths = write_outputs(result, args.out, args.name)
    print(markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def run(args: argparse.Namespace) -> int:
    _check_common(args)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.lds_mode == "ground-truth":
        return _ground_truth(args)
    return _score(args) if args.lds_mode == "score" else _study(args)

"""Influence-query benchmark: time of one influence query divided by one forward+backward pass over the training set.

The query is one test point against all n training points with the model trained and the solver fitted beforehand
(``InfluenceCalculator.fit`` plus one warm-up solve: the exact inverse factorised, dense LU or the Gauss-Newton
low-rank Woodbury form when m(C−1) < p; or the HVP operator built and, for LiSSA, its automatic scale found from
λ_max at the first solve and cached): test gradient + iHVP solve + scoring of every training point (``calc.scores``).
The
baseline is one batched forward pass over the whole training set, the summed cross-entropy and ``.backward()``.
Both are timed in the same process, as the median of ``--repeats`` calls after a warm-up call, and reported as a
ratio (the physical floor is about 1x: every training gradient has to be formed once).

The split: ``ihvp`` = test gradient + solve (``calc.ihvp(calc.gradients(...))``), ``scoring`` = the forward-mode
pass over the training set (``calc.scores_from_ihvp``); ``1 HVP`` is one Hessian-vector product on the Hessian sample,
which is what an iterative solver pays per iteration.

Run: ``flock /tmp/influence-bench.lock python -m influence_core bench query --out docs/bench/query``
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import numpy as np

from influence_core.bench.common import (
    Timing,
    check_report_paths,
    command_line,
    environment,
    format_table,
    time_call,
    torch_threads,
    write_report,
)
from influence_core.solvers.registry import available_solvers

DEFAULT_CONFIGS = ("digits:mlp", "mnist5k:mlp", "digits:logreg", "mnist5k:logreg")
QUICK_CONFIGS = ("digits:logreg", "digits:mlp")
QUICK_TRAINING = {"mlp": {"hidden": (8,), "epochs": 1, "polish_steps": 3}}
CURVATURES = ("gauss_newton", "hessian")

COLUMNS = [
    ("config", "data/model"),
    ("p", "p"),
    ("n", "n"),
    ("curvature", "curvature"),
    ("hessian", "Hessian on"),
    ("solver", "solver"),
    ("inverse", "exact form"),
    ("fwd_bwd_ms", "fwd+bwd ms"),
    ("ratio", "query / fwd+bwd"),
    ("ihvp_ratio", "iHVP / fwd+bwd"),
    ("scoring_ratio", "scoring / fwd+bwd"),
    ("hvp_ratio", "1 HVP / fwd+bwd"),
    ("iterations", "iters"),
    ("ihvp_rel_err", "iHVP rel. err vs exact"),
    ("fit_s", "fit s"),
    ("target", "<= 3x"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configs",
        nargs="+",
        default=None,
        metavar="DATA:ARCH",
        help=f"dataset:architecture pairs (default {' '.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument("--solvers", nargs="+", default=["exact", "cg", "lissa"], choices=available_solvers())
    parser.add_argument(
        "--curvatures",
        nargs="+",
        default=list(CURVATURES),
        choices=CURVATURES,
        help="curvature of H (Hessian rows are skipped for logreg, where they equal Gauss-Newton)",
    )
    parser.add_argument(
        "--hessian-solvers",
        nargs="+",
        default=["exact", "cg"],
        choices=available_solvers(),
        help="solvers measured with curvature 'hessian' (LiSSA on the Hessian is the slowest row "
        "and was measured before: see git history of docs/bench/query.md)",
    )
    parser.add_argument(
        "--hessian",
        nargs="+",
        default=["full", "256"],
        metavar="full|M",
        help="Hessian data: 'full' (all n training points) and/or a uniform random sample of M points",
    )
    parser.add_argument("--damping", type=float, default=0.01, help="δ added to H (which already includes wd·I)")
    parser.add_argument("--tol", type=float, default=1e-4, help="relative-residual tolerance of CG and LiSSA")
    parser.add_argument("--max-iter", type=int, default=20_000, help="iteration cap of CG and LiSSA")
    parser.add_argument(
        "--exact-max-params",
        type=int,
        default=8_000,
        help="form the dense (p, p) matrix only for models with at most this many parameters (the "
        "Gauss-Newton low-rank form, used when m(C-1) < p, is not limited by this)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed calls per measurement (median reported); "
        "a call over 10 s is timed at most 3 times, its warm-up call included",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1 avoids OpenMP spin contention on a shared machine; 0 = torch's default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    parser.add_argument("--test-index", type=int, default=0, help="the test point of the query")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny configuration for tests: digits logreg and a tiny MLP, 1 repeat, Hessian on 128",
    )
    parser.add_argument("--out", default=None, help="write a report: PATH.md, PATH.json, or PATH (both)")


def _time(fn: Any, repeats: int) -> Any:
    """Median of ``repeats`` calls after a warm-up; for calls over 10 s (where first-call costs are negligible) the
    warm-up counts as one of at most 3 samples, to keep the whole benchmark within minutes."""
    start = time.perf_counter()
    fn()  # warm-up
    first = time.perf_counter() - start
    if first <= 10:
        return time_call(fn, repeats=repeats, warmup=0)
    rest = time_call(fn, repeats=max(1, min(repeats, 3) - 1), warmup=0)
    values = [first] + rest.values
    return Timing(statistics.median(values), min(values), max(values), values, 0)


def measure_config(spec: str, args: argparse.Namespace, log: Any = print) -> list[dict[str, Any]]:
    """All rows (hessian × solver) of one dataset:architecture pair."""
    import torch
    from torch.nn import functional as F

    from influence_core import load_dataset, train_model

    data_name, _, arch = spec.partition(":")
    if not arch:
        raise ValueError(f"config {spec!r} must look like DATASET:ARCH, e.g. digits:mlp")
    ds = load_dataset(data_name, seed=args.seed)
    settings = QUICK_TRAINING.get(arch, {}) if args.quick else {}
    log(f"[query] {spec}: training {arch} on {ds.n_train} points ...")
    model = train_model(ds, arch, seed=args.seed, **settings)
    X = torch.as_tensor(ds.X_train)
    y = torch.as_tensor(ds.y_train)
    p = sum(t.numel() for t in model.parameters() if t.requires_grad)
    n = len(y)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y, reduction="sum").backward()

    base = _time(forward_backward, max(args.repeats, 5))
    model.zero_grad(set_to_none=True)
    xt, yt = ds.X_test[args.test_index : args.test_index + 1], ds.y_test[args.test_index : args.test_index + 1]

    rows = []
    rng = np.random.default_rng(args.seed)
    samples = []
    for hess in args.hessian:
        if hess == "full":
            samples.append((None, n, f"all {n}"))
        else:
            m = int(hess)
            if not 1 <= m <= n:
                raise ValueError(f"--hessian sample size must be in [1, {n}], got {m}")
            samples.append((np.sort(rng.choice(n, size=m, replace=False)), m, f"random {m}"))
    with torch.no_grad():
        n_classes = int(model(X[:1]).shape[-1])
    for curvature in args.curvatures:
        if curvature == "hessian" and arch == "logreg":
            continue  # softmax regression: the Hessian is the Gauss-Newton matrix
        solvers = [s for s in args.solvers if curvature != "hessian" or s in args.hessian_solvers]
        for idx, m, label in samples:
            rows += _measure_sample(
                spec, args, model, ds, base, xt, yt, p, n, n_classes, curvature, idx, m, label, solvers, log
            )
    return rows


def _measure_sample(
    spec: str,
    args: argparse.Namespace,
    model: Any,
    ds: Any,
    base: Timing,
    xt: Any,
    yt: Any,
    p: int,
    n: int,
    n_classes: int,
    curvature: str,
    idx: np.ndarray | None,
    m: int,
    label: str,
    solvers: list[str],
    log: Any,
) -> list[dict[str, Any]]:
    """The rows (one per solver) of one curvature and Hessian sample."""
    import torch

    from influence_core import InfluenceCalculator
    from influence_core.solvers.base import SolverError, SolverNotConvergedWarning

    rows = []
    calc = InfluenceCalculator(model, ds.X_train, ds.y_train)
    obj = calc.objective
    v = torch.randn(1, obj.n_params, generator=torch.Generator().manual_seed(0)).to(obj.dtype)
    hvp = _time(lambda: obj.hvp(v, idx, mode=curvature), args.repeats)
    reference = None
    for solver in solvers:
        row: dict[str, Any] = {
            "config": spec,
            "p": p,
            "n": n,
            "curvature": curvature,
            "hessian": label,
            "solver": solver,
            "fwd_bwd_ms": base.median * 1e3,
            "hvp_ratio": hvp.median / base.median,
        }
        low_rank = curvature == "gauss_newton" and m * (n_classes - 1) < p
        if solver == "exact" and p > args.exact_max_params and not low_rank:
            log(
                f"[query] {spec} {curvature} {label} exact: skipped (dense, p={p} > --exact-max-params "
                f"{args.exact_max_params})"
            )
            continue
        start = time.perf_counter()
        options: dict[str, Any] = {} if solver == "exact" else {"tol": args.tol, "max_iter": args.max_iter}
        try:
            calc.fit(idx, solver=solver, damping=args.damping, curvature=curvature, **options)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SolverNotConvergedWarning)
                calc.ihvp(calc.gradients(xt, yt))  # LiSSA: finds and caches λ_max (part of the fit)
        except (SolverError, ValueError) as exc:  # indefinite sample, or the engine's memory refusal
            log(f"[query] {spec} {curvature} {label} {solver}: failed: {exc}")
            rows.append({**row, "target": "failed", "error": str(exc)})
            continue
        row["fit_s"] = time.perf_counter() - start
        row["inverse"] = calc.fit_info.get("inverse", "—")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SolverNotConvergedWarning)
            total = _time(lambda: calc.scores(xt, yt), args.repeats)
            solved = calc.ihvp(calc.gradients(xt, yt))
            ihvp = _time(lambda: calc.ihvp(calc.gradients(xt, yt)), args.repeats)
            scoring = _time(lambda: calc.scores_from_ihvp(solved.x), args.repeats)
        if solver == "exact":
            reference = solved.x
        err = None
        if reference is not None:
            err = float((solved.x - reference).norm() / reference.norm())
        row.update(
            ratio=total.median / base.median,
            ihvp_ratio=ihvp.median / base.median,
            scoring_ratio=scoring.median / base.median,
            iterations=solved.iterations,
            converged=solved.converged,
            ihvp_rel_err=err,
            query_s=total.median,
            ihvp_s=ihvp.median,
            scoring_s=scoring.median,
            hvp_s=hvp.median,
            fwd_bwd_s=base.median,
            repeats=total.repeats,
            score_chunk=calc.last_scoring.train_chunk_size,
            target="yes" if total.median / base.median <= 3 else "no",
        )
        log(
            f"[query] {spec} {curvature} {label} {solver}: {row['ratio']:.2f}x (iHVP {row['ihvp_ratio']:.2f}x, "
            f"scoring {row['scoring_ratio']:.2f}x, {solved.iterations} iterations)"
        )
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    check_report_paths(args.out)  # before the benchmark, not after it
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.quick:
        configs = args.configs or list(QUICK_CONFIGS)
        args.hessian = ["128"] if args.hessian == ["full", "256"] else args.hessian
        args.repeats = 1
        args.damping = max(args.damping, 0.1)  # the tiny, briefly trained MLP has negative curvature below that
    else:
        configs = args.configs or list(DEFAULT_CONFIGS)
    bad = [h for h in args.hessian if h != "full" and not (h.isdigit() and int(h) >= 1)]
    if bad:
        raise ValueError(f"--hessian takes 'full' or a sample size (a positive integer), got {bad}")
    env = environment()
    rows: list[dict[str, Any]] = []
    for spec in configs:
        rows += measure_config(spec, args)
    print(format_table(rows, COLUMNS))
    if args.out:
        text = (
            f"One test point against all training points; damping δ={args.damping}, CG/LiSSA relative-residual "
            f"tolerance {args.tol}; median of up to {args.repeats} repeats after a warm-up; torch threads "
            f"{env.get('torch_threads')}. Ratios are to one batched forward+backward pass over the training set "
            "measured in the same process. 'fit' (Hessian formation and factorisation, or LiSSA's power "
            "iteration) is done once beforehand and not part of the query. 'exact form': lu = dense (p, p) LU; "
            "low_rank = Gauss-Newton Woodbury form (r = m(C-1) < p). Hessian rows are not repeated for logreg "
            "(there the Hessian is the Gauss-Newton matrix)."
        )
        meta = {"environment": env, "arguments": {k: v for k, v in vars(args).items() if not k.startswith("_")}}
        for path in write_report(
            args.out,
            title="Influence query vs one forward+backward pass",
            command=command_line(),
            sections=[{"heading": "Query time ratios", "text": text, "rows": rows, "columns": COLUMNS}],
            meta=meta,
        ):
            print(f"wrote {path}")
    return 0

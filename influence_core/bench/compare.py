"""Side by side with pyDVL: our exact/CG/LiSSA vs pyDVL's DirectInfluence/CgInfluence/LissaInfluence on the same
trained model (digits: logistic regression and MLP), same objective, same damping.

Matching the problem. pyDVL's loss is a function of (outputs, targets) only, so the weight decay of our objective
enters pyDVL as ``regularization = wd + δ``: both then invert H_CE + (wd + δ)I over all n training points
(pyDVL's LiSSA is fitted on one full-batch DataLoader, so it runs the deterministic full-data iteration like ours,
with the same scale s = 1.1·(λ_max + δ); CG also gets one full batch, Direct batches of 256). Scores: pyDVL's "up"
influence is ∇ℓ_testᵀ H⁻¹ ∇ℓ_train without our 1/n, so the
factor c is fitted by least squares on the exact pair (expected 1/n; its sign and n·c are reported) and applied to
every pyDVL result. Reported per pair: Spearman and Pearson correlation of the scores (per test point, minimum over
the test points) and the relative difference ||ours − c·theirs|| / ||ours||.

Equal accuracy. Each iterative solver gets the smallest iteration budget whose iHVP is within ``--target-error``
(relative 2-norm error) of the exact direct solve, found by doubling and bisection with the library's own stopping
rule switched off (tol = 0), because the two libraries' stopping rules measure different things (pyDVL's CG stops on
an absolute residual derived from the right-hand side, its LiSSA on the largest element-wise relative change).
Then the query (one test point against all training points: ``influences`` / ``scores``) and the solve alone
(``influence_factors`` / ``ihvp`` of the test gradient) are timed with that budget (median of ``--repeats``), and
the ratio ours / pyDVL is reported (target: ≤ 0.5).

Run: ``flock /tmp/influence-bench.lock python -m influence_core bench compare --out docs/bench/compare``
(needs pyDVL: see docs/BENCHMARKS.md for the install line).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from influence_core.bench.common import (
    MissingExtraError,
    check_report_paths,
    command_line,
    environment,
    format_table,
    time_call,
    torch_threads,
    write_report,
)

COLUMNS = [
    ("model", "model"),
    ("p", "p"),
    ("ours", "ours"),
    ("theirs", "pyDVL"),
    ("spearman", "Spearman (min)"),
    ("pearson", "Pearson (min)"),
    ("rel_diff", "rel. diff"),
    ("iters_ours", "iters ours"),
    ("iters_theirs", "iters pyDVL"),
    ("err_ours", "iHVP err ours"),
    ("err_theirs", "iHVP err pyDVL"),
    ("solve_ratio", "solve time ours/pyDVL"),
    ("query_ratio", "query time ours/pyDVL"),
    ("query_ms_ours", "query ms ours"),
    ("query_ms_theirs", "query ms pyDVL"),
    ("target", "<= 0.5"),
]
PAIRS = (("exact", "DirectInfluence"), ("cg", "CgInfluence"), ("lissa", "LissaInfluence"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        nargs="+",
        default=["logreg", "mlp"],
        choices=["logreg", "mlp"],
        help="architectures trained on digits",
    )
    parser.add_argument(
        "--solvers",
        nargs="+",
        default=[o for o, _ in PAIRS],
        choices=[o for o, _ in PAIRS],
        help="our solvers to compare (each against its pyDVL counterpart; exact always runs first "
        "because it fixes the reference solution and the convention factor)",
    )
    parser.add_argument("--damping", type=float, default=0.01, help="δ on top of H (which includes wd·I)")
    parser.add_argument(
        "--target-error",
        type=float,
        default=1e-2,
        help="equal accuracy: relative error of the iHVP w.r.t. the exact solve",
    )
    parser.add_argument("--test-points", type=int, default=5, help="test points for the correlations")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--max-iter", type=int, default=20_000, help="cap of the iteration-budget search")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny configuration for tests (logreg, 1 repeat)")
    parser.add_argument("--out", default=None, help="write a report: PATH.md, PATH.json, or PATH (both)")


def _require_pydvl() -> Any:
    try:
        import pydvl.influence.torch as pyd
    except ImportError as exc:
        raise MissingExtraError(
            "bench compare needs pyDVL (the optional 'compare' extra): pip install --no-deps "
            "pydvl==0.10.0 zarr==3.1.6 numcodecs==0.15.2 pyDeprecate==0.14.0 more-itertools==11.2.1"
            f" ({exc})"
        ) from exc
    logging.getLogger("pydvl").setLevel(logging.ERROR)
    return pyd


def min_budget(error_at: Callable[[int], float], target: float, cap: int) -> tuple[int, float]:
    """Smallest k in [1, cap] with error_at(k) <= target, assuming the error decreases with k (doubling, then
    bisection). Returns (k, error_at(k)); (cap, error) if even the cap misses the target."""
    k, err = 1, error_at(1)
    while err > target and k < cap:
        k = min(2 * k, cap)
        err = error_at(k)
    if err > target:
        return k, err
    lo, hi, best = k // 2, k, err  # error_at(lo) > target (or lo == 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        e = error_at(mid)
        if e <= target:
            hi, best = mid, e
        else:
            lo = mid
    return hi, best


def _correlations(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    sp = [spearmanr(a, b).statistic for a, b in zip(ours, theirs)]
    pe = [pearsonr(a, b).statistic for a, b in zip(ours, theirs)]
    return {
        "spearman": float(np.min(sp)),
        "pearson": float(np.min(pe)),
        "rel_diff": float(np.linalg.norm(ours - theirs) / np.linalg.norm(ours)),
    }


def compare_model(arch: str, args: argparse.Namespace, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    import torch
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from influence_core import InfluenceCalculator, load_dataset, train_model
    from influence_core.solvers.base import SolverNotConvergedWarning

    pyd = _require_pydvl()
    ds = load_dataset("digits", seed=args.seed)
    settings = {"hidden": (16,), "epochs": 5} if (args.quick and arch == "mlp") else {}
    log(f"[compare] training {arch} on digits ...")
    model = train_model(ds, arch, seed=args.seed, **settings)
    wd, delta = float(model.weight_decay), args.damping
    X, y = torch.as_tensor(ds.X_train), torch.as_tensor(ds.y_train)
    Xt, yt = torch.as_tensor(ds.X_test[: args.test_points]), torch.as_tensor(ds.y_test[: args.test_points])
    x1, y1 = Xt[:1], yt[:1]
    n = len(y)
    # pyDVL's DataLoader: batches of 256 (our chunk size) for DirectInfluence (it forms the Hessian per batch with
    # torch.func.hessian, whose memory grows with batch × p, and weights the batches by their size); one full batch
    # for CgInfluence (its HessianOperator averages the batch means with equal weights, which with a partial last
    # batch is a different matrix: the error then stalls at ~3% on digits) and LissaInfluence (one batch per
    # iteration: full batch = the deterministic full-data iteration, the same as ours)
    loader = DataLoader(TensorDataset(X, y), batch_size=256)
    full_loader = DataLoader(TensorDataset(X, y), batch_size=n)

    calc = InfluenceCalculator(model, X, y)
    p = calc.objective.n_params
    calc.fit(solver="exact", damping=delta, curvature="hessian")
    G = calc.gradients(Xt, yt)
    x_exact = calc.ihvp(G).x
    g1, x1_exact = G[:1], x_exact[:1]
    scale = 1.1 * (calc.objective.largest_eigenvalue() + delta)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    def fit_ours(solver: str, budget: int | None) -> Any:
        opts: dict[str, Any] = {} if solver == "exact" else {"tol": 0.0, "max_iter": budget}
        if solver == "lissa":
            opts["scale"] = scale
        return calc.fit(solver=solver, damping=delta, curvature="hessian", **opts)

    def make_theirs(name: str, budget: int | None) -> Any:
        if name == "DirectInfluence":
            inf = pyd.DirectInfluence(model, F.cross_entropy, regularization=wd + delta)
        elif name == "CgInfluence":
            inf = pyd.CgInfluence(
                model,
                F.cross_entropy,
                regularization=wd + delta,
                rtol=0.0,
                atol=0.0,
                maxiter=budget,
                warn_on_max_iteration=False,
            )
            return inf.fit(full_loader)
        else:
            inf = pyd.LissaInfluence(
                model,
                F.cross_entropy,
                regularization=wd + delta,
                maxiter=budget,
                scale=scale,
                dampen=0.0,
                rtol=0.0,
                warn_on_max_iteration=False,
            )
            return inf.fit(full_loader)
        return inf.fit(loader)

    rows: list[dict[str, Any]] = []
    c = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverNotConvergedWarning)
        warnings.simplefilter("ignore", UserWarning)
        for ours_name, theirs_name in PAIRS:
            if ours_name != "exact" and ours_name not in args.solvers:
                continue
            row: dict[str, Any] = {"model": f"digits/{arch}", "p": p, "ours": ours_name, "theirs": theirs_name}
            budgets: dict[str, Any] = {"ours": None, "theirs": None}
            if ours_name != "exact":

                def err_ours(k: int) -> float:
                    return rel(fit_ours(ours_name, k).ihvp(g1).x, x1_exact)

                def err_theirs(k: int) -> float:
                    return rel(make_theirs(theirs_name, k).influence_factors(x1, y1), x1_exact)

                budgets["ours"], row["err_ours"] = min_budget(err_ours, args.target_error, args.max_iter)
                budgets["theirs"], row["err_theirs"] = min_budget(err_theirs, args.target_error, args.max_iter)
                row["iters_ours"], row["iters_theirs"] = budgets["ours"], budgets["theirs"]
            start = time.perf_counter()
            fit_ours(ours_name, budgets["ours"])
            row["fit_s_ours"] = time.perf_counter() - start
            start = time.perf_counter()
            theirs = make_theirs(theirs_name, budgets["theirs"])
            row["fit_s_theirs"] = time.perf_counter() - start
            ours_scores = calc.scores(Xt, yt)
            theirs_scores = theirs.influences(Xt, yt, X, y).detach().double().cpu().numpy()
            if c is None:  # the convention factor, from the exact pair
                c = float((ours_scores * theirs_scores).sum() / (theirs_scores**2).sum())
                row["scale_times_n"] = c * n
                log(f"[compare] convention: ours ≈ c·pyDVL with c·n = {c * n:.4f}")
            row.update(_correlations(ours_scores, c * theirs_scores))
            if ours_name == "exact":
                row["err_ours"] = 0.0
                row["err_theirs"] = rel(theirs.influence_factors(x1, y1), x1_exact)
            t_solve_ours = time_call(lambda: calc.ihvp(calc.gradients(x1, y1)), args.repeats)
            t_solve_theirs = time_call(lambda: theirs.influence_factors(x1, y1), args.repeats)
            t_query_ours = time_call(lambda: calc.scores(x1, y1), args.repeats)
            t_query_theirs = time_call(lambda: theirs.influences(x1, y1, X, y), args.repeats)
            row.update(
                solve_ratio=t_solve_ours.median / t_solve_theirs.median,
                query_ratio=t_query_ours.median / t_query_theirs.median,
                query_ms_ours=t_query_ours.median * 1e3,
                query_ms_theirs=t_query_theirs.median * 1e3,
                solve_ms_ours=t_solve_ours.median * 1e3,
                solve_ms_theirs=t_solve_theirs.median * 1e3,
                target=("yes" if t_query_ours.median <= 0.5 * t_query_theirs.median else "no")
                if ours_name != "exact"
                else "—",
            )
            log(
                f"[compare] {arch} {ours_name} vs {theirs_name}: Spearman {row['spearman']:.4f}, rel. diff "
                f"{row['rel_diff']:.2e}, query time ratio {row['query_ratio']:.2f}, solve {row['solve_ratio']:.2f}"
            )
            rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    check_report_paths(args.out)  # before the benchmark, not after it
    _require_pydvl()
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.quick:
        args.repeats = 1
        args.test_points = min(args.test_points, 3)
        if args.models == ["logreg", "mlp"]:
            args.models = ["logreg"]
    env = environment()
    try:
        import pydvl

        env["pydvl"] = pydvl.__version__
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    rows: list[dict[str, Any]] = []
    for arch in args.models:
        rows += compare_model(arch, args)
    print(format_table(rows, COLUMNS))
    if args.out:
        text = (
            f"digits, damping δ={args.damping} (pyDVL regularization = wd + δ), equal accuracy = iHVP within "
            f"{args.target_error:g} relative error of the exact solve; correlations over {args.test_points} test "
            f"points x all training points; times: median of {args.repeats}, one test point, torch threads "
            f"{env.get('torch_threads')}. 'solve' = test gradient + iHVP; 'query' = solve + scoring all training "
            "points."
        )
        meta = {"environment": env, "arguments": {k: v for k, v in vars(args).items() if not k.startswith("_")}}
        for path in write_report(
            args.out,
            title="Ours vs pyDVL",
            command=command_line(),
            sections=[
                {"heading": "Agreement and time at equal accuracy", "text": text, "rows": rows, "columns": COLUMNS}
            ],
            meta=meta,
        ):
            print(f"wrote {path}")
    return 0

"""EK-FAC, K-FAC and Arnoldi influence against the exact Gauss-Newton influence, Kronfluence 1.0.1 and pyDVL 0.10:
Spearman per test point, fit and query time (ratio to one forward+backward pass over the training set).

Kronfluence (``--kronfluence-python``) and pyDVL (``--pydvl-python``) run in their own environments on the same
trained model (MLP or SmallCNN, rebuilt from its weights by ``side_models.py``), data and damping: their damping
λ is our wd + δ (their objectives have no weight-decay term); their scores have no 1/n and the same sign as ours
(pyDVL's "up" influence is ∇ℓ_testᵀ H⁻¹ ∇ℓ_train, checked by the Arnoldi rows: Spearman +1), so we compare the
scores directly and report the median ratio theirs / (n · ours) (1 when the conventions match).

Run: ``python -m influence_core.bench.kfac_compare --out docs/bench/kfac_compare`` (hold the bench lock:
``flock /tmp/influence-bench.lock ...``). The reference is the exact solve of the Gauss-Newton matrix on all n
training points, (G + δI)⁻¹ (wd in G), scored like every solver: score[t, j] = (1/n) ∇ℓ_jᵀ s_t with s_t the
iHVP (:meth:`InfluenceCalculator.scores_from_ihvp`). All rows use the same δ unless the row says "heuristic".
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from influence_core.bench.common import (
    check_report_paths,
    environment,
    format_table,
    time_call,
    torch_threads,
    write_report,
)

KF_COLUMNS = [
    ("config", "model"),
    ("library", "library"),
    ("theirs", "their method"),
    ("fisher", "our Fisher / curvature"),
    ("damping", "δ (theirs: wd + δ)"),
    ("ours_fit_s", "our fit s"),
    ("ours_query_s", "our queries s"),
    ("kf_fit_s", "their fit s"),
    ("kf_query_s", "their queries s"),
    ("time_ratio", "ours / theirs (fit + queries)"),
    ("spearman_mean", "Spearman mean"),
    ("spearman_min", "Spearman min"),
    ("scale", "median theirs / (n · ours)"),
    ("self_spearman", "ours vs ours, other label seed"),
    ("query1_ratio", "our 1 query / fwd+bwd"),
]
COLUMNS = [
    ("config", "model"),
    ("method", "method"),
    ("sample", "sample"),
    ("damping", "δ"),
    ("fit_s", "fit s"),
    ("query_s", "query s"),
    ("query_ratio", "query / fwd+bwd"),
    ("spearman_mean", "Spearman mean"),
    ("spearman_min", "Spearman min"),
    ("pearson_mean", "Pearson mean"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configs", nargs="+", default=["digits:mlp"], help="DATASET:ARCH pairs")
    parser.add_argument("--n-test", type=int, default=20, help="test points compared")
    parser.add_argument("--damping", type=float, default=0.01, help="δ of every row (and of the reference)")
    parser.add_argument("--sample-sizes", type=int, nargs="*", default=[256], help="random-sample EK-FAC fits")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per sampled fit")
    parser.add_argument("--ranks", type=int, nargs="*", default=[50, 200], help="Arnoldi ranks")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="report path (.md/.json, or a stem for both)")
    parser.add_argument(
        "--kronfluence-python",
        default=None,
        help="python of a separate environment with kronfluence 1.0.1 (e.g. /work/venv-compare/bin/"
        "python): adds our EK-FAC against Kronfluence's ekfac (MLP configs only)",
    )
    parser.add_argument("--kf-queries", type=int, default=100, help="test points of the Kronfluence/pyDVL comparison")
    parser.add_argument(
        "--pydvl-python",
        default=None,
        help="python of an environment with pydvl 0.10 (e.g. /work/venv-pydvl/bin/python): adds our "
        "EK-FAC against pyDVL's EkfacInfluence (MLPs; pyDVL's EK-FAC has no Conv2d) and our "
        "Arnoldi against its ArnoldiInfluence (Hessian, rank --pydvl-rank)",
    )
    parser.add_argument("--pydvl-rank", type=int, default=50, help="Arnoldi rank of the pyDVL comparison")
    parser.add_argument(
        "--kf-fishers",
        nargs="+",
        default=["empirical", "true"],
        choices=["empirical", "true"],
        help="Fisher types of the Kronfluence comparison",
    )
    parser.add_argument("--skip-reference", action="store_true", help="only the Kronfluence comparison")


def _compare(ref: np.ndarray, approx: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    rho = [spearmanr(r, a)[0] for r, a in zip(ref, approx)]
    pear = [np.corrcoef(r, a)[0, 1] for r, a in zip(ref, approx)]
    return {
        "spearman_mean": float(np.mean(rho)),
        "spearman_min": float(np.min(rho)),
        "pearson_mean": float(np.mean(pear)),
    }


def measure(spec: str, args: argparse.Namespace, log: Any = print) -> list[dict[str, Any]]:
    import torch
    from torch.nn import functional as F

    from influence_core import InfluenceCalculator, load_dataset, train_model
    from influence_core.sampling.samplers import draw_sample
    from influence_core.sampling.subsets import sampler_inputs
    from influence_core.solvers.arnoldi import fit_arnoldi
    from influence_core.solvers.kfac import fit_kfac

    data_name, _, arch = spec.partition(":")
    ds = load_dataset(data_name, seed=args.seed)
    log(f"[kfac] {spec}: training {arch} on {ds.n_train} points")
    model = train_model(ds, arch, seed=args.seed)
    X, y = torch.as_tensor(ds.X_train), torch.as_tensor(ds.y_train)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y, reduction="sum").backward()

    base = time_call(forward_backward, repeats=max(args.repeats, 5)).median
    model.zero_grad(set_to_none=True)
    calc = InfluenceCalculator(model, ds.X_train, ds.y_train)
    obj = calc.objective
    xt, yt = ds.X_test[: args.n_test], ds.y_test[: args.n_test]
    G_test = calc.gradients(xt, yt)
    x1, y1 = xt[:1], yt[:1]
    delta = args.damping
    rows: list[dict[str, Any]] = []

    def row(method: str, sample: str, inverse: Any, fit_s: float, damping: Any, ref: np.ndarray) -> dict[str, Any]:
        scores = calc.scores_from_ihvp(inverse.solve(G_test).x)
        query = time_call(
            lambda: calc.scores_from_ihvp(inverse.solve(calc.gradients(x1, y1)).x), repeats=args.repeats
        ).median
        r = {
            "config": spec,
            "method": method,
            "sample": sample,
            "damping": damping,
            "fit_s": fit_s,
            "query_s": query,
            "query_ratio": query / base,
            **_compare(ref, scores),
        }
        log(format_table([r], COLUMNS))
        return r

    rows_kf = kronfluence_rows(spec, args, model, ds, calc, base, log) if args.kronfluence_python else []
    if args.pydvl_python:
        rows_kf += pydvl_rows(spec, args, model, ds, calc, base, log)
    if args.skip_reference:
        return [], rows_kf
    if obj.n_params > 20_000:
        log(f"[kfac] {spec}: p = {obj.n_params} is too large for the exact Gauss-Newton reference; skipped")
        return [], rows_kf
    log(f"[kfac] {spec}: exact Gauss-Newton reference on all {obj.n} points (p = {obj.n_params})")
    start = time.perf_counter()
    calc.fit(None, solver="exact", curvature="gauss_newton", damping=delta)
    ref_fit = time.perf_counter() - start
    ref = calc.scores(xt, yt)
    rows.append(row("exact GN (reference)", f"all {obj.n}", calc.inverse, ref_fit, delta, ref))

    def timed(fn: Any) -> tuple[Any, float]:
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    full = f"all {obj.n}"
    for method, fisher in (("ekfac", "gauss_newton"), ("ekfac", "true"), ("kfac", "true"), ("ekfac", "empirical")):
        inv, t = timed(lambda: fit_kfac(obj, None, method=method, fisher=fisher, damping=delta, seed=args.seed))
        rows.append(row(f"{method} ({fisher} Fisher)", full, inv, t, delta, ref))
    inv, t = timed(lambda: fit_kfac(obj, None, method="ekfac", fisher="true", damping="heuristic", seed=args.seed))
    rows.append(row("ekfac (true Fisher)", full, inv, t, "heuristic", ref))
    for rank in args.ranks:
        if rank > obj.n_params:
            continue
        inv, t = timed(
            lambda: fit_arnoldi(obj, None, rank=rank, curvature="gauss_newton", damping=delta, seed=args.seed, tol=1e-6)
        )
        rows.append(row(f"arnoldi rank {rank} (GN)", full, inv, t, delta, ref))
    inputs = sampler_inputs(model, ds, with_features=False)
    for m in args.sample_sizes:
        for seed in range(args.seeds):
            sample = draw_sample("random", inputs, m, seed=seed)
            inv, t = timed(lambda: fit_kfac(obj, sample, method="ekfac", fisher="true", damping=delta, seed=seed))
            rows.append(row("ekfac (true Fisher)", f"random {m}, seed {seed}", inv, t, delta, ref))
    return rows, rows_kf


def _side_problem(directory: Any, spec: str, model: Any, ds: Any, Xq: Any, yq: Any, settings: dict[str, Any]) -> None:
    """problem.npz for a side script: the data, the query points, the weights and the JSON settings."""
    import json
    from pathlib import Path

    arch = spec.partition(":")[2]
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    settings = {**settings, "arch": arch, "image_shape": list(ds.image_shape) if ds.image_shape else None}
    np.savez(
        Path(directory) / "problem.npz",
        X_train=np.asarray(ds.X_train),
        y_train=np.asarray(ds.y_train),
        X_query=np.asarray(Xq),
        y_query=np.asarray(yq),
        settings=np.array(json.dumps(settings)),
        **weights,
    )


def _run_side(python: str, script: str, directory: Any, result: str) -> tuple[np.ndarray, float, float]:
    import subprocess
    from pathlib import Path

    subprocess.run([python, str(Path(__file__).with_name(script)), str(directory)], check=True)
    with np.load(Path(directory) / result, allow_pickle=False) as f:
        return f["scores"], float(f["fit_seconds"]), float(f["score_seconds"])


def _ours(calc: Any, inverse: Any, Xq: Any, yq: Any) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    scores = calc.scores_from_ihvp(inverse.solve(calc.gradients(Xq, yq)).x)
    return scores, time.perf_counter() - start


def _one_query_ratio(calc: Any, inverse: Any, ds: Any, base: float, repeats: int) -> float:
    x1, y1 = ds.X_test[:1], ds.y_test[:1]
    return (
        time_call(lambda: calc.scores_from_ihvp(inverse.solve(calc.gradients(x1, y1)).x), repeats=repeats).median / base
    )


def kronfluence_rows(
    spec: str, args: argparse.Namespace, model: Any, ds: Any, calc: Any, base: float, log: Any = print
) -> list[dict[str, Any]]:
    """Our EK-FAC (all training points) against Kronfluence's ``ekfac`` on the same model, data and damping:
    Kronfluence's λ is our wd + δ (it has no weight decay term), its scores have no 1/n."""
    import tempfile

    from influence_core.solvers.kfac import fit_kfac

    obj = calc.objective
    Xq, yq = ds.X_test[: args.kf_queries], ds.y_test[: args.kf_queries]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fisher in args.kf_fishers:
            settings = {
                "damping": obj.weight_decay + args.damping,
                "fisher": fisher,
                "threads": args.threads,
                "seed": args.seed,
                "dtype": "float64" if obj.dtype.itemsize == 8 else "float32",
                "batch_size": 256,
            }
            _side_problem(tmp, spec, model, ds, Xq, yq, settings)
            log(f"[kfac] {spec}: Kronfluence ekfac ({fisher} Fisher) in {args.kronfluence_python}")
            kf_scores, kf_fit, kf_query = _run_side(
                args.kronfluence_python, "kronfluence_side.py", tmp, "kronfluence.npz"
            )
            start = time.perf_counter()
            inv = fit_kfac(obj, None, method="ekfac", fisher=fisher, damping=args.damping, seed=args.seed)
            fit = time.perf_counter() - start
            ours, query = _ours(calc, inv, Xq, yq)
            ratio = np.abs(kf_scores).mean(1) / (obj.n * np.abs(ours).mean(1))
            if fisher == "true":  # the Monte-Carlo label noise: our own fit with other label draws
                other = fit_kfac(obj, None, method="ekfac", fisher=fisher, damping=args.damping, seed=args.seed + 1)
                self_rho = _compare(ours, _ours(calc, other, Xq, yq)[0])
            else:
                self_rho = {"spearman_mean": 1.0}
            r = {
                "config": spec,
                "library": "Kronfluence 1.0.1",
                "theirs": "ekfac",
                "fisher": fisher,
                "damping": args.damping,
                "ours_fit_s": fit,
                "ours_query_s": query,
                "kf_fit_s": kf_fit,
                "kf_query_s": kf_query,
                "time_ratio": (fit + query) / (kf_fit + kf_query),
                **_compare(kf_scores, ours),
                "scale": float(np.median(ratio)),
                "self_spearman": self_rho["spearman_mean"],
                "query1_ratio": _one_query_ratio(calc, inv, ds, base, args.repeats),
            }
            log(format_table([r], KF_COLUMNS))
            rows.append(r)
    return rows


def pydvl_rows(
    spec: str, args: argparse.Namespace, model: Any, ds: Any, calc: Any, base: float, log: Any = print
) -> list[dict[str, Any]]:
    """Our EK-FAC against pyDVL's EkfacInfluence (update_diagonal=True; MLPs only) and our Arnoldi (Hessian,
    rank k) against its ArnoldiInfluence (Hessian mode, rank k), all training points, same damping (pyDVL's
    regularisation = wd + δ). pyDVL's EK-FAC fits its factors with one deterministic cotangent per point, the
    gradient of Σ_c √p_c log p_c (its ``empirical_cross_entropy_loss_fn``), which is none of our Fisher options;
    it is compared with our exact-expectation ("gauss_newton") and true-Fisher EK-FAC."""
    import tempfile

    from influence_core.solvers.arnoldi import fit_arnoldi
    from influence_core.solvers.kfac import fit_kfac

    obj = calc.objective
    Xq, yq = ds.X_test[: args.kf_queries], ds.y_test[: args.kf_queries]
    rows = []
    base_settings = {
        "regularization": obj.weight_decay + args.damping,
        "threads": args.threads,
        "seed": args.seed,
        "dtype": "float64" if obj.dtype.itemsize == 8 else "float32",
        "batch_size": 256,
        "rank": args.pydvl_rank,
        "tol": 1e-6,
    }
    methods = (["ekfac"] if spec.endswith(":mlp") else []) + ["arnoldi"]
    if not spec.endswith(":mlp"):
        log(f"[kfac] {spec}: pyDVL's EkfacInfluence supports nn.Linear layers only (no Conv2d); EK-FAC skipped")
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            _side_problem(tmp, spec, model, ds, Xq, yq, {**base_settings, "method": method})
            log(f"[kfac] {spec}: pyDVL {method} in {args.pydvl_python}")
            theirs, t_fit, t_query = _run_side(args.pydvl_python, "pydvl_side.py", tmp, "pydvl.npz")
            variants = [("ekfac", "gauss_newton"), ("ekfac", "true")] if method == "ekfac" else [("arnoldi", "hessian")]
            for ours_method, fisher in variants:
                start = time.perf_counter()
                if ours_method == "ekfac":
                    inv = fit_kfac(obj, None, method="ekfac", fisher=fisher, damping=args.damping, seed=args.seed)
                else:
                    inv = fit_arnoldi(
                        obj,
                        None,
                        rank=args.pydvl_rank,
                        curvature="hessian",
                        damping=args.damping,
                        seed=args.seed,
                        tol=1e-6,
                    )
                fit = time.perf_counter() - start
                ours, query = _ours(calc, inv, Xq, yq)
                ratio = np.abs(theirs).mean(1) / (obj.n * np.abs(ours).mean(1))
                r = {
                    "config": spec,
                    "library": "pyDVL 0.10",
                    "theirs": "EkfacInfluence" if method == "ekfac" else f"ArnoldiInfluence rank {args.pydvl_rank}",
                    "fisher": fisher if ours_method == "ekfac" else f"Hessian, rank {args.pydvl_rank}",
                    "damping": args.damping,
                    "ours_fit_s": fit,
                    "ours_query_s": query,
                    "kf_fit_s": t_fit,
                    "kf_query_s": t_query,
                    "time_ratio": (fit + query) / (t_fit + t_query),
                    **_compare(theirs, ours),
                    "scale": float(np.median(ratio)),
                    "self_spearman": float("nan"),
                    "query1_ratio": _one_query_ratio(calc, inv, ds, base, args.repeats),
                }
                log(format_table([r], KF_COLUMNS))
                rows.append(r)
    return rows


def run(args: argparse.Namespace) -> int:
    check_report_paths(args.out)  # before the benchmark, not after it
    with torch_threads(args.threads):
        env = environment()
        rows, rows_kf = [], []
        for spec in args.configs:
            a, b = measure(spec, args)
            rows += a
            rows_kf += b
        import os

        env["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print(format_table(rows, COLUMNS))
    if rows_kf:
        print(format_table(rows_kf, KF_COLUMNS))
    if args.out:
        text = (
            "Reference: exact (G + δI)⁻¹ on all training points, Gauss-Newton curvature with the training weight "
            "decay. Spearman/Pearson: per test point over all training points, mean and min over the test "
            "points. Query: one test point against all training points (iHVP + scoring), median of repeats, "
            "as a ratio to one forward+backward pass over the training set."
        )
        write_report(
            args.out,
            title="EK-FAC, K-FAC and Arnoldi against the exact Gauss-Newton influence",
            command="python -m influence_core.bench.kfac_compare " + " ".join(sys.argv[1:]),
            sections=[{"heading": "Agreement and time", "text": text, "rows": rows, "columns": COLUMNS}]
            + (
                [
                    {
                        "heading": "Against Kronfluence 1.0.1 (ekfac) and pyDVL 0.10",
                        "rows": rows_kf,
                        "columns": KF_COLUMNS,
                        "text": "Same model, data and damping (their damping = wd + δ); all training points fit "
                        "the factors on both sides (Kronfluence: float64 covariances). pyDVL's 'up' scores "
                        "have our sign. Time: factor fit, then scores "
                        f"of the {args.kf_queries} query points against all training points, same torch "
                        "threads; last column: one query (iHVP + scores of one test point against all "
                        "training points) over one forward+backward pass over the training set.",
                    }
                ]
                if rows_kf
                else []
            ),
            meta={"environment": env, "args": vars(args)},
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

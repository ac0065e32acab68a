"""The full-data Gauss-Newton influence of a model too large for the dense matrix (p > EXACT_MAX_PARAMS) and too slow
for matrix-free CG (each iteration costs k forward-mode products for k test points), scored against shipped ground
truth: the reference the frontier's sampled methods are measured against.

CG on the materialised full-data factor: U = ``Objective.gauss_newton_factors()`` (n(C−1), p), with
G = UᵀU + wd·I the full-data Gauss-Newton matrix (mean over the n points, the project's convention), so one iteration
for all k test points is two dense products, V ↦ (V Uᵀ) U + wd·V, instead of k Jacobian-vector and k vector-Jacobian
passes over the training set. Then (G + δI) s_t = ∇ℓ_t is solved by the engine's ``solve_cg`` (relative residual 1e-6,
as the frontier's CG), and scores = (1/n) ∇ℓ_jᵀ s_t through ``InfluenceCalculator.scores_from_ihvp``. Memory:
n(C−1)·p numbers (3.8 GB for the MNIST-5k CNN in float32). The factor is checked against the matrix-free product
``Objective.hvp`` on random vectors (relative error recorded).

Cost is measured as in benchmarks/frontier.py: process CPU time of factor + test gradients + solve + scoring, as a
multiple of one batched forward+backward pass over the training set (one torch thread), and peak resident memory.

Usage: ``flock /tmp/influence-bench.lock python benchmarks/full_data_reference.py --ground-truth mnist5k_cnn
--out docs/frontier``  (writes OUT/NAME_full_data.json and .md)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence_core.bench.common import environment  # noqa: E402
from influence_core.evaluation.ground_truth import lds_against, load_ground_truth  # noqa: E402
from influence_core.evaluation.memory import PeakMemory  # noqa: E402
from influence_core.io_safety import atomic_path, jsonable  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ground-truth", required=True, help="a name in ground_truth/ or a path")
    ap.add_argument("--damping", type=float, default=0.01)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--out", default="docs/frontier")
    args = ap.parse_args(argv)

    import torch
    from torch.nn import functional as F

    from influence_core.data.datasets import load_dataset
    from influence_core.influence.calculator import InfluenceCalculator
    from influence_core.models.training import train_model
    from influence_core.solvers.cg import solve_cg

    torch.set_num_threads(1)
    env = environment()
    gt = load_ground_truth(args.ground_truth)
    r = gt.recipe
    ds = load_dataset(r["dataset"]["name"], seed=r["dataset"]["seed"], **r["dataset"]["options"])
    model = train_model(ds, r["model"]["arch"], seed=r["model"]["seed"], **r["model"]["train_settings"])
    X_t, y_t = ds.X_test[gt.test_indices], ds.y_test[gt.test_indices]
    X = torch.as_tensor(ds.X_train).to(next(model.parameters()).dtype)
    y = torch.as_tensor(ds.y_train)

    def forward_backward() -> float:
        start = time.process_time()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y, reduction="sum").backward()
        return time.process_time() - start

    base = float(np.median([forward_backward() for _ in range(11)]))
    model.zero_grad(set_to_none=True)
    print(f"ground truth {gt.name}: {gt.k_done} subsets; forward+backward {base:.3f} s", flush=True)

    with PeakMemory() as mem:
        start, wall_start = time.process_time(), time.perf_counter()
        calc = InfluenceCalculator(model, ds.X_train, ds.y_train)
        obj = calc.objective
        U = obj.gauss_newton_factors()  # (n(C−1), p)
        factor_seconds = time.process_time() - start
        print(f"factor {tuple(U.shape)} in {factor_seconds:.1f} s", flush=True)
        G = calc.gradients(X_t, y_t)

        def product(V: torch.Tensor) -> torch.Tensor:
            return (V @ U.T) @ U + obj.weight_decay * V

        solved = solve_cg(product, G, args.damping, tol=args.tol, max_iter=args.max_iter, on_nonconvergence="warn")
        print(f"CG: {solved.iterations} iterations, residual {solved.trace[-1]:.2e}, stop {solved.stop}", flush=True)
        S = calc.scores_from_ihvp(solved.x)
        seconds, wall = time.process_time() - start, time.perf_counter() - wall_start
    V = torch.randn(2, obj.n_params, dtype=obj.dtype, generator=torch.Generator().manual_seed(0))
    want = obj.hvp(V, None, None, "gauss_newton")
    factor_error = float((product(V) - want).norm() / want.norm())
    lds = lds_against(S, gt).lds
    result = {
        "ground_truth": gt.name,
        "k_done": gt.k_done,
        "partial": gt.partial,
        "command": "python " + " ".join(sys.argv),
        "environment": env | {"load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "method": "full-data Gauss-Newton influence, CG on the materialised factor",
        "n_params": obj.n_params,
        "n_train": obj.n,
        "damping": args.damping,
        "lds": lds,
        "seconds": seconds,
        "cost_ratio": seconds / base,
        "forward_backward_seconds": base,
        "factor_seconds": factor_seconds,
        "factor_shape": [obj.n * (obj.n_classes - 1), obj.n_params],
        "factor_vs_matrix_free_relative_error": factor_error,
        "cg": {"iterations": solved.iterations, "residual": solved.trace[-1], "stop": solved.stop, "tol": args.tol},
        "peak_mb": mem.mb,
        "time": "process CPU time, one torch thread",
    }
    # the same record as one of benchmarks/frontier.py's rows (its cost ratio uses this run's forward+backward pass)
    result["row"] = {
        "method": "full-data",
        "sampler": "all",
        "m": obj.n,
        "solver": "cg_factor",
        "seed": 0,
        "lds": lds,
        "seconds": seconds,
        "cost_ratio": seconds / base,
        "wall_seconds": wall,
        "peak_mb": mem.mb,
        "status": "ok" if solved.converged else f"CG stopped ({solved.stop}) at residual {solved.trace[-1]:.1e}",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"{gt.name}_full_data.json") as tmp:
        tmp.write_text(json.dumps(jsonable(result), indent=1) + "\n")
    md = (
        f"### Full-data Gauss-Newton influence: {gt.name} (p = {obj.n_params}, n = {obj.n}, K = {gt.k_done}"
        f"{' partial' if gt.partial else ''})\n\n`{result['command']}`; load average "
        f"{env.get('load_average_at_start')} at the start, {result['environment']['load_average_at_end']} at the "
        f"end.\n\n| method | LDS | cost (× fwd+bwd) | CPU s | CG iterations | final residual | peak MB |\n"
        f"|---|---:|---:|---:|---:|---:|---:|\n| CG on the materialised factor ({result['factor_shape'][0]:,} × "
        f"{obj.n_params:,}) | {lds:.3f} | {seconds / base:.0f} | {seconds:.1f} | {solved.iterations} | "
        f"{solved.trace[-1]:.1e} | {mem.mb:.0f} |\n\nFactor vs the matrix-free product: relative error "
        f"{factor_error:.1e}; factor built in {factor_seconds:.1f} s; one forward+backward pass {base:.3f} s.\n"
    )
    with atomic_path(out / f"{gt.name}_full_data.md") as tmp:
        tmp.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

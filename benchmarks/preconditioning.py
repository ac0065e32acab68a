"""The sample as a preconditioner: iterations and wall time of the full-data Gauss-Newton solve to the same relative
residual, plain CG against CG preconditioned by each registered sampler's Hessian sample (solver ``pcg``).

    python benchmarks/preconditioning.py --model digits_mlp mnist5k_mlp --out docs/preconditioning

For each model (trained by ``train_model`` with the LDS studies' recipe: dataset seed 0, training seed 0, default
settings), the right-hand sides are the test-loss gradients of the first ``--n-rhs`` test points; every solve runs
to the relative residual ``--tol`` on (G + δI) X = B with G the full-data Gauss-Newton matrix (wd·I included).
Recorded per solve: iterations, stop reason, residual trace, fit (sample + preconditioner) and solve seconds,
full-data Hessian-vector products (iterations × n_rhs + the preconditioner's set-up products), and the relative
difference of the answer from plain CG's. Variants of the preconditioner (``--variants``):

- ``nystrom``: the sample's eigenpairs above wd + δ, complement at the smallest kept eigenvalue (the default);
- ``top64``: only the sample's 64 largest eigenpairs (the directions the sample estimates best);
- ``ritz64``: the sample's 64 largest eigenvectors with their eigenvalues from the full data (Rayleigh-Ritz, 64
  full-data products at fit).

Writes ``<out>/<model>.json`` and ``<out>/<model>.md`` after every solve (so an interrupted run keeps what it
measured); the command and the load averages at start and end are in both.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence_core import load_dataset, train_model  # noqa: E402
from influence_core.bench.common import environment  # noqa: E402
from influence_core.curvature.objective import Objective  # noqa: E402
from influence_core.sampling.samplers import available_samplers, draw_sample  # noqa: E402
from influence_core.sampling.subsets import sampler_inputs  # noqa: E402
from influence_core.solvers.registry import fit_inverse  # noqa: E402
from influence_core.studies.output import write_json, write_text  # noqa: E402

MODELS = {"digits_mlp": ("digits", "mlp"), "mnist5k_mlp": ("mnist5k", "mlp")}
VARIANTS: dict[str, dict[str, Any]] = {
    "nystrom": {},
    "top64": {"rank": 64},
    "ritz64": {"eigenvalues": "full", "rank": 64},
}


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def timed_solve(
    obj: Objective, B: torch.Tensor, solver: str, indices: Any, weights: Any, damping: float, **options: Any
) -> tuple[dict[str, Any], torch.Tensor]:
    t0 = time.perf_counter()
    fit = fit_inverse(obj, indices, weights, solver=solver, damping=damping, curvature="gauss_newton", **options)
    t1 = time.perf_counter()
    result = fit.solve(B)
    t2 = time.perf_counter()
    record = {
        "iterations": result.iterations,
        "converged": result.converged,
        "stop": result.info.get("stop", "tol" if result.converged else "max_iter"),
        "fit_seconds": t1 - t0,
        "solve_seconds": t2 - t1,
        "seconds": t2 - t0,
        "setup_products": int(result.info.get("setup_products", 0)),
        "preconditioner_rank": result.info.get("preconditioner_rank"),
        "trace": [float(f"{v:.4g}") for v in result.trace],
    }
    record["full_products"] = record["iterations"] * len(B) + record["setup_products"]
    return record, result.x


def run_model(name: str, args: argparse.Namespace, command: str) -> dict[str, Any]:
    dataset_name, arch = MODELS[name]
    out = Path(args.out) / f"{name}.json"
    record: dict[str, Any] = {
        "command": command,
        "model": name,
        "environment": environment(),
        "load_average_start": load_average(),
    }
    t0 = time.perf_counter()
    dataset = load_dataset(dataset_name, seed=0)
    model = train_model(dataset, arch, seed=0)
    obj = Objective(model, dataset.X_train, dataset.y_train, model.weight_decay)
    record["setup"] = {
        "dataset": dataset_name,
        "arch": arch,
        "n_train": obj.n,
        "p": obj.n_params,
        "weight_decay": model.weight_decay,
        "damping": args.damping,
        "tol": args.tol,
        "n_rhs": args.n_rhs,
        "ms": args.ms,
        "seeds": args.seeds,
        "variants": args.variants,
        "samplers": args.samplers,
        "train_seconds": time.perf_counter() - t0,
        "torch_threads": torch.get_num_threads(),
    }
    B = obj.query_grads(dataset.X_test[: args.n_rhs], dataset.y_test[: args.n_rhs])
    inputs = sampler_inputs(model, dataset)
    plain, X_ref = timed_solve(obj, B, "cg", None, None, args.damping, tol=args.tol, max_iter=args.max_iter)
    record["plain_cg"] = plain
    print(f"{name}: plain CG {plain['iterations']} iterations, {plain['seconds']:.1f} s", flush=True)
    rows: list[dict[str, Any]] = []
    record["rows"] = rows
    for m in args.ms:
        for sampler in args.samplers:
            for seed in range(args.seeds):
                options = {"ridge": model.weight_decay + args.damping} if sampler == "ridge_leverage" else {}
                ts = time.perf_counter()
                sample = draw_sample(sampler, inputs, m, seed=seed, **options)
                sample_seconds = time.perf_counter() - ts
                for variant in args.variants:
                    row, X = timed_solve(
                        obj,
                        B,
                        "pcg",
                        sample.indices,
                        sample.weights,
                        args.damping,
                        tol=args.tol,
                        max_iter=args.max_iter,
                        **VARIANTS[variant],
                    )
                    row.update(
                        {
                            "sampler": sampler,
                            "m": m,
                            "seed": seed,
                            "variant": variant,
                            "sample_seconds": sample_seconds,
                            "relative_difference_from_cg": float((X - X_ref).norm() / X_ref.norm()),
                        }
                    )
                    rows.append(row)
                    print(
                        f"  {sampler:16s} m={m:4d} seed={seed} {variant:8s} {row['iterations']:4d} it "
                        f"{row['seconds']:6.1f} s",
                        flush=True,
                    )
                    record["load_average_end"] = load_average()
                    write_json(out, record, indent=1)
                    write_text(Path(args.out) / f"{name}.md", markdown(record))
    record["total_seconds"] = time.perf_counter() - t0
    record["load_average_end"] = load_average()
    write_json(out, record, indent=1)
    write_text(Path(args.out) / f"{name}.md", markdown(record))
    return record


def markdown(record: dict[str, Any]) -> str:
    s, plain = record["setup"], record["plain_cg"]
    lines = [
        f"### Preconditioning: {s['dataset']} / {s['arch']} (n = {s['n_train']}, p = {s['p']}, "
        f"wd = {s['weight_decay']:g}, δ = {s['damping']:g}, {s['n_rhs']} right-hand sides, tol {s['tol']:g})",
        "",
        f"Command: `{record['command']}`  ",
        f"Load average at start {record['load_average_start']}, at end "
        f"{record['load_average_end']}; torch threads {s['torch_threads']}.",
        "",
        f"Plain CG on the full data: **{plain['iterations']} iterations**, {plain['seconds']:.1f} s "
        f"({plain['full_products']} full-data products).",
        "",
        "PCG, mean ± std over seeds of iterations (and mean wall seconds, fit + solve); ratio = mean iterations "
        "/ plain CG's.",
        "",
    ]
    variants = s["variants"]
    lines.append("| sampler | m | " + " | ".join(f"{v} it | {v} s | {v} ratio" for v in variants) + " |")
    lines.append("|---|---:|" + "---:|---:|---:|" * len(variants))
    rows = record["rows"]
    for m in s["ms"]:
        for sampler in s["samplers"]:
            cells = []
            for v in variants:
                sel = [r for r in rows if r["m"] == m and r["sampler"] == sampler and r["variant"] == v]
                if not sel:
                    cells.append("— | — | —")
                    continue
                it = np.array([r["iterations"] for r in sel], dtype=float)
                sec = np.mean([r["seconds"] for r in sel])
                flag = "" if all(r["converged"] for r in sel) else " (not converged)"
                ratio = it.mean() / plain["iterations"]
                cells.append(f"{it.mean():.1f} ± {it.std():.1f}{flag} | {sec:.1f} | {ratio:.2f}")
            lines.append(f"| {sampler} | {m} | " + " | ".join(cells) + " |")
    worst = max((r["relative_difference_from_cg"] for r in rows), default=float("nan"))
    lines += [
        "",
        f"Largest relative difference of a PCG answer from plain CG's: {worst:.2e} (both at tol {s['tol']:g}).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--ms", nargs="+", type=int, default=[32, 64, 128, 256])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--samplers", nargs="+", default=available_samplers(), choices=available_samplers())
    parser.add_argument("--variants", nargs="+", default=["nystrom", "ritz64"], choices=list(VARIANTS))
    parser.add_argument("--n-rhs", type=int, default=10)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--damping", type=float, default=0.01)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/preconditioning")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/preconditioning.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for name in args.model:
        run_model(name, args, command)


if __name__ == "__main__":
    main()

"""Removal solver choice on digits MLP (default training): wall time and accuracy of the update Δ for CG, LiSSA
(tol 1e-4) and the exact low-rank (Woodbury) solve of the same Gauss-Newton system, δ = 0.01, classes 0, 3, 7,
random samples of m = 64, 256 and 1024. Accuracy: ||Δ − Δ_exact|| / ||Δ_exact|| with Δ_exact the low-rank solve
(exact for Gauss-Newton; the dense p×p solve was dropped to fit the machine's load).

    flock /tmp/influence-bench.lock env PYTHONPATH=. python benchmarks/removal_solver_choice.py
    docs/removal/solver_choice.json
"""

import json
import os
import sys

import numpy as np
import torch

from influence_core import load_dataset, train_model
from influence_core.removal.class_removal import ClassRemoval

torch.set_num_threads(1)
d = load_dataset("digits")
model = train_model(d, "mlp", seed=0)
task = ClassRemoval(model, d)
rows = []
load0 = os.getloadavg()
task.run(0, "random", 64, 0, solver="cg", alphas=[1.0])  # warm-up
for c in (0, 3, 7):
    for m in (64, 256, 1024):
        ref = task.run(c, "random", m, 0, solver="low_rank", alphas=[1.0])
        for solver, opts in (("cg", {"tol": 1e-4, "max_iter": 10000}), ("lissa", {"tol": 1e-4, "max_iter": 10000})):
            r = task.run(c, "random", m, 0, solver=solver, alphas=[1.0], **opts)
            err = float((r.delta - ref.delta).norm() / ref.delta.norm())
            rows.append(
                {
                    "class": c,
                    "m": r.m,
                    "solver": solver,
                    "seconds": r.solver_seconds,
                    "iterations": r.iterations,
                    "rel_error_vs_exact": err,
                    "converged": r.converged,
                }
            )
        rows.append(
            {
                "class": c,
                "m": ref.m,
                "solver": "low_rank",
                "seconds": ref.solver_seconds,
                "iterations": 0,
                "rel_error_vs_exact": 0.0,
                "converged": True,
            }
        )
    print(c, file=sys.stderr, flush=True)
out = {
    "command": "flock /tmp/influence-bench.lock env PYTHONPATH=. python benchmarks/removal_solver_choice.py "
    "docs/removal/solver_choice.json",
    "rows": rows,
    "load_average_start": load0,
    "load_average_end": os.getloadavg(),
    "n_params": task.train_objective.n_params,
}
summary = {}
for solver in ("low_rank", "cg", "lissa"):
    for m in sorted({r["m"] for r in rows}):
        sel = [r for r in rows if r["solver"] == solver and r["m"] == m]
        summary[f"{solver} m={m}"] = {
            k: float(np.median([r[k] for r in sel])) for k in ("seconds", "iterations", "rel_error_vs_exact")
        } | {"max_rel_error": float(max(r["rel_error_vs_exact"] for r in sel))}
out["summary_median"] = summary
json.dump(out, open(sys.argv[1], "w"), indent=1)
for k, v in summary.items():
    print(k, v)
print("load", load0, os.getloadavg())

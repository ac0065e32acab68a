"""The cost-faithfulness frontier: LDS against shipped ground truth versus cost, for every registered Hessian
sampler × m × solver fitted on the sample, the full-data solvers and gradient dot.

For a model with shipped ground truth (``ground_truth/NAME.npz``), the script retrains nothing: it trains the
ground truth's model with its recipe (and checks that its test logits match the file's), then for each configuration
measures, in one process and one run:

- **LDS** of the (T, n) score matrix against the shipped retrains (:func:`lds_against`), mean and std over sampler
  seeds;
- **cost**: time of everything the method needs to score all T studied test points against all n training points
  (sampler inputs and draw, fit, scoring), as a ratio to one batched forward+backward pass over the training set
  measured in the same run (median of 21, at the start; the end's is recorded too); the median over sampler seeds
  (deterministic methods are repeated as many times). With one torch thread the time is the process's CPU time
  (``time.process_time``): on an idle machine it equals the wall time, and on a shared one it is not inflated by
  other jobs (a 2 ms pass and a 2 s fit are preempted very differently). Wall seconds are recorded beside it;
- **peak memory**: the peak resident memory the configuration added to the process (VmHWM reset before it,
  :class:`~influence_core.evaluation.memory.PeakMemory`), in MB.

Samplers come from the sampler registry and solvers from the solver registry (``available_samplers()``,
``available_solvers()``), so new ones appear without editing this script. The Pareto frontier (no other point is at
most as costly and at least as faithful) is marked, and for each budget (a multiple of the forward+backward pass) the
most faithful configuration within it is named. Writes ``OUT/NAME.json``, ``.csv``, ``.md`` and ``.png``; while it
runs, ``OUT/NAME.partial.json`` holds the finished rows (a stopped run keeps them).

    python benchmarks/frontier.py --ground-truth digits_mlp --out docs/frontier

Run it alone (under the shared bench lock) with one torch thread; the load average is recorded in the result.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence_core.bench.common import environment, time_call  # noqa: E402
from influence_core.evaluation.ground_truth import lds_against, load_ground_truth  # noqa: E402
from influence_core.evaluation.memory import PeakMemory  # noqa: E402
from influence_core.io_safety import atomic_path, jsonable  # noqa: E402

BUDGETS = (3, 10, 30, 100, 300, 1000, 3000, 10000, math.inf)
"""Budgets (multiples of one forward+backward pass over the training set) of the per-budget table."""
REPEAT_LIMIT_S = 30.0
"""A deterministic configuration slower than this is timed once."""
SAMPLE_SKIP = ("low_rank",)
"""Solvers not run on samples by default: ``low_rank`` is what ``exact`` does on a Gauss-Newton sample with
m(C−1) < p (the Woodbury inverse)."""
FULL_SKIP = ("low_rank", "pcg")
"""Not run on all n points by default: ``low_rank``'s rank n(C−1) exceeds p on these models (``exact`` takes the
dense LU); ``pcg`` with every point as its preconditioning sample is plain CG with a dense preconditioner."""
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {"cg": {"tol": 1e-6, "max_iter": 1000}, "lissa": {"max_iter": 2000}}
"""Solver options used (recorded in the result): the studies' CG reference; LiSSA capped at 2,000 iterations."""


def _say(msg: str) -> None:
    print(f"[frontier {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_median(fn: Any, repeats: int = 21) -> float:
    """Median process CPU time of ``fn()`` over ``repeats`` calls after one untimed call."""
    fn()
    values = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        values.append(time.process_time() - start)
    return float(np.median(values))


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, quality) points: True where no other point has cost <= and quality >= with one strict."""
    out = []
    for i, (c, q) in enumerate(points):
        dominated = any(
            (c2 <= c and q2 >= q and (c2 < c or q2 > q))
            for j, (c2, q2) in enumerate(points)
            if j != i and np.isfinite(c2) and np.isfinite(q2)
        )
        out.append(bool(np.isfinite(c) and np.isfinite(q) and not dominated))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.nn import functional as F

    from influence_core.curvature.objective import EXACT_MAX_PARAMS
    from influence_core.data.datasets import load_dataset
    from influence_core.influence.calculator import InfluenceCalculator
    from influence_core.models.training import train_model
    from influence_core.models.zoo import predict_logits
    from influence_core.sampling.samplers import available_samplers, draw_sample
    from influence_core.sampling.subsets import sampler_inputs
    from influence_core.solvers.registry import available_solvers

    torch.set_num_threads(args.threads)
    env = environment()
    options = {solver: dict(opts) for solver, opts in DEFAULT_OPTIONS.items()}
    if args.cg_max_iter is not None:
        options["cg"]["max_iter"] = args.cg_max_iter  # a truncated CG (stops there, unconverged, with a warning)
    gt = load_ground_truth(args.ground_truth)
    r = gt.recipe
    _say(
        f"ground truth {gt.name}: {gt.k_done} subsets{' (partial)' if gt.partial else ''}, "
        f"{len(gt.test_indices)} test points"
    )
    ds = load_dataset(r["dataset"]["name"], seed=r["dataset"]["seed"], **r["dataset"]["options"])
    model = train_model(ds, r["model"]["arch"], seed=r["model"]["seed"], **r["model"]["train_settings"])
    logit_diff = float(np.max(np.abs(predict_logits(model, ds.X_test[gt.test_indices]) - gt.full_logits)))
    idx = gt.test_indices
    X_t, y_t = ds.X_test[idx], ds.y_test[idx]
    n = ds.n_train
    X, y = torch.as_tensor(ds.X_train), torch.as_tensor(ds.y_train)
    dtype = next(model.parameters()).dtype
    X = X.to(dtype)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y, reduction="sum").backward()

    base = cpu_median(forward_backward)
    model.zero_grad(set_to_none=True)
    p = sum(t.numel() for t in model.parameters())
    _say(
        f"model {r['model']['arch']} p = {p}, n = {n}; forward+backward {base * 1e3:.1f} ms; |Δ logit| vs the "
        f"file {logit_diff:.1e}"
    )
    samplers = args.samplers or available_samplers()
    solvers = args.solvers or [s for s in available_solvers() if s not in SAMPLE_SKIP]
    full_solvers = args.full_solvers or [s for s in available_solvers() if s not in FULL_SKIP]
    max_m = {k: int(v) for k, _, v in (item.partition("=") for item in args.solver_max_m)}
    every_solver = set(args.every_solver_samplers if args.every_solver_samplers is not None else samplers)
    rows: list[dict[str, Any]] = []
    partial = Path(args.out) / f"{args.name or gt.name}.partial.json"

    def checkpoint() -> None:
        """The finished rows so far, so that a run stopped before its end (killed, out of memory, out of time) leaves
        its measurements behind; removed once the full result is written."""
        partial.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": "python " + " ".join(sys.argv), "git_commit": _git_commit(), "environment": env}
        record |= {"forward_backward_seconds": base, "load_average_now": [round(v, 2) for v in os.getloadavg()]}
        with atomic_path(partial) as tmp:
            tmp.write_text(json.dumps(jsonable(record | {"runs": rows}), indent=1) + "\n")

    def measure(method: str, build: Any, **record: Any) -> None:
        with PeakMemory() as mem:
            start, cpu_start = time.perf_counter(), time.process_time()
            status = "ok"
            try:
                S, info = build()
            except Exception as exc:  # noqa: BLE001 - a failed configuration is a result (recorded, not fatal)
                S, info, status = None, {}, f"{type(exc).__name__}: {str(exc)[:200]}"
            wall, seconds = time.perf_counter() - start, time.process_time() - cpu_start
        lds_value = float("nan")
        if S is not None:
            if np.all(np.isfinite(S)):
                lds_value = lds_against(S, gt).lds
            else:
                status = "non-finite scores"
        row = {
            "method": method,
            **record,
            "lds": lds_value,
            "seconds": seconds,
            "cost_ratio": seconds / base,
            "wall_seconds": wall,
            "peak_mb": mem.mb,
            "status": status,
            **info,
        }
        rows.append(row)
        checkpoint()
        _say(
            f"{method} {record}: LDS {lds_value:.3f}, {seconds:.2f} s CPU = {seconds / base:.0f}x fwd+bwd "
            f"({wall:.2f} s wall), "
            f"{mem.mb:.0f} MB, {status}"
        )

    # gradient dot and the full-data solvers
    def grad_dot() -> tuple[np.ndarray, dict]:
        calc = InfluenceCalculator(model, ds.X_train, ds.y_train)
        return calc.scores_from_ihvp(calc.gradients(X_t, y_t)), {}

    def repeated(method: str, build: Any, **record: Any) -> None:
        """Deterministic methods: timed as often as a sampler has seeds, unless one run takes over REPEAT_LIMIT_S."""
        for rep in range(args.seeds):
            measure(method, build, seed=rep, **record)
            if rows[-1]["seconds"] > REPEAT_LIMIT_S or rows[-1]["status"] != "ok":
                break

    grad_dot()  # untimed: one-time costs (lazy initialisation, allocator growth) are not a method's cost
    repeated("gradient dot", grad_dot, sampler="—", m=n, solver="identity")
    for solver in full_solvers:
        if solver == "exact" and p > EXACT_MAX_PARAMS:
            continue

        def full(solver: str = solver) -> tuple[np.ndarray, dict]:
            calc = InfluenceCalculator(model, ds.X_train, ds.y_train)
            calc.fit(None, solver=solver, damping=args.damping, curvature=args.curvature, **options.get(solver, {}))
            S = calc.scores(X_t, y_t)
            return S, {"fit_info": json.dumps(jsonable(calc.fit_info), default=str)[:300]}

        repeated("full-data", full, sampler="all", m=n, solver=solver)
    hvp_probe = None
    if args.time_hvp:
        # one full-data curvature product with k vectors: what an iterative full-data solver pays per iteration
        calc = InfluenceCalculator(model, ds.X_train, ds.y_train)
        V = torch.randn(args.time_hvp, p, dtype=calc.objective.dtype, generator=torch.Generator().manual_seed(0))
        start = time.process_time()
        calc.objective.hvp(V, None, None, args.curvature)
        seconds = time.process_time() - start
        hvp_probe = {
            "vectors": args.time_hvp,
            "seconds": seconds,
            "per_vector_over_forward_backward": seconds / args.time_hvp / base,
        }
        _say(f"one full-data {args.curvature} product with {args.time_hvp} vectors: {seconds:.1f} s CPU")
    # samplers × m × solvers × seeds
    with PeakMemory():
        t0, c0 = time.perf_counter(), time.process_time()
        inputs = sampler_inputs(model, ds)
        inputs_wall, inputs_seconds = time.perf_counter() - t0, time.process_time() - c0
    for m in args.m:
        if m >= n:
            continue
        for sampler in samplers:
            if sampler not in every_solver and args.others_max_m is not None and m > args.others_max_m:
                continue
            for solver in solvers if sampler in every_solver else [args.main_solver]:
                if m > max_m.get(solver, n):
                    continue
                for seed in range(args.seeds):

                    def sampled(
                        sampler: str = sampler, m: int = m, solver: str = solver, seed: int = seed
                    ) -> tuple[np.ndarray, dict]:
                        start = time.process_time()
                        inputs_now = sampler_inputs(model, ds) if args.recompute_inputs else inputs
                        sample = draw_sample(sampler, inputs_now, m, seed=seed)
                        draw = time.process_time() - start
                        calc = InfluenceCalculator(model, ds.X_train, ds.y_train)
                        calc.fit(
                            sample,
                            solver=solver,
                            damping=args.damping,
                            curvature=args.curvature,
                            **options.get(solver, {}),
                        )
                        S = calc.scores(X_t, y_t)
                        return S, {"draw_seconds": draw}

                    measure("sampled", sampled, sampler=sampler, m=m, solver=solver, seed=seed)
    # shared sampler inputs (one forward pass over the training set) are charged to every sampled configuration
    if not args.recompute_inputs:
        for row in rows:
            if row["method"] == "sampled":
                row["seconds"] += inputs_seconds
                row["wall_seconds"] += inputs_wall
                row["cost_ratio"] = row["seconds"] / base
    summary = marked_summary(rows)
    env["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    base_end = cpu_median(forward_backward)
    wall_base = time_call(forward_backward, repeats=21, warmup=1).median
    return {
        "ground_truth": gt.name,
        "ground_truth_recipe": {
            k: r[k] for k in ("dataset", "model", "plan", "k_done", "partial", "cache_key", "noise_ceiling")
        },
        "command": "python " + " ".join(sys.argv),
        "git_commit": _git_commit(),
        "environment": env,
        "forward_backward_seconds": base,
        "forward_backward_seconds_at_end": base_end,
        "forward_backward_wall_seconds_at_end": wall_base,
        "time": "process CPU time",
        "n_params": p,
        "n_train": n,
        "n_test_points": len(idx),
        "full_logit_max_abs_diff": logit_diff,
        "damping": args.damping,
        "curvature": args.curvature,
        "solver_options": options,
        "solver_max_m": max_m,
        "sampler_inputs_seconds": inputs_seconds,
        "full_data_product": hvp_probe,
        "budgets": budget_table(summary),
        "summary": summary,
        "runs": rows,
    }


def marked_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`summarise`, with the time (``pareto``) and memory (``pareto_memory``) Pareto marks."""
    summary = summarise(rows)
    for s, mark in zip(summary, pareto([(s["cost_ratio"], s["lds_mean"]) for s in summary])):
        s["pareto"] = mark
    for s, mark in zip(summary, pareto([(s["peak_mb"], s["lds_mean"]) for s in summary])):
        s["pareto_memory"] = mark
    return summary


def add_rows(result: dict[str, Any], sources: list[Path]) -> dict[str, Any]:
    """The frontier ``result`` with the ``row`` of each reference file (e.g. benchmarks/full_data_reference.py's
    JSON for the same ground truth) added and the summary, marks and budgets recomputed. A row's cost ratio is
    against the forward+backward pass of its own run (same machine, one thread); its source and command are kept."""
    runs = list(result["runs"])
    added = list(result.get("added_rows", []))
    for path in sources:
        ref = json.loads(Path(path).read_text())
        if ref.get("ground_truth") != result["ground_truth"] or "row" not in ref:
            raise ValueError(f"{path}: not a reference row for ground truth {result['ground_truth']!r}")
        want = result.get("ground_truth_recipe", {}).get("k_done")
        if want is not None and ref.get("k_done") is not None and ref["k_done"] != want:
            raise ValueError(
                f"{path}: its LDS is against {ref['k_done']} subsets of {result['ground_truth']!r}, the frontier's "
                f"against {want}; rerun it on the same ground-truth file"
            )
        key = tuple(ref["row"][k] for k in ("method", "sampler", "m", "solver"))
        runs = [r for r in runs if tuple(r[k] for k in ("method", "sampler", "m", "solver")) != key]
        runs.append(ref["row"])
        added = [a for a in added if a["file"] != str(path)] + [{"file": str(path), "command": ref.get("command")}]
    summary = marked_summary(runs)
    return result | {"runs": runs, "summary": summary, "budgets": budget_table(summary), "added_rows": added}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, sampler, m, solver): LDS mean/std over seeds, median cost ratio (robust to a busy machine), max
    peak memory. Deterministic methods (full-data, gradient dot) are repeated as often as there are seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["sampler"], row["m"], row["solver"]), []).append(row)
    out = []
    for (method, sampler, m, solver), group in groups.items():
        ok = [g for g in group if np.isfinite(g["lds"])]
        vals = np.array([g["lds"] for g in ok])
        out.append(
            {
                "method": method,
                "sampler": sampler,
                "m": m,
                "solver": solver,
                "seeds": len(group),
                "failed": len(group) - len(ok),
                "lds_mean": float(vals.mean()) if len(vals) else float("nan"),
                "lds_std": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
                "cost_ratio": float(np.median([g["cost_ratio"] for g in group])),
                "seconds": float(np.median([g["seconds"] for g in group])),
                "wall_seconds": float(np.median([g["wall_seconds"] for g in group])),
                "peak_mb": float(np.nanmax([g["peak_mb"] for g in group]))
                if any(np.isfinite(g["peak_mb"]) for g in group)
                else float("nan"),
                "status": "; ".join(sorted({g["status"] for g in group if g["status"] != "ok"}))[:200] or "ok",
            }
        )
    return out


def label(s: dict[str, Any]) -> str:
    if s["method"] == "gradient dot":
        return "gradient dot"
    if s["method"] == "full-data":
        return f"full-data {s['solver']}"
    return f"{s['sampler']} m={s['m']} {s['solver']}"


def budget_table(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each budget: the most faithful configuration whose mean cost is within it."""
    out = []
    for b in BUDGETS:
        within = [s for s in summary if s["cost_ratio"] <= b and np.isfinite(s["lds_mean"])]
        best = max(within, key=lambda s: s["lds_mean"], default=None)
        out.append(
            {
                "budget": b,
                "best": None if best is None else label(best),
                "lds_mean": None if best is None else best["lds_mean"],
                "lds_std": None if best is None else best["lds_std"],
                "cost_ratio": None if best is None else best["cost_ratio"],
                "peak_mb": None if best is None else best["peak_mb"],
            }
        )
    return out


def _f(x: Any, d: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def markdown(result: dict[str, Any]) -> str:
    env, rr = result["environment"], result["ground_truth_recipe"]
    lines = [
        f"### Frontier: {result['ground_truth']} (p = {result['n_params']}, n = {result['n_train']}, "
        f"{result['n_test_points']} test points, LDS against K = {rr['k_done']}"
        f"{' (partial)' if rr['partial'] else ''} retrained subsets × R = {rr['plan']['n_seeds']}, noise ceiling "
        f"{rr['noise_ceiling']['loss']['ceiling']:.3f})",
        "",
        f"`{result['command']}` (commit {result['git_commit']}); torch threads {env.get('torch_threads')}, "
        f"load average {env.get('load_average_at_start')} at the start, {env.get('load_average_at_end')} at the "
        f"end. Times are process CPU seconds (one thread; see benchmarks/frontier.py). One forward+backward "
        f"pass over "
        f"the training set: {result['forward_backward_seconds'] * 1e3:.1f} "
        f"ms at the start, {result['forward_backward_seconds_at_end'] * 1e3:.1f} ms at the end. Damping "
        f"{result['damping']}, {result['curvature']}. Cost = sampler inputs + draw + fit + scoring "
        f"of all test points against all training points, as a multiple of that pass; memory = peak resident "
        f"memory the configuration added.",
        *[
            f"Row added from another run on the same machine (its cost against that run's forward+backward pass): "
            f"`{a['command']}` ({a['file']})."
            for a in result.get("added_rows", [])
        ],
        "",
        "Most faithful configuration within each budget:",
        "",
        "| budget (× fwd+bwd) | method | LDS | cost (× fwd+bwd) | peak MB |",
        "|---:|---|---|---:|---:|",
    ]
    for b in result["budgets"]:
        lines.append(
            f"| {'∞' if not math.isfinite(b['budget']) else int(b['budget'])} | {b['best'] or '—'} | "
            f"{_f(b['lds_mean'])} ± {_f(b['lds_std'])} | {_f(b['cost_ratio'], 0)} | {_f(b['peak_mb'], 0)} |"
        )
    probe = result.get("full_data_product")
    if probe:
        lines += [
            "",
            f"One full-data {result['curvature']} product with {probe['vectors']} vectors took {probe['seconds']:.1f} "
            f"s CPU, {probe['per_vector_over_forward_backward']:.1f}× a forward+backward pass per vector: the cost of "
            f"one iteration of a full-data iterative solver per test point.",
        ]
    lines += [
        "",
        "Every configuration (mean ± std over sampler seeds; ★ = on the time Pareto frontier, "
        "◆ = on the memory Pareto frontier):",
        "",
        "| configuration | LDS | cost (× fwd+bwd) | CPU s | wall s | peak MB | frontier | failed | status |",
        "|---|---|---:|---:|---:|---:|:---:|---:|---|",
    ]
    for s in sorted(result["summary"], key=lambda s: s["cost_ratio"]):
        mark = ("★" if s["pareto"] else "") + ("◆" if s["pareto_memory"] else "")
        lines.append(
            f"| {label(s)} | {_f(s['lds_mean'])} ± {_f(s['lds_std'])} | {_f(s['cost_ratio'], 0)} | "
            f"{_f(s['seconds'], 2)} | {_f(s['wall_seconds'], 2)} | {_f(s['peak_mb'], 0)} | {mark} | "
            f"{s['failed']}/{s['seeds']} | "
            f"{s['status'] if s['status'] != 'ok' else ''} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = [s for s in result["summary"] if np.isfinite(s["lds_mean"])]
    fig, ax = plt.subplots(figsize=(9, 6))
    solvers = sorted({s["solver"] for s in summary})
    markers = dict(zip(solvers, "os^vDPX*hp<>"))
    for s in summary:
        color = "black" if s["method"] != "sampled" else None
        ax.scatter(
            s["cost_ratio"],
            s["lds_mean"],
            marker=markers.get(s["solver"], "o"),
            s=22,
            alpha=0.9 if s["pareto"] else 0.35,
            color=color or f"C{solvers.index(s['solver']) % 10}",
        )
    front = sorted((s for s in summary if s["pareto"]), key=lambda s: s["cost_ratio"])
    ax.step(
        [s["cost_ratio"] for s in front],
        [s["lds_mean"] for s in front],
        where="post",
        color="red",
        lw=1.2,
        label="Pareto frontier",
    )
    last = -np.inf
    for s in front:  # label the frontier where it steps up by more than 0.01 (legible)
        if s["lds_mean"] > last + 0.01:
            ax.annotate(
                label(s), (s["cost_ratio"], s["lds_mean"]), fontsize=7, xytext=(4, -9), textcoords="offset points"
            )
            last = s["lds_mean"]
    for s in summary:
        if s["method"] != "sampled" and not s["pareto"]:
            ax.annotate(
                label(s),
                (s["cost_ratio"], s["lds_mean"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
                color="gray",
            )
    for solver in solvers:
        ax.scatter([], [], marker=markers[solver], color=f"C{solvers.index(solver) % 10}", label=solver)
    ceiling = result["ground_truth_recipe"]["noise_ceiling"]["loss"]["ceiling"]
    ax.axhline(ceiling, color="gray", ls=":", lw=1, label=f"noise ceiling {ceiling:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("cost: fit + scoring of all test points, × one forward+backward pass over the training set")
    ax.set_ylabel("LDS (mean over sampler seeds)")
    ax.set_title(f"Cost-faithfulness frontier: {result['ground_truth']}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write(result: dict[str, Any], out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.csv", out / f"{name}.md", out / f"{name}.png"]
    with atomic_path(paths[0]) as tmp:
        tmp.write_text(json.dumps(jsonable(result), indent=1) + "\n")
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for s in result["summary"] for k in s))
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(result["summary"])
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(buf.getvalue())
    with atomic_path(paths[2]) as tmp:
        tmp.write_text(markdown(result))
    plot(result, paths[3])
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ground-truth", required=True, help="a name in ground_truth/ (e.g. digits_mlp) or a path")
    ap.add_argument("--samplers", nargs="+", default=None, help="default: every registered sampler")
    ap.add_argument(
        "--solvers",
        nargs="+",
        default=None,
        help=f"solvers fitted on the sample (default: every registered one but {list(SAMPLE_SKIP)})",
    )
    ap.add_argument(
        "--full-solvers",
        nargs="+",
        default=None,
        help=f"solvers fitted on all n points (default: every registered one but {list(FULL_SKIP)}; "
        "exact only where p <= 20,000)",
    )
    ap.add_argument(
        "--every-solver-samplers",
        nargs="*",
        default=None,
        help="samplers run with every solver (default: all); the others only with --main-solver",
    )
    ap.add_argument("--main-solver", default="exact", help="the solver of the other samplers")
    ap.add_argument(
        "--others-max-m", type=int, default=None, help="largest m of the samplers not in --every-solver-samplers"
    )
    ap.add_argument(
        "--time-hvp",
        type=int,
        default=0,
        metavar="K",
        help="also time one full-data curvature product with K vectors (the per-iteration cost of a full-data "
        "iterative solver; recorded as full_data_product)",
    )
    ap.add_argument("--m", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    ap.add_argument(
        "--solver-max-m",
        nargs="*",
        default=["lissa=256", "exact=512"],
        metavar="SOLVER=M",
        help="largest m run with SOLVER (default lissa=256, exact=512: beyond them the sample stops being "
        "cheap: LiSSA's iterations grow with m, and exact turns to the dense LU once m(C−1) >= p, "
        "which costs as much as the full-data exact solve on digits MLP)",
    )
    ap.add_argument("--seeds", type=int, default=3, help="sampler seeds 0..N-1 per configuration")
    ap.add_argument("--damping", type=float, default=0.01)
    ap.add_argument("--curvature", default="gauss_newton", choices=("gauss_newton", "hessian"))
    ap.add_argument(
        "--cg-max-iter", type=int, default=None, help="CG iterations at most (default 1000: run to residual 1e-6)"
    )
    ap.add_argument(
        "--recompute-inputs",
        action="store_true",
        help="recompute the sampler inputs in every configuration (default: once, its time added to each)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument(
        "--add-rows",
        nargs="+",
        type=Path,
        default=None,
        metavar="FILE",
        help="instead of a run: add the reference row of each FILE (benchmarks/full_data_reference.py's JSON) to "
        "the committed OUT/NAME.json and rewrite its tables and plot",
    )
    ap.add_argument("--out", default="docs/frontier")
    ap.add_argument("--name", default=None, help="file stem (default: the ground truth's name)")
    args = ap.parse_args(argv)
    if args.add_rows:
        name = args.name or args.ground_truth
        result = add_rows(json.loads((Path(args.out) / f"{name}.json").read_text()), args.add_rows)
        paths = write(result, Path(args.out), name)
        print("wrote " + ", ".join(map(str, paths)))
        return 0
    result = run(args)
    name = args.name or result["ground_truth"]
    paths = write(result, Path(args.out), name)
    (Path(args.out) / f"{name}.partial.json").unlink(missing_ok=True)
    print(markdown(result))
    print("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The cost-faithfulness frontier of the current model, from the shipped ground truth (no Streamlit): which shipped
ground truth (``ground_truth/``) holds retrains of exactly the current model, its committed frontier
(``docs/frontier/<name>.json``, written by ``benchmarks/frontier.py``) with readable method names, the most faithful
method within each budget, and the plotly figure with the Pareto frontier and the live point of the current model.

A model is compared with a ground truth only when it is that ground truth's model: the same dataset arrays, training
recipe and seed, and torch version, i.e. the same retrain-cache key
(:func:`influence_core.evaluation.ground_truth.retrain_key`), which the file records. :func:`match_run` decides it
from the configuration, before any training; the live job (:func:`ui.compute.frontier_point`) checks the trained
model's key again before scoring it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from influence_core import (
    GROUND_TRUTHS,
    RetrainPlan,
    ground_truths_of_recipe,
    retrain_key,
    shipped_recipe,
    spec_recipe,
    training_recipe,
)

from .colours import CHOSEN, REFERENCE, sampler_colour
from .config import DataConfig, ModelConfig, RunConfig
from .faithfulness import DOCS, current_name
from .figures import FRAME

FRONTIER_DIR = DOCS / "frontier"
SOLVER_NAMES = {
    "exact": "exact solve",
    "low_rank": "exact low-rank solve",
    "cg": "CG",
    "pcg": "sample-preconditioned CG",
    "lissa": "LiSSA",
    "kfac": "K-FAC",
    "ekfac": "EK-FAC",
    "arnoldi": "Arnoldi (rank 50)",
    "cg_factor": "CG on the materialised Gauss-Newton factor",
}
"""Readable solver names (a solver registered later shows its registry name)."""
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "triangle-down", "cross", "x", "pentagon", "hexagon")
GROUND_TRUTH_COMMAND = "python -m influence_core lds ground-truth {name} --cache runs/lds-cache"
FRONTIER_COMMAND = (
    "python benchmarks/frontier.py --ground-truth {name} --every-solver-samplers random importance --out docs/frontier"
)
BUILTIN = ("digits", "mnist5k")
"""Datasets a ground truth can be registered for with no dataset options (MNIST-1D has its size as an option)."""


# ---------------------------------------------------------------------------------------------------- matching


def run_recipe(run: RunConfig) -> dict[str, Any]:
    """The retrain recipe of ``run``'s model (what ``train_model`` records for it), without training it."""
    return training_recipe(run.model.arch, run.model.seed, **run.model.train_kwargs())


@dataclass(frozen=True)
class Match:
    """Which shipped ground truth is of exactly ``run``'s model: ``name`` (None when none is), ``message`` (when
    none is: one sentence saying why and the command that builds one), ``partial``/``k_done`` of the file."""

    name: str | None
    message: str = ""
    partial: bool = False
    k_done: int = 0
    key: str | None = None


def shipped_runs() -> list[tuple[str, RunConfig]]:
    """(ground-truth name, app configuration) for every shipped ground truth whose model the app can train (the
    configuration's recipe is the file's; digits logistic regression, trained in float64, has none)."""
    out = []
    for name, spec in GROUND_TRUTHS.items():
        if spec.dataset not in BUILTIN or spec.dataset_options or shipped_recipe(name) is None:
            continue
        recipe = spec_recipe(spec)
        hidden = recipe.get("hidden", [ModelConfig.hidden])
        for polish in (None, recipe.get("polish_steps")):
            try:
                model = ModelConfig(
                    arch=spec.arch,
                    hidden=int(hidden[0]),
                    epochs=int(recipe["epochs"]),
                    lr=float(recipe["lr"]),
                    weight_decay=float(recipe["weight_decay"]),
                    seed=int(recipe["seed"]),
                    polish_steps=polish,
                )
                run = RunConfig(DataConfig(name=spec.dataset, seed=spec.seed), model)
                if len(hidden) == 1 and run_recipe(run) == recipe:
                    out.append((name, run))
                    break
            except (KeyError, TypeError, ValueError):
                break
    return out


def describe_run(run: RunConfig) -> str:
    """ "MLP with 64 hidden units on digits (40 epochs, seed 0)": the settings that make a ground truth's model."""
    arch = {"mlp": "MLP", "cnn": "CNN", "logreg": "logistic regression"}.get(run.model.arch, run.model.arch)
    hidden = f" with {run.model.hidden} hidden units" if run.model.arch == "mlp" else ""
    return f"{arch}{hidden} on {run.data.label()} ({run.model.epochs} epochs, seed {run.model.seed})"


def _cli_command(run: RunConfig, recipe: dict[str, Any]) -> str | None:
    """The ``lds score`` command that retrains exactly this model, when its options can say so (else None)."""
    if run.data.name not in BUILTIN or run.data.seed != run.model.seed:
        return None
    settings: dict[str, Any] = {"epochs": run.model.epochs, "dtype": "float32"}
    if run.model.arch == "mlp":
        settings["hidden"] = (run.model.hidden,)
    if training_recipe(run.model.arch, run.model.seed, **settings) != recipe:
        return None
    hidden = f" --hidden {run.model.hidden}" if run.model.arch == "mlp" else ""
    dtype = " --dtype float32" if run.model.arch == "logreg" else ""
    return (
        f"python -m influence_core lds score --dataset {run.data.name} --arch {run.model.arch}{hidden} "
        f"--epochs {run.model.epochs}{dtype} --seed {run.model.seed} --sampler importance --m 128"
    )


def match_run(run: RunConfig, dataset: Callable[[], Any]) -> Match:
    """The shipped ground truth of exactly ``run``'s model, or why there is none (see the module doc).
    ``dataset()`` returns ``run``'s dataset; it is called only when a registered ground truth has this recipe."""
    label = describe_run(run)
    if run.data.name not in BUILTIN:
        what = "an uploaded dataset" if run.data.name == "npz" else f"models on {run.data.label()}"
        return Match(
            None,
            f"No ground truth is shipped for {what}, only for digits and MNIST-5k models: it would take retrains of "
            "this very model, made by registering a `GroundTruthSpec` for it in "
            "`influence_core/evaluation/ground_truth.py` and running "
            "`python -m influence_core lds ground-truth NAME --cache runs/lds-cache`.",
        )
    recipe = run_recipe(run)
    candidates = ground_truths_of_recipe(run.data.name, run.data.seed, recipe)
    for name in candidates:
        stored = shipped_recipe(name)
        if stored is None:
            return Match(
                None,
                f"No ground truth is shipped for this model ({label}) yet: it is the registered `{name}` model, whose "
                f"retrains (K = 100 subsets × 2 seeds) are not built; build them with "
                f"`{GROUND_TRUTH_COMMAND.format(name=name)}` (resumable; it writes `ground_truth/{name}.npz`).",
            )
        try:
            plan = RetrainPlan(**stored["plan"])
            key = retrain_key(dataset(), recipe, plan)
        except (KeyError, TypeError, ValueError) as exc:
            return Match(
                None,
                f"The shipped ground truth `{name}` cannot be read ({exc}); rebuild it with "
                f"`{GROUND_TRUTH_COMMAND.format(name=name)}`.",
            )
        if key == stored.get("cache_key"):
            return Match(name, "", bool(stored.get("partial")), int(stored.get("k_done", 0)), key)
        import torch

        return Match(
            None,
            f"The shipped `{name}` ground truth has this model's recipe but its retrains were made under another "
            f"key ({stored.get('cache_key')}, torch {stored.get('torch')}; this model's is {key}, torch "
            f"{torch.__version__}), so they are not retrains of this model; rebuild them here with "
            f"`{GROUND_TRUTH_COMMAND.format(name=name)}`.",
            key=key,
        )
    command = _cli_command(run, recipe)
    how = (
        f"`{command}` retrains it (K = 100 subsets × 2 seeds, cached) and scores it"
        if command
        else "its retrains need a `GroundTruthSpec` with its settings in `influence_core/evaluation/ground_truth.py` "
        "and `python -m influence_core lds ground-truth NAME --cache runs/lds-cache`"
    )
    return Match(
        None,
        f"No shipped ground truth is of this model ({label}): the LDS needs retrains of this very model (same "
        f"recipe, seed and data), and scoring it against another model's would be meaningless; {how}.",
    )


# ---------------------------------------------------------------------------------------------------- committed


def available_frontiers(directory: Path = FRONTIER_DIR) -> list[str]:
    """Names of the committed frontiers (``docs/frontier/<name>.json`` with a ``summary``)."""
    return [p.stem for p in sorted(directory.glob("*.json")) if load_frontier(p.stem, directory) is not None]


def load_frontier(name: str, directory: Path = FRONTIER_DIR) -> dict[str, Any] | None:
    """The committed frontier of ground truth ``name`` (JSON only), or None when there is none."""
    path = directory / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("summary"), list) or not data["summary"]:
        return None
    data["path"] = f"docs/frontier/{path.name}"
    return data


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def solver_name(solver: str) -> str:
    return SOLVER_NAMES.get(solver, solver)


def method_label(row: dict[str, Any]) -> str:
    """A readable name of a frontier configuration: "importance sample, m = 512, CG", "all training points,
    exact solve", "gradient dot (no Hessian)"."""
    if row.get("method") == "gradient dot":
        return "gradient dot (no Hessian)"
    if row.get("method") == "full-data":
        return f"all training points, {solver_name(row['solver'])}"
    return f"{current_name(row['sampler'])} sample, m = {int(row['m'])}, {solver_name(row['solver'])}"


def script_label(row: dict[str, Any]) -> str:
    """The name ``benchmarks/frontier.py`` gives a configuration (its per-budget ``best``)."""
    if row.get("method") == "gradient dot":
        return "gradient dot"
    if row.get("method") == "full-data":
        return f"full-data {row['solver']}"
    return f"{row['sampler']} m={row['m']} {row['solver']}"


def frontier_rows(frontier: dict[str, Any]) -> list[dict[str, Any]]:
    """The frontier's configurations with a finite mean LDS: readable ``label``, ``lds_mean``, ``lds_std``,
    ``cost_ratio``, ``peak_mb``, ``pareto`` (on the cost Pareto frontier), ``sampler``/``m``/``solver``."""
    out = []
    for s in frontier["summary"]:
        lds, cost = _num(s.get("lds_mean")), _num(s.get("cost_ratio"))
        if not (math.isfinite(lds) and math.isfinite(cost)):
            continue
        out.append(
            {
                "label": method_label(s),
                "method": s.get("method"),
                "sampler": current_name(str(s.get("sampler"))),
                "m": int(s.get("m", 0)),
                "solver": str(s.get("solver")),
                "lds_mean": lds,
                "lds_std": _num(s.get("lds_std")),
                "cost_ratio": cost,
                "peak_mb": _num(s.get("peak_mb")),
                "pareto": bool(s.get("pareto")),
                "script_label": script_label(s),
            }
        )
    return out


def budget_rows(frontier: dict[str, Any]) -> list[dict[str, Any]]:
    """Per budget of the committed frontier (multiples of one forward+backward pass): the most faithful
    configuration whose cost is within it (the rule of ``benchmarks/frontier.py``), with its readable name."""
    rows = frontier_rows(frontier)
    out = []
    for b in frontier.get("budgets", []):
        limit = _num(b.get("budget"))
        within = [r for r in rows if r["cost_ratio"] <= limit]
        best = max(within, key=lambda r: r["lds_mean"], default=None)
        out.append(
            {
                "budget (× forward+backward pass)": "any" if math.isinf(limit) else f"≤ {limit:,.0f}",
                "most faithful method within it": best["label"] if best else "nothing fits this budget",
                "LDS (± std over sampler seeds)": _pm(best["lds_mean"], best["lds_std"]) if best else "—",
                "cost (× forward+backward pass)": f"{best['cost_ratio']:,.0f}" if best else "—",
                "peak memory (MB)": f"{best['peak_mb']:,.0f}" if best and math.isfinite(best["peak_mb"]) else "—",
            }
        )
    return out


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f}" + (f" ± {std:.3f}" if math.isfinite(std) else "")


def frontier_caption(frontier: dict[str, Any]) -> str:
    """Where the committed points come from: the file, the command, how time was measured."""
    env = frontier.get("environment", {})
    clock = frontier.get("time") or "wall-clock time"
    base = _num(frontier.get("forward_backward_seconds")) * 1e3
    return (
        f"Committed frontier `{frontier['path']}`: `{frontier.get('command', '')}` (commit "
        f"{frontier.get('git_commit', '?')}, {env.get('torch_threads', '?')} torch thread(s), {clock}). Cost = "
        f"sampler inputs + draw + fit + scoring of all {frontier.get('n_test_points', '?')} test points against all "
        f"{frontier.get('n_train', '?')} training points, as a multiple of one forward+backward pass over the "
        f"training set ({base:.1f} ms there); LDS against the shipped retrains; Gauss-Newton + damping "
        f"{frontier.get('damping')}."
    )


# ---------------------------------------------------------------------------------------------------- figure


def frontier_figure(
    frontier: dict[str, Any] | None, live: dict[str, Any] | None = None, ceiling: float | None = None
) -> go.Figure:
    """LDS against cost (log axis): every committed configuration (colour = sampler, symbol = solver; the
    full-data methods and gradient dot in black), the Pareto frontier as a red step line through its points, the
    noise ceiling, and the ``live`` point of the current model (a black star) when given."""
    fig = go.Figure()
    rows = frontier_rows(frontier) if frontier else []
    solvers = list(dict.fromkeys(r["solver"] for r in rows if r["method"] == "sampled"))
    symbol = {s: SYMBOLS[i % len(SYMBOLS)] for i, s in enumerate(solvers)}
    for sampler in dict.fromkeys(r["sampler"] for r in rows if r["method"] == "sampled"):
        pts = [r for r in rows if r["method"] == "sampled" and r["sampler"] == sampler]
        fig.add_trace(
            go.Scatter(
                x=[r["cost_ratio"] for r in pts],
                y=[r["lds_mean"] for r in pts],
                mode="markers",
                name=f"{sampler} sample",
                legendgroup="samplers",
                marker=dict(color=sampler_colour(sampler), symbol=[symbol[r["solver"]] for r in pts], size=8),
                error_y=dict(type="data", array=[np.nan_to_num(r["lds_std"]) for r in pts], thickness=1, width=0),
                hovertext=[_hover(r) for r in pts],
                hoverinfo="text",
            )
        )
    full = sorted((r for r in rows if r["method"] != "sampled"), key=lambda r: r["cost_ratio"])
    if full:
        fig.add_trace(
            go.Scatter(
                x=[r["cost_ratio"] for r in full],
                y=[r["lds_mean"] for r in full],
                mode="markers+text",
                name="all training points / gradient dot",
                marker=dict(color=REFERENCE, symbol="circle-open", size=10, line=dict(width=2)),
                text=[r["label"].replace("all training points, ", "full data, ") for r in full],
                textposition=[("bottom center", "top center")[i % 2] for i in range(len(full))],
                textfont=dict(size=10, color="#555555"),
                hovertext=[_hover(r) for r in full],
                hoverinfo="text",
            )
        )
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["cost_ratio"])
    if front:
        fig.add_trace(
            go.Scatter(
                x=[r["cost_ratio"] for r in front],
                y=[r["lds_mean"] for r in front],
                mode="lines",
                line=dict(color="#d62728", width=2, shape="hv"),
                name="Pareto frontier (no cheaper method is as faithful)",
                hovertext=[f"on the frontier: {_hover(r)}" for r in front],
                hoverinfo="text",
            )
        )
    for s in solvers:  # legend entries for the solver symbols
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=solver_name(s),
                legendgroup="solvers",
                marker=dict(color="#999999", symbol=symbol[s], size=8),
            )
        )
    if live is not None:
        fig.add_trace(
            go.Scatter(
                x=[live["cost_ratio"]],
                y=[live["lds"]],
                mode="markers+text",
                name=f"this model now: {live['label']}",
                marker=dict(color=CHOSEN, symbol="star", size=18, line=dict(color="white", width=1.5)),
                text=["this model, now"],
                textposition="top center",
                hovertext=[
                    f"this model, now: {live['label']}: LDS {live['lds']:.3f}, cost {live['cost_ratio']:,.0f}× "
                    f"forward+backward ({live['seconds']:.2f} s)"
                ],
                hoverinfo="text",
            )
        )
    if ceiling is None and frontier:
        ceiling = _num(frontier.get("ground_truth_recipe", {}).get("noise_ceiling", {}).get("loss", {}).get("ceiling"))
    if ceiling is not None and math.isfinite(ceiling):
        fig.add_hline(
            y=ceiling,
            line=dict(color=REFERENCE, width=1, dash="dot"),
            annotation_text=f"noise ceiling {ceiling:.3f}",
            annotation_position="top left",
        )
    name = (frontier or {}).get("ground_truth", "")
    fig.update_xaxes(type="log", title="cost: × one forward+backward pass over the training set (log scale)")
    fig.update_layout(
        title=f"LDS against cost: {name}" if name else "LDS against cost",
        height=580,
        **FRAME,
        yaxis_title="LDS (mean over sampler seeds)",
        legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
    )
    return fig


def _hover(r: dict[str, Any]) -> str:
    std = f" ± {r['lds_std']:.3f}" if math.isfinite(r["lds_std"]) else ""
    mem = f", {r['peak_mb']:.0f} MB" if math.isfinite(r["peak_mb"]) else ""
    return f"{r['label']}: LDS {r['lds_mean']:.3f}{std}, cost {r['cost_ratio']:,.0f}×{mem}"


def live_label(sampler: str, m: int, solver: str) -> str:
    return method_label({"method": "sampled", "sampler": sampler, "m": m, "solver": solver})


def frontier_settings(frontier: dict[str, Any] | None) -> tuple[float, str, dict[str, dict[str, Any]]]:
    """(damping, curvature, solver options) of the committed frontier, so a live point is measured like its points;
    the studies' Gauss-Newton + 0.01 when there is no committed frontier."""
    if not frontier:
        return 0.01, "gauss_newton", {}
    return (
        float(frontier.get("damping", 0.01)),
        str(frontier.get("curvature", "gauss_newton")),
        dict(frontier.get("solver_options") or {}),
    )


def options_key(options: dict[str, Any]) -> tuple:
    """A hashable form of one solver's options (a job key)."""
    return tuple(sorted((str(k), v) for k, v in options.items()))


def describe_partial(match: Match, n_subsets: int = 100) -> str:
    return f" (partial: {match.k_done} of {n_subsets} subsets retrained so far)" if match.partial else ""


def nearest_rows(rows: Sequence[dict[str, Any]], sampler: str, m: int, solver: str) -> dict[str, Any] | None:
    """The committed configuration with the same sampler, m and solver, if the frontier has it."""
    for r in rows:
        if r["method"] == "sampled" and r["sampler"] == sampler and r["m"] == int(m) and r["solver"] == solver:
            return r
    return None

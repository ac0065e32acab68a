"""The faithfulness story from the committed study results (no Streamlit): which LDS studies are shipped in
``docs/``, their per-sampler LDS against m with the across-seed spread, the noise ceiling and the baselines, the
measured cost of the same configurations (solve time, peak memory, from the faithfulness study), "for my budget,
which sampler?", and the plotly figures.

Files are read as JSON/CSV only (never pickle):

Sampler names are read through ``RENAMED_SAMPLERS`` (the files keep the name a sampler had when they were written,
e.g. ``curvature`` for today's ``importance``).

- ``docs/lds/<name>.json``: an LDS sampler study (``python -m influence_core lds study``): ``summary`` (per sampler
  and m: ``lds_mean``, ``lds_std`` over sampler seeds), ``runs`` (per seed), ``baselines`` (full-data influence,
  gradient dot, each with the noise ``ceiling``), ``config`` and ``context``;
- ``docs/faithfulness/<name>_summary.csv`` (+ ``<name>.json`` for its configuration): the faithfulness study's cost
  columns ``solve_seconds_mean``, ``peak_mb_mean`` per sampler and m, joined only when both studies used the same
  data, architecture, training recipe, curvature and damping.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from influence_core import RENAMED_SAMPLERS

from .colours import REFERENCE, sampler_colour
from .figures import FRAME, LEGEND_BELOW

DOCS = Path(__file__).resolve().parents[1] / "docs"
BUDGETS = {"m": "Hessian sample size m", "solve_seconds": "solve time (s)", "peak_mb": "peak memory (MB)"}
_MATCH_KEYS = ("arch", "hidden", "epochs", "lr", "weight_decay", "seed")


@dataclass
class LDSStudy:
    """One committed LDS sampler study: ``rows`` per (sampler, m) with ``lds_mean``/``lds_std`` and, when the
    faithfulness study of the same configuration is shipped, ``solve_seconds``/``peak_mb``; ``runs`` per seed."""

    name: str
    title: str
    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    baselines: dict[str, float]
    ceiling: float
    config: dict[str, Any]
    cost_source: str | None = None
    cost_note: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def samplers(self) -> list[str]:
        return list(dict.fromkeys(r["sampler"] for r in self.rows))

    @property
    def has_cost(self) -> bool:
        return self.cost_source is not None


def current_name(sampler: str) -> str:
    """A sampler name as the registry spells it now (result files written before a rename keep the old name)."""
    return RENAMED_SAMPLERS.get(sampler, sampler)


def _finite(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v if math.isfinite(v) else float("nan")


def available_studies(docs: Path = DOCS) -> list[str]:
    """Names of the LDS sampler studies shipped in ``docs/lds`` (JSON files with a ``summary`` and ``baselines``)."""
    names = []
    for path in sorted((docs / "lds").glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and {"summary", "baselines", "config"} <= set(data):
            names.append(path.stem)
    return names


def study_for(run: Any, docs: Path = DOCS) -> str | None:
    """The committed LDS study of exactly ``run``'s model (a :class:`ui.config.RunConfig`: same dataset, split
    seed, architecture, hidden width, epochs, learning rate and weight decay), or None: a study of another model
    does not describe this one."""
    want = {
        "arch": run.model.arch,
        "seed": run.model.seed,
        "epochs": run.model.epochs,
        "lr": run.model.lr,
        "weight_decay": run.model.weight_decay,
    }
    if run.model.arch == "mlp":
        want["hidden"] = [run.model.hidden]
    for name in available_studies(docs):
        data = json.loads((docs / "lds" / f"{name}.json").read_text())
        study = data.get("config", {}).get("study", {})
        training = _training(data.get("context", {}).get("faithfulness_context", {}))
        if study.get("dataset") != run.data.name or run.data.seed != study.get("seed"):
            continue
        if all(training.get(k) == v for k, v in want.items()):
            return name
    return None


def _training(context: dict[str, Any]) -> dict[str, Any]:
    model = (context or {}).get("model") or {}
    return model.get("training_config") or {}


def _same_configuration(lds_cfg: dict, lds_ctx: dict, faith_cfg: dict, faith_ctx: dict) -> tuple[bool, str]:
    study = lds_cfg.get("study", {})
    for key in ("dataset", "arch", "seed", "curvature", "damping"):
        if study.get(key) != faith_cfg.get(key):
            return False, f"{key} differs ({study.get(key)!r} vs {faith_cfg.get(key)!r})"
    a, b = _training(lds_ctx), _training(faith_ctx)
    for key in _MATCH_KEYS:
        if a.get(key) != b.get(key):
            return False, f"training {key} differs ({a.get(key)!r} vs {b.get(key)!r})"
    return True, ""


def _read_cost(docs: Path, name: str, lds_cfg: dict, lds_ctx: dict) -> tuple[dict | None, str, str]:
    """{(sampler, m): {"solve_seconds", "peak_mb", "sampler_seconds"}} from the faithfulness study of the same
    configuration, its file name and a note (why it is missing, when it is)."""
    summary, meta = docs / "faithfulness" / f"{name}_summary.csv", docs / "faithfulness" / f"{name}.json"
    if not summary.exists() or not meta.exists():
        return None, "", f"no faithfulness study docs/faithfulness/{name}_summary.csv with the cost columns"
    faith = json.loads(meta.read_text())
    ok, why = _same_configuration(lds_cfg, lds_ctx, faith.get("config", {}), faith.get("context", {}))
    if not ok:
        return None, "", f"the faithfulness study's configuration differs from the LDS study's: {why}"
    cost = {}
    with summary.open(newline="") as f:
        for row in csv.DictReader(f):
            cost[(current_name(row["sampler"]), int(row["m"]))] = {
                "solve_seconds": _finite(row.get("solve_seconds_mean")),
                "peak_mb": _finite(row.get("peak_mb_mean")),
                "sampler_seconds": _finite(row.get("sampler_seconds_mean")),
            }
    return cost, f"docs/faithfulness/{name}_summary.csv", ""


def load_study(name: str, docs: Path = DOCS) -> LDSStudy:
    """The LDS study ``docs/lds/<name>.json`` with the cost of the same configurations joined in (see module doc)."""
    path = docs / "lds" / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no committed LDS study {path.name} in {docs / 'lds'}; choose one of {available_studies(docs)}"
        )
    data = json.loads(path.read_text())
    cfg, ctx = data.get("config", {}), data.get("context", {})
    fctx = ctx.get("faithfulness_context", {})
    cost, source, note = _read_cost(docs, name, cfg, fctx)
    rows = []
    for r in data["summary"]:
        row = {
            "sampler": current_name(r["sampler"]),
            "m": int(r["m"]),
            "seeds": int(r.get("seeds", 0)),
            "lds_mean": _finite(r.get("lds_mean")),
            "lds_std": _finite(r.get("lds_std")),
            "spearman_mean": _finite(r.get("spearman_mean")),
        }
        c = (cost or {}).get((row["sampler"], row["m"]), {})
        row.update({k: c.get(k, float("nan")) for k in ("solve_seconds", "peak_mb")})
        rows.append(row)
    baselines = {b["method"]: _finite(b["lds"]) for b in data["baselines"]}
    ceiling = _finite(data["baselines"][0].get("ceiling")) if data["baselines"] else float("nan")
    study = cfg.get("study", {})
    plan = cfg.get("plan", {})
    training = _training(fctx)
    hidden = training.get("hidden")
    model = f"{study.get('arch', '?')}" + (f" (hidden {hidden})" if hidden else "")
    title = (
        f"{study.get('dataset', name)} / {model}: K = {plan.get('n_subsets')} subsets x R = "
        f"{plan.get('n_seeds')} retrain seeds, {study.get('n_test_points')} test points, "
        f"{study.get('n_seeds')} sampler seeds, {study.get('curvature')} + damping {study.get('damping')}"
    )
    runs = [{**r, "sampler": current_name(r["sampler"])} for r in data.get("runs", [])]
    return LDSStudy(
        name=name,
        title=title,
        rows=rows,
        runs=runs,
        baselines=baselines,
        ceiling=ceiling,
        config=cfg,
        cost_source=source or None,
        cost_note=note,
        info={"verdict": data.get("verdict", {}), "path": f"docs/lds/{path.name}"},
    )


def best_within_budget(rows: Sequence[dict[str, Any]], budget: str, limit: float) -> list[dict[str, Any]]:
    """Per sampler, its configuration with the highest mean LDS among those whose ``budget`` (``"m"``,
    ``"solve_seconds"`` or ``"peak_mb"``) is at most ``limit``; sorted by that LDS (best first). Samplers with no
    configuration within the budget are left out. Each row adds ``margin``: LDS minus the next sampler's."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {list(BUDGETS)}")
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        cost, lds = _finite(r.get(budget)), _finite(r.get("lds_mean"))
        if not (math.isfinite(cost) and math.isfinite(lds)) or cost > float(limit):
            continue
        if r["sampler"] not in best or lds > best[r["sampler"]]["lds_mean"]:
            best[r["sampler"]] = dict(r)
    ranked = sorted(best.values(), key=lambda r: -r["lds_mean"])
    for a, b in zip(ranked, ranked[1:] + [None]):
        a["margin"] = float("nan") if b is None else a["lds_mean"] - b["lds_mean"]
    return ranked


def budget_table(ranked: Sequence[dict[str, Any]], has_cost: bool) -> list[dict[str, Any]]:
    """The rows of :func:`best_within_budget` as the page's table: sampler, m, "LDS (mean ± std)" over seeds to three
    decimals, the lead over the next sampler (NaN for the last) and, when the study has a cost axis, the measured
    solve time and peak memory (few columns: the table fits a projector's 1024 px)."""
    out = []
    for r in ranked:
        row = {
            "sampler": r["sampler"],
            "m": int(r["m"]),
            "LDS (mean ± std)": f"{r['lds_mean']:.3f} ± {r['lds_std']:.3f}",
            "lead over the next": r["margin"],
        }
        if has_cost:
            row["solve_seconds"], row["peak_mb"] = r["solve_seconds"], r["peak_mb"]
        out.append(row)
    return out


def budget_floor(rows: Sequence[dict[str, Any]], budget: str) -> float:
    """The smallest budget worth typing: the cheapest configuration's ``budget`` (m, solve seconds or peak MB)
    rounded down to two significant digits, so the number shown under the box is never above what the cheapest
    configuration needs. 1 when no configuration has a finite cost."""
    costs = [c for c in (_finite(r.get(budget)) for r in rows) if math.isfinite(c) and c > 0]
    if not costs:
        return 1.0
    low = min(costs)
    step = 10.0 ** (math.floor(math.log10(low)) - 1)
    return round(math.floor(low / step + 1e-9) * step, 12)


def budget_verdict(ranked: Sequence[dict[str, Any]], budget: str, limit: float) -> str:
    """One sentence answering "for my budget, which sampler?" (says when the lead is within the seed spread)."""
    unit = {"m": "", "solve_seconds": " s", "peak_mb": " MB"}[budget]
    if not ranked:
        return f"No configuration of the study fits a {BUDGETS[budget]} of {limit:g}{unit}; raise the budget."
    top = ranked[0]
    text = (
        f"Within {BUDGETS[budget]} ≤ {limit:g}{unit}: **{top['sampler']}** at m = {top['m']} "
        f"(LDS {top['lds_mean']:.3f} ± {top['lds_std']:.3f} over seeds)"
    )
    if len(ranked) > 1:
        second = ranked[1]
        spread = max(top["lds_std"], second["lds_std"])
        close = top["margin"] <= spread
        text += f", ahead of {second['sampler']} ({second['lds_mean']:.3f}) by {top['margin']:.3f}" + (
            ", which is within the across-seed spread: treat them as tied." if close else "."
        )
    return text


# ------------------------------------------------------------------------------------------------------ figures


def _reference_lines(fig: go.Figure, baselines: dict[str, float], ceiling: float) -> None:
    styles = {
        "full-data influence": dict(color=REFERENCE, dash="dash"),
        "gradient dot": dict(color="#888888", dash="dot"),
    }
    if math.isfinite(ceiling):
        fig.add_hline(
            y=ceiling,
            line=dict(color=REFERENCE, width=1),
            annotation_text=f"noise ceiling {ceiling:.3f}",
            annotation_position="top left",
        )
    for method, value in baselines.items():
        if math.isfinite(value):
            fig.add_hline(
                y=value,
                line=styles.get(method, dict(color="#555555", dash="dashdot")),
                annotation_text=f"{method} {value:.3f}",
                annotation_position="bottom left" if method == "full-data influence" else "bottom right",
            )


def _band(fig: go.Figure, name: str, x: np.ndarray, mean: np.ndarray, std: np.ndarray, hover: list[str]) -> None:
    colour = sampler_colour(name)
    r, g, b = (int(colour.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)) if colour.startswith("#") else (80, 80, 80)
    fig.add_trace(
        go.Scatter(
            x=np.concatenate([x, x[::-1]]),
            y=np.concatenate([mean + std, (mean - std)[::-1]]),
            fill="toself",
            fillcolor=f"rgba({r},{g},{b},0.18)",
            line=dict(width=0),
            hoverinfo="skip",
            showlegend=False,
            legendgroup=name,
            name=f"{name} ± std",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=mean,
            mode="lines+markers",
            name=name,
            legendgroup=name,
            line=dict(color=colour),
            marker=dict(color=colour),
            hovertext=hover,
            hoverinfo="text",
        )
    )


def lds_vs_m_figure(
    rows: Sequence[dict[str, Any]],
    baselines: dict[str, float],
    ceiling: float,
    samplers: Sequence[str] | None = None,
    title: str = "LDS against m",
) -> go.Figure:
    """Mean LDS over sampler seeds against m (log axis) per sampler, a band of ± one std across seeds, the noise
    ceiling and the baselines (full-data influence, gradient dot) as horizontal lines."""
    fig = go.Figure()
    for name in samplers or dict.fromkeys(r["sampler"] for r in rows):
        recs = sorted((r for r in rows if r["sampler"] == name), key=lambda r: r["m"])
        if not recs:
            continue
        x = np.array([r["m"] for r in recs], dtype=float)
        mean = np.array([r["lds_mean"] for r in recs])
        std = np.nan_to_num(np.array([r["lds_std"] for r in recs]))
        hover = [f"{name}, m = {int(m)}: LDS {mu:.3f} ± {sd:.3f}" for m, mu, sd in zip(x, mean, std)]
        _band(fig, name, x, mean, std, hover)
    _reference_lines(fig, baselines, ceiling)
    fig.update_xaxes(type="log", title="m (Hessian sample size, log scale)", tickvals=sorted({r["m"] for r in rows}))
    fig.update_layout(title=title, height=460, **FRAME, yaxis_title="LDS", legend=LEGEND_BELOW)
    return fig


def lds_vs_cost_figure(
    rows: Sequence[dict[str, Any]],
    cost: str,
    baselines: dict[str, float],
    ceiling: float,
    samplers: Sequence[str] | None = None,
    limit: float | None = None,
) -> go.Figure:
    """Mean LDS (± std error bars across seeds) against a measured cost (``"solve_seconds"`` or ``"peak_mb"``),
    one line per sampler through its m values; a dotted vertical line at the budget ``limit``."""
    fig = go.Figure()
    for name in samplers or dict.fromkeys(r["sampler"] for r in rows):
        recs = sorted(
            (r for r in rows if r["sampler"] == name and math.isfinite(_finite(r.get(cost)))), key=lambda r: r[cost]
        )
        if not recs:
            continue
        colour = sampler_colour(name)
        fig.add_trace(
            go.Scatter(
                x=[r[cost] for r in recs],
                y=[r["lds_mean"] for r in recs],
                mode="lines+markers",
                name=name,
                line=dict(color=colour),
                marker=dict(color=colour),
                error_y=dict(type="data", array=[np.nan_to_num(r["lds_std"]) for r in recs], thickness=1),
                text=[f"m = {r['m']}" for r in recs],
                hovertemplate="%{text}: LDS %{y:.3f}, " + BUDGETS[cost] + " %{x:.3g}<extra>" + name + "</extra>",
            )
        )
    _reference_lines(fig, baselines, ceiling)
    if limit is not None and cost != "m":
        fig.add_vline(x=float(limit), line=dict(color="#444444", dash="dot"))
    fig.update_xaxes(type="log", title=f"{BUDGETS[cost]} (log scale, measured)", dtick=1)
    fig.update_layout(
        title=f"LDS vs {BUDGETS[cost].split(' (')[0]}",
        height=420,
        **FRAME,
        yaxis_title="LDS",
        legend=LEGEND_BELOW,
    )
    return fig

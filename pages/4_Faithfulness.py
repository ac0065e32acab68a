"""Faithfulness page: which Hessian sampler gives influence scores that predict retraining (LDS), at what cost:
the cost-faithfulness frontier of the current model from the shipped ground truth (the committed frontier, which
method for which budget, and a live point of the current model), the committed study results per sampler against m
with across-seed bands, the noise ceiling, the full-data line, solve time and peak memory, "for my budget, which
sampler?", and a small live LDS on the current model."""

import math

import pandas as pd
import streamlit as st

import influence_core as ic
from ui.components import checked_number, page_header, sample_size_input, widget_default, words_panel
from ui.config import INFLUENCE_PAGE_DEFAULTS
from ui.errors import reported
from ui.export import chart, show_table
from ui.faithfulness import (
    BUDGETS,
    available_studies,
    best_within_budget,
    budget_floor,
    budget_table,
    budget_verdict,
    lds_vs_cost_figure,
    lds_vs_m_figure,
    load_study,
    study_for,
)
from ui.frontier import (
    FRONTIER_COMMAND,
    budget_rows,
    describe_partial,
    describe_run,
    frontier_caption,
    frontier_figure,
    frontier_settings,
    live_label,
    load_frontier,
    match_run,
    options_key,
    shipped_recipe,
    shipped_runs,
    solver_name,
)
from ui.live import frontier_point, frontier_point_key, is_cached, live_lds, live_lds_allowed, live_lds_key
from ui.state import clear_cancelled, current_run, ensure_model, get_dataset, set_run
from ui.url_state import keep_settings, publish_settings

page_header("Faithfulness: which sampler, for my budget?")
st.markdown(
    "The **linear datamodeling score** (LDS) asks whether influence scores predict what *retraining* does: retrain "
    "the model on K random halves of the training set, predict each retrained test loss by summing the scores of "
    "the points left out, and take the Spearman correlation over the K subsets (mean over test points). The **noise "
    "ceiling** is what the retrained models reach against themselves across retrain seeds; the **full-data** line "
    "is influence with the Hessian of the whole training set (the best a sample can hope to match); **gradient dot** "
    "ignores the Hessian. Bands are ± one standard deviation across sampler seeds."
)
words_panel("faithfulness")
keep_settings("faithfulness")  # the settings of the last visit, or of the URL (a reload or a shared link)

# ------------------------------------------------------------------------------------------------ frontier
st.subheader("The cost-faithfulness frontier of this model")
run = current_run()
with reported("Could not check this model against the shipped ground truth") as outcome:
    match = match_run(run, lambda: get_dataset(run.data))
if outcome.failed:
    match = None
elif match.name is None:
    st.info(match.message)
    for gt_name, other in shipped_runs():
        if st.button(
            f"Switch to the {describe_run(other)}, whose ground truth `{gt_name}` is shipped",
            key=f"faith_front_switch_{gt_name}",
        ):
            set_run(other)
            st.rerun()
else:
    name = match.name
    frontier = load_frontier(name)
    damping, curvature, solver_options = frontier_settings(frontier)
    st.markdown(
        f"This model is the model of the shipped ground truth **{name}**{describe_partial(match)}: its retrains "
        "(K random halves of the training set, each retrained from scratch with 2 seeds) are in the repository, so "
        "any way of computing influence on it is scored by its LDS in seconds. Each point below is one Hessian "
        "sample and solver: higher is more faithful to retraining, further left is cheaper; the red line is the "
        "Pareto frontier (no cheaper method is as faithful)."
    )
    kept = st.session_state.get("kept_settings", {})
    samplers_all = ic.available_samplers()
    solvers_all = ic.available_solvers()
    for key, source, default, allowed in (
        ("faith_front_sampler", "inf_a", INFLUENCE_PAGE_DEFAULTS["sampler_a"], samplers_all),
        ("faith_front_solver", "inf_solver", "exact", solvers_all),
    ):
        if st.session_state.get(key) not in allowed:  # the Influence page's choice, else its default
            chosen = st.session_state.get(source, kept.get(source, default))
            st.session_state[key] = chosen if chosen in allowed else default
    for key, source, default in (
        ("faith_front_m", "inf_m", INFLUENCE_PAGE_DEFAULTS["m"]),
        ("faith_front_seed", "inf_seed", 0),
    ):
        if key not in st.session_state:
            st.session_state[key] = int(st.session_state.get(source, kept.get(source, default)))
    n_train = int((shipped_recipe(name) or {}).get("dataset", {}).get("n_train", 1))
    f1, f2, f3, f4 = st.columns(4)
    sampler = f1.selectbox("Sampler", samplers_all, key="faith_front_sampler")
    with f2:
        m = sample_size_input("m (Hessian sample size)", n_train, key="faith_front_m", what="training points")
    with f3:
        seed = checked_number("Sampler seed", "faith_front_seed", 0, 1_000_000, 0)
    solver = f4.selectbox("Solver", solvers_all, key="faith_front_solver", format_func=solver_name)
    options = options_key(solver_options.get(solver, {}))
    point_key = (
        None if m is None or seed is None else frontier_point_key(run, name, sampler, m, seed, solver, damping, options)
    )
    go_point = st.button(
        "Score this model against the ground truth",
        type="primary",
        key="faith_front_run",
        disabled=point_key is None,
        help="draws the sample, fits the solver, scores the ground truth's test points against every training "
        "point, and computes the LDS against the shipped retrains (no retraining)",
    )
    if go_point and point_key is not None:
        clear_cancelled()
        slot = st.empty()
        with reported("Scoring this model against the ground truth failed"):
            try:
                ensure_model(run)
                bar = slot.progress(0.0, text="Scoring this model…")
                record = frontier_point(
                    run,
                    name,
                    sampler,
                    m,
                    seed,
                    solver,
                    damping,
                    curvature,
                    options,
                    progress=lambda f, msg: bar.progress(min(max(f, 0.0), 1.0), text=msg),
                )
                record["label"] = live_label(sampler, m, solver)
                st.session_state["faith_front_live"] = {"key": point_key, "record": record}
            finally:
                slot.empty()
    live = st.session_state.get("faith_front_live")
    point = live["record"] if live and live["key"][:3] == ("frontier_point", run, name) else None
    chart(
        frontier_figure(frontier, point, ceiling=None if frontier or point is None else point["ceiling"]),
        f"frontier_{name}",
        key="faith_front_fig",
    )
    if point is not None:
        stale = live["key"] != point_key
        st.markdown(
            f"**This model, now** ({point['label']}, sampler seed {point['seed']}): LDS **{point['lds']:.3f}** "
            f"against the shipped retrains (K = {point['k']}{', partial' if point['partial'] else ''}; noise "
            f"ceiling {point['ceiling']:.3f}), cost {point['cost_ratio']:,.0f}× one forward+backward pass "
            f"({point['seconds']:.2f} s against {point['forward_backward_seconds'] * 1e3:.1f} ms, wall clock on this "
            "server: compare it with the committed points roughly, not to the digit)."
            + (" The settings changed since: press the button to score them." if stale else "")
        )
        diff = point["full_logit_max_abs_diff"]
        st.caption(
            f"The model scored is the ground truth's own: the same retrain key ({point['key']}), and its test logits "
            + (
                "equal those the file recorded for its full model."
                if diff == 0
                else f"differ from those the file recorded for its full model by at most {diff:.1e}."
            )
        )
    elif point_key is not None and is_cached(point_key):
        st.caption("These settings are already scored: press the button and the point appears at once.")
    if frontier is not None:
        st.caption(frontier_caption(frontier))
        st.markdown("**Which method for my budget** (the most faithful committed configuration within each cost):")
        show_table(pd.DataFrame(budget_rows(frontier)), f"frontier_budgets_{name}", key="faith_front_budgets")
    else:
        st.info(
            f"No committed frontier for {name} yet; `{FRONTIER_COMMAND.format(name=name)}` measures it (every "
            "sampler × m × solver against the shipped retrains). The live point above is scored already."
        )
    st.caption(
        f"Every point uses Gauss-Newton curvature with damping δ = {damping:g}"
        + (" and the frontier's solver options" if frontier else "")
        + " (the Influence page's damping does not apply here, so the points compare)."
    )
st.divider()

names = available_studies()
if not names:
    st.warning("No committed LDS study found in docs/lds (run `python -m influence_core lds study`).")
    st.stop()
if st.session_state.get("faith_study") not in names:  # first visit: the study of the current model, if any
    own = study_for(current_run())
    st.session_state["faith_study"] = own if own in names else names[0]
name = st.selectbox(
    "Committed study (docs/lds)",
    names,
    key="faith_study",
    help="each study is of one model (its caption names it); the one of the current model is "
    "chosen first when there is one",
)
with reported("Could not read the committed study") as outcome:
    study = load_study(name)
if outcome.failed:
    st.stop()
st.caption(
    f"{study.title}. Source: `{study.info['path']}`"
    + (f"; cost: `{study.cost_source}` (same configuration)." if study.has_cost else ".")
)
widget_default("faith_samplers", list(study.samplers), study.samplers)  # another study's samplers are dropped
samplers = st.multiselect("Samplers", study.samplers, key="faith_samplers")
rows = [r for r in study.rows if r["sampler"] in samplers]
chart(
    lds_vs_m_figure(rows, study.baselines, study.ceiling, samplers, title=f"LDS against m: {name}"),
    f"lds_vs_m_{name}",
    key="faith_lds_m",
)

st.subheader("For my budget, which sampler?")
b1, b2 = st.columns([1, 2])
budgets = ["m"] + (["solve_seconds", "peak_mb"] if study.has_cost else [])
if st.session_state.get("faith_budget") not in budgets:
    st.session_state["faith_budget"] = "m"
budget = b1.radio("Budget", budgets, format_func=BUDGETS.get, key="faith_budget", horizontal=False)
values = sorted({r[budget] for r in rows if math.isfinite(r[budget])})
default = values[len(values) // 2] if values else 1.0
if "faith_limit" not in st.session_state or st.session_state.get("faith_limit_kind") != budget:
    st.session_state["faith_limit"] = float(default)
    st.session_state["faith_limit_kind"] = budget
floor = budget_floor(study.rows, budget)  # below the cheapest configuration nothing competes
with b2:
    limit = checked_number(
        f"At most ({BUDGETS[budget]})",
        "faith_limit",
        floor,
        None,
        float(default),
        integer=False,
        step={"m": 10.0, "solve_seconds": 0.01, "peak_mb": 1.0}[budget],
        format="%g",
        help=f"at least {floor:g} (the cheapest configuration of the study); the configurations whose measured "
        "cost is within this budget compete; each sampler is shown at its best m within it",
    )
publish_settings("faithfulness")
if limit is None:
    st.info("No ranking: fix the budget marked in red above (its allowed range is under it).")
else:
    ranked = best_within_budget(rows, budget, float(limit))
    st.markdown(budget_verdict(ranked, budget, float(limit)))
    if ranked:
        show_table(
            pd.DataFrame(budget_table(ranked, study.has_cost)),
            f"budget_{name}_{budget}",
            key="faith_budget_table",
            help={"lead over the next": "LDS minus the next sampler's (n/a for the last)"},
        )
if study.has_cost:
    c1, c2 = st.columns(2)
    with c1:
        chart(
            lds_vs_cost_figure(
                rows,
                "solve_seconds",
                study.baselines,
                study.ceiling,
                samplers,
                limit if budget == "solve_seconds" else None,  # None: out of range, no line
            ),
            f"lds_vs_time_{name}",
            key="faith_cost_time",
        )
    with c2:
        chart(
            lds_vs_cost_figure(
                rows, "peak_mb", study.baselines, study.ceiling, samplers, limit if budget == "peak_mb" else None
            ),
            f"lds_vs_memory_{name}",
            key="faith_cost_memory",
        )
    st.caption(
        "Solve time (iHVPs of the study's test points on the sample) and peak resident memory added by the "
        "solve were measured by the faithfulness study of the same model on the study machine (shared, "
        "2 cores): compare them as ratios, not as absolute times for your machine."
    )
else:
    st.info(f"No cost axis for this study: {study.cost_note}.")

with st.expander("Every run of the study (one row per sampler, m and seed)"):
    show_table(pd.DataFrame(study.runs), f"lds_runs_{name}", key="faith_runs")
with st.expander("Per sampler and m (the curves above)"):
    show_table(pd.DataFrame(study.rows), f"lds_summary_{name}", key="faith_rows")

# ------------------------------------------------------------------------------------------------ live
st.subheader("Live on the current model")
run = current_run()
st.markdown(
    f"A small LDS on the model of this session ({run.model.arch} on {run.data.label()}): K random halves of the "
    "training set, each retrained from scratch with 2 seeds (retrains are cached on disk, so a second run is "
    "quick), a few test points, the chosen samplers x m x 2 sampler seeds. Small K makes the LDS noisier than the "
    "committed study's K = 100: read the ranking, not the third digit."
)
l1, l2, l3 = st.columns([2, 2, 1.4])
live_samplers = l1.multiselect(
    "Samplers", ic.available_samplers(), default=["random", "importance"], key="faith_live_samplers", wrap=True
)
live_ms = l2.multiselect("m", [16, 32, 64, 128, 256], default=[32, 128], key="faith_live_ms", wrap=True)
K = int(l3.slider("K subsets", 10, 60, 20, step=5, key="faith_live_k"))
T = int(l3.slider("Test points", 10, 50, 20, step=5, key="faith_live_t"))
go_live = st.button(
    "Run a small LDS on the current model",
    type="primary",
    key="faith_live_run",
    disabled=not live_samplers or not live_ms,
)
key = live_lds_key(run, tuple(live_samplers), tuple(sorted(live_ms)), 2, K, T)
if go_live:
    clear_cancelled()  # an explicit request: a live LDS cancelled before runs again
    slot = st.empty()
    with reported("The live LDS failed", then="Nothing was changed; try fewer subsets or another model."):
        try:
            ensure_model(run)
            reason = live_lds_allowed(run)
            if reason:
                raise ValueError(reason)
            bar = slot.progress(0.0, text="Live LDS…")

            def progress(fraction: float, message: str) -> None:
                retraining = message.startswith(("LDS retrains", "retrained"))
                overall = 0.3 + 0.7 * fraction if retraining else 0.3 * fraction
                bar.progress(
                    min(max(overall, 0.0), 1.0), text=("Retraining: " if retraining else "Scoring: ") + message
                )

            record = live_lds(run, tuple(live_samplers), tuple(sorted(live_ms)), 2, K, T, progress=progress)
            st.session_state["faith_live"] = {"key": key, "record": record}
        finally:
            slot.empty()

live = st.session_state.get("faith_live")
if live is None:
    st.info(
        "Choose the samplers, m and K, then press **Run a small LDS on the current model**"
        + (" (these settings are already computed: the result appears at once)." if is_cached(key) else ".")
    )
else:
    record = live["record"]
    if live["key"] != key:
        st.warning("The settings changed since this result was computed; press the button to update it.")
    base = {b["method"]: b["lds"] for b in record["baselines"]}
    ceiling = record["baselines"][0]["ceiling"] if record["baselines"] else float("nan")
    plan = record["config"]["plan"]
    live_rows = [
        {"sampler": r["sampler"], "m": r["m"], "lds_mean": r["lds_mean"], "lds_std": r["lds_std"]}
        for r in record["summary"]
    ]
    chart(
        lds_vs_m_figure(
            live_rows,
            base,
            ceiling,
            title=f"Live LDS: K = {plan['n_subsets']}, R = "
            f"{plan['n_seeds']}, {len(record['test_indices'])} test points",
        ),
        "live_lds_vs_m",
        key="faith_live_fig",
    )
    info = record["retrain_info"]
    st.caption(
        f"{info['retrained']} retrains run and {info['cached']} read from the cache "
        f"({info['wall_seconds']:.1f} s; {info['retrain_seconds_mean']:.2f} s per retrain on average); "
        f"full-data LDS {base.get('full-data influence', float('nan')):.3f}, noise ceiling {ceiling:.3f}."
    )
    show_table(pd.DataFrame(record["summary"]), "live_lds_summary", key="faith_live_table")

"""Influence page: the training points that helped or harmed one test prediction, and how much that depends on the
Hessian sample."""

import time

import numpy as np
import pandas as pd
import streamlit as st

import influence_core as ic
from influence_core.evaluation import metrics
from ui.components import (
    checked_number,
    load_current,
    page_header,
    sample_size_input,
    scroll_to,
    show_inputs,
    stop_if_invalid,
    widget_default,
    words_panel,
)
from ui.config import INFLUENCE_PAGE_DEFAULTS as DEFAULTS
from ui.config import SOLVER_OPTIONS
from ui.errors import reported
from ui.export import show_table
from ui.figures import COLOUR_OPTIONS, computed_caption, influence_map, nowrap, score_text, strip_figure, trace_figure
from ui.selection import parse_selection, prefer_drawn_on_top
from ui.state import (
    INTERACTIVE_EXACT_MAX_PARAMS,
    get_projection,
    get_sample,
    influence_rows,
    reference_solver,
    reference_spec,
    seed_spread,
    spread_cost,
)
from ui.summaries import samplers_help
from ui.url_state import keep_settings, publish_settings

page_header("Influence: helpful and harmful training points")
ctx = load_current()
if ctx is None:
    st.stop()
run, dataset, model, view = ctx
n_train, n_test = dataset.n_train, dataset.n_test
MODES = ("click on the map", "by index", "misclassified")
MAP_KEY = "inf_map"

# A click on a test point in the map (previous interaction) picks it: handled before the widgets are created.
event = st.session_state.get(MAP_KEY)
picked = parse_selection(event, n_train, n_test)
if not picked.region and len(picked.train_rows) == 1:  # the test cross drawn over a dot wins (ui.selection)
    shown = get_projection(run, st.session_state.get("inf_space", "features"), "pca")
    picked = prefer_drawn_on_top(picked, shown[:n_train], shown[n_train:])
clicked = picked.clicked_test_row()
if clicked is not None and clicked != st.session_state.get("inf_last_click"):
    st.session_state["inf_last_click"] = clicked
    st.session_state["inf_clicked"] = clicked
    st.session_state["inf_mode"] = MODES[0]
    st.session_state["inf_scroll"] = True  # the result is above the map: bring it into view (below)
keep_settings("influence")  # the settings of the last visit, or of the URL (a reload or a shared link)

wrong = np.flatnonzero(view.test_pred != dataset.y_test)
st.markdown(
    "Pick a test point: click a cross on the map, or choose it by index or among the misclassified ones. The scores "
    "are `(1/n) ∇ℓ(test)ᵀ H⁻¹ ∇ℓ(train)`: the predicted increase of the test loss if that training point were "
    "removed (positive = helpful, negative = harmful), with the Hessian H estimated on sampler A's sample "
    "(Gauss-Newton "
    "curvature + damping)."
)
words_panel("influence")
c1, c2, c3, c4 = st.columns([1.3, 1.2, 1.2, 1.2])
with c1:
    mode = st.radio("Pick the test point", MODES, key="inf_mode")
    if mode == "by index":
        test_index = checked_number("Test index", "inf_index", 0, n_test - 1, 0)
    elif mode == "misclassified":
        if len(wrong) == 0:
            st.info("The model gets every test point right; showing test point 0.")
            test_index = 0
        else:
            test_index = int(
                st.selectbox(
                    f"Misclassified test points ({len(wrong)})",
                    wrong.tolist(),
                    key="inf_wrong",
                    format_func=lambda i: (
                        f"#{i}: true {dataset.class_names[dataset.y_test[i]]}, "
                        f"predicted {dataset.class_names[view.test_pred[i]]}"
                    ),
                )
            )
    else:
        test_index = int(st.session_state.get("inf_clicked", wrong[0] if len(wrong) else 0))
        st.caption(f"Test point #{test_index} (click another cross on the map to change it)")
samplers = ic.available_samplers()
with c2:
    for key, default in (("inf_a", DEFAULTS["sampler_a"]), ("inf_b", DEFAULTS["sampler_b"])):
        if st.session_state.get(key) not in samplers:
            st.session_state[key] = default
    sampler_a = st.selectbox("Sampler A", samplers, key="inf_a")
    sampler_b = st.selectbox("Sampler B (compared)", samplers, key="inf_b")
    st.caption(samplers_help(dict.fromkeys([sampler_a, sampler_b])))
with c3:
    m = sample_size_input(
        "m (Hessian sample size)", n_train, key="inf_m", what="training points", default=DEFAULTS["m"]
    )
    seed = checked_number("Seed", "inf_seed", 0, 1_000_000, DEFAULTS["seed"])
with c4:
    small = (
        view.n_params <= INTERACTIVE_EXACT_MAX_PARAMS
    )  # exact: one factorisation per sample, then every test point is cheap
    widget_default("inf_solver", ic.available_solvers()[0 if small else 1], ic.available_solvers())
    solver = st.selectbox(
        "Solver",
        ic.available_solvers(),
        key="inf_solver",
        help="exact: LU of the sampled Hessian (small models); cg: conjugate gradient; "
        "lissa: Neumann series with automatic scale; low_rank: exact Gauss-Newton by "
        "Woodbury; kfac/ekfac: Kronecker-factored Gauss-Newton per layer, fitted on the "
        "sample (true Fisher); arnoldi: top-50 eigenpairs of the sampled Gauss-Newton",
    )
    damping = checked_number("Damping δ", "inf_damping", 0.0, None, DEFAULTS["damping"], integer=False, format="%.4f")
    widget_default("inf_k", 8)
    k = int(st.slider("Top k", 3, 16, key="inf_k"))
# The full-data reference is one factorisation for small models (on by default); for large ones it is an iterative
# solve per test point that takes far longer than the samples' (off by default, its cost said on the toggle).
cheap_reference = reference_solver(run) == "exact"
widget_default("inf_full", cheap_reference)
compare_full = st.toggle(
    f"Compare with the full-data Hessian ({n_train} points, {reference_solver(run)} solver"
    + (
        ""
        if cheap_reference
        else f"; slow for this {view.n_params:,}-parameter model: a CG solve per test point, with progress and Cancel"
    )
    + ")",
    key="inf_full",
)
publish_settings("influence")
stop_if_invalid(test_index, m, seed, damping)

# ------------------------------------------------------------------------------------------------ computation
specs = {"A": (sampler_a, m, seed, solver), "B": (sampler_b, m, seed, solver)}
if compare_full:
    specs["full"] = reference_spec(run)
with reported("Could not compute influence") as outcome:  # a progress bar and Cancel while it runs
    started = time.perf_counter()
    rows = dict(zip(specs, influence_rows(run, tuple(specs.values()), damping, test_index)))
    elapsed = time.perf_counter() - started
if outcome.failed:
    st.stop()

names = {"A": f"A: {sampler_a}", "B": f"B: {sampler_b}", "full": "full data"}
scores = {key: row["scores"] for key, row in rows.items()}
top = ic.top_influences(scores["A"], k)
y_t, p_t = dataset.y_test[test_index], view.test_pred[test_index]

st.html('<div id="inf-results"></div>')
left, right = st.columns([1, 4])
with left:
    st.markdown(f"**Test point #{test_index}**")
    show_inputs(
        dataset,
        dataset.X_test[test_index : test_index + 1],
        [f"true {dataset.class_names[y_t]}, predicted {dataset.class_names[p_t]} ({view.test_conf[test_index]:.0%})"],
        per_row=1,
        key="inf_test",
    )
    st.caption(computed_caption(rows["A"], elapsed, n_train, len(rows)))
with right:
    tabs = st.tabs([names[key] for key in rows])
    for tab, key in zip(tabs, rows):
        with tab:
            t = ic.top_influences(scores[key], k)
            for kind in ("helpful", "harmful"):
                idx, sc = t[kind], t[f"{kind}_scores"]
                st.markdown(f"**Top {k} {kind}** ({names[key]})")
                show_inputs(
                    dataset,
                    dataset.X_train[idx],
                    [
                        nowrap(f"#{i} ({dataset.class_names[dataset.y_train[i]]})") + " " + score_text(s)
                        for i, s in zip(idx, sc)
                    ],
                    per_row=8,
                    key=f"inf_{key}_{kind}",
                )

if st.session_state.pop("inf_scroll", False):
    scroll_to("inf-results")

# ------------------------------------------------------------------------------------------------ map
st.subheader("Map")
mc1, mc2, mc3 = st.columns([1, 1, 3])
space = mc1.radio("Map of", ["features", "logits"], horizontal=True, key="inf_space")
colour = mc2.selectbox("Colour training points by", COLOUR_OPTIONS, key="inf_colour")
mc3.caption(
    "Dots are training points (one colour per class, or by confidence / correctness); crosses are test "
    "points (thin dark-blue = correct, bold orange = wrong); the black star is the chosen one; dark-blue "
    "circles / orange diamonds are sampler A's top helpful / harmful points. Click a cross to pick it; use "
    "the box or lasso tool "
    "(top right of the map) to list training points with their scores below."
)
with reported("Could not compute the map") as outcome:
    xy = get_projection(run, space, "pca")
if outcome.failed:
    st.stop()
fig = influence_map(
    xy[:n_train],
    xy[n_train:],
    colour,
    dataset.y_train,
    view.train_pred,
    view.train_conf,
    dataset.y_test,
    view.test_pred,
    view.test_conf,
    dataset.class_names,
    test_index,
    top["helpful"],
    top["harmful"],
    title=f"PCA of {space}: test #{test_index}, sampler A = {sampler_a}",
)
event = st.plotly_chart(
    fig,
    width="stretch",
    key=MAP_KEY,
    on_select="rerun",
    selection_mode=("points", "box", "lasso"),
    config={"displaylogo": False},
)

selection = parse_selection(event, n_train, n_test)
if selection.region and selection.train_rows:
    chosen = np.asarray(selection.train_rows)
    sample_a = set(np.asarray(get_sample(run, sampler_a, m, seed).indices).tolist())
    table = pd.DataFrame(
        {
            "train index": chosen,
            "label": [dataset.class_names[c] for c in dataset.y_train[chosen]],
            "predicted": [dataset.class_names[c] for c in view.train_pred[chosen]],
            **{f"score {names[key]}": scores[key][chosen] for key in rows},
            "in sample A": [int(i) in sample_a for i in chosen],
        }
    ).sort_values(f"score {names['A']}", ascending=False)
    st.markdown(f"**{len(chosen)} selected training points** (scores on test point #{test_index})")
    st.dataframe(table, hide_index=True, width="stretch", key="inf_table")
    st.download_button(
        "Download the selection as CSV",
        table.to_csv(index=False).encode(),
        file_name=f"influence_test{test_index}_selection.csv",
        mime="text/csv",
        key="inf_csv",
    )
elif selection.region:
    st.info("The selection holds no training points; draw the box or lasso around some.")

# ------------------------------------------------------------------------------------------------ comparison
st.subheader("How much does the answer depend on the Hessian sample?")
pairs = [("A", "B")] + ([("A", "full"), ("B", "full")] if "full" in rows else [])
comp = [
    {
        "pair": f"{names[a]} vs {names[b]}",
        "Spearman": metrics.spearman(scores[a], scores[b]),
        f"top-{k} helpful overlap": metrics.topk_overlap(scores[a], scores[b], k),
        f"top-{k} harmful overlap": metrics.topk_overlap(scores[a], scores[b], k, largest=False),
    }
    for a, b in pairs
]
show_table(pd.DataFrame(comp), f"influence_test{test_index}_comparison", key="inf_comp")

with st.expander("Spread across seeds (the paper's central claim: an advanced sample moves less)", expanded=False):
    if "full" not in rows:
        st.info("Turn on the full-data comparison above: the spread is measured against the full-data Hessian.")
    else:
        widget_default("inf_nseeds", 3)
        n_seeds = st.slider("Seeds", 2, 8, key="inf_nseeds")
        spread_samplers = tuple(dict.fromkeys([sampler_a, sampler_b]))
        needed, stored = spread_cost(run, spread_samplers, m, tuple(range(n_seeds)), solver, damping)
        st.caption(
            f"Cost: {needed} Hessian samples of m = {m} points ({stored} already fitted and on disk, "
            f"{needed - stored} to {'solve' if solver in ('cg', 'lissa') else 'fit'}), then one scoring pass; "
            "it runs with a progress bar and a Cancel button."
        )
        if st.toggle("Compute the spread", value=False, key="inf_spread"):
            with reported("Could not compute the spread") as spread_outcome:
                spread = seed_spread(run, spread_samplers, m, tuple(range(n_seeds)), solver, damping, test_index, k)
            if not spread_outcome.failed:
                table = pd.DataFrame(spread)
                st.plotly_chart(
                    strip_figure(
                        {s: table.loc[table.sampler == s, "spearman_vs_full"].tolist() for s in table.sampler.unique()},
                        "Spearman with the full-data scores, one point per seed",
                        "Spearman",
                    ),
                    width="stretch",
                    key="inf_spread_fig",
                )
                agg = table.groupby("sampler", sort=False)[["spearman_vs_full", "topk_overlap_vs_full"]]
                show_table(
                    agg.agg(["mean", "std"]).reset_index(), f"influence_test{test_index}_spread", key="inf_spread_table"
                )

with st.expander("Solver convergence (LiSSA trace)", expanded=(solver == "lissa")):
    traces = {}
    if solver in ("cg", "lissa"):
        traces = {f"{names[key]} ({solver})": rows[key]["trace"] for key in ("A", "B")}
    if solver != "lissa" and st.toggle("Also run LiSSA on samples A and B", value=False, key="inf_lissa"):
        with reported("LiSSA failed"):
            lissa = influence_rows(
                run, ((sampler_a, m, seed, "lissa"), (sampler_b, m, seed, "lissa")), damping, test_index
            )
            for key, row in zip(("A", "B"), lissa):
                traces[f"{names[key]} (lissa)"] = row["trace"]
    if traces:
        st.plotly_chart(
            trace_figure(traces, tol=SOLVER_OPTIONS["lissa"]["tol"] if solver != "cg" else SOLVER_OPTIONS["cg"]["tol"]),
            width="stretch",
            key="inf_trace",
        )
        st.caption(
            "LiSSA's step size is set automatically (1.1 x the largest eigenvalue, by power iteration); it "
            "stops when the relative residual reaches the tolerance and raises a clear error if it diverges."
        )
    else:
        st.info(
            f"The {solver} solver has no iterations (a direct or factored inverse); pick cg or lissa, or run "
            "LiSSA with the toggle."
        )

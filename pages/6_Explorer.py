"""Explorer page: the training set on a map, coloured by label, confidence, influence on a test point or
self-influence; nearest neighbours of a clicked point in feature space; box/lasso selections kept as named slices
and compared across samplers (class mix, curvature, influence); every figure (PNG) and table (CSV) exportable."""

import numpy as np
import pandas as pd
import streamlit as st

import influence_core as ic
from ui.components import (
    checked_number,
    load_current,
    map_coordinates,
    page_header,
    sample_size_input,
    show_inputs,
    stop_if_invalid,
    widget_default,
    words_panel,
)
from ui.errors import reported
from ui.explore import class_mix, clean_slice_name, nearest_neighbours, slice_against_sample, slice_influence
from ui.export import chart, show_table
from ui.figures import COLOUR_OPTIONS, influence_map, nowrap
from ui.live import curvature, self_influence
from ui.selection import parse_selection, prefer_drawn_on_top
from ui.state import get_projection, get_sample, influence_rows, projection_ready, reference_solver, reference_spec
from ui.story_figures import add_focus, score_map, slice_mix_figure
from ui.url_state import keep_settings, publish_settings

page_header("Explorer: neighbours, slices and scores on the map")
ctx = load_current()
if ctx is None:
    st.stop()
run, dataset, model, view = ctx
n_train, n_test = dataset.n_train, dataset.n_test
MAP_KEY = "exp_map"
KINDS = ("train", "test")
DAMPING = 0.01
solver = reference_solver(run)  # exact for small models (one factorisation), else CG

# A click on one point of the map (previous interaction) makes it the focus: handled before the widgets exist.
sel = parse_selection(st.session_state.get(MAP_KEY), n_train, n_test)
if not sel.region and len(sel.train_rows) == 1:  # a click: the test cross drawn over a dot wins (ui.selection)
    shown_space = st.session_state.get("exp_space", "features")
    shown_method = st.session_state.get("exp_method", "pca")
    shown = get_projection(
        run, shown_space, shown_method if projection_ready(run, shown_space, shown_method) else "pca"
    )
    sel = prefer_drawn_on_top(sel, shown[:n_train], shown[n_train:])
if not sel.region and len(sel.train_rows) + len(sel.test_rows) == 1:
    clicked = ("train", sel.train_rows[0]) if sel.train_rows else ("test", sel.test_rows[0])
    if clicked != st.session_state.get("exp_last_click"):
        st.session_state["exp_last_click"] = clicked
        st.session_state["exp_index_kind"], st.session_state["exp_index"] = clicked
keep_settings("explorer")  # the settings of the last visit, or of the URL (a reload or a shared link)

st.markdown(
    "Click a point on the map (or choose it below) to see its **nearest neighbours** in the model's feature space. "
    "Draw a **box or lasso** (toolbar, top right of the map) around training points and keep it as a named "
    "**slice**, then compare how each sampler's Hessian sample treats your slices. Every chart has a camera button "
    "in its toolbar (PNG) and every table a CSV button."
)
words_panel("explorer")
c1, c2, c3, c4 = st.columns([1.2, 1.3, 1.2, 1.3])
with c1:
    space = st.radio("Map of", ["features", "logits"], horizontal=True, key="exp_space")
    method = st.radio(
        "Projection",
        ["pca", "umap"],
        horizontal=True,
        key="exp_method",
        format_func={"pca": "PCA (instant)", "umap": "UMAP"}.get,
    )
with c2:
    colours = list(COLOUR_OPTIONS) + ["influence score", "self-influence"]
    colour = st.selectbox(
        "Colour training points by",
        colours,
        key="exp_colour",
        help="influence score: on the chosen test point, with the Hessian below; "
        "self-influence: (1/n)∇ℓ_jᵀ(H + δI)⁻¹∇ℓ_j with the full-data Hessian",
    )
    hessians = ["full data"] + ic.available_samplers()
    hessian = st.selectbox("Hessian of the influence scores", hessians, key="exp_hessian")
with c3:
    if st.session_state.get("exp_index_kind") not in KINDS:
        st.session_state["exp_index_kind"] = "test"
    kind = st.radio(
        "Focus point",
        KINDS,
        horizontal=True,
        key="exp_index_kind",
        help="a test point: the influence scores are on it; a training point: its neighbours are shown",
    )
    limit = (n_train if kind == "train" else n_test) - 1
    index = checked_number(f"Index ({kind} point)", "exp_index", 0, limit, 0)
    widget_default("exp_k", 8)
    k = int(st.slider("Neighbours", 3, 16, key="exp_k"))
with c4:
    m = sample_size_input("m (for the samplers)", n_train, key="exp_m", what="training points")
    seed = checked_number("Seed", "exp_seed", 0, 1_000_000, 0)
publish_settings("explorer")
stop_if_invalid(index, m, seed)
test_index = index if kind == "test" else int(st.session_state.get("exp_test_index", 0))
if kind == "test":
    st.session_state["exp_test_index"] = index

# ------------------------------------------------------------------------------------------------ map
with reported(f"Could not compute the {method.upper()} map") as outcome:
    xy, method = map_coordinates(run, space, method, key="exp_map")  # a first UMAP: background, PCA meanwhile
if outcome.failed:
    st.stop()
xy_train, xy_test = xy[:n_train], xy[n_train:]
features = view.inputs.features
query = features[index] if kind == "train" else view.test_features[index]
with reported("Could not find the neighbours") as nb_outcome:
    nb_rows, nb_dist = nearest_neighbours(features, query, k, exclude=index if kind == "train" else None)
if nb_outcome.failed:
    nb_rows, nb_dist = np.zeros(0, dtype=np.int64), np.zeros(0)
focus_train = index if kind == "train" else None

spec = reference_spec(run) if hessian == "full data" else (hessian, m, seed, solver)
values = None
if colour == "influence score":
    with reported("Could not compute the influence scores") as outcome, st.spinner("Influence…"):
        values = influence_rows(run, (spec,), DAMPING, test_index)[0]["scores"]
elif colour == "self-influence":
    with reported("Could not compute self-influence") as outcome, st.spinner("Self-influence of every training point…"):
        values = self_influence(run, DAMPING)
if values is not None:
    what = "influence" if colour == "influence score" else "self-influence"
    title = (
        f"{method.upper()} of {space}: influence on test #{test_index} ({hessian} Hessian)"
        if what == "influence"
        else f"{method.upper()} of {space}: self-influence (full-data Hessian)"
    )
    fig = score_map(
        xy_train,
        xy_test,
        values,
        what,
        dataset.y_test,
        view.test_pred,
        view.test_conf,
        dataset.class_names,
        test_index,
        nb_rows,
        focus_train,
        title=title,
    )
else:
    fig = influence_map(
        xy_train,
        xy_test,
        colour if colour in COLOUR_OPTIONS else "label",
        dataset.y_train,
        view.train_pred,
        view.train_conf,
        dataset.y_test,
        view.test_pred,
        view.test_conf,
        dataset.class_names,
        None,
        title=f"{method.upper()} of {space}",
    )
    add_focus(fig, xy_train, xy_test, test_index if kind == "test" else None, nb_rows, focus_train)
event = chart(
    fig, f"explorer_map_{space}_{method}", key=MAP_KEY, on_select="rerun", selection_mode=("points", "box", "lasso")
)

# ------------------------------------------------------------------------------------------------ neighbours
label = (
    f"training point #{index} (label {dataset.class_names[dataset.y_train[index]]})"
    if kind == "train"
    else f"test point #{index} (label {dataset.class_names[dataset.y_test[index]]}, predicted "
    f"{dataset.class_names[view.test_pred[index]]})"
)
st.subheader(f"Nearest training points to {label} in feature space")
if len(nb_rows):
    left, right = st.columns([1, 5])
    with left:
        X_focus = dataset.X_train[index : index + 1] if kind == "train" else dataset.X_test[index : index + 1]
        show_inputs(dataset, X_focus, [f"{kind} #{index}"], per_row=1, key="exp_focus_img")
    with right:
        show_inputs(
            dataset,
            dataset.X_train[nb_rows],
            [
                nowrap(f"#{r} ({dataset.class_names[dataset.y_train[r]]})") + f" d={d:.2f}"
                for r, d in zip(nb_rows, nb_dist)
            ],
            per_row=8,
            key="exp_neighbours",
        )
    neighbours = pd.DataFrame(
        {
            "train index": nb_rows,
            "cosine distance": nb_dist,
            "label": [dataset.class_names[c] for c in dataset.y_train[nb_rows]],
            "predicted": [dataset.class_names[c] for c in view.train_pred[nb_rows]],
        }
    )
    if values is not None:
        neighbours[colour] = values[nb_rows]
    show_table(neighbours, f"neighbours_{kind}{index}", key="exp_neighbours_table")
    st.caption("Cosine distance between penultimate-layer features (what the feature sampler clusters).")

# ------------------------------------------------------------------------------------------------ slices
st.subheader("Slices")
slices: dict = st.session_state.setdefault("exp_slices", {})
selection = parse_selection(event, n_train, n_test)
if selection.region and selection.train_rows:
    s1, s2 = st.columns([3, 1])
    name = s1.text_input(
        f"Name for the {len(selection.train_rows)} selected training points",
        value=f"slice {len(slices) + 1}",
        key="exp_slice_name",
    )
    if s2.button("Keep as a slice", key="exp_keep_slice"):
        with reported("Could not keep the slice"):
            slices[clean_slice_name(name, slices)] = list(selection.train_rows)
elif selection.region:
    st.info("The selection holds no training points; draw the box or lasso around some.")
if not slices:
    st.info("No slices yet: draw a box or lasso around training points on the map and keep it.")
    st.stop()

d1, d2 = st.columns([3, 1])
chosen = d1.multiselect("Slices to compare", list(slices), default=list(slices), key="exp_compare", wrap=True)
drop = d2.selectbox("Delete a slice", ["—"] + list(slices), key="exp_drop")
if d2.button("Delete", key="exp_drop_go") and drop in slices:
    del slices[drop]
    st.rerun()
samplers = st.multiselect(
    "Samplers", ic.available_samplers(), default=["random", "feature", "importance"], key="exp_samplers"
)
if not chosen or not samplers:
    st.info("Choose at least one slice and one sampler.")
    st.stop()

population = class_mix(dataset.y_train, np.arange(n_train), dataset.n_classes)
chart(
    slice_mix_figure(
        {s: class_mix(dataset.y_train, slices[s], dataset.n_classes) for s in chosen}, population, dataset.class_names
    ),
    "slice_class_mix",
    key="exp_mix",
)
with reported("Could not compare the samplers on the slices") as outcome, st.spinner("Samples and influence…"):
    c = curvature(run)
    specs = [reference_spec(run)] + [(name, m, seed, solver) for name in samplers]
    rows = influence_rows(run, tuple(specs), DAMPING, test_index)
    full = rows[0]["scores"]
    records = []
    for s in chosen:
        members = slices[s]
        records.append(
            {
                "slice": s,
                "sampler": "full data",
                "points": len(members),
                **slice_against_sample(members, n_train, np.arange(n_train), None, c),
                **slice_influence(full, members),
            }
        )
        for name, row in zip(samplers, rows[1:]):
            sample = get_sample(run, name, m, seed)
            records.append(
                {
                    "slice": s,
                    "sampler": name,
                    "points": len(members),
                    **slice_against_sample(members, n_train, sample.indices, sample.weights, c),
                    **slice_influence(row["scores"], members),
                }
            )
if not outcome.failed:
    table = pd.DataFrame(records).rename(columns={"expected (uniform)": "expected"})
    # Two tables of few columns each (every column readable at a projector's 1024 px); both in the CSVs.
    st.markdown(
        f"**Influence of each slice** on test point #{test_index} (m = {m}, seed {seed}): **slice influence** is "
        "the predicted increase of the test loss if the whole slice were removed (the sum of its points' scores; "
        "mean score: per point), under each sampler's Hessian."
    )
    show_table(
        table[["slice", "sampler", "points", "slice influence (sum)", "mean score"]],
        "slices_influence_by_sampler",
        key="exp_slices_influence",
    )
    st.markdown(
        "**The slice in each Hessian sample**: **in sample** counts its points in the sample (**expected**: what a "
        "uniform draw of m would hold); **weight share** is the share of the Hessian estimate the slice's points "
        "carry (the full-data row: the population share); **curvature share** weighs each point by its "
        "curvature proxy 1 − Σp² as well."
    )
    show_table(
        table[[c for c in table.columns if c not in ("points", "slice influence (sum)", "mean score")]],
        "slices_by_sampler",
        key="exp_slices_table",
        hidden=("population share", "curvature share (population)"),
    )

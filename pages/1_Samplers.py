"""Samplers page: which training points each sampler puts into the Hessian sample, on a 2-D map."""

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
    stop_if_invalid,
    widget_default,
    words_panel,
)
from ui.errors import reported
from ui.export import show_table
from ui.figures import COLOUR_OPTIONS, distribution_figures, sample_map
from ui.state import get_sample
from ui.summaries import UMAP_HELP, distribution_gaps, sampler_help, samplers_help
from ui.url_state import keep_settings, publish_settings

page_header("Samplers: which points feed the Hessian")
ctx = load_current()
if ctx is None:
    st.stop()
run, dataset, model, view = ctx
keep_settings("samplers")  # the settings of the last visit, or of the URL (a reload or a shared link)

st.markdown(
    "Each sampler picks **m** training points to estimate the Hessian on. Coloured dots (one colour per class) are "
    "in the sample; light grey dots are the rest of the training set. A representative sample covers the map "
    "and matches the population's "
    "class and confidence distributions. Change the **seed** to see how much each sampler's choice moves."
)
words_panel("samplers")

c1, c2, c3, c4 = st.columns([1.2, 1, 1, 2.2])
with c1:
    space = st.radio(
        "Map of",
        ["features", "logits"],
        horizontal=True,
        key="smp_space",
        help="penultimate-layer features (what the feature sampler clusters) or logits",
    )
    method = st.radio(
        "Projection",
        ["pca", "umap"],
        horizontal=True,
        key="smp_method",
        format_func={"pca": "PCA (instant)", "umap": "UMAP"}.get,
        help=UMAP_HELP,
    )
with c2:
    colour = st.selectbox("Colour by", COLOUR_OPTIONS, key="smp_colour")
    m = sample_size_input("m (sample size)", dataset.n_train, key="smp_m", what="training points")
with c3:
    seed = checked_number("Seed", "smp_seed", 0, 1_000_000, 0)
with c4:
    widget_default("smp_samplers", ["random", "feature", "logit"])
    samplers = st.multiselect(
        "Samplers (up to 3, side by side; same m and seed)",
        ic.available_samplers(),
        max_selections=3,
        key="smp_samplers",
        wrap=True,  # every chosen sampler stays readable in a narrow column (1024 px)
    )
    st.caption(samplers_help(samplers))
publish_settings("samplers")
stop_if_invalid(m, seed)

if not samplers:
    st.warning("Choose at least one sampler.")
    st.stop()

with reported(f"Could not compute the {method.upper()} map") as outcome:
    xy, method = map_coordinates(run, space, method, key="smp_map")
    xy = xy[: dataset.n_train]
if outcome.failed:
    st.stop()

labels, pred, conf = dataset.y_train, view.train_pred, view.train_conf
cols = st.columns(len(samplers))
summary = []
subsets = {}
for col, name in zip(cols, samplers):
    with col:
        with reported(f"{name}") as outcome:
            sample = get_sample(run, name, int(m), int(seed))
        if outcome.failed:
            continue
        idx = np.asarray(sample.indices)
        st.plotly_chart(
            sample_map(
                xy, idx, colour, labels, pred, conf, dataset.class_names, title=name, showlegend=(col is cols[-1])
            ),
            width="stretch",
            key=f"smp_map_{name}",
            config={"displaylogo": False},
        )
        st.caption(
            f"{len(idx)} points, seed {seed}. "
            + sampler_help(name)
            + (" Importance-weighted (the weights' range is in the table below)" if sample.weights is not None else "")
        )
        subsets[name] = idx
        gaps = distribution_gaps(labels, conf, idx, dataset.n_classes)
        summary.append(
            {
                "sampler": name,
                "m": len(idx),
                "seed": int(seed),
                "classes covered": int(len(np.unique(labels[idx]))),
                "class TV": gaps["class_tv"],
                "confidence TV": gaps["confidence_tv"],
                "weights (min – max)": "equal"
                if sample.weights is None
                else f"{float(np.min(sample.weights)):.3g} – {float(np.max(sample.weights)):.3g}",
            }
        )

if subsets:
    f_class, f_conf = distribution_figures(labels, conf, subsets, dataset.class_names)
    d1, d2 = st.columns(2)
    d1.plotly_chart(f_class, width="stretch", key="smp_classes")
    d2.plotly_chart(f_conf, width="stretch", key="smp_confidence")

if summary:
    st.subheader("How representative is each sample?")
    st.caption(
        f"m = {m}, seed {seed}. class TV and confidence TV: the total-variation distance (0 = identical, "
        "1 = disjoint) between the sample's and the population's class shares and confidence histogram (10 "
        "bins); weights: the importance weights of "
        "the sample's points (equal for the other samplers)."
    )
    show_table(pd.DataFrame(summary), f"samples_m{m}_seed{seed}", key="smp_summary", hidden=("m", "seed"))

with st.expander("Across seeds: how much does each sample move?"):
    n_seeds = st.slider("Seeds", 2, 10, 5, key="smp_nseeds")
    rows = []
    show_seeds = st.toggle("Draw the samples for every seed", value=False, key="smp_seeds_on")
    samplers_for_seeds = samplers if show_seeds else []
    with reported("Could not draw the samples for every seed"):
        for name in samplers_for_seeds:
            samples = [np.asarray(get_sample(run, name, int(m), s).indices) for s in range(n_seeds)]
            for s, idx in enumerate(samples):
                gaps = distribution_gaps(labels, conf, idx, dataset.n_classes)
                overlap = len(np.intersect1d(idx, samples[0])) / len(idx)
                rows.append(
                    {
                        "sampler": name,
                        "seed": s,
                        "class TV": gaps["class_tv"],
                        "confidence TV": gaps["confidence_tv"],
                        "overlap with seed 0": overlap,
                    }
                )
    if rows:
        table = pd.DataFrame(rows)
        agg = table.groupby("sampler", sort=False)[["class TV", "confidence TV"]].agg(["mean", "std"])
        agg.columns = [f"{a} {b}" for a, b in agg.columns]
        show_table(agg.reset_index(), f"samples_across_seeds_m{m}", key="smp_seeds_agg")
        show_table(table, f"samples_per_seed_m{m}", key="smp_seeds_table")

"""Class removal page: the paper's validation experiment. Remove one class with an influence (Newton) update whose
Hessian is estimated on a sample of the remaining classes, and score how well the class is forgotten while the
others are kept."""

import json

import numpy as np
import pandas as pd
import streamlit as st

import influence_core as ic
from influence_core import per_class_accuracy
from ui.components import (
    checked_number,
    load_current,
    page_header,
    sample_size_input,
    stop_if_invalid,
    widget_default,
    words_panel,
)
from ui.errors import reported
from ui.export import readable, show_table
from ui.figures import alpha_path_figure, per_class_figure
from ui.state import clear_cancelled, reference_predictions, removal_is_cached, removal_run, removal_solver_choices
from ui.summaries import mean_std_by_sampler, reference_tables, samplers_help
from ui.url_state import keep_settings, publish_settings

page_header("Class removal: forget one class with an influence update")
ctx = load_current()
if ctx is None:
    st.stop()
run, dataset, model, view = ctx
keep_settings("removal")  # the settings of the last visit, or of the URL (a reload or a shared link)

st.markdown(
    r"Removing class *c* is predicted by one Newton step $\theta + \alpha\,\Delta$ with "
    r"$\Delta = \frac{1}{n} H^{-1} \sum_{j \in c} \nabla \ell_j$, where $H$ is "
    "estimated on **m points of the remaining classes** chosen by each sampler. **Forget** = 1 − accuracy on class "
    "*c*'s test points, **retain** = accuracy on the other test points, **F1** = their harmonic mean. α = 1 is the "
    "pure influence prediction; *best α* is the best F1 along the α path (the paper's protocol, an oracle over α "
    "on the test set). The **honest F1** is measured on the reporting half of the test set at the α chosen on the "
    "other (selection) half. The **random** sampler is always included as the baseline."
)
words_panel("removal")

c1, c2, c3 = st.columns([1, 2.2, 1.1])
with c1:
    removed = int(
        st.selectbox(
            "Class to remove",
            list(range(dataset.n_classes)),
            key="rm_class",
            format_func=lambda c: str(dataset.class_names[c]),
        )
    )
    pool = int(np.sum(dataset.y_train != removed))  # the Hessian sample is drawn from the remaining classes
    m = sample_size_input(
        "m (Hessian sample size)",
        pool,
        key="rm_m",
        what=f"training points outside class {dataset.class_names[removed]}",
    )
with c2:
    widget_default("rm_samplers", ["feature", "logit"])
    chosen = st.multiselect(
        "Samplers (random is the baseline, always run)", ic.available_samplers(), key="rm_samplers", wrap=True
    )
    samplers = list(dict.fromkeys(["random", *chosen]))
    st.caption(samplers_help(samplers))
    widget_default("rm_seeds", 3)
    n_seeds = int(st.slider("Seeds per sampler", 1, 10, key="rm_seeds"))
with c3:
    removal_solvers = removal_solver_choices()
    widget_default("rm_solver", "cg", removal_solvers)
    solver = st.selectbox(
        "Solver",
        removal_solvers,
        key="rm_solver",
        help="the paper uses LiSSA (automatic scale here); cg is faster on this small model; "
        "kfac/ekfac: Kronecker-factored Gauss-Newton per layer; arnoldi: top-50 "
        "eigenpairs (all registered solvers are listed)",
    )
    damping = checked_number("Damping δ", "rm_damping", 0.0, None, 0.01, integer=False, format="%.4f")
c4, c5, c6 = st.columns([1.4, 1, 1])  # a second row: full labels even at a projector's 1024 px
with c4:
    widget_default("rm_reference", True)
    reference = st.toggle(
        "Compare with retraining",
        key="rm_reference",
        help="retrains the model from scratch without the class, once (cached), as the reference",
    )
with c5:
    memory = st.toggle(
        "Peak memory",
        value=False,
        key="rm_memory",
        help="measure the peak resident memory of each solve in a fresh process per run (slower)",
    )
with c6:
    go_run = st.button("Run class removal", type="primary", key="rm_run")
publish_settings("removal")
stop_if_invalid(m, damping)

config = (run, removed, tuple(samplers), m, n_seeds, solver, damping, reference, memory)
if (
    not go_run
    and (st.session_state.get("rm_results") or {}).get("config") != config
    and all(
        removal_is_cached(run, removed, name, m, s, solver, damping, reference, memory)
        for name in samplers
        for s in range(n_seeds)
    )
):  # computed before (e.g. by the lesson): shown at once
    st.session_state["rm_results"] = {
        "config": config,
        "records": [
            removal_run(run, removed, name, m, s, solver, damping, reference, memory)
            for name in samplers
            for s in range(n_seeds)
        ],
    }
if go_run:
    clear_cancelled()  # an explicit request: a removal cancelled before runs again
    records = []
    total = len(samplers) * n_seeds
    slot = st.empty()  # the progress bar lives here and is removed in `finally`, also after a failure
    with reported("Class removal failed", then="The results below (if any) are from the previous run."):
        try:
            bar = slot.progress(0.0, text="Class removal…")
            for i, name in enumerate(samplers):
                for s in range(n_seeds):
                    done = i * n_seeds + s

                    def progress(fraction: float, message: str, done: int = done, name: str = name, s: int = s) -> None:
                        bar.progress(min((done + fraction) / total, 1.0), text=f"{name}, seed {s}: {message}")

                    progress(0.0, "starting")
                    records.append(
                        removal_run(run, removed, name, m, s, solver, damping, reference, memory, progress=progress)
                    )
        finally:
            slot.empty()
        st.session_state["rm_results"] = {"config": config, "records": records}

state = st.session_state.get("rm_results")
if state is None or state["config"][0] != run:
    st.info("Choose the settings and press **Run class removal**.")
    st.stop()
if state["config"] != config:
    st.warning("The settings changed since the results below were computed; press Run to update them.")
records = state["records"]
removed = records[0]["removed_class"]
cname = dataset.class_names[removed]

# ------------------------------------------------------------------------------------------------ per-run table
flat = []
for r in records:
    row = {
        "sampler": r["sampler"],
        "seed": r["seed"],
        "m": r["m"],
        "solver": r["solver"],
        "honest F1": r["selected"]["f1"],
        "chosen α": r["selected"]["alpha"],
        "F1 (α=1)": r["at_one"]["f1"],
        "forget (α=1)": r["at_one"]["forget"],
        "retain (α=1)": r["at_one"]["retain"],
        "best F1 (oracle)": r["best"]["f1"],
        "best α": r["best"]["alpha"],
        "forget (best α)": r["best"]["forget"],
        "retain (best α)": r["best"]["retain"],
        "self-loss (α=1)": r["at_one"]["self_loss"],
        "consistency (α=1)": r["at_one"]["consistency"],
        "solve time (s)": r["solver_seconds"],
        "iterations": r["iterations"],
        "converged": r["converged"],
        "peak memory (MB)": r["peak_memory"]["peak_kb"] / 1024 if r.get("peak_memory") else np.nan,
    }
    flat.append(row)
table = pd.DataFrame(flat)

st.subheader(f"Removing class {cname}: each sampler against the random baseline")


def summary_table(columns: tuple[str, ...], name: str, key: str) -> None:
    show_table(pd.DataFrame(mean_std_by_sampler(table, columns)), name, key=key)


# Two tables of few columns each: every column readable at a projector's 1024 px.
st.markdown("**F1** (mean ± std over seeds): honest, at α = 1 (the pure influence prediction) and at the best α")
summary_table(("honest F1", "F1 (α=1)", "best F1 (oracle)"), f"class_removal_{removed}_summary", "rm_summary")
st.markdown("**At the best α, and the cost of the solve** (mean ± std over seeds)")
summary_table(
    ("forget (best α)", "retain (best α)", "solve time (s)") + (("peak memory (MB)",) if memory else ()),
    f"class_removal_{removed}_cost",
    "rm_cost",
)
st.caption(
    "Solver time and peak memory are measured on this machine (shared, so noisy); peak memory is the "
    "resident memory the solve added, measured in a fresh process, when the toggle is on."
)

left, right = st.columns(2)
sampler_order = list(dict.fromkeys(r["sampler"] for r in records))
with left:
    series = {
        name: np.array([r["path"]["f1"] for r in records if r["sampler"] == name], dtype=float).mean(0)
        for name in sampler_order
    }
    st.plotly_chart(alpha_path_figure(records[0]["alphas"], series), width="stretch", key="rm_path")
with right:
    before = per_class_accuracy(dataset.y_test, view.test_pred, dataset.n_classes)
    ref_acc = None
    if records[0].get("reference"):
        with reported("Reference model unavailable"):
            ref_pred = reference_predictions(run, removed)
            ref_acc = per_class_accuracy(dataset.y_test, ref_pred, dataset.n_classes)
    after = {
        name: np.mean([r["per_class_accuracy"]["best_alpha"] for r in records if r["sampler"] == name], axis=0)
        for name in sampler_order
    }
    st.plotly_chart(per_class_figure(dataset.class_names, before, after, ref_acc), width="stretch", key="rm_classes")

ref = records[0].get("reference")
if ref:
    st.subheader("Retrained-from-scratch reference")
    rm = ref["metrics"]
    r1, r2, r3, r4 = st.columns(4)
    r1.metric("Reference F1", f"{rm['f1']:.3f}")
    r2.metric("Reference forget", f"{rm['forget']:.3f}")
    r3.metric("Reference retain", f"{rm['retain']:.3f}")
    r4.metric("Retraining time", f"{(ref.get('training_report') or {}).get('seconds', float('nan')):.1f} s")
    with_reference = [r for r in records if r.get("reference")]
    st.markdown(
        "**Agreement with the retrained model**: the share of test points both models predict alike (honest: on "
        "the reporting half, at the α chosen on the selection half)"
    )
    agree, distance = reference_tables(with_reference)
    show_table(agree, f"class_removal_{removed}_vs_retraining", key="rm_agree")
    st.markdown(
        "**Distance from the retrained model's parameters** θ_ref: ‖θ − θ_ref‖ after the update at α = 1 and "
        "without any update; relative: the distance at the chosen α divided by the one without any update (below 1: "
        "the update moved the model toward the retrained one)"
    )
    show_table(distance, f"class_removal_{removed}_distance_to_retraining", key="rm_distance")

with st.expander("All runs"):
    st.dataframe(readable(table), hide_index=True, width="stretch")
d1, d2 = st.columns(2)
d1.download_button(
    "Download the runs as CSV",
    table.to_csv(index=False).encode(),
    file_name=f"class_removal_{removed}.csv",
    mime="text/csv",
    key="rm_csv",
)
d2.download_button(
    "Download the records as JSON",
    json.dumps({"run_config": run.to_dict(), "records": records}, indent=1).encode(),
    file_name=f"class_removal_{removed}.json",
    mime="application/json",
    key="rm_json",
    help="the configuration, seeds, sampled indices and α paths of every run",
)

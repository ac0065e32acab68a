"""Lesson page: a guided 60-minute workshop in six steps. Each step is one click: it sets up the model, sampler, m,
seeds and test point (also on the page it points to), shows the result here and says what to look at, with an
exercise."""

import numpy as np
import pandas as pd
import streamlit as st

import influence_core as ic
from influence_core.evaluation import metrics
from ui.components import page_header, scroll_to, show_inputs, words_panel
from ui.config import DEFAULT_RUN
from ui.errors import reported
from ui.export import chart, show_table
from ui.faithfulness import best_within_budget, budget_verdict, lds_vs_m_figure, load_study, study_for
from ui.figures import nowrap, sample_map, score_text
from ui.lesson import (
    BUTTON_LABELS,
    LESSON_CLASS,
    LESSON_M,
    LESSON_REMOVAL_M,
    LESSON_SAMPLERS,
    LESSON_SEEDS,
    MISLABEL_SHARE,
    MISLABEL_STUDY,
    SEED_STUDY,
    STEPS,
    lds_claims,
    lesson_run,
    load_mislabel_study,
    load_seed_study,
    map_claims,
    mislabel_claims,
    mislabel_study_claims,
    removal_claims,
    seed_stats,
    seed_study_claims,
    seeds_claims,
)
from ui.live import mislabel_demo
from ui.state import (
    clear_cancelled,
    current_run,
    ensure_model,
    get_dataset,
    get_projection,
    get_sample,
    get_view,
    influence_rows,
    reference_solver,
    reference_spec,
    removal_run,
    set_run,
)
from ui.story_figures import detection_figure
from ui.summaries import distribution_gaps, sampler_help
from ui.url_state import keep_settings, publish_settings

page_header("Workshop lesson: influence functions in six steps")
st.markdown(
    "About ten minutes per step: press a step's button (it sets everything up, here and on the page it points to), "
    "read *what to look at*, then do the exercise, on the linked page when it asks for more. The lesson uses the "
    "digits data (8x8 handwritten digits) and the model trained on the home page when it is a digits MLP or "
    "logistic regression, else the default digits MLP."
)
words_panel("lesson")
keep_settings("lesson")  # the step shown last, or the one in the URL (a reload or a shared link)
DAMPING = 0.01
run = lesson_run(current_run(), DEFAULT_RUN)

cols = st.columns(3)
for i, step in enumerate(STEPS):
    if cols[i % 3].button(BUTTON_LABELS[step.key], key=f"lesson_go_{step.key}", width="stretch", help=step.title):
        st.session_state["lesson_step"] = step.key
        st.session_state["lesson_setup"] = step.key  # apply the settings in this run (below, once the model exists)
        st.session_state["lesson_scroll"] = True  # bring the step's result into view once it is drawn
        clear_cancelled()  # a step's button is an explicit request: what was cancelled before runs again
publish_settings("lesson")

active = st.session_state.get("lesson_step")
if active is None:
    st.info(f"Press **{BUTTON_LABELS[STEPS[0].key]}** to start.")
    st.stop()
step = next(s for s in STEPS if s.key == active)

with reported(f"Could not prepare the lesson's model ({run.model.arch} on {run.data.label()})") as outcome:
    if current_run() != run:
        set_run(run)
    dataset = get_dataset(run.data)
    ensure_model(run)
    view = get_view(run)
if outcome.failed:
    st.stop()
wrong = np.flatnonzero(view.test_pred != dataset.y_test)
test_index = int(wrong[0]) if len(wrong) else 0  # a misclassified test point has harmful neighbours worth seeing
if st.session_state.pop("lesson_setup", None) == step.key:
    for key, value in step.settings(test_index).items():
        st.session_state[key] = value
    if step.key == "lds" and study_for(run):  # the Faithfulness page opens on the study of this very model
        st.session_state["faith_study"] = study_for(run)
solver = reference_solver(run)  # exact for small models (one factorisation), else CG

st.header(step.title, anchor="lesson-step")
st.markdown(f"**What this shows.** {step.goal}")
st.markdown(f"**What to look at.** {step.look_at}")
y_t, p_t = dataset.y_test[test_index], view.test_pred[test_index]
names = dataset.class_names


def thumbnails(idx, scores, key):
    show_inputs(
        dataset,
        dataset.X_train[idx],
        [nowrap(f"#{i} ({names[dataset.y_train[i]]})") + " " + score_text(s) for i, s in zip(idx, scores)],
        per_row=5,
        key=key,
    )


if step.key == "score":
    with reported("Could not compute influence") as outcome, st.spinner("Influence with the full-data Hessian…"):
        row = influence_rows(run, (reference_spec(run),), DAMPING, test_index)[0]
    if not outcome.failed:
        top = ic.top_influences(row["scores"], 5)
        left, right = st.columns([1, 4])
        with left:
            st.markdown(f"**Test point #{test_index}**")
            show_inputs(
                dataset,
                dataset.X_test[test_index : test_index + 1],
                [f"true {names[y_t]}, predicted {names[p_t]}"],
                per_row=1,
                key="lesson_test",
            )
        with right:
            st.markdown("**Top 5 helpful** (removing them would raise the test loss most)")
            thumbnails(top["helpful"], top["helpful_scores"], "lesson_helpful")
            st.markdown("**Top 5 harmful** (removing them would lower the test loss most)")
            thumbnails(top["harmful"], top["harmful_scores"], "lesson_harmful")
        same = int(np.sum(dataset.y_train[top["helpful"]] == y_t))
        harm_pred = int(np.sum(dataset.y_train[top["harmful"]] == p_t))
        st.markdown(
            f"{same} of the 5 most helpful training points carry the test point's true label "
            f"**{names[y_t]}**; the most harmful ones are labelled "
            + ", ".join(f"**{names[c]}**" for c in dataset.y_train[top["harmful"]])
            + (f" ({harm_pred} of them with the predicted label **{names[p_t]}**)." if p_t != y_t else ".")
        )

elif step.key == "seeds":
    ref = reference_spec(run)
    compared = ("random", "importance")
    specs = tuple((name, LESSON_M, s, solver) for name in compared for s in range(LESSON_SEEDS))
    with reported("Could not compute influence") as outcome, st.spinner(f"{len(specs)} samples of {LESSON_M} points…"):
        rows = influence_rows(run, (ref, *specs), DAMPING, test_index)
    if not outcome.failed:
        full = rows[0]["scores"]
        per_seed, stats = [], []
        for name in compared:
            mine = [(spec[2], row["scores"]) for spec, row in zip(specs, rows[1:]) if spec[0] == name]
            stats.append(seed_stats(name, [sc for _, sc in mine], full, 10))
            per_seed += [
                {
                    "sampler": name,
                    "seed": seed,
                    "top-5 helpful": ", ".join(f"#{i}" for i in ic.top_influences(sc, 5)["helpful"]),
                    "Spearman vs full data": metrics.spearman(sc, full),
                    "top-10 vs full data": metrics.topk_overlap(sc, full, 10),
                }
                for seed, sc in mine
            ]
        st.markdown(
            f"Test point **#{test_index}** (true {names[y_t]}, predicted {names[p_t]}); the Hessian on "
            f"{LESSON_M} training points, seeds 0–{LESSON_SEEDS - 1}, drawn by the random sampler and by "
            "the importance sampler."
        )
        for col, rec in zip(st.columns(len(stats)), stats):
            col.metric(f"{rec.sampler}: top-10 shared by two seeds", f"{rec.top_shared:.0%}")
            col.metric(f"{rec.sampler}: Spearman between two seeds", f"{rec.seed_rho:.2f}")
            col.metric(
                f"{rec.sampler}: Spearman with full data",
                f"{rec.full_rho:.2f}",
                help=f"range over seeds {rec.full_rho_lo:.2f} – {rec.full_rho_hi:.2f}",
            )
        st.markdown("**What the numbers say.**\n\n" + "\n\n".join(f"- {c}" for c in seeds_claims(stats, LESSON_M)))
        show_table(pd.DataFrame(per_seed), f"lesson_seeds_test{test_index}", key="lesson_seeds_table")
        seed_study = load_seed_study(run)
        if seed_study is not None:
            st.markdown(
                f"**At other m** (committed measurement on this model, {len(seed_study['test_points'])} test "
                f"points, {seed_study['seeds']} seeds; `{SEED_STUDY}`)\n\n"
                + "\n\n".join(f"- {c}" for c in seed_study_claims(seed_study["rows"]))
            )
            show_table(
                pd.DataFrame(
                    [
                        {
                            "sampler": r["sampler"],
                            "m": r["m"],
                            "top-10 shared": r["top10_shared"],
                            "ρ between seeds": r["seed_spearman"],
                            "ρ vs full data": r["full_spearman"],
                        }
                        for r in seed_study["rows"]
                        if r["sampler"] in compared
                    ]
                ),
                "lesson_seed_study",
                key="lesson_seed_study",
            )

elif step.key == "map":
    with reported("Could not draw the samples") as outcome:
        xy = get_projection(run, "features", "pca")[: dataset.n_train]
        samples = {name: np.asarray(get_sample(run, name, LESSON_M, 0).indices) for name in LESSON_SAMPLERS}
    if not outcome.failed:
        cols = st.columns(len(samples))
        for col, (name, idx) in zip(cols, samples.items()):
            with col:
                chart(
                    sample_map(
                        xy,
                        idx,
                        "label",
                        dataset.y_train,
                        view.train_pred,
                        view.train_conf,
                        names,
                        title=name,
                        showlegend=col is cols[-1],
                    ),
                    f"lesson_map_{name}",
                    key=f"lesson_map_{name}",
                )
                st.caption(sampler_help(name))
        rows = [
            {
                "sampler": name,
                "classes covered": int(len(np.unique(dataset.y_train[idx]))),
                **distribution_gaps(dataset.y_train, view.train_conf, idx, dataset.n_classes),
                "mean confidence": float(np.mean(view.train_conf[idx])),
            }
            for name, idx in samples.items()
        ]
        st.markdown(
            "**What the numbers say.**\n\n"
            + "\n\n".join(f"- {c}" for c in map_claims(rows, float(np.mean(view.train_conf))))
        )
        show_table(
            pd.DataFrame(rows).rename(
                columns={"class_tv": "class TV distance", "confidence_tv": "confidence TV distance"}
            ),
            "lesson_sample_gaps",
            key="lesson_gaps",
        )

elif step.key == "removal":
    records = []
    slot = st.empty()
    samplers = ("random", "feature", "importance")
    with reported("Class removal failed") as outcome:
        try:
            bar = slot.progress(0.0, text="Class removal…")
            for i, name in enumerate(samplers):

                def progress(fraction, message, i=i, name=name):
                    bar.progress(min((i + fraction) / len(samplers), 1.0), text=f"{name}: {message}")

                records.append(
                    removal_run(
                        run, LESSON_CLASS, name, LESSON_REMOVAL_M, 0, "cg", DAMPING, True, False, progress=progress
                    )
                )
        finally:
            slot.empty()
    if not outcome.failed:
        ref = records[0]["reference"]
        forgetting = pd.DataFrame(
            [
                {
                    "sampler": r["sampler"],
                    "m": r["m"],
                    "F1 (α = 1)": r["at_one"]["f1"],
                    "forget (α = 1)": r["at_one"]["forget"],
                    "α chosen": r["selected"]["alpha"],
                    "honest F1": r["selected"]["f1"],
                }
                for r in records
            ]
        )
        against = pd.DataFrame(
            [
                {
                    "sampler": r["sampler"],
                    "agreement (α = 1)": r["reference"]["report_agreement"]["alpha_1"],
                    "agreement (chosen α)": r["reference"]["report_agreement"]["selected_alpha"],
                    "θ distance (chosen α)": r["reference"]["relative_distance"]["selected_alpha"],
                    "solve (s)": r["solver_seconds"],
                }
                for r in records
            ]
        )
        st.markdown(
            f"Removing class **{names[LESSON_CLASS]}** with m = {LESSON_REMOVAL_M}. The model retrained "
            f"from scratch without it reaches F1 **{ref['metrics']['f1']:.3f}**; before any update the "
            f"original model agrees with it on {ref['report_agreement']['original']:.1%} of the reporting "
            "half."
        )
        st.markdown(
            "**What the numbers say.**\n\n"
            + "\n\n".join(f"- {c}" for c in removal_claims(records, str(names[LESSON_CLASS])))
        )
        # Two tables of few columns each (every column readable at a projector's 1024 px); m is in the text above.
        show_table(forgetting, f"lesson_removal_class{LESSON_CLASS}", key="lesson_removal_table", hidden=("m",))
        st.markdown(
            "**Against the retrained model**: agreement = the share of the reporting half both models predict "
            "alike; θ distance = the distance to the retrained parameters at the chosen α, relative to the one "
            "without any update"
        )
        show_table(against, f"lesson_removal_class{LESSON_CLASS}_vs_retraining", key="lesson_removal_against")

elif step.key == "lds":
    name = study_for(run)
    if name is None:
        st.warning(
            f"No committed LDS study in docs/lds is of the lesson's model ({run.model.arch}, hidden width "
            f"{run.model.hidden}, {run.model.epochs} epochs on {run.data.label()}), and a study of another "
            "model would not describe this one. Train the default digits MLP on the home page, or run a "
            "small live LDS on the Faithfulness page."
        )
    else:
        study = load_study(name)
        chart(
            lds_vs_m_figure(
                study.rows, study.baselines, study.ceiling, title="LDS against m (committed study of this model)"
            ),
            "lesson_lds_vs_m",
            key="lesson_lds",
        )
        st.caption(f"{study.title}. Source: `{study.info['path']}`.")
        st.markdown(
            "**What the numbers say.**\n\n"
            + "\n\n".join(
                f"- {c}"
                for c in [
                    *lds_claims(study.rows, study.baselines, study.ceiling, 128),
                    budget_verdict(best_within_budget(study.rows, "m", 128), "m", 128),
                ]
            )
        )

elif step.key == "mislabel":
    slot = st.empty()
    with reported("The mislabel demo failed") as outcome:
        try:
            bar = slot.progress(0.0, text="Mislabel demo…")
            result = mislabel_demo(
                run, MISLABEL_SHARE, 0, progress=lambda f, msg: bar.progress(min(max(f, 0.0), 1.0), text=msg)
            )
        finally:
            slot.empty()
    if not outcome.failed:
        chart(detection_figure(result.curves, MISLABEL_SHARE), "lesson_mislabel_curve", key="lesson_mislabel")
        summary = pd.DataFrame(result.summary())
        by = {r["ranking"]: r for r in result.summary()}
        st.markdown(
            f"{len(result.flipped)} of {dataset.n_train} labels flipped (seed 0); random inspection of 10% "
            "of the training set would find about 10% of them. Test accuracy of the model trained on the "
            f"noisy labels: {result.test_accuracy:.1%}."
        )
        st.markdown(
            "**What the numbers say.**\n\n"
            + "\n\n".join(
                f"- {c}"
                for c in mislabel_claims(
                    {k: v["AUC"] for k, v in by.items()}, {k: v["found after 10%"] for k, v in by.items()}
                )
            )
        )
        mislabel_study = load_mislabel_study()
        if mislabel_study is not None:
            st.markdown(
                f"**When does self-influence win?** (committed measurement on digits, `{MISLABEL_STUDY}`)"
                "\n\n" + "\n\n".join(f"- {c}" for c in mislabel_study_claims(mislabel_study["rows"]))
            )
        show_table(summary, "lesson_mislabel_summary", key="lesson_mislabel_table")
        order = result.curves["self-influence"]["order"][:10]
        st.markdown("**The 10 training points with the highest self-influence** (✗ = its label was flipped)")
        flipped = set(result.flipped.tolist())
        show_inputs(
            dataset,
            dataset.X_train[order],
            [nowrap(f"#{i} labelled {names[result.noisy_labels[i]]}") + (" ✗" if i in flipped else "") for i in order],
            per_row=5,
            key="lesson_mislabel_top",
        )

st.markdown(f"**Exercise.** {step.exercise}")
st.page_link(step.page, label="→ " + step.page_label)
if st.session_state.pop("lesson_scroll", False):
    scroll_to("lesson-step")

"""Influence Explorer: home page. Choose the data and the model, train (cached per configuration), see the overview.

Run the app with ``streamlit run app.py`` (it names and runs the pages); all maths is in ``influence_core``.
"""

import numpy as np
import streamlit as st

import influence_core as ic
from ui.components import disk_cache_section, page_header, show_inputs
from ui.config import (
    DATASET_CHOICES,
    MNIST1D_HINT,
    MNIST1D_SUGGESTED,
    MNIST1D_USABLE,
    DataConfig,
    ModelConfig,
    RunConfig,
    arch_choices,
    run_label,
    upload_in_query,
)
from ui.errors import reported
from ui.figures import confusion_figure
from ui.inputs import range_problem
from ui.state import (
    MAX_MODELS,
    cached_models,
    clear_cancelled,
    current_run,
    ensure_model,
    get_dataset,
    get_view,
    has_model,
    remember_upload,
    set_run,
)

page_header("Influence Explorer")

st.markdown(
    """
**Which training examples made the model say this?** An *influence function* answers without retraining: it
predicts how much the loss on a test example would change if one training example were removed. Positive scores
here mean *helpful* (removing the example would hurt the prediction), negative mean *harmful*.

The catch is the **Hessian** (the curvature of the training loss): the influence of every training point needs one
inverse-Hessian-vector product. For a real network the Hessian over all training data is too expensive, so people
estimate it on a **small random sample** of the training data, and the influence scores then change noticeably from
one random sample to the next.

*Faithful and Fast Influence Function via Advanced Sampling* (Koh, Lyu, Jang, Yang; ICML 2024 Mechanistic
Interpretability workshop, [arXiv:2510.26776](https://arxiv.org/abs/2510.26776)) proposes choosing a small but
**representative** sample instead: a *feature-based* sampler (spread over the model's penultimate-layer features)
and a *logit-based* sampler (matching the distribution of the model's logits), and checks them by removing a whole
class with an influence update. The samplers in this app are this project's reconstruction of those rules (the
paper's code is not public).

**How to use this app:** train a model below (the digits default takes a few seconds), then open
**Samplers** to see which points each sampler picks, **Influence** to see which training points helped or harmed
one test prediction and how much that depends on the sample, and **Class removal** to run the paper's experiment.
"""
)

named_upload = upload_in_query(st.query_params.to_dict())
run = current_run()
if named_upload and run.data.name != "npz":
    st.info(
        f"This link names an uploaded file, {named_upload}. Uploads live only in the session that made them: "
        'choose "upload a .npz file" below and upload it again (the default digits model is shown meanwhile).'
    )
datasets = list(DATASET_CHOICES)
dataset_labels = {
    "digits": "digits (8x8, embedded)",
    "mnist5k": "MNIST-5k (28x28)",
    "mnist1d": "MNIST-1D (tabular)",
    "npz": "upload a .npz file",
}
FORM_KEYS = (
    "form_dataset",
    "form_num_samples",
    "form_arch",
    "form_hidden",
    "form_epochs",
    "form_lr",
    "form_wd",
    "form_seed",
)
upload_limit_mb = int(st.get_option("server.maxUploadSize"))


def use_settings(new_run) -> None:
    """Button callback: make ``new_run`` the session's choice and redraw the form from it (its widgets are reset)."""
    for key in FORM_KEYS:
        st.session_state.pop(key, None)
    set_run(new_run)
    clear_cancelled()
    st.session_state["train_now"] = True


st.subheader("Data and model")
# Outside the form, so the model choices follow the dataset at once (MNIST-1D is tabular: no CNN offered).
data_name = st.selectbox(
    "Dataset", datasets, index=datasets.index(run.data.name), format_func=dataset_labels.get, key="form_dataset"
)
archs = list(arch_choices(data_name))
if st.session_state.get("form_arch") not in (None, *archs):  # e.g. "cnn" kept from digits
    del st.session_state["form_arch"]
# Outside the form too, so that only the settings of the chosen model are shown (no hidden width for the CNN).
arch = st.selectbox(
    "Model",
    archs,
    index=archs.index(run.model.arch) if run.model.arch in archs else 0,
    format_func={
        "mlp": "MLP (1 hidden layer, tanh)",
        "logreg": "logistic regression",
        "cnn": "small CNN (images only)",
    }.get,
    key="form_arch",
)
LIMITS = {
    "num_samples": (200, 20000, True),
    "hidden": (2, 512, True),
    "epochs": (0, 500, True),
    "lr": (1e-5, 1.0, False),
    "weight_decay": (0.0, 1.0, False),
    "seed": (0, 1_000_000, True),
}
problems = []


def checked(label: str, field: str, value):
    """Show the allowed range under a form field whose value is out of it (the form keeps what was typed)."""
    lo, hi, integer = LIMITS[field]
    problem = range_problem(value, lo, hi, label, integer)
    if problem:
        st.error(problem)
        problems.append(problem)
    return value


upload, num_samples, hidden = None, run.data.num_samples, run.model.hidden
with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    with c1:
        if data_name == "npz":
            upload = st.file_uploader(
                f"Your .npz, at most {upload_limit_mb} MB (arrays X_train, y_train; optional "
                "X_test, y_test, class_names, image_shape). Read as data only, never "
                "unpickled.",
                type=["npz"],
                key="form_upload",
                help=f"The server accepts files up to {upload_limit_mb} MB "
                "(server.maxUploadSize in .streamlit/config.toml); the browser refuses a "
                "larger file and marks it with a red icon. np.savez_compressed and "
                "float32 arrays make files smaller.",
            )
        if data_name == "mnist1d":
            num_samples = checked(
                "MNIST-1D samples",
                "num_samples",
                st.number_input(
                    "MNIST-1D samples",
                    step=100,
                    value=run.data.num_samples,
                    key="form_num_samples",
                    help="200 to 20,000 generated sequences (80% for training)",
                ),
            )
        if arch == "mlp":
            hidden = checked(
                "MLP hidden width",
                "hidden",
                st.number_input(
                    "MLP hidden width", value=run.model.hidden, key="form_hidden", help="2 to 512 hidden units"
                ),
            )
    with c2:
        epochs = checked(
            "Epochs",
            "epochs",
            st.number_input(
                "Epochs (Adam; logistic regression uses L-BFGS only)",
                value=run.model.epochs,
                key="form_epochs",
                help="0 to 500",
            ),
        )
        lr = checked(
            "Learning rate",
            "lr",
            st.number_input("Learning rate", value=run.model.lr, format="%.4f", key="form_lr", help="0.00001 to 1"),
        )
    with c3:
        weight_decay = checked(
            "Weight decay",
            "weight_decay",
            st.number_input(
                "Weight decay (also in the Hessian)",
                value=run.model.weight_decay,
                format="%.5f",
                key="form_wd",
                help="0 to 1",
            ),
        )
        seed = checked(
            "Seed", "seed", st.number_input("Seed", value=run.model.seed, key="form_seed", help="0 to 1,000,000")
        )
    submitted = st.form_submit_button("Train", type="primary")
if submitted and problems:
    st.error("Nothing was trained: fix the values marked in red (each says its allowed range).")
    submitted = False

if submitted:
    clear_cancelled()  # an explicit request: a training cancelled before runs again
    with reported(
        "Could not train with these settings",
        then=f"Still showing the previous model ({run.model.arch} on {run.data.label()}).",
    ):
        if data_name == "npz":
            if upload is None:
                raise ic.DatasetError(
                    f"no .npz file arrived. If you chose one, it is probably over the {upload_limit_mb} MB upload "
                    "limit: the browser refuses larger files (a red icon next to the name). Make it smaller "
                    "(np.savez_compressed, float32, fewer rows), or pick a built-in dataset"
                )
            if upload.size > upload_limit_mb * 1024 * 1024:
                raise ic.DatasetError(
                    f"{upload.name} is {upload.size / 1e6:.1f} MB, over the {upload_limit_mb} MB "
                    "upload limit; make it smaller (np.savez_compressed, float32, fewer rows)"
                )
            data_cfg = remember_upload(upload.getvalue(), upload.name)
        else:
            data_cfg = DataConfig(name=data_name, num_samples=int(num_samples))
        get_dataset(data_cfg)  # validates the data before training
        model_cfg = ModelConfig(
            arch=arch,
            hidden=int(hidden),
            epochs=int(epochs),
            lr=float(lr),
            weight_decay=float(weight_decay),
            seed=int(seed),
            polish_steps=run.model.polish_steps,
        )
        new_run = RunConfig(data=data_cfg, model=model_cfg)
        ensure_model(new_run)
        set_run(new_run)
        run = new_run

if st.session_state.pop("train_now", False) and not has_model(run):
    with reported(f"Could not train {run.model.arch} on {run.data.label()}"):
        ensure_model(run)

disk_cache_section()

if not has_model(run):  # models are shared across sessions: one trained elsewhere is shown at once
    st.info(
        f"Press **Train** to train the {run.model.arch} on {run.data.label()} (a few seconds on digits); the "
        "other pages train the current settings themselves when opened first."
    )
    st.stop()

with reported(f"Could not prepare {run.data.label()}") as outcome:
    dataset = get_dataset(run.data)
    model = ensure_model(run)
    view = get_view(run)
if outcome.failed:
    st.stop()

report = model.training_report
st.subheader(f"Trained model: {run.model.arch} on {run.data.label()}")
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Test accuracy", f"{report['test_accuracy']:.1%}")
m2.metric("Train accuracy", f"{report['train_accuracy']:.1%}")
m3.metric("Training points", f"{dataset.n_train:,}")
m4.metric("Parameters", f"{view.n_params:,}")
m5.metric("Training time", f"{report['seconds']:.1f} s")
grad_norm, grad_tol = report.get("grad_norm", float("nan")), report.get("grad_tol", float("nan"))
if grad_norm == grad_norm:  # not NaN: the full objective's gradient norm at the trained weights was computed
    if report.get("grad_tol_reached"):
        st.caption(
            f"Stationary: the full training objective's gradient norm is {grad_norm:.1e} (tolerance "
            f"{grad_tol:g}), as influence functions assume."
        )
    else:
        st.caption(
            f"Gradient norm of the full training objective: {grad_norm:.1e}, above the {grad_tol:g} "
            "tolerance"
            + (
                " (the CNN's workshop recipe bounds the full-batch polish to about a minute of "
                "training; influence functions assume a stationary point, so scores carry "
                "this error)."
                if run.model.arch == "cnn"
                else "."
            )
        )
if run.data.name == "mnist1d" and report["test_accuracy"] < MNIST1D_USABLE:
    st.warning(MNIST1D_HINT)
    st.button(
        "Train the suggested MNIST-1D model", key="mnist1d_suggested", on_click=use_settings, args=(MNIST1D_SUGGESTED,)
    )
kept = cached_models()
st.caption(
    f"Models kept in memory, shared by every session ({len(kept)} of at most {MAX_MODELS}; when full, the "
    "one quickest to retrain is dropped first, so expensive models stay): "
    + "; ".join(f"{run_label(r, [k for k, _ in kept])} ({sec:.0f} s to train)" for r, sec in kept)
    + "."
)

left, right = st.columns([1, 1])
with left:
    st.plotly_chart(
        confusion_figure(dataset.y_test, view.test_pred, dataset.class_names), width="stretch", key="confusion"
    )
with right:
    st.markdown("**Example training inputs** (two per class, with their labels)")
    rows = np.concatenate([np.flatnonzero(dataset.y_train == c)[:2] for c in range(min(dataset.n_classes, 10))])
    show_inputs(
        dataset,
        dataset.X_train[rows],
        [f"#{r}: {dataset.class_names[dataset.y_train[r]]}" for r in rows],
        per_row=5,
        key="examples",
    )

st.markdown("Next: ")
# One link a line: each label whole at a projector's 1024 px (three columns cut them to "…feed the").
st.page_link("pages/1_Samplers.py", label="→ Samplers: which points feed the Hessian")
st.page_link("pages/2_Influence.py", label="→ Influence: helpful and harmful training points")
st.page_link("pages/3_Class_removal.py", label="→ Class removal: the paper's experiment")

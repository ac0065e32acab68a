"""Small descriptive summaries for display (no Streamlit): how far a sample's class and confidence distributions
are from the population's, as total-variation distances in [0, 1]."""

from __future__ import annotations

import numpy as np


def sampler_help(name: str) -> str:
    """The one-sentence description of a sampler, from the sampler registry (a newly registered sampler brings its
    own: ``register_sampler(..., description=...)`` or its docstring's first paragraph)."""
    import influence_core as ic

    try:
        return ic.sampler_description(name)
    except ValueError:
        return f"{name}: not a registered sampler"


def samplers_help(names) -> str:
    """Markdown lines "**name**: sentence" for the samplers ``names`` (shown under a sampler menu)."""
    return "  \n".join(f"**{n}**: {sampler_help(n)}" for n in names)


def mean_std_by_sampler(table, columns) -> list[dict]:
    """One row per sampler of the per-run ``table`` (a DataFrame with a "sampler" column, in order of first
    appearance): its number of runs and, per column of ``columns``, "mean ± std" over the runs to three decimals
    ("n/a" when the column has no finite value)."""
    from influence_core import mean_std

    rows = []
    for sampler, group in table.groupby("sampler", sort=False):
        entry = {"sampler": sampler, "runs": len(group)}
        for col in columns:
            mu, sd = mean_std(group[col].to_numpy(dtype=np.float64))
            entry[col] = "n/a" if np.isnan(mu) else f"{mu:.3f} ± {sd:.3f}"
        rows.append(entry)
    return rows


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """0.5 * sum |p - q| of two histograms normalised to sum 1."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum() if p.sum() > 0 else p
    q = q / q.sum() if q.sum() > 0 else q
    return float(0.5 * np.abs(p - q).sum())


def distribution_gaps(
    labels: np.ndarray, conf: np.ndarray, subset: np.ndarray, n_classes: int, bins: int = 10
) -> dict[str, float]:
    """Total-variation distance between the subset and the population: class shares and confidence histogram."""
    subset = np.asarray(subset, dtype=np.int64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {
        "class_tv": total_variation(
            np.bincount(labels[subset], minlength=n_classes), np.bincount(labels, minlength=n_classes)
        ),
        "confidence_tv": total_variation(np.histogram(conf[subset], edges)[0], np.histogram(conf, edges)[0]),
    }


# How the app computes and caches the UMAP map, shown beside it (its cost is measured in the app's performance
# document, not here).
UMAP_HELP = (
    "UMAP is computed once per model and map (200 epochs, PCA initialisation) in the background, kept in "
    "the disk cache (it survives a server restart) and shared by every session; the PCA map is shown "
    "until it is ready and the page switches by itself. The first UMAP in a server process also pays "
    "numba's compilation, which the server warms up when it starts; `make app` prepares the default "
    "models' maps."
)


def reference_tables(records: list[dict]) -> tuple:
    """Two tables of class-removal runs against the model retrained without the class, one row per (sampler, seed):
    prediction agreement (at α = 1, at the best α, honest: reporting half at the α chosen on the selection half),
    and parameter distance ‖θ − θ_ref‖ (relative at the chosen α, at α = 1, without any update)."""
    import pandas as pd

    def rows(columns: dict) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"sampler": r["sampler"], "seed": r["seed"], **{k: get(r["reference"]) for k, get in columns.items()}}
                for r in records
            ]
        )

    agree = rows(
        {
            "agreement (α=1)": lambda ref: ref["prediction_agreement"]["alpha_1"],
            "agreement (best α)": lambda ref: ref["prediction_agreement"]["best_alpha"],
            "agreement (honest)": lambda ref: ref["report_agreement"]["selected_alpha"],
        }
    )
    distance = rows(
        {
            "relative (chosen α)": lambda ref: ref["relative_distance"]["selected_alpha"],
            "‖θ(α=1) − θ_ref‖": lambda ref: ref["param_distance"]["alpha_1"],
            "‖θ − θ_ref‖, no update": lambda ref: ref["param_distance"]["original"],
        }
    )
    return agree, distance

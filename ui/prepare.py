"""Fill the disk cache with the default setup, so the first page a student opens is ready: ``python -m ui.prepare``
(``make app`` runs it before starting the server).

Trains (or finds in the cache) the digits MLP and logistic regression with the home page's default settings, their
datasets, views (logits, features), PCA and UMAP maps of features and logits, and the fitted inverses the Influence
page opens with. Idempotent: a second run only loads. ``python -m ui.prepare --no-umap`` skips the UMAP maps,
``--no-inverses`` the inverses.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import artifacts
from .config import DEFAULT_RUN, INFLUENCE_PAGE_DEFAULTS, ModelConfig, RunConfig

DEFAULT_RUNS = (DEFAULT_RUN, RunConfig(model=ModelConfig(arch="logreg")))


def prepare(runs=DEFAULT_RUNS, methods=("pca", "umap"), log=print) -> dict[str, float]:
    """Put each run's model, view and maps into the disk cache; returns the seconds per item."""
    seconds = {}
    for run in runs:
        dataset = artifacts.builtin_dataset(run.data)
        label = f"{run.model.arch} on {run.data.label()}"
        start = time.perf_counter()
        model = artifacts.load_or_train(run, dataset, on_problem=log)
        view = artifacts.load_or_view(run, model, dataset, on_problem=log)
        seconds[f"{label}: model and view"] = time.perf_counter() - start
        for space in ("features", "logits"):
            X = np.vstack([view[f"train_{space}"], view[f"test_{space}"]])
            for method in methods:
                start = time.perf_counter()
                artifacts.load_or_project(run, X, space, method, on_problem=log)
                seconds[f"{label}: {method} of {space}"] = time.perf_counter() - start
    return seconds


def prepare_influence(runs=DEFAULT_RUNS, log=print) -> dict[str, float]:
    """Fit, or find in the disk cache, the inverses the Influence page opens with (the full-data reference and
    samples A and B at the page's defaults) for each run, so a student's first influence view needs no fit.

    Uses the server's own caches (``ui.state``, outside a running server: Streamlit's in-memory caches in bare
    mode), so the files are exactly the ones the page looks for. Solvers with nothing fitted (cg, lissa) are
    skipped: the page solves those per test point."""
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # "no runtime" notices of the caches in bare mode
    from . import state

    d = INFLUENCE_PAGE_DEFAULTS
    seconds = {}
    for run in runs:
        label = f"{run.model.arch} on {run.data.label()}"
        solver = "exact" if state.get_view(run).n_params <= state.INTERACTIVE_EXACT_MAX_PARAMS else "cg"
        m = min(d["m"], state.get_dataset(run.data).n_train)
        specs = [
            state.reference_spec(run),
            (d["sampler_a"], m, d["seed"], solver),
            (d["sampler_b"], m, d["seed"], solver),
        ]
        for spec in specs:
            if spec[3] not in ("cg", "lissa"):
                start = time.perf_counter()
                state.get_calculator(run, *spec, d["damping"])
                seconds[f"{label}: inverse of {spec[0] or 'full data'} ({spec[3]})"] = time.perf_counter() - start
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-umap", action="store_true", help="only PCA maps")
    parser.add_argument(
        "--no-inverses",
        action="store_true",
        help="skip the Influence page's fitted inverses (then its first view fits them)",
    )
    args = parser.parse_args(argv)
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("INFLUENCE_EXPLORER_TORCH_THREADS", "1")))  # as the server (ui.state)
    os.environ.setdefault("INFLUENCE_EXPLORER_WORKERS", "0")  # one process filling the cache: no worker cluster
    store = artifacts.disk_store()
    if store is None:
        print("disk cache off (INFLUENCE_EXPLORER_CACHE_DIR=off): nothing to prepare")
        return
    done = prepare(methods=("pca",) if args.no_umap else ("pca", "umap"))
    if not args.no_inverses:
        done.update(prepare_influence())
    for what, sec in done.items():
        print(f"{what}: {sec:.1f} s")
    print(f"disk cache {store.root}: {len(store.entries())} files")


if __name__ == "__main__":
    main()

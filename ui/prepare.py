"""Fill the disk cache with the default setup, so the first page a student opens is ready: ``python -m ui.prepare``
(``make app`` runs it before starting the server).

Trains (or finds in the cache) the digits MLP and logistic regression with the home page's default settings, their
views (logits, features) and their PCA and UMAP maps of features and logits. Idempotent: a second run only loads.
``python -m ui.prepare --no-umap`` skips the UMAP maps.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from . import artifacts
from .config import DEFAULT_RUN, ModelConfig, RunConfig

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-umap", action="store_true", help="only PCA maps")
    args = parser.parse_args(argv)
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("INFLUENCE_EXPLORER_TORCH_THREADS", "1")))  # as the server (ui.state)
    store = artifacts.disk_store()
    if store is None:
        print("disk cache off (INFLUENCE_EXPLORER_CACHE_DIR=off): nothing to prepare")
        return
    done = prepare(methods=("pca",) if args.no_umap else ("pca", "umap"))
    for what, sec in done.items():
        print(f"{what}: {sec:.1f} s")
    print(f"disk cache {store.root}: {len(store.entries())} files")


if __name__ == "__main__":
    main()

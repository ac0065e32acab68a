"""MNIST-5k CNN: training time and test accuracy of candidate recipes (not a test; run by hand under the bench lock).

    flock /tmp/influence-bench.lock .venv/bin/python benchmarks/app/measure_cnn_recipes.py [--recipes NAME ...]
        [--out docs/app_timings/cnn_recipes.json]

Each recipe is ``influence_core.train_model(mnist5k, "cnn", seed=0, **settings)`` on one torch thread (as the app),
timed end to end, with the phase times taken from the progress callback, and the model's training report (train and
test accuracy, final gradient norm of the full objective, whether ``grad_tol`` was reached). The app's recipe is
chosen from these numbers (README, "MNIST-5k CNN training").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's influence_core
torch.set_num_threads(int(os.environ.get("INFLUENCE_EXPLORER_TORCH_THREADS", "1")))

import influence_core as ic  # noqa: E402

RECIPES: dict[str, dict] = {
    # the app's recipe before issue 12 (ui.config.ModelConfig defaults; grad_tol 1e-3, up to 2,000 L-BFGS steps)
    "app-before": {"epochs": 30, "lr": 3e-3, "weight_decay": 1e-3, "polish_steps": 100},
    "e30-b64-p0": {"epochs": 30, "lr": 3e-3, "weight_decay": 1e-3, "polish_steps": 0},
    "e15-b64-p0": {"epochs": 15, "lr": 3e-3, "weight_decay": 1e-3, "polish_steps": 0},
    "e15-b128-p0": {"epochs": 15, "batch_size": 128, "lr": 3e-3, "weight_decay": 1e-3, "polish_steps": 0},
    "e15-b64-p30": {"epochs": 15, "lr": 3e-3, "weight_decay": 1e-3, "polish_steps": 30, "max_polish_steps": 30},
    "e20-b128-p40": {
        "epochs": 20,
        "batch_size": 128,
        "lr": 3e-3,
        "weight_decay": 1e-3,
        "polish_steps": 40,
        "max_polish_steps": 40,
    },
    # cosine-decayed Adam (ends near a minimum), then a bounded float32 polish
    "cos-e30-b128-p0": {"epochs": 30, "batch_size": 128, "lr": 3e-3, "lr_schedule": "cosine", "polish_steps": 0},
    "cos-e30-b64-p0": {"epochs": 30, "batch_size": 64, "lr": 3e-3, "lr_schedule": "cosine", "polish_steps": 0},
    "cos-e30-b128-p25": {
        "epochs": 30,
        "batch_size": 128,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 25,
        "max_polish_steps": 25,
    },
    "cos-e40-b256-p20": {
        "epochs": 40,
        "batch_size": 256,
        "lr": 5e-3,
        "lr_schedule": "cosine",
        "polish_steps": 20,
        "max_polish_steps": 20,
    },
    "cos-e30-b128-p20": {
        "epochs": 30,
        "batch_size": 128,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 20,
        "max_polish_steps": 20,
    },
    "cos-e20-b64-p20": {
        "epochs": 20,
        "batch_size": 64,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 20,
        "max_polish_steps": 20,
    },
    "cos-e20-b128-p40": {
        "epochs": 20,
        "batch_size": 128,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 40,
        "max_polish_steps": 40,
    },
    "cos-e30-b128-p40": {
        "epochs": 30,
        "batch_size": 128,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 40,
        "max_polish_steps": 40,
    },
    "cos-e20-b64-p25": {
        "epochs": 20,
        "batch_size": 64,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 25,
        "max_polish_steps": 25,
    },
    # longer cosine runs, for two torch threads (the 60 s target is for both cores of an idle machine)
    "cos-e40-b128-p40": {
        "epochs": 40,
        "batch_size": 128,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 40,
        "max_polish_steps": 40,
    },
    "cos-e30-b64-p40": {
        "epochs": 30,
        "batch_size": 64,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 40,
        "max_polish_steps": 40,
    },
    "cos-e50-b128-p20": {
        "epochs": 50,
        "batch_size": 128,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 20,
        "max_polish_steps": 20,
    },
    "cos-e30-b128-p60": {
        "epochs": 30,
        "batch_size": 128,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 60,
        "max_polish_steps": 60,
    },
    "cos-e30-b128-p80": {
        "epochs": 30,
        "batch_size": 128,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 80,
        "max_polish_steps": 80,
    },
    "cos-e40-b64-p20": {
        "epochs": 40,
        "batch_size": 64,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "polish_steps": 20,
        "max_polish_steps": 20,
    },
}


def run(name: str, settings: dict, dataset: ic.Dataset) -> dict:
    marks: list[tuple[float, str]] = []
    start = time.perf_counter()

    def progress(fraction: float, message: str) -> None:
        marks.append((time.perf_counter() - start, message))

    model = ic.train_model(dataset, "cnn", seed=0, progress=progress, **settings)
    total = time.perf_counter() - start
    adam_end = max((t for t, m in marks if m.startswith("epoch")), default=0.0)
    float64 = [t for t, m in marks if "float64" in m]
    report = model.training_report
    return {
        "recipe": name,
        "settings": settings,
        "seconds": total,
        "adam_seconds": adam_end,
        "float32_polish_seconds": (float64[0] if float64 else total) - adam_end,
        "float64_polish_seconds": (total - float64[0]) if float64 else 0.0,
        **{
            k: report[k]
            for k in ("train_accuracy", "test_accuracy", "grad_norm", "grad_tol", "grad_tol_reached", "objective")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    dataset = ic.load_dataset("mnist5k", seed=0)
    rows = []
    for name in args.recipes:
        load_before = os.getloadavg()
        row = run(name, RECIPES[name], dataset)
        row["load average before"], row["load average after"] = load_before, os.getloadavg()
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = {"torch_threads": torch.get_num_threads(), "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Cost of the first UMAP map in a fresh process (what the Samplers page's help text states).

    python benchmarks/app/measure_umap.py cold digits   # train the default digits MLP, map its features twice
    python benchmarks/app/measure_umap.py warm digits   # the same after the server's in-process warm-up (ui.warmup)
    python benchmarks/app/measure_umap.py cold large    # 5,000 x 32 float32 points: umap-learn's pynndescent path

Run it after ``python -m ui.warmup`` (what ``make app`` runs), one at a time, and note ``uptime`` with each.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
torch.set_num_threads(1)
mode, which = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
from influence_core.sampling.projection import project_2d  # noqa: E402 - timed: imported after t0

if which == "digits":
    import influence_core as ic

    d = ic.load_dataset("digits", seed=0)
    m = ic.train_model(d, arch="mlp", hidden=(32,), epochs=30, lr=3e-3, weight_decay=1e-3, seed=0, polish_steps=100)
    X = np.vstack([ic.penultimate_features(m, d.X_train), ic.penultimate_features(m, d.X_test)])
else:
    X = np.random.default_rng(1).normal(size=(5000, 32)).astype(np.float32)
if mode == "warm":
    from ui.warmup import warm_up_maps

    print("in-process warm-up", {k: round(v, 1) for k, v in warm_up_maps(("exact",)).items()}, flush=True)
t = time.perf_counter()
project_2d(X, method="umap", seed=0)
print(mode, which, X.shape, X.dtype, f"first UMAP {time.perf_counter() - t:.1f} s", flush=True)
t = time.perf_counter()
project_2d(X, method="umap", seed=0)
print(mode, which, f"second UMAP {time.perf_counter() - t:.1f} s", flush=True)

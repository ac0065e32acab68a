"""Is the weighted sample mean of a per-point quantity an unbiased estimate of the pool mean? Digits MLP (15 epochs,
the test fixture's model), 40 seeds per (sampler, option, m); quantities: the Gauss-Newton curvature proxy 1 − Σp²
and the squared norm of the penultimate features. Prints mean ratio (sample estimate / pool mean) and its std.

    PYTHONPATH=. python benchmarks/sampler_bias.py > docs/faithfulness/sampler_bias.txt
"""

import os

import numpy as np
import torch

from influence_core import load_dataset, train_model
from influence_core.sampling.samplers import curvature_proxy, draw_sample
from influence_core.sampling.subsets import sampler_inputs

torch.set_num_threads(1)
data = load_dataset("digits")
model = train_model(data, "mlp", seed=0, epochs=15)
inputs = sampler_inputs(model, data)
curv = curvature_proxy(inputs.logits)
feat2 = np.sum(inputs.features**2, axis=1)
print(f"pool mean curvature proxy {curv.mean():.5f}; load average {os.getloadavg()}")
configs = [
    ("random", {}),
    ("feature", {"pick": "nearest", "weighting": "unweighted"}),
    ("feature", {"pick": "nearest"}),
    ("feature", {"pick": "random", "weighting": "unweighted"}),
    ("feature", {}),
    ("logit_kmeans", {"pick": "nearest", "weighting": "unweighted"}),
    ("logit_kmeans", {}),
    ("int_distance", {"n_clusters": 2}),
    ("int_distance", {"n_clusters": 4}),
    ("int_distance", {}),
    ("int_distance", {"n_clusters": 32}),
]
for name, options in configs:
    for m in (16, 64, 256):
        est = np.array(
            [
                [np.average(q[s.indices], weights=s.weights_or_uniform()) for q in (curv, feat2)]
                for s in (draw_sample(name, inputs, m, seed=seed, **options) for seed in range(40))
            ]
        )
        ratio = est / np.array([curv.mean(), feat2.mean()])
        print(
            f"{name:13s} {str(options):52s} m={m:4d}  curvature {ratio[:, 0].mean():.3f} ± {ratio[:, 0].std():.3f}"
            f"  |f|² {ratio[:, 1].mean():.3f} ± {ratio[:, 1].std():.4f}",
            flush=True,
        )
print(f"load average {os.getloadavg()}")

"""Small check of the honest protocol (runs in well under a minute): digits logistic regression (float32 default
training), class 3, m = 128, seeds 0-2, every built-in sampler, CG, Gauss-Newton, δ = 0.01. Prints the honest F1
(reporting half, α chosen on the selection half), the chosen α and whether it is at the grid edge, the test-set
oracle, F1 at α = 1, and the distance to the retrained model (agreement on the reporting half, relative parameter
distance) at α = 1 and at the chosen α. Not a study: three seeds, one class, no timings.

    PYTHONPATH=. python benchmarks/removal_smoke_check.py > docs/removal/smoke_check.txt
"""

import numpy as np
import torch

from influence_core import load_dataset, train_model
from influence_core.removal.class_removal import ClassRemoval
from influence_core.sampling.samplers import available_samplers

torch.set_num_threads(1)
data = load_dataset("digits")
model = train_model(data, "logreg", seed=0)
print("training:", {k: model.training_report[k] for k in ("grad_norm", "grad_tol", "grad_tol_reached")})
task = ClassRemoval(model, data)
print(
    "sampler | F1 honest | chosen α | edge | F1 oracle | F1 α=1 | agree α=1 | agree chosen | rel.dist α=1 | "
    "rel.dist chosen"
)
for sampler in ["full", *available_samplers()]:
    rows = []
    for seed in (0, 1, 2):
        r = task.run(3, sampler, None if sampler == "full" else 128, seed, retrain_reference=True)
        ref = r.reference
        rows.append(
            [
                r.selected["f1"],
                r.selected["alpha"],
                r.alpha_edge is not None,
                r.best["f1"],
                r.at_one["f1"],
                ref["report_agreement"]["alpha_1"],
                ref["report_agreement"]["selected_alpha"],
                ref["relative_distance"]["alpha_1"],
                ref["relative_distance"]["selected_alpha"],
            ]
        )
        if sampler == "full":
            break
    v = np.array(rows, dtype=float).mean(axis=0)
    print(f"{sampler} | " + " | ".join(f"{x:.3f}" for x in v))

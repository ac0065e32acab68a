"""Before/after of the curvature-scale fix: digits logistic regression (float64, wd 1e-3), class 3, whole pool,
exact solve, true Hessian, δ = 0: relative distance ||θ(1) − θ_ret|| / ||θ̂ − θ_ret|| of the update to the model
retrained without the class, for the fixed update (Newton step on L_r) and the old one ((1/n)(H_mean + wd I)⁻¹ g_c).

    PYTHONPATH=. python benchmarks/removal_scale_check.py
"""

import json

import torch

from influence_core import load_dataset, train_model
from influence_core.curvature.objective import Objective
from influence_core.removal.class_removal import ClassRemoval

torch.set_num_threads(1)
data = load_dataset("digits")
model = train_model(data, "logreg", seed=0, dtype="float64")
task = ClassRemoval(model, data)
out = {}
for c in range(10):
    res = task.run(c, m=None, solver="exact", curvature="hessian", damping=0.0, alphas=[1.0], retrain_reference=True)
    theta_ref = task.parameters_of(task.reference_model(c))
    keep = data.y_train != c
    H_mean = Objective(model, data.X_train[keep], data.y_train[keep], task.weight_decay).hessian()
    old = torch.linalg.solve(H_mean, task.gradient_sum(c)) / data.n_train
    d0 = float((task.theta - theta_ref).norm())
    out[c] = {
        "fixed": float((task.theta + res.delta - theta_ref).norm()) / d0,
        "old": float((task.theta + old - theta_ref).norm()) / d0,
        "agreement_fixed": res.reference["prediction_agreement"]["alpha_1"],
    }
    print(c, out[c], flush=True)
print(json.dumps({"model": model.training_report, "relative_distance": out}, indent=1))

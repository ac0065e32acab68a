"""Which gradient-norm tolerance the default MLP on MNIST-1D reaches: the default training (Adam, then 100 L-BFGS
polish steps) and the polish continued in float64 towards grad_tol, with the steps it took.

    flock /tmp/influence-bench.lock env PYTHONPATH=. python benchmarks/removal_mnist1d_stationarity.py >
    docs/removal/mnist1d_stationarity.txt
"""

import json
import os
import time

import torch

from influence_core import load_dataset, train_model

torch.set_num_threads(1)
data = load_dataset("mnist1d")
rows = []
for grad_tol, budget in ((1.0, 100), (1e-3, 2000), (1e-4, 5000)):
    t = time.perf_counter()
    model = train_model(data, "mlp", seed=0, grad_tol=grad_tol, max_polish_steps=budget)
    rep = model.training_report
    rows.append(
        {
            "grad_tol": grad_tol,
            "max_polish_steps": budget,
            "grad_norm": rep["grad_norm"],
            "reached": rep["grad_tol_reached"],
            "train_accuracy": rep["train_accuracy"],
            "test_accuracy": rep["test_accuracy"],
            "seconds": time.perf_counter() - t,
        }
    )
    print(rows[-1], flush=True)
print(json.dumps({"n_train": data.n_train, "rows": rows, "load_average": os.getloadavg()}, indent=1))

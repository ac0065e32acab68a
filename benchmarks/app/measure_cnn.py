"""Where the MNIST-5k CNN's training time goes (not a test; run by hand under the bench lock, numbers in the README).

    flock /tmp/influence-bench.lock .venv/bin/python benchmarks/app/measure_cnn.py

Times, on one torch thread (as the app), one Adam epoch of the app's recipe (batch 64) and one full-batch pass
(objective + gradient) of the L-BFGS polish as one 4,000-row batch (before) and in row chunks
(``influence_core.models.training.full_objective_backward``, after), in float32 and float64 (the extended polish
runs in float64); and checks that both give the same objective and gradient.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's influence_core
torch.set_num_threads(1)

import influence_core as ic  # noqa: E402
from influence_core.models.training import full_objective_backward, objective  # noqa: E402
from influence_core.models.zoo import build_model  # noqa: E402


def timed(fn, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    load = os.getloadavg()
    ds = ic.load_dataset("mnist5k", seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", ds.n_features, ds.n_classes, ds.image_shape)
    X, y = torch.as_tensor(ds.X_train, dtype=torch.float32), torch.as_tensor(ds.y_train)
    out = {}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def adam_epoch() -> None:
        for i in range(0, len(X), 64):
            opt.zero_grad()
            objective(model, X[i : i + 64], y[i : i + 64], 1e-3).backward()
            opt.step()

    out["adam epoch (batch 64), s"] = timed(adam_epoch, 1)
    for dtype in (torch.float32, torch.float64):
        model.to(dtype)
        Xd = X.to(dtype)

        def single() -> torch.Tensor:
            model.zero_grad()
            loss = objective(model, Xd, y, 1e-3)
            loss.backward()
            return loss.detach()

        def chunked() -> torch.Tensor:
            model.zero_grad()
            return full_objective_backward(model, Xd, y, 1e-3)

        name = str(dtype).replace("torch.", "")
        out[f"full-batch pass {name}, one batch (before), s"] = timed(single)
        g1 = torch.cat([p.grad.flatten() for p in model.parameters()]).clone()
        l1 = single()
        out[f"full-batch pass {name}, row chunks (after), s"] = timed(chunked)
        l2 = chunked()
        g2 = torch.cat([p.grad.flatten() for p in model.parameters()])
        out[f"{name}: |objective difference|"] = float(abs(l1 - l2))
        out[f"{name}: relative gradient difference"] = float((g1 - g2).norm() / g1.norm())
    out["load average before"], out["load average after"] = load, os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

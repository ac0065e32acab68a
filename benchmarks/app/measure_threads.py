"""Cost of serialising forward-mode AD across threads (not a test; run under the bench lock, numbers in the README).

    flock /tmp/influence-bench.lock .venv/bin/python benchmarks/app/measure_threads.py

Two digits MLPs (32 hidden units), each with an exact low-rank Gauss-Newton fit on its own 100 points; 20 influence
queries (3 test points against all 1,437 training points) in one thread alone, then 20 in each of two threads at
once (as two browser sessions of one server). Every forward-mode product holds
``influence_core.curvature.objective.FORWARD_AD_LOCK``; ratio = time of both / time alone (1 = perfectly parallel,
2 = fully serialised; the work doubles).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's influence_core
torch.set_num_threads(1)

import influence_core as ic  # noqa: E402


def main() -> None:
    load = os.getloadavg()
    ds = ic.load_dataset("digits", seed=0)
    calcs = []
    for s in (0, 1):
        model = ic.train_model(ds, "mlp", seed=s, epochs=5, hidden=(32,), polish_steps=20)
        calc = ic.InfluenceCalculator(model, ds.X_train, ds.y_train)
        calc.fit(hessian_indices=np.arange(100) + 100 * s, solver="exact", damping=0.01, curvature="gauss_newton")
        calcs.append(calc)
    X, y = ds.X_test[:3], ds.y_test[:3]

    def work(i: int, n: int = 20) -> None:
        for _ in range(n):
            calcs[i].scores(X, y)

    ratios, alone_s, both_s = [], [], []
    for _ in range(3):
        start = time.perf_counter()
        work(0)
        alone = time.perf_counter() - start
        threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        both = time.perf_counter() - start
        alone_s.append(alone)
        both_s.append(both)
        ratios.append(both / alone)
    print(
        json.dumps(
            {
                "alone_s": alone_s,
                "two_threads_s": both_s,
                "median_ratio": statistics.median(ratios),
                "load_before": load,
                "load_after": os.getloadavg(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

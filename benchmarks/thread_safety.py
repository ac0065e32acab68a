"""The cost of the engine's thread-safety mechanism: per-thread replicas of the caller's module tree.

Every forward pass of the engine runs on ``thread_replica(model)``, a ``copy.deepcopy`` of the module tree that shares
the caller's parameter and buffer tensors. This script measures, on the same machine in one run:

- ``replica_ms``: making a replica (once per thread and model), against ``forward_ms``, one forward pass of a batch of
  256 inputs, and ``lookup_us``, the per-call cost of finding the cached replica (an identity check of every tensor);
- ``extra_weight_bytes``: bytes of parameters/buffers the replica owns that are not the caller's (0 = nothing copied);
- ``threads``: the wall time of scoring THREADS chunks of test points one after another and in THREADS threads at
  once through one calculator (digits MLP, CG), and whether the threaded scores equal the sequential ones.

Usage: ``flock /tmp/influence-bench.lock python benchmarks/thread_safety.py --out docs/reliability/thread_safety.json``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch

from influence_core import InfluenceCalculator, build_model, load_dataset, train_model
from influence_core.io_safety import atomic_write
from influence_core.models.task import replica, thread_replica


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def replica_cost(name: str, model: torch.nn.Module, x: torch.Tensor) -> dict:
    private = replica(model)
    own = {id(t) for t in list(model.parameters()) + list(model.buffers())}
    extra = sum(
        t.numel() * t.element_size() for t in list(private.parameters()) + list(private.buffers()) if id(t) not in own
    )
    with torch.no_grad():
        forward = _median_seconds(lambda: private(x), 10)
    thread_replica(model)
    return {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "replica_ms": 1e3 * _median_seconds(lambda: replica(model), 20),
        "lookup_us": 1e6 * _median_seconds(lambda: thread_replica(model), 200),
        "forward_ms": 1e3 * forward,
        "extra_weight_bytes": int(extra),
    }


def thread_scaling(n_threads: int) -> dict:
    ds = load_dataset("digits")
    model = train_model(ds, "mlp", seed=0)
    calc = InfluenceCalculator(model, ds.X_train, ds.y_train)
    calc.fit(
        hessian_indices=np.arange(0, ds.n_train, 5),
        solver="cg",
        damping=0.01,
        curvature="gauss_newton",
        tol=1e-8,
        max_iter=300,
    )
    chunks = [np.arange(4 * i, 4 * i + 4) for i in range(n_threads)]
    calc.scores(ds.X_test[-4:], ds.y_test[-4:])  # warm-up: first-call costs are not the mechanism's
    t0 = time.perf_counter()
    expected = [calc.scores(ds.X_test[c], ds.y_test[c]) for c in chunks]
    sequential = time.perf_counter() - t0
    got: list = [None] * n_threads

    def work(i: int) -> None:
        got[i] = calc.scores(ds.X_test[chunks[i]], ds.y_test[chunks[i]])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    threaded = time.perf_counter() - t0
    rel = max(float(np.max(np.abs(g - e)) / np.max(np.abs(e))) for g, e in zip(got, expected))
    return {
        "threads": n_threads,
        "sequential_s": sequential,
        "threaded_s": threaded,
        "threaded_over_sequential": threaded / sequential,
        "max_relative_difference": rel,
        "bitwise_equal": all(np.array_equal(g, e) for g, e in zip(got, expected)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/reliability/thread_safety.json")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    load_before = os.getloadavg()
    torch.manual_seed(0)
    rows = [
        replica_cost("mlp (digits)", build_model("mlp", 64, 10), torch.randn(256, 64)),
        replica_cost("cnn (28x28)", build_model("cnn", 784, 10, image_shape=(28, 28)), torch.randn(256, 784)),
        replica_cost("resnet18 (28x28)", build_model("resnet18", 784, 10, image_shape=(28, 28)), torch.randn(256, 784)),
    ]
    result = {
        "command": "python benchmarks/thread_safety.py --out " + args.out,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "replicas": rows,
        "scaling": thread_scaling(args.threads),
    }
    result["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as f:
        f.write(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

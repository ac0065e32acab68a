"""The two ways to form one scoring block ∇ℓ_jᵀ s_t (``Objective.grad_dot``), timed on the same machine in one run:
forward mode (one forward pass with k tangents) and per-sample gradients times Sᵀ, for the MNIST MLP and CNN at
k = 1, 4, 16, 64 and 100 vectors on a block of 256 training points (float32, one torch thread, process CPU time,
median of 3). Also records which path the engine's rule (:meth:`Objective.materializes_grads`) takes and the model's
forward FLOPs per input in units of 2p.

Usage: ``flock /tmp/influence-bench.lock python benchmarks/grad_dot_paths.py --out docs/scale/grad_dot_paths.json``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence_core.bench.common import environment  # noqa: E402
from influence_core.curvature.objective import Objective  # noqa: E402
from influence_core.data.datasets import load_dataset  # noqa: E402
from influence_core.io_safety import atomic_path  # noqa: E402
from influence_core.models.zoo import build_model  # noqa: E402

KS = (1, 4, 16, 64, 100)


def cpu_median(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/scale/grad_dot_paths.json")
    ap.add_argument("--block", type=int, default=256, help="training points per block")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    env = environment()
    ds = load_dataset("mnist5k", seed=0)
    rows = []
    for arch in ("mlp", "cnn"):
        torch.manual_seed(0)
        model = build_model(arch, ds.n_features, ds.n_classes, image_shape=ds.image_shape)
        obj = Objective(model, ds.X_train, ds.y_train)
        x, y = obj.batch(np.arange(args.block))
        for k in KS:
            V = torch.randn(k, obj.n_params, generator=torch.Generator().manual_seed(k))
            forward = cpu_median(lambda V=V: obj.grad_dot(V, x, y, path="forward"))
            per_sample = cpu_median(lambda V=V: obj.grad_dot(V, x, y, path="per_sample"))
            row = {
                "model": arch,
                "n_params": obj.n_params,
                "forward_flops_over_2p": obj.forward_flops / (2 * obj.n_params),
                "k": k,
                "forward_mode_seconds": forward,
                "per_sample_seconds": per_sample,
                "per_sample_speedup": forward / per_sample,
                "engine_materializes": obj.materializes_grads(k),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "command": "python " + " ".join(sys.argv),
        "environment": env | {"load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "block": args.block,
        "time": "process CPU time, one torch thread, median of 3",
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

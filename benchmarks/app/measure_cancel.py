"""How long a cancel takes to stop training (not a test; run by hand under the bench lock, numbers in the README).

    flock /tmp/influence-bench.lock .venv/bin/python benchmarks/app/measure_cancel.py

For the app's recipes (one torch thread, as the app): the digits MLP and the MNIST-5k CNN, cancelled (a) during Adam,
right after the progress point of epoch 2, and (b) during the L-BFGS polish, right after its first progress point.
A cancel issued just after a progress point waits for the whole next step, so these are the worst cases: the time
from ``token.cancel()`` to ``Cancelled`` raised (the page says "cancelled" at once; this is how long the work goes on
in the background). Writes docs/app_timings/cancel_latency.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's influence_core
torch.set_num_threads(1)

import influence_core as ic  # noqa: E402
from influence_core.progress import Cancelled, CancelToken, cancellable  # noqa: E402


def latency(dataset, arch: str, when: str, **settings) -> dict:
    token, state = CancelToken(), {}

    def hook(fraction: float, message: str) -> None:
        if not token.cancelled and when in message:
            state["message"] = message
            state["at"] = time.perf_counter()
            token.cancel()

    start = time.perf_counter()
    try:
        ic.train_model(dataset, arch, seed=0, progress=cancellable(hook, token), **settings)
        return {"arch": arch, "cancel_after": when, "stopped": False}
    except Cancelled:
        end = time.perf_counter()
    return {
        "arch": arch,
        "dataset": dataset.name,
        "cancel_after": state["message"],
        "stopped": True,
        "seconds_until_cancel": round(state["at"] - start, 2),
        "latency_seconds": round(end - state["at"], 2),
    }


def main() -> None:
    from ui.config import ModelConfig

    rows = []
    digits, mnist = ic.load_dataset("digits"), ic.load_dataset("mnist5k")
    for dataset, arch in ((digits, "mlp"), (mnist, "cnn")):
        kw = ModelConfig(arch=arch).train_kwargs()
        for when in ("epoch 2/", "polish (full-batch L-BFGS)"):
            rows.append(latency(dataset, arch, when, **kw))
            print(rows[-1], flush=True)
    out = {
        "rows": rows,
        "load_average_before_after": [os.getloadavg()[0]],
        "torch_threads": 1,
        "command": "flock /tmp/influence-bench.lock .venv/bin/python benchmarks/app/measure_cancel.py",
    }
    out["load_average_before_after"].insert(0, LOAD_BEFORE)
    path = ROOT / "docs" / "app_timings" / "cancel_latency.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(path)


LOAD_BEFORE = os.getloadavg()[0]

if __name__ == "__main__":
    main()

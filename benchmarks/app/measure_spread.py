"""The Influence page's across-seed spread and first view, before and after (not a test; run under the bench lock,
numbers in the README and docs/app_timings/spread.json).

    git archive <before-commit> | tar -x -C /tmp/spread-before
    flock /tmp/influence-bench.lock .venv/bin/python benchmarks/app/measure_spread.py --before /tmp/spread-before

For each code (``--before`` checkout, then this one) and round: a fresh disk cache; process 1 gets the app's default
digits MLP (trained, not timed), warms torch.func (one per-sample gradient, so import costs are not counted), then
times what the Influence page computes with its defaults: the first view (sampler A = logit, B = random, m = 100,
seed 0, exact solver, δ = 0.01, plus the full-data reference), a change of seed (7) and of m (150) (A and B
refitted), the spread over 5 seeds for both samplers on the
default test point (the first misclassified one), and the spread on a second test point. Process 2 (a server
restart, same disk cache) times the first view and the spread again. One torch thread, as the app. Medians over
rounds; load averages before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLERS, M, SEEDS, SOLVER, DAMPING, K = ("logit", "random"), 100, tuple(range(5)), "exact", 0.01, 8


def child(root: str) -> dict:
    sys.path.insert(0, root)
    os.chdir(root)
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    import numpy as np

    import influence_core as ic
    from ui import state
    from ui.config import RunConfig

    run = RunConfig()
    start = time.perf_counter()
    model, dataset, view = state.get_model(run), state.get_dataset(run.data), state.get_view(run)
    model_s = time.perf_counter() - start
    ic.InfluenceCalculator(model, dataset.X_train[:5], dataset.y_train[:5]).gradients(
        dataset.X_test[:2], dataset.y_test[:2]
    )
    wrong = np.flatnonzero(view.test_pred != dataset.y_test)
    t1, t2 = int(wrong[0]), int(wrong[1])
    specs = ((SAMPLERS[0], M, 0, SOLVER), (SAMPLERS[1], M, 0, SOLVER), state.reference_spec(run))
    out = {"influence_core": ic.__file__, "model_s": model_s, "test_points": [t1, t2]}
    start = time.perf_counter()
    state.influence_rows(run, specs, DAMPING, t1)
    out["first_view_s"] = time.perf_counter() - start
    for key, (m, seed) in (("change_seed_s", (M, 7)), ("change_m_s", (150, 0))):  # the page's A and B refitted
        start = time.perf_counter()
        state.influence_rows(
            run, ((SAMPLERS[0], m, seed, SOLVER), (SAMPLERS[1], m, seed, SOLVER), specs[2]), DAMPING, t1
        )
        out[key] = time.perf_counter() - start
    for key, t in (("spread_s", t1), ("spread_next_point_s", t2)):
        start = time.perf_counter()
        rows = state.seed_spread(run, SAMPLERS, M, SEEDS, SOLVER, DAMPING, t, K)
        out[key] = time.perf_counter() - start
        out[key.replace("_s", "_spearman")] = [r["spearman_vs_full"] for r in rows]
    return out


def run_child(root: Path, cache: Path) -> dict:
    env = {
        **os.environ,
        "INFLUENCE_EXPLORER_CACHE_DIR": str(cache),
        "INFLUENCE_EXPLORER_WARM_UP": "0",
        "PYTHONPATH": str(root),
    }
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="a checkout of the code before the change")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "app_timings" / "spread.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    codes = {"before": args.before, "after": ROOT} if args.before else {"after": ROOT}
    result: dict = {
        "load_before": os.getloadavg(),
        "uptime_before": subprocess.getoutput("uptime"),
        "settings": {
            "samplers": SAMPLERS,
            "m": M,
            "seeds": len(SEEDS),
            "solver": SOLVER,
            "damping": DAMPING,
            "model": "app default digits MLP (32 hidden)",
        },
        "command": "flock /tmp/influence-bench.lock .venv/bin/python benchmarks/app/measure_spread.py "
        "--before <checkout of the code before>",
    }
    for name, root in codes.items():
        rounds = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="spread-cache-") as cache:
                first = run_child(root, Path(cache))
                restart = run_child(root, Path(cache))
            rounds.append({"first_process": first, "after_restart": restart})
            print(
                name,
                json.dumps({k: v for k, v in first.items() if k.endswith("_s")}),
                json.dumps({k: v for k, v in restart.items() if k.endswith("_s")}),
                flush=True,
            )
        med = {
            f"{proc}.{key}": statistics.median(r[proc][key] for r in rounds)
            for proc in ("first_process", "after_restart")
            for key in ("first_view_s", "change_seed_s", "change_m_s", "spread_s", "spread_next_point_s")
        }
        result[name] = {"root": str(root), "medians": med, "rounds": rounds}
    if "before" in result:
        a = result["after"]["rounds"][0]["first_process"]["spread_spearman"]
        b = result["before"]["rounds"][0]["first_process"]["spread_spearman"]
        result["max_spearman_difference_before_after"] = max(abs(x - y) for x, y in zip(a, b))
    result["load_after"] = os.getloadavg()
    result["uptime_after"] = subprocess.getoutput("uptime")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(
        json.dumps(
            {k: v.get("medians") if isinstance(v, dict) else v for k, v in result.items() if k not in ("settings",)},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""The server's share of an interaction, without a browser (not a test; run by hand under the bench lock).

    flock /tmp/influence-bench.lock .venv/bin/python benchmarks/app/measure_rerun.py [--reruns 15]
        [--out docs/app_timings/rerun_server.json]

Two sessions as two Streamlit ``AppTest`` runners of the Influence page: A on the digits MLP, B on the digits
logistic regression (both prepared by ``python -m ui.prepare --no-umap`` into a fresh disk cache). After a warm-up,
each rerun picks a new test point by index (the cached inverses answer it: the interaction the browser measurement
times). Timed: A's reruns alone, then A's and B's reruns at the same time in two threads (as Streamlit runs two
sessions' scripts in one server process). The script's run includes building every element (figures, thumbnail
grids, tables) but no browser: compared with ``measure_cache.py`` it says how much of an interaction is the server's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def session(arch: str):
    """An AppTest of the Influence page on the digits ``arch``, picking test points by index, warmed up."""
    from streamlit.testing.v1 import AppTest

    from ui.config import ModelConfig, RunConfig

    at = AppTest.from_file(str(ROOT / "pages" / "2_Influence.py"), default_timeout=600)
    at.session_state["run_config"] = RunConfig(model=ModelConfig(arch=arch))
    at.run()
    at.radio(key="inf_mode").set_value("by index")
    at.run()
    for index in (1, 2):
        at.number_input(key="inf_index").set_value(index)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def reruns(at, indices: list[int], out: list[float]) -> None:
    for index in indices:
        at.number_input(key="inf_index").set_value(index)
        t = time.perf_counter()
        at.run()
        out.append(time.perf_counter() - t)
        assert not at.exception and any(f"Test point #{index}" in m.value for m in at.markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="influence-rerun-cache-")
    env = {**os.environ, "INFLUENCE_EXPLORER_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-m", "ui.prepare", "--no-umap"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    os.environ["INFLUENCE_EXPLORER_CACHE_DIR"] = cache
    sys.path.insert(0, str(ROOT))
    load_before = os.getloadavg()
    a, b = session("mlp"), session("logreg")
    n = args.reruns
    alone: list[float] = []
    reruns(a, list(range(10, 10 + n)), alone)
    together_a: list[float] = []
    together_b: list[float] = []
    threads = [
        threading.Thread(target=reruns, args=(a, list(range(100, 100 + n)), together_a)),
        threading.Thread(target=reruns, args=(b, list(range(100, 100 + n)), together_b)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(together_a) == len(together_b) == n, "a session's reruns failed (see the thread's traceback)"
    report = {
        "reruns": n,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "median_seconds": {
            "A alone": statistics.median(alone),
            "A while B reruns": statistics.median(together_a),
            "B while A reruns": statistics.median(together_b),
        },
        "seconds": {"A alone": alone, "A while B reruns": together_a, "B while A reruns": together_b},
    }
    report["ratio A together / A alone"] = (
        report["median_seconds"]["A while B reruns"] / report["median_seconds"]["A alone"]
    )
    print(json.dumps({k: v for k, v in report.items() if k != "seconds"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

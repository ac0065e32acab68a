"""Cold start of the app through ``make app``'s two steps, as a teacher restarts it before a class: ``python -m
ui.prepare`` (idempotent: with the disk cache already filled it only loads) then ``python -m ui.serve``, until
headless Chromium shows the drawn Home page (the trained model's test accuracy and its confusion matrix).

    python benchmarks/cold_start.py [--repeats 3] [--cache DIR] [--out docs/app_timings/cold_start.json]

The disk cache DIR (default: a fresh temporary folder) is filled once by an untimed ``python -m ui.prepare``, as
the first ``make app`` on a machine leaves it; each timed repeat then runs prepare + serve in fresh processes (a
restarted server) and opens the page in a fresh browser. Reported: seconds from the start of prepare to the drawn
page (the number a teacher waits), and its parts (prepare; server start to health; first page drawn). Wall-clock
times on this machine, whatever else runs on it, with the load averages before and after.
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "app"))
from browser_gate import CHROMIUM_ARGS, chromium_or_skip, free_port  # noqa: E402


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def one_start(env: dict, browser) -> dict:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ui.prepare"], cwd=ROOT, env=env, check=True, capture_output=True)
    prepared = time.perf_counter()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ui.serve",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.05)
            if proc.poll() is not None:
                raise RuntimeError("the server exited before it answered")
        healthy = time.perf_counter()
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        page = context.new_page()
        page.set_default_timeout(300_000)
        page.goto(url)
        page.get_by_text("Test accuracy").wait_for()
        page.locator(".js-plotly-plot").first.wait_for()  # the confusion matrix is drawn
        drawn = time.perf_counter()
        context.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "total_s": round(drawn - start, 2),
        "prepare_s": round(prepared - start, 2),
        "serve_to_health_s": round(healthy - prepared, 2),
        "health_to_drawn_s": round(drawn - healthy, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", default=None, help="disk cache folder (default: a fresh temporary one)")
    parser.add_argument("--out", default="docs/app_timings/cold_start.json")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    cache = args.cache or tempfile.mkdtemp(prefix="influence-explorer-cold-start-")
    env = {**os.environ, "INFLUENCE_EXPLORER_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    before = load()
    fill = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ui.prepare"], cwd=ROOT, env=env, check=True, capture_output=True)
    fill = time.perf_counter() - fill
    runs = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_or_skip(), args=CHROMIUM_ARGS, headless=True)
        for i in range(args.repeats):
            runs.append(one_start(env, browser))
            print(f"start {i + 1}: {runs[-1]}", flush=True)
        browser.close()
    totals = [r["total_s"] for r in runs]
    result = {
        "what": "make app's steps after a restart (disk cache filled): python -m ui.prepare, then python -m "
        "ui.serve, until headless Chromium (1366x768) shows the Home page drawn (test accuracy and "
        "confusion matrix)",
        "command": "python benchmarks/cold_start.py " + " ".join(sys.argv[1:]),
        "first_prepare_empty_cache_s": round(fill, 2),
        "runs": runs,
        "total_median_s": statistics.median(totals),
        "total_min_s": min(totals),
        "total_max_s": max(totals),
        "load_before": before,
        "load_after": load(),
    }
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

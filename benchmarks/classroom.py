"""A class at once: simulated students on one server, with the heavy work on 1 and on 2 Dask worker processes.

    python benchmarks/classroom.py --students 20 --seconds 300 --workers 1 2

Each student is a thread driving Streamlit ``AppTest`` sessions of the real pages in this one process, so the
students share the server's state (models, results, the job board) exactly as real browser sessions of one server
do (what is not measured: the browser, the websocket and the serialisation of the page to it). A student follows
the lesson (the Lesson page, steps 1 and 2), then works on the Influence page for ``--seconds``: clicks test points
(a new test index), changes m, the samplers and the seed, sometimes switches on the spread across seeds, sometimes
opens the Samplers page. Students 0-9 use the default digits MLP, 10-14 logistic regression, 15-19 a wider MLP, so
some share a model and some do not; their choices come from a small pool, so some requests are new work and some
were already asked by another student.

Measured per configuration (a fresh disk cache filled as ``make app`` fills it, ``python -m ui.prepare --no-umap``):
errors (an exception, an ``st.error`` on the page, a run over the AppTest timeout), wrong numbers (every
comparison table the Influence page showed is checked afterwards against a sequential computation of the same
settings in this process, ``ui.compute.influence_rows`` one request at a time: Spearman to 1e-4), and the time to
a settled page (``AppTest.run`` until the script ends, jobs included) for cached work (the result was in the
server's memory when asked) and new work; the CPU seconds used by the server and the workers over the wall time
(cores busy), and the load averages. Writes ``docs/app/classroom.json`` and ``docs/app/classroom.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "app"

TEST_POINTS = (3, 8, 11, 17, 25, 33, 42, 57)
MS = (30, 50, 100, 150)
SAMPLERS = ("random", "logit", "importance", "class_stratified", "feature")
SEEDS = (0, 1, 2)


def runs():
    from ui.config import DEFAULT_RUN, ModelConfig, RunConfig

    return {
        "mlp": DEFAULT_RUN,
        "logreg": RunConfig(model=ModelConfig(arch="logreg")),
        "mlp64": RunConfig(model=ModelConfig(hidden=64)),
    }


def student_run(i: int):
    group = "mlp" if i < 10 else "logreg" if i < 15 else "mlp64"
    return group, runs()[group]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]  # nearest rank


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[dict] = []

    def add(self, event: dict) -> None:
        with self.lock:
            self.events.append(event)


def share_compiled_scripts() -> None:
    """One compiled copy of each page for all sessions, as a real server has (its ``ScriptCache`` is per runtime,
    with a lock); each ``AppTest`` has its own, and twenty of them compiling at once tripped CPython's
    "AST constructor recursion depth mismatch" (a harness artefact, not the app's)."""
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    original, shared, lock = ScriptCache.get_bytecode, {}, threading.Lock()

    def get_bytecode(self, script_path: str):
        path = os.path.abspath(script_path)
        with lock:
            if path not in shared:
                shared[path] = original(self, path)
            return shared[path]

    ScriptCache.get_bytecode = get_bytecode


def share_runtime() -> None:
    """``AppTest.run`` sets the process-wide ``Runtime._instance`` to a mock for its run and back to None after it,
    so with twenty sessions at once one session's end left the others' script threads without a runtime
    ("Runtime hasn't been created!": a harness artefact; a real server has one runtime). Keep the last one."""
    import streamlit.runtime as runtime_module
    from streamlit.runtime import Runtime

    last = {}

    def get_instance():
        instance = Runtime._instance
        if instance is not None:
            last["instance"] = instance
            return instance
        return last["instance"]

    runtime_module.get_instance = get_instance


def _problems(at) -> list[str]:
    return [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]


def _comparison(at) -> dict[str, float] | None:
    for frame in at.dataframe:
        table = frame.value
        if "pair" in table.columns and "Spearman" in table.columns:
            return {str(p): float(v) for p, v in zip(table["pair"], table["Spearman"])}
    return None


def _timed(rec: Recorder, student: int, action: str, at, cached: bool, **extra) -> dict:
    """One request: ``at.run()`` (a click's rerun of this session's page) until the page settles."""
    start = time.perf_counter()
    try:
        at.run()
        problems = _problems(at)
    except Exception as exc:  # noqa: BLE001 - a timeout or a crash of the script: an error of this request
        problems = [f"{type(exc).__name__}: {str(exc)[:300]}"]
    event = {
        "student": student,
        "action": action,
        "seconds": time.perf_counter() - start,
        "cached": cached,
        "problems": problems,
        **extra,
    }
    rec.add(event)
    return event


def _influence_settings(at) -> dict:
    keys = ("inf_index", "inf_m", "inf_seed")
    out = {k: int(at.number_input(key=k).value) for k in keys}
    out.update({k: at.selectbox(key=k).value for k in ("inf_a", "inf_b", "inf_solver")})
    out["inf_damping"] = float(at.number_input(key="inf_damping").value)
    out["inf_full"] = bool(at.toggle(key="inf_full").value)
    return out


def student(i: int, deadline: float, rec: Recorder, timeout: float) -> None:
    """One student's session: the app, the lesson's steps 1 and 2, the Influence page as step 2 set it up, then
    clicks until ``deadline``."""
    from streamlit.testing.v1 import AppTest

    from ui import state

    rng = random.Random(1000 + i)
    group, run = student_run(i)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    at.session_state["run_config"] = run
    at.session_state["session_id"] = f"student-{i}"
    _timed(rec, i, "home", at, cached=False, group=group)
    at.switch_page("pages/5_Lesson.py")
    _timed(rec, i, "lesson", at, cached=False, group=group)
    for step in ("score", "seeds"):
        try:
            at.button(key=f"lesson_go_{step}").click()
        except Exception as exc:  # noqa: BLE001 - the lesson page did not draw its buttons: its error is recorded
            rec.add(
                {
                    "student": i,
                    "action": f"lesson {step}",
                    "seconds": 0.0,
                    "cached": False,
                    "problems": [repr(exc)],
                    "group": group,
                }
            )
            continue
        _timed(rec, i, f"lesson {step}", at, cached=False, group=group)
    at.switch_page("pages/2_Influence.py")
    _timed(rec, i, "influence (from the lesson)", at, cached=False, group=group)
    while time.time() < deadline:
        action = rng.choices(
            ["test point", "m", "sampler", "seed", "spread", "samplers page"], weights=[4, 2, 2, 2, 1, 1]
        )[0]
        try:
            if action == "samplers page":
                at.switch_page("pages/1_Samplers.py")
                _timed(rec, i, action, at, cached=False, group=group)
                at.switch_page("pages/2_Influence.py")  # its widgets start afresh, as for a real student
                _timed(rec, i, "back to influence", at, cached=False, group=group)
                action = "test point"
                at.radio(key="inf_mode").set_value("by index")
                _timed(rec, i, "influence (by index)", at, cached=False, group=group)
                at.number_input(key="inf_index").set_value(rng.choice(TEST_POINTS))
            elif action == "test point":
                at.radio(key="inf_mode").set_value("by index")
                at.number_input(key="inf_index").set_value(rng.choice(TEST_POINTS))
            elif action == "m":
                at.number_input(key="inf_m").set_value(rng.choice(MS))
            elif action == "sampler":
                at.selectbox(key="inf_a" if rng.random() < 0.5 else "inf_b").set_value(rng.choice(SAMPLERS))
            elif action == "seed":
                at.number_input(key="inf_seed").set_value(rng.choice(SEEDS))
            elif action == "spread":
                at.toggle(key="inf_spread").set_value(True)
            s = _influence_settings(at)
        except Exception as exc:  # noqa: BLE001 - the page lost its widgets (an earlier error): start again
            rec.add(
                {
                    "student": i,
                    "action": action,
                    "seconds": 0.0,
                    "cached": False,
                    "problems": [f"widget: {exc!r}"],
                    "group": group,
                }
            )
            at.switch_page("pages/2_Influence.py")
            _timed(rec, i, "influence (reopened)", at, cached=False, group=group)
            continue
        specs = [
            (s["inf_a"], s["inf_m"], s["inf_seed"], s["inf_solver"]),
            (s["inf_b"], s["inf_m"], s["inf_seed"], s["inf_solver"]),
        ]
        if s["inf_full"]:
            specs.append(state.reference_spec(run))
        cached = state.has_result(state.rows_key(run, specs, s["inf_damping"], s["inf_index"]))
        if action == "spread":
            cached = False
        event = _timed(
            rec,
            i,
            "spread" if action == "spread" else f"influence ({action})",
            at,
            cached=cached,
            group=group,
            settings=s,
        )
        event["shown"] = _comparison(at)
        if action == "spread":
            at.toggle(key="inf_spread").set_value(False)


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def worker_pids() -> list[int]:
    from ui import workers

    if workers.in_process():
        return []
    return [int(p) for p in workers.client().run(os.getpid).values()]


def verify(events: list[dict]) -> list[dict]:
    """Every comparison table shown, against a sequential computation of the same settings in this process."""
    from influence_core.evaluation import metrics
    from ui import compute

    compute.forget()
    wrong = []
    checked = 0
    for e in events:
        if not e.get("shown"):
            continue
        s = e["settings"]
        run = runs()[e["group"]]
        n_train = compute.dataset(run.data).n_train
        specs = [
            (s["inf_a"], s["inf_m"], s["inf_seed"], s["inf_solver"]),
            (s["inf_b"], s["inf_m"], s["inf_seed"], s["inf_solver"]),
        ]
        if s["inf_full"]:
            specs.append((None, n_train, 0, compute.reference_solver(run)))
        rows = compute.influence_rows(None, run, tuple(specs), s["inf_damping"], s["inf_index"])
        a, b = rows[0]["scores"], rows[1]["scores"]
        expected = {f"A: {s['inf_a']} vs B: {s['inf_b']}": metrics.spearman(a, b)}
        if s["inf_full"]:
            full = rows[2]["scores"]
            expected.update(
                {
                    f"A: {s['inf_a']} vs full data": metrics.spearman(a, full),
                    f"B: {s['inf_b']} vs full data": metrics.spearman(b, full),
                }
            )
        checked += 1
        if set(e["shown"]) != set(expected) or any(abs(e["shown"][k] - v) > 1e-4 for k, v in expected.items()):
            wrong.append({"student": e["student"], "settings": s, "shown": e["shown"], "expected": expected})
    return wrong, checked


def summarise(events: list[dict]) -> dict:
    def stats(values: list[float]) -> dict:
        return {
            "n": len(values),
            "median_s": statistics.median(values) if values else None,
            "p95_s": percentile(values, 95),
            "max_s": max(values) if values else None,
        }

    settled = [e for e in events if not e["problems"]]
    return {
        "requests": len(events),
        "errors": sum(bool(e["problems"]) for e in events),
        "cached": stats([e["seconds"] for e in settled if e["cached"]]),
        "new": stats([e["seconds"] for e in settled if not e["cached"]]),
        "by_action": {
            a: stats([e["seconds"] for e in settled if e["action"] == a]) for a in sorted({e["action"] for e in events})
        },
    }


def one_configuration(n_workers: int, students: int, seconds: float, timeout: float) -> dict:
    cache = Path(tempfile.mkdtemp(prefix=f"ie-classroom-{n_workers}w-"))
    env = {**os.environ, "INFLUENCE_EXPLORER_CACHE_DIR": str(cache), "INFLUENCE_EXPLORER_WORKERS": "0"}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ui.prepare", "--no-umap"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )
    prepare_s = time.perf_counter() - start
    os.environ["INFLUENCE_EXPLORER_CACHE_DIR"] = str(cache)
    os.environ["INFLUENCE_EXPLORER_WORKERS"] = str(n_workers)
    from ui import compute, state, workers

    workers.shutdown()
    state.forget_in_memory()
    state.job_board.clear()
    compute.forget()
    workers.client().run(compute.set_torch_threads)
    pids = [os.getpid()] + worker_pids()
    cpu0, load0 = cpu_seconds(pids), os.getloadavg()
    rec = Recorder()
    loads: list[tuple[float, float, float]] = []
    deadline = time.time() + seconds
    threads = [
        threading.Thread(target=student, args=(i, deadline, rec, timeout), name=f"student-{i}") for i in range(students)
    ]
    wall0 = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        loads.append(os.getloadavg())
        time.sleep(10)
    wall = time.perf_counter() - wall0
    pids = sorted(set(pids + worker_pids()))
    cpu = cpu_seconds(pids) - cpu0
    workers.shutdown()
    os.environ["INFLUENCE_EXPLORER_WORKERS"] = "0"
    wrong, checked = verify(rec.events)
    shutil.rmtree(cache, ignore_errors=True)
    summary = summarise(rec.events)
    return {
        "workers": n_workers,
        "students": students,
        "seconds": seconds,
        "wall_s": wall,
        "prepare_s": prepare_s,
        **summary,
        "wrong_numbers": len(wrong),
        "results_checked": checked,
        "wrong": wrong[:10],
        "error_texts": sorted({p[:200] for e in rec.events for p in e["problems"]})[:20],
        "cpu_s_server_and_workers": cpu,
        "cores_busy": cpu / wall,
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "loadavg_1min_mean": statistics.mean(x[0] for x in loads) if loads else None,
    }


def markdown(record: dict) -> str:
    lines = [
        "# A class at once: 20 simulated students on one server",
        "",
        f"Command: `{record['command']}` (machine: {record['machine']}).",
        "",
        "Each student is a thread driving Streamlit AppTest sessions of the real pages in the server's process "
        "(shared models, results and job board, as real sessions of one server); the heavy work runs on the "
        "Dask worker processes. A student follows the lesson (steps 1 and 2), then clicks test points, "
        "changes m, samplers and seeds on the Influence page, sometimes computes the spread across seeds or "
        "opens the Samplers page. Every comparison table shown was checked against a sequential computation "
        "of the same settings. Time to a settled page: the page's script from start to end, jobs included; "
        "*cached*: the result was in the server's memory when asked.",
        "",
        "| workers | requests | errors | wrong numbers (of checked) | cached: median / p95 (s) | "
        "new: median / p95 (s) | cores busy | load avg (1 min, mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["configurations"]:
        c, n = r["cached"], r["new"]
        lines.append(
            f"| {r['workers']} | {r['requests']} | {r['errors']} | {r['wrong_numbers']} "
            f"({r['results_checked']}) | {fmt(c['median_s'])} / {fmt(c['p95_s'])} | "
            f"{fmt(n['median_s'])} / {fmt(n['p95_s'])} | {r['cores_busy']:.2f} | "
            f"{fmt(r['loadavg_1min_mean'])} |"
        )
    lines += ["", "Per action (median / p95 seconds, settled requests):", ""]
    for r in record["configurations"]:
        parts = [f"{a}: {fmt(s['median_s'])} / {fmt(s['p95_s'])} (n={s['n']})" for a, s in r["by_action"].items()]
        lines.append(f"- {r['workers']} worker(s): " + "; ".join(parts))
    lines += ["", "## What a class of 20 needs", "", record["verdict"], ""]
    errors = sorted({t for r in record["configurations"] for t in r["error_texts"]})
    if errors:
        lines += ["## Errors seen", ""] + [f"- {t}" for t in errors] + [""]
    return "\n".join(lines)


def fmt(v):
    return "–" if v is None else f"{v:.2f}"


def verdict(configs: list[dict], students: int) -> str:
    busy = max(r["cores_busy"] for r in configs)
    by = {r["workers"]: r for r in configs}
    text = (
        f"Over the run the server and its workers kept {busy:.2f} cores busy on average for {students} "
        f"students, {busy / students:.2f} cores per student."
    )
    if 1 in by and 2 in by:
        n1, n2 = by[1]["new"]["p95_s"], by[2]["new"]["p95_s"]
        if n1 and n2:
            text += (
                f" New work's 95th percentile went from {n1:.1f} s with one worker to {n2:.1f} s with two on "
                "this 2-core machine (shared with other work: see the load averages)."
            )
    text += (
        " Cached views stay fast whatever the load (they need no worker); new work queues for the workers, so "
        "its latency falls with the number of worker processes until the server's own core is the limit."
    )
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=600.0, help="AppTest timeout per page run (s)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    os.environ.setdefault("INFLUENCE_EXPLORER_WARM_UP", "0")
    os.environ.setdefault("INFLUENCE_EXPLORER_MAP_PROCESS", "0")
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    share_compiled_scripts()
    share_runtime()
    configs = []
    for n in args.workers:
        print(f"{args.students} students, {n} worker(s), {args.seconds:.0f} s ...", flush=True)
        configs.append(one_configuration(n, args.students, args.seconds, args.timeout))
        c = configs[-1]
        print(
            f"  requests {c['requests']}, errors {c['errors']}, wrong {c['wrong_numbers']}/{c['results_checked']},"
            f" cached p95 {fmt(c['cached']['p95_s'])} s, new p95 {fmt(c['new']['p95_s'])} s,"
            f" cores busy {c['cores_busy']:.2f}",
            flush=True,
        )
    import platform

    record = {
        "command": "python benchmarks/classroom.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "configurations": configs,
        "verdict": verdict(configs, args.students),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "classroom.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    (args.out / "classroom.md").write_text(markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()

"""Scale benchmark: time and measured peak memory of the blocked influence scoring as n_train and n_test grow,
sequential against a local Dask cluster, with log-log growth exponents and the query / forward+backward ratio.

What is measured, per MNIST-1D size (``--sizes`` = num_samples; 80% are training points, generated locally):

- the model: the default MLP (hidden 64, tanh), trained briefly with the package's deterministic trainer; the
  Hessian: Gauss-Newton on a uniform random sample of ``--m`` training points, exact solver (formed and factorised
  once, outside every timing: "model and sampler cached");
- ``seq``: ``calc.scores`` for the first n_test test points against all training points, sequential executor, torch
  with ``--threads`` intra-op threads (0 = torch's default, all cores), scores kept in memory;
- ``disk``: the same with the scores written block by block to a ``.npy`` file (``out=``), the bounded-memory mode;
- ``dask``: the same on a ``LocalCluster`` of ``--workers`` single-threaded worker processes started in the
  measuring process (the problem is scattered to the workers inside the timed call; cluster start-up and the
  workers' first imports are warmed up before it);
- ``query``: one test point against all training points divided by one forward+backward pass over the whole
  training set (summed cross-entropy, ``.backward()``), both timed in the same process.

Every configuration runs in a fresh child process (:func:`influence_core.bench.common.peak_memory`): the peak
resident memory (VmHWM) of that process while it scores is the memory column; its baseline (interpreter, torch,
model, data and factorised Hessian, measured after a warm-up block) is reported beside it. For ``dask`` the
workers' own peaks are reported too. Timings are the median of ``--repeats`` calls for small configurations and a
single call once a configuration takes more than 20 s. The machine is shared with other work, so the reported time is
the *best* of the repeats (the least-disturbed run; the median is shown beside it) and the query ratio uses the best
of 10 calls of each side. Growth exponents are least-squares slopes of the best times in log-log space.

Run: ``flock /tmp/influence-bench.lock python -m influence_core bench scale --out docs/scale/scale``
"""

from __future__ import annotations

import argparse
import functools
import os
import pickle
import tempfile
import time
from typing import Any

import numpy as np

from influence_core.bench.common import (
    check_report_paths,
    command_line,
    environment,
    format_table,
    peak_memory,
    peak_rss_bytes,
    time_call,
    write_report,
)

DEFAULT_SIZES = (5_000, 20_000, 80_000)
DEFAULT_N_TEST = (64, 256, 1000)
QUICK_SIZES = (500, 1_000)
QUICK_N_TEST = (4,)
MiB = 2**20

_STATE: dict[str, Any] = {}  # the loaded problem inside a measuring child


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help=f"MNIST-1D num_samples (n_train = 0.8 x); default {' '.join(map(str, DEFAULT_SIZES))}",
    )
    parser.add_argument(
        "--n-test",
        type=int,
        nargs="+",
        default=None,
        help=f"numbers of test points; default {' '.join(map(str, DEFAULT_N_TEST))}",
    )
    parser.add_argument("--test-chunk-size", type=int, default=128, help="test points per block")
    parser.add_argument("--train-chunk-size", type=int, default=2048, help="training points per block")
    parser.add_argument(
        "--workers", type=int, default=2, help="local Dask worker processes (single-threaded); 0 skips the Dask runs"
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the Dask rows on this running cluster (tcp://host:8786) instead of a LocalCluster",
    )
    parser.add_argument(
        "--dask-n-test",
        type=int,
        nargs="+",
        default=None,
        help="n_test values also run on Dask and on disk (default: the largest n_test)",
    )
    parser.add_argument("--m", type=int, default=512, help="Hessian sample size (uniform random)")
    parser.add_argument("--damping", type=float, default=0.01, help="δ added to the Gauss-Newton Hessian")
    parser.add_argument("--epochs", type=int, default=2, help="Adam epochs of the (brief) training per size")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads of the sequential runs (0 = torch's default: all cores)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed calls per configuration (best and median reported); 1 for configurations over 20 s",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny smoke run: sizes 500 and 1000, n_test 4, 1 repeat, tiny MLP, sequential only "
        "(add --workers N / --dask-n-test to include Dask and disk runs)",
    )
    parser.add_argument("--out", default=None, help="write a report: PATH.md, PATH.json, or PATH (both)")


# ---------------------------------------------------------------------------------------------------- in the child
def _load(state_path: str, threads: int) -> None:
    """Child set-up (before the memory baseline): load the fitted problem and warm the kernels up on one block."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    with open(state_path, "rb") as fh:
        saved = pickle.load(fh)
    calc = saved["calc"]
    _STATE.update(calc=calc, X_test=saved["X_test"], y_test=saved["y_test"])
    calc.scores(saved["X_test"][:1], saved["y_test"][:1], train_indices=np.arange(min(calc.n, 64)))


def _score(
    mode: str,
    n_test: int,
    test_chunk: int,
    train_chunk: int,
    workers: int,
    repeats: int,
    out_dir: str,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """One configuration, timed, inside the measuring child."""
    calc, X, y = _STATE["calc"], _STATE["X_test"][:n_test], _STATE["y_test"][:n_test]
    info: dict[str, Any] = {}
    executor = None
    cluster = client = None
    if mode == "dask":
        import distributed

        from influence_core.influence.executors import DaskExecutor

        if scheduler:
            executor = DaskExecutor(address=scheduler)
            client = executor.client
        else:
            cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = distributed.Client(cluster, set_as_default=False)
            executor = client
        info["dask_workers"] = len(client.scheduler_info(n_workers=-1)["workers"])
        calc.scores(X[:1], y[:1], train_indices=np.arange(min(calc.n, 64)), executor=executor)  # workers import
    out = os.path.join(out_dir, f"scores-{os.getpid()}.npy") if mode == "disk" else None

    def call() -> None:
        calc.scores(
            X, y, test_chunk_size=test_chunk, train_chunk_size=train_chunk, executor=executor, out=out, resume=False
        )

    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    timing = time_call(call, repeats=repeats - 1, warmup=0) if repeats > 1 and first <= 20 else None
    values = [first] + (timing.values if timing else [])
    info["seconds"] = float(min(values))  # the least-disturbed run on a shared machine
    info["median_seconds"] = float(np.median(values))
    info["runs"] = len(values)
    info["blocks"] = calc.last_scoring.blocks
    if client is not None:
        info["worker_peak_bytes"] = max(client.run(peak_rss_bytes).values())
        client.close()
        if cluster is not None:
            cluster.close()
    if out:
        os.unlink(out)
        os.unlink(out + ".manifest")
    return info


def _query(repeats: int) -> dict[str, Any]:
    """One test point against all training points, and one forward+backward pass over the training set."""
    import torch
    from torch.nn import functional as F

    calc = _STATE["calc"]
    obj = calc.objective
    X1, y1 = _STATE["X_test"][:1], _STATE["y_test"][:1]
    model = obj.model

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(obj.X), obj.y, reduction="sum").backward()

    def query() -> None:
        calc.scores(X1, y1)

    t_fb = time_call(fwd_bwd, repeats=repeats, warmup=1)
    t_q = time_call(query, repeats=repeats, warmup=1)
    model.zero_grad(set_to_none=True)
    return {
        "fwd_bwd_seconds": t_fb.min,
        "query_seconds": t_q.min,
        "fwd_bwd_median": t_fb.median,
        "query_median": t_q.median,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------- the parent
def _prepare(
    num_samples: int, args: argparse.Namespace, tmp: str, training: dict[str, Any], log: Any
) -> dict[str, Any]:
    """Generate, train, sample and fit once per size; save the fitted problem for the children."""
    from influence_core import InfluenceCalculator, load_dataset, train_model
    from influence_core.sampling.subsets import sample_hessian_subset

    start = time.perf_counter()
    ds = load_dataset("mnist1d", seed=args.seed, num_samples=num_samples)
    model = train_model(ds, "mlp", seed=args.seed, **training)
    trained = time.perf_counter()
    sample = sample_hessian_subset(model, ds, "random", min(args.m, ds.n_train), seed=args.seed)
    calc = InfluenceCalculator(model, ds.X_train, ds.y_train, chunk_size=args.train_chunk_size)
    calc.fit(sample, solver="exact", damping=args.damping, curvature="gauss_newton")
    n_test = max(args.n_test)
    if n_test > ds.n_test:
        raise ValueError(f"--n-test {n_test} exceeds the {ds.n_test} test points of mnist1d at {num_samples}")
    path = os.path.join(tmp, f"problem-{num_samples}.pkl")
    with open(path, "wb") as fh:
        pickle.dump({"calc": calc, "X_test": ds.X_test[:n_test], "y_test": ds.y_test[:n_test]}, fh)
    report = model.training_report
    log(
        f"mnist1d {num_samples}: n_train={ds.n_train}, p={calc.objective.n_params}, test accuracy "
        f"{report['test_accuracy']:.3f}, trained in {trained - start:.1f} s, "
        f"Hessian fitted in {calc.fit_seconds:.1f} s"
    )
    return {
        "path": path,
        "n_train": ds.n_train,
        "p": calc.objective.n_params,
        "train_accuracy": report["train_accuracy"],
        "test_accuracy": report["test_accuracy"],
        "fit_seconds": calc.fit_seconds,
    }


def _slope(x: list[float], y: list[float]) -> float | None:
    if len(x) < 2 or len(set(x)) < 2:
        return None
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _measure(state: dict[str, Any], mode: str, n_test: int, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    mem = peak_memory(
        _score,
        mode,
        n_test,
        args.test_chunk_size,
        args.train_chunk_size,
        args.workers,
        args.repeats,
        tmp,
        args.scheduler,
        setup=functools.partial(_load, state["path"], args.threads),
    )
    row = {
        "mode": mode,
        "n_train": state["n_train"],
        "n_test": n_test,
        **mem.result,
        "peak_mib": mem.peak_bytes / MiB,
        "baseline_mib": mem.baseline_bytes / MiB,
        "extra_mib": mem.extra_bytes / MiB,
    }
    row["us_per_pair"] = 1e6 * row["seconds"] / (state["n_train"] * n_test)
    if "worker_peak_bytes" in row:
        row["worker_peak_mib"] = row.pop("worker_peak_bytes") / MiB
    return row


def run(args: argparse.Namespace) -> int:
    check_report_paths(args.out)  # before the benchmark, not after it
    if args.quick:
        args.sizes = args.sizes or list(QUICK_SIZES)
        args.n_test = args.n_test or list(QUICK_N_TEST)
        args.repeats = 1
        args.m = min(args.m, 64)
        args.test_chunk_size = min(args.test_chunk_size, 4)
        args.train_chunk_size = min(args.train_chunk_size, 256)
        if args.dask_n_test is None and args.workers == 2:  # the default: no Dask or disk runs in a smoke test
            args.workers, args.dask_n_test = 0, []
        training: dict[str, Any] = {"hidden": (8,), "epochs": 1, "polish_steps": 0}
    else:
        args.sizes = args.sizes or list(DEFAULT_SIZES)
        args.n_test = args.n_test or list(DEFAULT_N_TEST)
        training = {"epochs": args.epochs, "batch_size": 256, "polish_steps": 0}
    for name in ("test_chunk_size", "train_chunk_size", "m", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers < 0 or args.threads < 0:
        raise ValueError("--workers and --threads must be >= 0")
    if min(args.sizes) < 20 or min(args.n_test) < 1:
        raise ValueError("--sizes must be >= 20 and --n-test >= 1")
    args.sizes = sorted(set(args.sizes))
    args.n_test = sorted(set(args.n_test))
    extra_n_test = sorted(set([max(args.n_test)] if args.dask_n_test is None else args.dask_n_test))
    log = print
    env = environment()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    queries: list[dict[str, Any]] = []
    prepared: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="influence-scale-") as tmp:
        for size in args.sizes:
            state = _prepare(size, args, tmp, training, log)
            prepared.append({k: v for k, v in state.items() if k != "path"} | {"num_samples": size})
            for n_test in args.n_test:
                rows.append(_measure(state, "seq", n_test, args, tmp))
                log(_row_text(rows[-1]))
            for n_test in extra_n_test:
                rows.append(_measure(state, "disk", n_test, args, tmp))
                log(_row_text(rows[-1]))
                if args.workers or args.scheduler:
                    rows.append(_measure(state, "dask", n_test, args, tmp))
                    log(_row_text(rows[-1]))
            q = peak_memory(_query, max(args.repeats, 10), setup=functools.partial(_load, state["path"], args.threads))
            queries.append(
                {
                    "n_train": state["n_train"],
                    **q.result,
                    "ratio": q.result["query_seconds"] / q.result["fwd_bwd_seconds"],
                }
            )
            log(
                f"  query {queries[-1]['query_seconds'] * 1e3:.1f} ms / fwd+bwd "
                f"{queries[-1]['fwd_bwd_seconds'] * 1e3:.1f} ms = {queries[-1]['ratio']:.2f}"
            )
    total = time.perf_counter() - started
    summary = summarise(rows, queries, args)
    env["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print()
    print(format_table(rows, ROW_COLUMNS))
    print()
    print(format_table(queries, QUERY_COLUMNS))
    print()
    print(format_table(summary, SUMMARY_COLUMNS))
    print(f"\ntotal {total:.0f} s")
    if args.out:
        meta = {
            "environment": env,
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
            "prepared": prepared,
            "total_seconds": total,
        }
        sections = [
            {"heading": "Targets", "rows": summary, "columns": SUMMARY_COLUMNS},
            {
                "heading": "Scoring runs",
                "rows": rows,
                "columns": ROW_COLUMNS,
                "text": "seq: sequential, scores in memory; disk: sequential, scores written to a .npy file; dask: "
                + (
                    f"the cluster at {args.scheduler}"
                    if args.scheduler
                    else f"LocalCluster of {args.workers} single-threaded workers"
                )
                + ", scores in memory. Peak = VmHWM of the measuring process while scoring; baseline = its RSS "
                "before (torch, model, data, factorised Hessian); workers' peaks are whole-life.",
            },
            {"heading": "Influence query vs one forward+backward pass", "rows": queries, "columns": QUERY_COLUMNS},
            {"heading": "Models", "rows": prepared, "columns": PREP_COLUMNS},
        ]
        for path in write_report(
            args.out,
            title="Scale: blocked scoring, sequential vs Dask",
            command=command_line(),
            sections=sections,
            meta=meta,
        ):
            print(f"wrote {path}")
    return 0


ROW_COLUMNS = [
    ("mode", "mode"),
    ("dask_workers", "workers"),
    ("n_train", "n_train"),
    ("n_test", "n_test"),
    ("blocks", "blocks"),
    ("seconds", "best s"),
    ("median_seconds", "median s"),
    ("us_per_pair", "µs / pair (best)"),
    ("runs", "runs"),
    ("peak_mib", "peak MiB"),
    ("baseline_mib", "baseline MiB"),
    ("extra_mib", "scoring MiB"),
    ("worker_peak_mib", "worker peak MiB"),
]
QUERY_COLUMNS = [
    ("n_train", "n_train"),
    ("fwd_bwd_seconds", "fwd+bwd s (best)"),
    ("query_seconds", "query s (best)"),
    ("ratio", "query / fwd+bwd"),
    ("fwd_bwd_median", "fwd+bwd median"),
    ("query_median", "query median"),
    ("threads", "threads"),
]
SUMMARY_COLUMNS = [("quantity", "quantity"), ("value", "measured"), ("target", "target"), ("met", "met")]
PREP_COLUMNS = [
    ("num_samples", "num_samples"),
    ("n_train", "n_train"),
    ("p", "p"),
    ("train_accuracy", "train acc"),
    ("test_accuracy", "test acc"),
    ("fit_seconds", "fit s"),
]


def _row_text(row: dict[str, Any]) -> str:
    extra = f", workers peak {row['worker_peak_mib']:.0f} MiB" if "worker_peak_mib" in row else ""
    return (
        f"  {row['mode']:4s} n_train={row['n_train']:6d} n_test={row['n_test']:4d}: {row['seconds']:7.2f} s, "
        f"peak {row['peak_mib']:.0f} MiB (baseline {row['baseline_mib']:.0f}){extra}"
    )


def summarise(
    rows: list[dict[str, Any]],
    queries: list[dict[str, Any]],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """Growth exponents, memory growth and Dask overhead, each against its target."""
    out: list[dict[str, Any]] = []
    seq = [r for r in rows if r["mode"] == "seq"]

    def pick(mode: str, n_train: int, n_test: int) -> dict[str, Any] | None:
        return next((r for r in rows if (r["mode"], r["n_train"], r["n_test"]) == (mode, n_train, n_test)), None)

    joint = _slope([r["n_train"] * r["n_test"] for r in seq], [r["seconds"] for r in seq])
    out.append(
        {
            "quantity": "time exponent in n_train x n_test (all seq runs)",
            "value": joint,
            "target": "1.0 ± 0.15",
            "met": None if joint is None else abs(joint - 1) <= 0.15,
        }
    )
    n_trains = sorted({r["n_train"] for r in seq})
    for n_test in args.n_test:
        rs = [r for r in seq if r["n_test"] == n_test]
        s = _slope([r["n_train"] for r in rs], [r["seconds"] for r in rs])
        out.append(
            {
                "quantity": f"time exponent in n_train (n_test={n_test})",
                "value": s,
                "target": "1.0 ± 0.15",
                "met": None if s is None else abs(s - 1) <= 0.15,
            }
        )
    for n_train in n_trains:
        rs = [r for r in seq if r["n_train"] == n_train]
        s = _slope([r["n_test"] for r in rs], [r["seconds"] for r in rs])
        out.append(
            {
                "quantity": f"time exponent in n_test (n_train={n_train})",
                "value": s,
                "target": "1.0 ± 0.15",
                "met": None if s is None else abs(s - 1) <= 0.15,
            }
        )
    if len(n_trains) >= 2:
        a, b = n_trains[0], n_trains[-1]
        for mode in ("disk", "seq", "dask"):
            for n_test in sorted({r["n_test"] for r in rows if r["mode"] == mode}):
                ra, rb = pick(mode, a, n_test), pick(mode, b, n_test)
                if ra and rb:
                    growth = rb["peak_mib"] / ra["peak_mib"] - 1
                    what = {"disk": "scores on disk", "seq": "scores in memory", "dask": "Dask client"}[mode]
                    out.append(
                        {
                            "quantity": f"peak memory growth {a} -> {b} ({what}, n_test={n_test})",
                            "value": f"{100 * growth:+.1f}% ({ra['peak_mib']:.0f} -> {rb['peak_mib']:.0f} MiB)",
                            "target": "< 20%",
                            "met": growth < 0.20,
                        }
                    )
    for r in rows:
        if r["mode"] == "dask":
            s = pick("seq", r["n_train"], r["n_test"])
            if s:
                overhead = r["seconds"] / s["seconds"] - 1
                out.append(
                    {
                        "quantity": f"Dask ({r.get('dask_workers', args.workers)} workers) time / sequential - 1 "
                        f"(n_train={r['n_train']}, n_test={r['n_test']})",
                        "value": f"{100 * overhead:+.1f}%",
                        "target": "<= +25% at the largest n_train" if r["n_train"] == max(n_trains) else "—",
                        "met": overhead <= 0.25 if r["n_train"] == max(n_trains) else None,
                    }
                )
    for q in queries:
        out.append(
            {"quantity": f"query / fwd+bwd (n_train={q['n_train']})", "value": q["ratio"], "target": "—", "met": None}
        )
    return out

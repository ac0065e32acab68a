"""The field's attribution methods (dattri 0.3.0: TRAK with 1 and several checkpoints, TracIn, Grad-Dot, its
influence-function attributors) beside ours, scored by this project's LDS on the same retrained outputs and test
points as the LDS studies (docs/LDS.md), with cost as a ratio to one forward+backward pass over the training set
measured in the same process, and peak memory.

    python benchmarks/field_compare.py --config digits:mlp --dattri-python /tmp/dattri-venv/bin/python \\
        --cache runs/lds-cache --out docs/field/digits_mlp

dattri runs in its own environment (``influence_core/bench/dattri_side.py``); arrays travel as .npz/JSON
(:mod:`influence_core.bench.field`). Hold the bench lock (``flock /tmp/influence-bench.lock ...``).

Models: the studied model is ``train_model(dataset, arch, seed)`` (the LDS study's), or with ``--ground-truth`` the
file's recipe (the mnist5k CNN's cosine schedule); TRAK's extra checkpoints are the same recipe with seeds 1, 2, …;
TracIn's checkpoints are the studied run's Adam iterates after the given epochs (copied along the run by
``train_model``'s ``on_epoch`` hook) plus the final polished model, each weighted by the recipe's learning rate
(equal weights, also under a cosine schedule). Cost: ``seconds`` is dattri's ``cache`` + ``attribute`` (ours: fit
+ scores of the test points); the extra models a TRAK ensemble needs are timed in this process and added in their
own column (TracIn's checkpoints are saved along the one training run, free).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence_core.bench.common import environment, format_table, time_call, torch_threads, write_report  # noqa: E402
from influence_core.bench.field import (  # noqa: E402
    COLUMNS,
    agreement,
    read_result,
    table_rows,
    to_project_convention,
    write_problem,
)

SIDE = Path(__file__).resolve().parents[1] / "influence_core" / "bench" / "dattri_side.py"
IF_DEFAULT = ["explicit", "cg", "lissa", "arnoldi", "ekfac", "datainf"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="digits:mlp", help="DATASET:ARCH (mlp or logreg)")
    p.add_argument("--dattri-python", required=True, help="python of the side environment with dattri 0.3.0")
    p.add_argument("--test-points", type=int, default=100, help="test points (drawn with --test-seed, as lds score)")
    p.add_argument("--test-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="split and training seed of the studied model")
    p.add_argument("--damping", type=float, default=0.01, help="δ (dattri's damping = wd + δ)")
    p.add_argument("--trak-checkpoints", type=int, nargs="*", default=[1, 5, 10], help="TRAK ensemble sizes")
    p.add_argument("--trak-proj-dim", type=int, nargs="+", default=[512], help="TRAK projection dimensions")
    p.add_argument(
        "--tracin-epochs",
        type=int,
        nargs="*",
        default=[10, 20, 30, 40],
        help="Adam epochs after which TracIn's checkpoints are taken (plus the final model)",
    )
    p.add_argument(
        "--if-methods", nargs="*", default=IF_DEFAULT, choices=IF_DEFAULT, help="dattri influence-function attributors"
    )
    p.add_argument("--cg-max-iter", type=int, default=100)
    p.add_argument(
        "--cg-test-batch",
        type=int,
        default=10,
        help="test points per dattri CG call (its CG runs vmapped over them; memory grows with it)",
    )
    p.add_argument("--lissa-depth", type=int, default=1000, help="LiSSA recursion depth")
    p.add_argument("--lissa-batch", type=int, default=64)
    p.add_argument("--lissa-scaling", type=float, default=50.0)
    p.add_argument(
        "--lissa-test-batch",
        type=int,
        default=5,
        help="test points per dattri LiSSA call (vmapped over them; memory grows with it)",
    )
    p.add_argument(
        "--max-side-mb",
        type=float,
        default=12000,
        help="stop a dattri method whose process passes this resident memory (MB); reported as stopped",
    )
    p.add_argument("--max-side-seconds", type=float, default=600, help="stop a dattri method running longer")
    p.add_argument("--arnoldi-rank", type=int, default=100)
    p.add_argument(
        "--ours",
        nargs="*",
        default=["exact", "ekfac", "ekfac:fisher=empirical"],
        help="our full-data solvers beside theirs, SOLVER[:OPTION=VALUE,...]",
    )
    p.add_argument("--cache", default="runs/lds-cache", help="LDS retrain cache (retrains what is missing)")
    p.add_argument(
        "--ground-truth",
        default=None,
        help="also score against a shipped ground-truth file (ground_truth/NAME.npz, same test points)",
    )
    p.add_argument("--workers", type=int, default=None, help="retrain missing subsets on N Dask workers")
    p.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    p.add_argument("--save-scores", default=None, help="directory for the converted score matrices (.npz)")
    p.add_argument("--out", default=None, help="report stem (.md + .json)")


def _train(ds: Any, arch: str, seed: int, **settings: Any) -> Any:
    from influence_core import train_model

    if arch == "logreg":
        settings.setdefault("dtype", "float64")
    return train_model(ds, arch, seed=seed, **settings)


def _recipe_settings(args: argparse.Namespace, data_name: str, arch: str) -> dict[str, Any]:
    """The training settings of the studied model: the ground truth's recipe when ``--ground-truth`` is given (so
    the model is the one its retrains start from), else ``train_model``'s defaults."""
    if not args.ground_truth:
        return {}
    from influence_core.evaluation.ground_truth import shipped_recipe

    recipe = shipped_recipe(args.ground_truth)
    if recipe is None:
        raise ValueError(f"--ground-truth {args.ground_truth}: no readable ground-truth file there")
    got = (recipe["dataset"]["name"], recipe["model"]["arch"], int(recipe["model"]["seed"]))
    if got != (data_name, arch, args.seed):
        raise ValueError(
            f"--ground-truth {args.ground_truth} is for {got[0]}:{got[1]} (seed {got[2]}), not --config "
            f"{data_name}:{arch} (--seed {args.seed}); pass the matching --config"
        )
    return dict(recipe["model"]["train_settings"])


def _state(model: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}  # a copy: training goes on


def _ours(model: Any, ds: Any, idx: np.ndarray, damping: float, solvers: list[str]) -> list[dict[str, Any]]:
    from influence_core.evaluation.memory import PeakMemory
    from influence_core.studies.lds import full_data_scores, gradient_dot_scores

    out = []
    for spec in solvers:
        solver, _, opts = spec.partition(":")
        options = dict(o.split("=", 1) for o in opts.split(",") if o)
        with PeakMemory() as peak:
            start = time.perf_counter()
            used, S = full_data_scores(model, ds, idx, solver, damping=damping, options=options or None)
            seconds = time.perf_counter() - start
        label = {"exact": "exact Gauss-Newton", "cg": "CG Gauss-Newton", "ekfac": "EK-FAC"}.get(used, used)
        label += f" ({', '.join(f'{k} {v}' for k, v in options.items())})" if options else ""
        out.append(
            {
                "method": f"ours: full-data {label}",
                "library": "influence_core",
                "reference": used == "exact",
                "checkpoints": 1,
                "scores": S,
                "seconds": seconds,
                "peak_mb": peak.mb,
                "side": "main",
            }
        )
    with PeakMemory() as peak:
        start = time.perf_counter()
        S = gradient_dot_scores(model, ds, idx)
        seconds = time.perf_counter() - start
    out.append(
        {
            "method": "ours: gradient dot",
            "library": "influence_core",
            "checkpoints": 1,
            "scores": S,
            "seconds": seconds,
            "peak_mb": peak.mb,
            "side": "main",
        }
    )
    return out


def _methods(args: argparse.Namespace, wd: float, lr: float) -> tuple[list[dict[str, Any]], list[int]]:
    lam = wd + args.damping
    methods: list[dict[str, Any]] = []
    seeds = list(range(args.seed + 1, args.seed + max(args.trak_checkpoints or [1])))
    for k in args.trak_checkpoints:
        for d in args.trak_proj_dim:
            methods.append(
                {
                    "name": f"TRAK, {k} checkpoint{'s' if k > 1 else ''}, proj {d}",
                    "kind": "trak",
                    "proj_dim": d,
                    "batch_size": 256,
                    "checkpoints": ["final"] + [f"seed{s}" for s in seeds[: k - 1]],
                }
            )
    if args.tracin_epochs:
        ckpts = [f"epoch{e}" for e in args.tracin_epochs] + ["final"]
        methods.append(
            {
                "name": f"TracIn, {len(ckpts)} checkpoints along training",
                "kind": "tracin",
                "weights": [lr] * len(ckpts),
                "checkpoints": ckpts,
                "batch_size": 256,
            }
        )
    methods.append(
        {
            "name": "Grad-Dot (TracIn on the final model)",
            "kind": "grad_dot",
            "weights": [1.0],
            "checkpoints": ["final"],
            "batch_size": 256,
        }
    )
    for kind in args.if_methods:
        m: dict[str, Any] = {"name": f"IF {kind}", "kind": kind, "damping": lam}
        if kind == "cg":
            m.update(
                max_iter=args.cg_max_iter,
                tol=1e-7,
                test_batch=args.cg_test_batch,
                name=f"IF cg ({args.cg_max_iter} iterations)",
            )
        elif kind == "lissa":
            m.update(
                recursion_depth=args.lissa_depth,
                lissa_batch=args.lissa_batch,
                scaling=args.lissa_scaling,
                test_batch=args.lissa_test_batch,
                name=f"IF lissa (depth {args.lissa_depth}, batch {args.lissa_batch})",
            )
        elif kind == "arnoldi":
            m.update(
                proj_dim=args.arnoldi_rank,
                max_iter=max(args.arnoldi_rank * 2, 200),
                name=f"IF arnoldi (rank {args.arnoldi_rank})",
            )
        elif kind == "ekfac":
            m["name"] = "IF ekfac (empirical Fisher)"
        methods.append(m)
    return methods, seeds


def run(args: argparse.Namespace) -> int:
    import torch

    from influence_core import load_dataset
    from influence_core.evaluation.lds import RetrainPlan, lds, retrain_outputs
    from influence_core.influence.executors import get_executor

    data_name, _, arch = args.config.partition(":")
    with torch_threads(args.threads):
        env = environment()
        settings_ = _recipe_settings(args, data_name, arch)
        ds = load_dataset(data_name, seed=args.seed)
        checkpoints: dict[str, Any] = {}

        def keep_iterate(epoch: int, m: Any) -> None:  # TracIn's checkpoints, along the studied run
            if epoch in args.tracin_epochs:
                checkpoints[f"epoch{epoch}"] = _state(m)

        model = _train(ds, arch, args.seed, on_epoch=keep_iterate, **settings_)
        missing = [e for e in args.tracin_epochs if f"epoch{e}" not in checkpoints]
        if missing:
            raise ValueError(
                f"--tracin-epochs {missing}: the model trains {model.training_config['epochs']} Adam epochs; "
                "pass epochs within them"
            )
        idx = np.sort(np.random.default_rng(args.test_seed).choice(ds.n_test, args.test_points, replace=False))
        X, y = torch.as_tensor(ds.X_train), torch.as_tensor(ds.y_train)
        model = model.to(next(model.parameters()).dtype)

        def forward_backward() -> None:
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(
                model(X.to(next(model.parameters()).dtype)), y, reduction="sum"
            ).backward()

        base_main = time_call(forward_backward, repeats=7).median
        model.zero_grad(set_to_none=True)
        wd = float(model.weight_decay)
        records = _ours(model, ds, idx, args.damping, args.ours)
        exact = next((r["scores"] for r in records if r.get("reference")), None)
        methods, seeds = _methods(args, wd, float(model.training_config["lr"]))
        train_seconds: dict[str, float] = {}
        for s in seeds:
            start = time.perf_counter()
            checkpoints[f"seed{s}"] = _state(_train(ds, arch, s, **settings_))
            train_seconds[f"seed{s}"] = time.perf_counter() - start
        dtype = "float64" if next(model.parameters()).dtype == torch.float64 else "float32"
        settings = {
            "arch": "mlp" if arch == "logreg" else arch,
            "methods": methods,
            "dtype": dtype,
            "threads": args.threads,
            "seed": args.seed,
            "max_rss_mb": args.max_side_mb,
            "max_seconds": args.max_side_seconds,
            "image_shape": list(ds.image_shape) if ds.image_shape else None,
        }
        with tempfile.TemporaryDirectory() as tmp:
            write_problem(
                tmp,
                weights=model.state_dict(),
                X_train=ds.X_train,
                y_train=ds.y_train,
                X_query=ds.X_test[idx],
                y_query=ds.y_test[idx],
                settings=settings,
                checkpoints=checkpoints,
            )
            print(f"[field] running {len(methods)} dattri methods in {args.dattri_python}", flush=True)
            subprocess.run([args.dattri_python, str(SIDE), tmp], check=True, env={**os.environ, "TQDM_DISABLE": "1"})
            raw, report = read_result(tmp)
        for m in methods:
            row = report["rows"][m["name"]]
            rec = {
                "method": m["name"],
                "library": f"dattri {report.get('dattri')}",
                "checkpoints": len(m.get("checkpoints", ["final"])),
                "side": "dattri",
                "error": row["error"],
                "seconds": row.get("seconds"),
                "peak_mb": row.get("peak_mb"),
            }
            if m["kind"] == "trak":
                rec["train_seconds"] = sum(train_seconds[c] for c in m["checkpoints"] if c != "final")
            if row["error"] is None:
                rec["scores"] = to_project_convention(raw[m["name"]], m["kind"], ds.n_train)
            records.append(rec)
        with get_executor(workers=args.workers) as ex:
            retrained = retrain_outputs(model, ds, RetrainPlan(), cache_dir=args.cache, executor=ex)
    gt = None
    if args.ground_truth:
        from influence_core.bench.field import read_ground_truth
        from influence_core.evaluation.lds import linear_datamodeling_score, output_values

        gt = read_ground_truth(args.ground_truth)
        if not np.array_equal(gt["test_indices"], idx):
            raise ValueError(
                f"--ground-truth {args.ground_truth} holds other test points than --test-points/"
                "--test-seed choose; use its own (the LDS studies': 100 points, seed 0)"
            )
        gt_outputs = output_values(gt["logits"], gt["y_test"], "loss")
    for r in records:
        if "scores" in r and gt is not None:
            r["lds_gt"] = linear_datamodeling_score(r["scores"], gt["masks"], gt_outputs)["lds"]
        if "scores" in r:
            result = lds(r["scores"], retrained, idx, "loss")
            r.update(lds=result.lds, lds_std=float(np.nanstd(result.per_test)), ceiling=result.ceiling)
            if exact is not None:
                r.update(agreement(exact, r["scores"]))
    env["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    rows = table_rows(records, {"main": base_main, "dattri": report["forward_backward_seconds"]})
    print(format_table(rows, COLUMNS))
    errors = {r["method"]: r["error"] for r in records if r.get("error")}
    if args.save_scores:
        Path(args.save_scores).mkdir(parents=True, exist_ok=True)
        kept = [r for r in records if "scores" in r]
        np.savez(
            Path(args.save_scores) / f"{data_name}_{arch}_scores.npz",
            test_indices=idx,
            names=np.array(json.dumps([r["method"] for r in kept])),
            **{f"m{i}": r["scores"] for i, r in enumerate(kept)},
        )
    if args.out:
        info = retrained.info
        text = (
            f"{data_name} / {arch}: {len(idx)} test points (seed {args.test_seed}), LDS on K = "
            f"{retrained.plan.n_subsets} subsets of α = {retrained.plan.alpha}, R = {retrained.plan.n_seeds} "
            f"retrain seeds, output loss (cache key {info['cache_key']}; noise ceiling "
            f"{records[0].get('ceiling', float('nan')):.3f}). δ = {args.damping} (dattri's damping = wd + δ = "
            f"{wd + args.damping:g}). Cost: seconds of fit + scores of all test points against all training "
            "points over one forward+backward pass over the training set, each measured in the process that "
            f"ran the method (ours: {base_main * 1e3:.2f} ms; dattri's side: "
            f"{report['forward_backward_seconds'] * 1e3:.2f} ms); the next column adds the training of the "
            "extra models a TRAK ensemble needs. Peak MB: resident memory the method added (VmHWM after a "
            "reset). Agreement: mean over test points of the correlation with our exact Gauss-Newton influence. "
            f"torch threads {args.threads} on both sides." + (f" Failed: {errors}." if errors else "")
        )
        write_report(
            args.out,
            title=f"The field's attribution methods on the LDS ground truth: {data_name} / {arch}",
            command="python benchmarks/field_compare.py " + " ".join(sys.argv[1:]),
            sections=[{"heading": "LDS, cost and agreement", "text": text, "rows": rows, "columns": COLUMNS}],
            meta={
                "environment": env,
                "args": vars(args),
                "side": {k: v for k, v in report.items() if k != "rows"},
                "side_rows": report["rows"],
                "methods": methods,
                "test_indices": idx.tolist(),
                "retrain": retrained.info,
                "train_seconds": train_seconds,
            },
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

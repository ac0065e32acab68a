"""``python -m influence_core bench resnet``: a paper-scale model through the public API.

ResNet-18 adapted to 28x28 single-channel digits (``build_model(arch="resnet18")``: 3x3 stride-1 stem, no
max-pool, 11,172,810 parameters at width 64) is trained on mnist5k by :func:`influence_core.train_model`, then
every step below runs through the top-level names of :mod:`influence_core` and is timed (wall clock, with
``torch.cuda.synchronize`` on a GPU) and its peak memory measured in this process
(:class:`~influence_core.evaluation.memory.PeakMemory`: resident memory the step added; on CUDA also
``torch.cuda.max_memory_allocated`` above the allocation before):

1. training (Adam, no L-BFGS polish: one full-batch gradient of the 11M-parameter objective is timed on a chunk of
   training points and extrapolated, which shows why; the recorded gradient norm is NaN with ``polish: skipped``);
2. the sampler inputs (logits and penultimate features of every training point);
3. the influence query: a few test points against all training points (``InfluenceCalculator``: Hessian sample,
   fit, iHVPs, forward-mode scoring), with its time as a ratio to one forward+backward pass per training point;
4. class removal (``ClassRemoval``) with CG and with LiSSA on a sampled Gauss-Newton Hessian, then every
   registered sampler at a few m with LiSSA: time, peak memory, iterations, final residual, F1.

Influence is computed over the parameters named by ``--params`` (default ``layer4,head``: the last stage and the
head, 8,398,858 of the 11.2M parameters; ``all`` for every parameter); the others are held fixed, the model itself
is never changed. The default sizes keep the run to about 25 minutes on 2 CPU cores (see docs/RESNET18.md);
pass larger ones on a GPU. Writes ``resnet18.json`` (everything, with the configuration and the sampled indices)
and ``resnet18.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from influence_core.bench.common import command_line, environment, fmt, markdown_table
from influence_core.evaluation.memory import PeakMemory
from influence_core.io_safety import atomic_path, check_output_dir, jsonable
from influence_core.studies.output import write_json, write_text

__all__ = [
    "ResNetStudyConfig",
    "Measured",
    "run_study",
    "write_outputs",
    "markdown",
    "add_arguments",
    "run",
    "save_model",
    "load_model",
]


@dataclass(frozen=True)
class ResNetStudyConfig:
    """Sizes of the study (all recorded with the results). See the module doc for the steps.

    n_train / n_test: stratified subsets of mnist5k's 4000/1000 points (None = all; for smoke tests).
    width: ResNet-18 base width (64 = the standard model). epochs, batch_size, lr, weight_decay: Adam training.
    params: the parameters influence is computed over ("all", "last_layer" or comma-separated name prefixes).
    query_points: test points of the influence query (the first test point of classes 0, 1, ...).
    query_m, query_solver, query_iter: its Hessian sample (random), solver and iteration budget.
    removed_class, eval_test: class removal's class and the stratified test points its α path is evaluated on.
    alphas: the α path. samplers: None = every registered sampler. m: sample sizes of the sampler sweep.
    cg_iter / lissa_iter / power_iter: iteration budgets (CG; LiSSA and its power iteration for the scale).
    damping, curvature, tol: of every solve. probe_points: training points of the timed full-objective gradient.
    model_cache: an .npz file to load the trained model from (when its configuration matches) or save it to.
    """

    device: str = "auto"
    seed: int = 0
    n_train: int | None = None
    n_test: int | None = None
    width: int = 64
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    params: str = "layer4,head"
    chunk_size: int = 64
    query_points: int = 2
    query_m: int = 32
    query_solver: str = "cg"
    query_iter: int = 10
    removed_class: int = 0
    eval_test: int = 100
    alphas: tuple[float, ...] = (1.0, 16.0, 256.0)
    samplers: tuple[str, ...] | None = None
    m: tuple[int, ...] = (8, 16)
    cg_iter: int = 10
    lissa_iter: int = 10
    power_iter: int = 10
    damping: float = 0.01
    curvature: str = "gauss_newton"
    tol: float = 1e-3
    probe_points: int = 32
    model_cache: str | None = None

    def __post_init__(self) -> None:
        positive = (
            "width",
            "epochs",
            "batch_size",
            "chunk_size",
            "query_points",
            "query_m",
            "query_iter",
            "eval_test",
            "cg_iter",
            "lissa_iter",
            "power_iter",
            "probe_points",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 20):
                raise ValueError(f"{name} must be None (all points) or an integer >= 20 (2 per class), got {value!r}")
        if not self.m or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.m):
            raise ValueError(f"m must list positive sample sizes, got {self.m!r}")
        if not self.alphas or not all(math.isfinite(a) and a > 0 for a in self.alphas):
            raise ValueError(f"alphas must list positive step sizes, got {self.alphas!r}")
        for name in ("lr", "damping", "tol"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0) and not (name == "damping" and value == 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")

    def parameter_selection(self) -> Any:
        """``params`` as the engine takes it: None (all), "last_layer", or a list of name prefixes."""
        if self.params in ("all", ""):
            return None
        if self.params in ("last_layer", "last-layer"):
            return "last_layer"
        return [p.strip() for p in self.params.split(",") if p.strip()]


# ---------------------------------------------------------------------------------------------------- measuring
def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU; pass --device cpu (or auto)")
    return device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Measured:
    """Wall time and peak memory of a ``with`` block: ``seconds``, ``peak_rss_mb`` (resident memory the block added,
    NaN where unsupported) and, on CUDA, ``cuda_peak_mb`` (max allocated above the allocation before)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = float("nan")
        self.peak_rss_mb = float("nan")
        self.cuda_peak_mb: float | None = None
        self._memory = PeakMemory()

    def __enter__(self) -> "Measured":
        _sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._cuda_base = torch.cuda.memory_allocated(self.device)
        self._memory.__enter__()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        _sync(self.device)
        self.seconds = time.perf_counter() - self._start
        self._memory.__exit__(*exc)
        self.peak_rss_mb = self._memory.mb
        if self.device.type == "cuda":
            self.cuda_peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._cuda_base) / 2**20

    def record(self) -> dict[str, Any]:
        out = {"seconds": self.seconds, "peak_rss_mb": self.peak_rss_mb}
        if self.cuda_peak_mb is not None:
            out["cuda_peak_mb"] = self.cuda_peak_mb
        return out


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux/macOS
        return None


# ---------------------------------------------------------------------------------------------------- data
def _stratified(y: np.ndarray, total: int | None, n_classes: int) -> np.ndarray:
    """Indices of the first ceil(total / C) points of each class (all points when ``total`` is None), sorted."""
    if total is None or total >= len(y):
        return np.arange(len(y))
    per = -(-int(total) // n_classes)
    return np.sort(np.concatenate([np.flatnonzero(y == k)[:per] for k in range(n_classes)]))


def _subset(dataset: Any, train: np.ndarray, test: np.ndarray) -> Any:
    return dataclasses.replace(
        dataset,
        X_train=dataset.X_train[train],
        y_train=dataset.y_train[train],
        X_test=dataset.X_test[test],
        y_test=dataset.y_test[test],
        info={**dataset.info, "n_train": int(train.size), "n_test": int(test.size)},
    )


# ---------------------------------------------------------------------------------------------------- model cache
_TRAINING_KEYS = ("width", "epochs", "batch_size", "lr", "weight_decay", "seed")


def save_model(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Save a trained zoo model as ``.npz`` (the state dict's arrays plus a JSON record of its configuration and
    training report); read back by :func:`load_model` with ``allow_pickle=False``."""
    meta = {
        "training_config": getattr(model, "training_config", None),
        "training_report": getattr(model, "training_report", None),
        "weight_decay": getattr(model, "weight_decay", None),
    }
    arrays = {f"state/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(jsonable(meta))), **arrays)


def load_model(path: str | os.PathLike, dataset: Any, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A zoo model saved by :func:`save_model`, rebuilt for ``dataset`` and moved to ``device``."""
    from influence_core import build_model

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        state = {k[len("state/") :]: torch.from_numpy(np.array(data[k])) for k in data.files if k.startswith("state/")}
    cfg = meta["training_config"] or {}
    model = build_model(
        cfg.get("arch", "resnet18"),
        dataset.n_features,
        dataset.n_classes,
        dataset.image_shape,
        width=int(cfg.get("width", 64)),
    )
    model.load_state_dict(state)
    dtype = torch.float64 if cfg.get("dtype") == "float64" else torch.float32
    model = model.to(device=device, dtype=dtype).eval()
    model.training_config, model.training_report = cfg, meta["training_report"]
    model.weight_decay = meta["weight_decay"]
    return model


def _cache_matches(path: Path, cfg: ResNetStudyConfig, dataset: Any) -> bool:
    try:
        with np.load(path, allow_pickle=False) as data:
            saved = json.loads(str(data["meta"]))["training_config"] or {}
    except (OSError, KeyError, ValueError):
        return False
    wanted = {k: getattr(cfg, k) for k in _TRAINING_KEYS}
    return (
        saved.get("arch") == "resnet18"
        and all(saved.get(k) == v for k, v in wanted.items())
        and saved.get("dataset") == jsonable(dataset.describe())
    )


# ---------------------------------------------------------------------------------------------------- steps
def _gradient_probe(model: torch.nn.Module, dataset: Any, points: int, device: torch.device) -> dict[str, Any]:
    """One gradient of the training objective over ALL parameters on ``points`` training points (eval mode, as
    the engine sees the model), timed and measured; scaled to n points it is what one full-batch L-BFGS function
    evaluation would cost (an extrapolation, labelled as such)."""
    x = torch.as_tensor(dataset.X_train[:points], device=device, dtype=next(model.parameters()).dtype)
    y = torch.as_tensor(dataset.y_train[:points], device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        with Measured(device) as m:
            loss = F.cross_entropy(model(x), y, reduction="sum")
            torch.autograd.grad(loss, params)
    finally:
        model.train(was_training)
    n = int(len(dataset.y_train))
    per_point = m.seconds / points
    return {
        "points": points,
        **m.record(),
        "seconds_per_point": per_point,
        "n_train": n,
        "full_batch_gradient_seconds_extrapolated": per_point * n,
        "full_batch_graph_mb_extrapolated": m.peak_rss_mb / points * n,
        "note": "one forward+backward over all parameters on `points` training points, measured; the full-batch "
        "numbers scale it linearly to n (an extrapolation). An L-BFGS polish of 100 steps needs at least "
        "100 such full-batch evaluations.",
    }


def _train(
    cfg: ResNetStudyConfig, dataset: Any, device: torch.device, say: Callable[[str], None]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    import influence_core as ic

    cache = Path(cfg.model_cache) if cfg.model_cache else None
    if cache is not None and cache.exists() and _cache_matches(cache, cfg, dataset):
        say(f"loading the trained model from {cache}")
        with Measured(device) as m:
            model = load_model(cache, dataset, device)
        return model, {"source": f"loaded from {cache}", **m.record()}
    say(f"training ResNet-18 (width {cfg.width}) on {len(dataset.y_train)} points for {cfg.epochs} epoch(s)")
    with Measured(device) as m:
        model = ic.train_model(
            dataset,
            "resnet18",
            seed=cfg.seed,
            device=device,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            width=cfg.width,
            polish_steps=0,
        )
    if cache is not None:
        save_model(model, cache)
    return model, {"source": "trained", **m.record()}


def _query(
    cfg: ResNetStudyConfig, model: torch.nn.Module, dataset: Any, inputs: Any, params: Any, device: torch.device
) -> dict[str, Any]:
    import influence_core as ic

    firsts = [
        int(np.flatnonzero(dataset.y_test == k)[0]) for k in range(dataset.n_classes) if np.any(dataset.y_test == k)
    ]
    test_idx = np.array(firsts[: cfg.query_points])
    calc = ic.InfluenceCalculator(model, dataset.X_train, dataset.y_train, params=params, chunk_size=cfg.chunk_size)
    with Measured(device) as ms:
        sample = ic.sample_hessian_subset(
            model, dataset, "random", min(cfg.query_m, len(dataset.y_train)), seed=cfg.seed, inputs=inputs
        )
    with Measured(device) as mf:
        calc.fit(
            sample,
            solver=cfg.query_solver,
            damping=cfg.damping,
            curvature=cfg.curvature,
            max_iter=cfg.query_iter,
            tol=cfg.tol,
        )
    with warnings.catch_warnings(record=True) as caught, Measured(device) as mq:
        warnings.simplefilter("always")
        scores = calc.scores(dataset.X_test[test_idx], dataset.y_test[test_idx])
    helpful = [ic.top_influences(row, k=10)["helpful"] for row in scores]
    same_label = [float(np.mean(dataset.y_train[row] == dataset.y_test[t])) for row, t in zip(helpful, test_idx)]
    solve = calc.last_solve.summary() if calc.last_solve is not None else {}
    solve["trace"] = list(calc.last_solve.trace) if calc.last_solve is not None else []
    return {
        "test_indices": test_idx,
        "test_labels": dataset.y_test[test_idx],
        "scores_shape": list(scores.shape),
        "n_params": calc.objective.n_params,
        "sample": sample.to_dict(),
        "sampler": ms.record(),
        "fit": mf.record(),
        "scores": mq.record(),
        "solve": solve,
        "scoring": calc.last_scoring.to_dict() if calc.last_scoring is not None else None,
        "top_helpful": helpful,
        "top_helpful_same_label": same_label,
        "score_summary": {
            "min": float(scores.min()),
            "max": float(scores.max()),
            "mean_abs": float(np.abs(scores).mean()),
        },
        "warnings": [str(w.message) for w in caught],
    }


def _removal_row(result: Any, measured: Measured, sample_labels: np.ndarray) -> dict[str, Any]:
    solve = result.solve
    return {
        "sampler": result.sampler,
        "m": result.m,
        "solver": result.solver,
        **measured.record(),
        "sampler_seconds": result.sampler_seconds,
        "solver_seconds": result.solver_seconds,
        "iterations": result.iterations,
        "converged": result.converged,
        "final_residual": solve.get("final_residual"),
        "scale": solve.get("scale"),
        "lambda_max": solve.get("lambda_max"),
        "delta_norm": result.delta_norm,
        "f1_selected": result.selected.get("f1"),
        "alpha_selected": result.selected.get("alpha"),
        "f1_best": result.best.get("f1"),
        "alpha_best": result.best.get("alpha"),
        "f1_alpha_1": result.at_one.get("f1"),
        "f1_original": result.original.get("f1"),
        "sample_classes": np.bincount(sample_labels, minlength=10).tolist(),
        "warnings": list(result.warnings),
        "trace": solve.get("trace", []),
        "indices": result.hessian_sample.indices,
        "weights": result.hessian_sample.weights,
    }


def _removal(
    cfg: ResNetStudyConfig,
    task: Any,
    dataset: Any,
    device: torch.device,
    say: Callable[[str], None],
    record: dict[str, Any],
    checkpoint: Callable[[], None],
) -> dict[str, Any]:
    """Class removal runs, appended to ``record`` (the study's "removal" entry) one by one, ``checkpoint()`` after
    each."""
    import influence_core as ic

    c = cfg.removed_class
    samplers = list(cfg.samplers) if cfg.samplers else list(ic.available_samplers())
    pool = int(np.sum(dataset.y_train != c))
    common = dict(damping=cfg.damping, curvature=cfg.curvature, alphas=list(cfg.alphas), extend_grid=False, tol=cfg.tol)
    with Measured(device) as mg:
        task.gradient_sum(c)
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    record.update(
        {
            "removed_class": c,
            "pool_size": pool,
            "gradient_sum": {**mg.record(), "points": int(np.sum(dataset.y_train == c))},
            "runs": rows,
            "failures": failures,
            "alphas": list(cfg.alphas),
            "eval_test_points": int(len(task.y_test)),
        }
    )
    m_solvers = min(max(cfg.m), pool)
    runs = [("random", m_solvers, "cg", {"max_iter": cfg.cg_iter})]
    runs += [
        (s, min(m, pool), "lissa", {"max_iter": cfg.lissa_iter, "power_iter": cfg.power_iter})
        for s in samplers
        for m in cfg.m
    ]
    for i, (sampler, m, solver, budget) in enumerate(runs):
        say(f"class removal {i + 1}/{len(runs)}: {sampler}, m={m}, {solver}")
        try:
            with Measured(device) as meas:
                result = task.run(c, sampler, m, seed=cfg.seed, solver=solver, **common, **budget)
        except Exception as exc:  # a sampler or solver that fails on this model is recorded, not hidden
            failures.append({"sampler": sampler, "m": m, "solver": solver, "error": f"{type(exc).__name__}: {exc}"})
            say(f"  failed: {type(exc).__name__}: {exc}")
            checkpoint()
            continue
        rows.append(_removal_row(result, meas, dataset.y_train[result.hessian_sample.indices]))
        say(
            f"  {meas.seconds:.1f} s, {meas.peak_rss_mb:.0f} MB, {result.iterations} iterations, "
            f"residual {result.solve.get('final_residual')}, F1 {result.selected.get('f1')}"
        )
        checkpoint()
    return record


def run_study(
    cfg: ResNetStudyConfig,
    say: Callable[[str], None] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every step of the study (module doc) and return the full record (JSON-ready after
    :func:`~influence_core.io_safety.jsonable`). ``checkpoint(record)`` is called with the record so far after
    each step and each class removal (the command writes it to ``resnet18.partial.json``)."""
    import influence_core as ic

    say = say or (lambda message: None)
    wall = time.perf_counter()
    started = {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average": _load_average()}
    device = _resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    full = ic.load_dataset("mnist5k", seed=cfg.seed)
    dataset = _subset(
        full,
        _stratified(full.y_train, cfg.n_train, full.n_classes),
        _stratified(full.y_test, cfg.n_test, full.n_classes),
    )
    params = cfg.parameter_selection()

    record: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "device": str(device),
        "environment": environment(),
        "dataset": dataset.describe(),
        "started": started,
    }

    def save() -> None:
        if checkpoint is not None:
            checkpoint(record)

    model, training = _train(cfg, dataset, device, say)
    record["training"] = training
    training["report"] = getattr(model, "training_report", None)
    training["n_params"] = sum(p.numel() for p in model.parameters())
    say(f"trained: test accuracy {training['report']['test_accuracy']:.4f}; probing one full-objective gradient")
    training["gradient_probe"] = _gradient_probe(model, dataset, min(cfg.probe_points, len(dataset.y_train)), device)
    save()

    eval_test = _stratified(dataset.y_test, cfg.eval_test, dataset.n_classes)
    eval_set = dataclasses.replace(dataset, X_test=dataset.X_test[eval_test], y_test=dataset.y_test[eval_test])
    task = ic.ClassRemoval(model, eval_set, params=params, chunk_size=cfg.chunk_size)
    say("sampler inputs: logits and penultimate features of the training set")
    with Measured(device) as mi:
        inputs = task.inputs
    record["sampler_inputs"] = mi.record()
    say("influence query")
    query = _query(cfg, model, dataset, inputs, params, device)
    per_point = training["gradient_probe"]["seconds_per_point"]
    query["ratio_to_forward_backward"] = query["scores"]["seconds"] / (per_point * len(dataset.y_train))
    record.update({"params": {"selection": cfg.params, "n_params": query["n_params"]}, "query": query, "removal": {}})
    save()
    _removal(cfg, task, eval_set, device, say, record["removal"], save)
    record["finished"] = {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average": _load_average()}
    record["wall_seconds"] = time.perf_counter() - wall
    return record


# ---------------------------------------------------------------------------------------------------- output
REMOVAL_COLUMNS = [
    ("sampler", "sampler"),
    ("m", "m"),
    ("solver", "solver"),
    ("seconds", "wall s"),
    ("peak_rss_mb", "peak MB"),
    ("sampler_seconds", "sampler s"),
    ("solver_seconds", "solve s"),
    ("iterations", "iterations"),
    ("final_residual", "residual"),
    ("f1_selected", "F1 (selected α)"),
    ("alpha_selected", "α"),
    ("f1_alpha_1", "F1 (α=1)"),
]


def markdown(record: dict[str, Any], command: str) -> str:
    """The Markdown report of a study record."""
    tr, q, rm = record["training"], record["query"], record["removal"]
    rep = tr.get("report") or {}
    probe = tr["gradient_probe"]
    cfg = record["config"]
    lines = [
        "# ResNet-18 on mnist5k through the public API",
        "",
        f"Generated by `{command}` ({record['device']}, {record['environment'].get('torch_threads')} torch threads).",
        f"Started {record['started']['utc']} (load average {record['started']['load_average']}), finished "
        f"{record['finished']['utc']} (load average {record['finished']['load_average']}); wall time "
        f"{record['wall_seconds']:.0f} s.",
        "",
        "## Model and training",
        "",
        f"- ResNet-18, 28x28x1 input (3x3 stride-1 stem, no max-pool), width {cfg['width']}: "
        f"{tr['n_params']:,} parameters; {tr['source']}.",
        f"- Adam, {cfg['epochs']} epoch(s), batch {cfg['batch_size']}, lr {cfg['lr']:g}, weight decay "
        f"{cfg['weight_decay']:g}, {rep.get('seconds', float('nan')):.0f} s: train accuracy "
        f"{rep.get('train_accuracy', float('nan')):.4f}, test accuracy {rep.get('test_accuracy', float('nan')):.4f} "
        f"({record['dataset'].get('n_train')} / {record['dataset'].get('n_test')} points).",
        f"- L-BFGS polish: {rep.get('polish', '?')}; gradient norm of the training objective: "
        f"{fmt(rep.get('grad_norm'))}. "
        f"One forward+backward over all parameters takes {probe['seconds_per_point']:.3f} s per training point "
        f"(measured on {probe['points']} points, {fmt(probe['peak_rss_mb'])} MB), so one full-batch gradient would "
        f"take about {probe['full_batch_gradient_seconds_extrapolated']:.0f} s and its graph about "
        f"{fmt((probe['full_batch_graph_mb_extrapolated'] or float('nan')) / 1024)} GB (extrapolated); 100 polish "
        "steps need at least 100 of them.",
        "",
        "## Influence query",
        "",
        f"{len(q['test_indices'])} test points against all {q['scores_shape'][1]} training points, influence over "
        f"`{record['params']['selection']}` ({record['params']['n_params']:,} parameters), Hessian: "
        f"{cfg['curvature']} on a random sample of {q['sample']['m']}, {cfg['query_solver']} "
        f"({q['solve'].get('iterations')} iterations, final residual {fmt(q['solve'].get('final_residual'))}, "
        f"damping {cfg['damping']:g}).",
        "",
        markdown_table(
            [
                {"step": "Hessian sample", **q["sampler"]},
                {"step": "fit", **q["fit"]},
                {"step": "scores (iHVPs + scoring)", **q["scores"]},
                {"step": "sampler inputs (once, shared)", **record["sampler_inputs"]},
            ],
            [("step", "step"), ("seconds", "wall s"), ("peak_rss_mb", "peak MB")],
        ),
        "",
        f"Query time / one forward+backward per training point: {q['ratio_to_forward_backward']:.2f}. "
        f"Top-10 helpful training points with the test point's label: {q['top_helpful_same_label']}.",
        "",
        "## Class removal",
        "",
        f"Class {rm['removed_class']} removed ({rm['gradient_sum']['points']} training points, gradient sum "
        f"{rm['gradient_sum']['seconds']:.1f} s); Hessian samples from the {rm['pool_size']} remaining points; "
        f"α path {rm['alphas']} on {rm['eval_test_points']} stratified test points (half for choosing α, half for "
        f"reporting). Budgets: CG {cfg['cg_iter']} iterations, LiSSA {cfg['lissa_iter']} iterations after "
        f"{cfg['power_iter']} power iterations, tol {cfg['tol']:g}, damping {cfg['damping']:g}.",
        "",
        markdown_table(rm["runs"], REMOVAL_COLUMNS),
        "",
    ]
    if rm["failures"]:
        lines += (
            ["Failed runs:", ""]
            + [f"- {f['sampler']}, m={f['m']}, {f['solver']}: {f['error']}" for f in rm["failures"]]
            + [""]
        )
    return "\n".join(lines)


def write_outputs(record: dict[str, Any], out: str | os.PathLike, command: str) -> list[Path]:
    """Write ``resnet18.json`` (strict JSON) and ``resnet18.md`` into the directory ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = jsonable({"command": command, **record})
    return [
        write_json(out / "resnet18.json", payload, indent=1),
        write_text(out / "resnet18.md", markdown(payload, command)),
    ]


# ---------------------------------------------------------------------------------------------------- CLI
_HELP = {
    "device": "auto (CUDA when available), cpu or cuda[:i]",
    "n_train": "stratified subset of the 4000 training points (default: all)",
    "n_test": "stratified subset of the 1000 test points (default: all)",
    "width": "ResNet-18 base width (64 = the standard model)",
    "params": "'all', 'last_layer' or comma-separated parameter name prefixes",
    "samplers": "default: every registered sampler",
    "model_cache": ".npz file: load the trained model from it when its configuration matches, else train and save it",
}
_ITEM_TYPES = {"n_train": int, "n_test": int, "samplers": str, "model_cache": str, "alphas": float, "m": int}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--out``, ``--threads`` and one option per :class:`ResNetStudyConfig` field (``--query-m`` for query_m)."""
    p.add_argument("--out", default=None, help="directory for resnet18.json and resnet18.md (none: print only)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    for f in dataclasses.fields(ResNetStudyConfig):
        many = isinstance(f.default, tuple) or f.name == "samplers"
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=_ITEM_TYPES.get(f.name, type(f.default)),
            nargs="+" if many else None,
            help=_HELP.get(f.name, "default: %(default)s"),
            default=list(f.default) if isinstance(f.default, tuple) else f.default,
        )


def config_from_args(args: argparse.Namespace) -> ResNetStudyConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ResNetStudyConfig)}
    return ResNetStudyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def run(args: argparse.Namespace) -> int:
    from influence_core.bench.common import torch_threads

    cfg = config_from_args(args)
    if args.out:
        check_output_dir(args.out)
    start = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {message}", file=sys.stderr, flush=True)

    command = command_line()
    partial = Path(args.out) / "resnet18.partial.json" if args.out else None

    def checkpoint(record: dict[str, Any]) -> None:
        if partial is not None:
            partial.parent.mkdir(parents=True, exist_ok=True)
            write_json(partial, {"command": command, "partial": True, **record}, indent=1)

    with torch_threads(args.threads):
        record = run_study(cfg, say, checkpoint)
    if args.out:
        for path in write_outputs(record, args.out, command):
            print(f"wrote {path}")
        partial.unlink(missing_ok=True)
    print(markdown(jsonable(record), command))
    return 0

"""The app's heavy work as plain functions of small keys: what a worker process runs (no Streamlit here).

Every function here is ``fn(progress, *keys)``: ``progress(fraction, message)`` is the job's callback (wrapped by
:func:`influence_core.progress.cancellable`, so a cancel stops the work at its next progress point) and the keys
are frozen configurations (:class:`ui.config.RunConfig`, specs, scalars). Datasets, models, fitted inverses and
class-removal tasks reach the worker through the disk cache's keys (:mod:`ui.artifacts`): a worker loads a model
once from disk and keeps it in its own memory (``MAX_KEPT`` per kind, least recently used dropped), so a job
carries a few hundred bytes of keys, never a pickled model. ``ui.workers`` runs these functions in the worker
processes of a Dask cluster, or in threads of the server process (``INFLUENCE_EXPLORER_WORKERS=0``); ``ui.state``
and ``ui.live`` submit them and keep their (small) results for every session.

An uploaded dataset is in the disk cache under its SHA-256 (put there by the server when the student uploads
it); every job for an upload also carries ``payload`` (its bytes), so a worker still finds it when the disk cache
is off or has evicted it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

import influence_core as ic
from influence_core import Progress

from . import artifacts
from .config import CURVATURE, SOLVER_OPTIONS, DataConfig, RunConfig

INTERACTIVE_EXACT_MAX_PARAMS = 3000  # app latency: above this the full-data reference uses CG, not a (p, p) matrix
MAX_KEPT = 8
Spec = tuple  # (sampler | None, m, seed, solver): one Hessian sample and solver; sampler None = full data


# ---------------------------------------------------------------------------------------------------- memory


class Memo:
    """A process-local, thread-safe LRU of computed objects: ``get(key, compute)`` computes once per key (callers
    of the same key wait for the first), keeps at most ``size``. The objects are shared read-only."""

    def __init__(self, size: int = MAX_KEPT) -> None:
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._busy: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            busy = self._busy.setdefault(key, threading.Lock())
        with busy:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            try:
                value = compute()
            finally:
                with self._lock:
                    self._busy.pop(key, None)
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return value

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_datasets, _models, _calculators, _ihvps = Memo(16), Memo(), Memo(24), Memo(1024)
_spread, _removal, _inputs = Memo(4), Memo(4), Memo()


PROBLEMS: deque[str] = deque(maxlen=20)
LOG = logging.getLogger("influence_explorer")


def report_problem(message: str) -> None:
    """A corrupt or foreign disk-cache file (already removed and being recomputed): logged and kept for the home
    page's cache section (``ui.state.cache_problems`` gathers them from every worker)."""
    LOG.warning("disk cache: %s", message)
    PROBLEMS.append(message)
    seen = getattr(_collect, "problems", None)
    if seen is not None:
        seen.append(message)


_collect = threading.local()  # the problems met by the current train() call on this thread


def problems() -> list[str]:
    return list(PROBLEMS)


def forget() -> None:
    """Drop everything this process keeps in memory (the disk cache stays): as after a restart."""
    for memo in (_datasets, _models, _calculators, _ihvps, _spread, _removal, _inputs):
        memo.clear()


def _quiet(progress: Progress | None) -> Progress:
    return progress if progress is not None else (lambda fraction, message: None)


def _part(progress: Progress, start: float, stop: float, what: str) -> Progress:
    """``progress`` of a sub-step mapped to [start, stop] of the whole."""
    return lambda f, m: progress(start + (stop - start) * float(f), f"{what}: {m}")


# ---------------------------------------------------------------------------------------------------- data, model


def dataset(cfg: DataConfig, payload: bytes | None = None) -> ic.Dataset:
    """The dataset of ``cfg`` (built-in, or an upload from the disk cache; see :func:`ui.artifacts.dataset`)."""
    return _datasets.get(cfg, lambda: artifacts.dataset(cfg, payload, on_problem=report_problem))


def model(run: RunConfig, payload: bytes | None = None, progress: Progress | None = None):
    """The trained model of ``run``: from this process's memory, else the disk cache, else trained and saved."""
    data = dataset(run.data, payload)
    return _models.get(run, lambda: artifacts.load_or_train(run, data, progress, on_problem=report_problem))


def n_params(net) -> int:
    return int(sum(p.numel() for p in net.parameters()))


def train(progress: Progress, run: RunConfig, payload: bytes | None = None) -> dict:
    """Train (or load) ``run``'s model and its view; returns the model's arrays and record
    (:func:`influence_core.models.storage.model_to_arrays`), the view's arrays and the disk-cache problems met, for
    the server."""
    from influence_core import model_to_arrays

    _collect.problems = problems = []
    try:
        progress(0.0, "loading the data")
        net = model(run, payload, progress)
        progress(1.0, "computing logits and features")
        view = artifacts.load_or_view(run, net, dataset(run.data, payload), on_problem=report_problem)
    finally:
        _collect.problems = None
    arrays, record = model_to_arrays(net)
    return {"arrays": arrays, "record": record, "report": dict(net.training_report), "view": view, "problems": problems}


def reference_solver(run: RunConfig, payload: bytes | None = None) -> str:
    """Solver of the full-data reference: exact for small models (one factorisation), CG otherwise."""
    return "exact" if n_params(model(run, payload)) <= INTERACTIVE_EXACT_MAX_PARAMS else "cg"


def sampler_inputs(run: RunConfig, payload: bytes | None = None) -> ic.SamplerInputs:
    """What the samplers look at (training labels, logits, features), from the model's view in the disk cache:
    the same arrays the server's pages draw their samples from."""

    def build() -> ic.SamplerInputs:
        a = artifacts.load_or_view(run, model(run, payload), dataset(run.data, payload), on_problem=report_problem)
        features = a["train_features"] if a["train_features"].shape[1] else None
        return ic.SamplerInputs(labels=a["train_labels"], logits=a["train_logits"], features=features)

    return _inputs.get(run, build)


def sample(run: RunConfig, sampler: str, m: int, seed: int, payload: bytes | None = None):
    """The Hessian sample of (sampler, m, seed) on ``run`` (as ``ui.state.get_sample`` draws it)."""
    net, data = model(run, payload), dataset(run.data, payload)
    return ic.sample_hessian_subset(net, data, sampler, int(m), seed=int(seed), inputs=sampler_inputs(run, payload))


# ---------------------------------------------------------------------------------------------------- influence


def fit_options(spec: Spec) -> dict:
    """The solver options of a spec; the full-data exact reference forms its Gauss-Newton matrix from the layer
    pieces of nn.Linear models (``matrix="structured"``; others fall back)."""
    sampler, _, _, solver = spec
    options = dict(SOLVER_OPTIONS.get(solver, {}))
    if sampler is None and solver == "exact":
        options["matrix"] = "structured"
    return options


def inverse_configs(run: RunConfig, specs: list, damping: float, objective, samples: list) -> list[dict]:
    return [
        artifacts.inverse_config(run, spec, damping, CURVATURE, fit_options(spec), objective, s)
        for spec, s in zip(specs, samples)
    ]


def calculator(run: RunConfig, spec: Spec, damping: float, payload: bytes | None = None):
    """A fitted InfluenceCalculator for ``spec`` (sampler None = the full-data Hessian), and a lock (``scores``
    records ``last_solve``). The fitted inverse comes from the disk cache when it holds it, else it is fitted and
    saved (:func:`ui.artifacts.load_or_fit_inverses`)."""
    spec = (spec[0], int(spec[1]), int(spec[2]), spec[3])

    def build():
        net, data = model(run, payload), dataset(run.data, payload)
        calc = ic.InfluenceCalculator(net, data.X_train, data.y_train)
        drawn = None if spec[0] is None else sample(run, *spec[:3], payload=payload)

        def fit(_missing: list[int]) -> list:
            if drawn is not None:  # the spread's fit (exact: low-rank Woodbury with the Linear-layer Gram)
                from influence_core import fit_across_samples

                return fit_across_samples(
                    calc.objective,
                    [drawn],
                    solver=spec[3],
                    damping=float(damping),
                    curvature=CURVATURE,
                    **SOLVER_OPTIONS.get(spec[3], {}),
                )
            calc.fit(
                hessian_indices=None, solver=spec[3], damping=float(damping), curvature=CURVATURE, **fit_options(spec)
            )
            return [calc.inverse]

        (inverse,), _ = artifacts.load_or_fit_inverses(
            run,
            calc.objective,
            inverse_configs(run, [spec], damping, calc.objective, [drawn]),
            fit,
            on_problem=report_problem,
        )
        if calc.inverse is not inverse:
            calc.use_fitted(inverse)
        return calc, threading.Lock()

    return _calculators.get((run, spec, float(damping)), build)


def ihvp(run: RunConfig, spec: Spec, damping: float, test_index: int, payload: bytes | None = None) -> dict:
    """s = (H_S + δI)⁻¹ ∇ℓ(test point) for one spec, with the solve's record (trace, iterations, time)."""
    spec = (spec[0], int(spec[1]), int(spec[2]), spec[3])

    def solve() -> dict:
        calc, lock = calculator(run, spec, damping, payload)
        data, i = dataset(run.data, payload), int(test_index)
        with lock:
            result = calc.ihvp(calc.gradients(data.X_test[i : i + 1], data.y_test[i : i + 1]))
        return {
            "x": result.x.detach().cpu().numpy(),
            "trace": list(result.trace),
            "iterations": int(result.iterations),
            "converged": bool(result.converged),
            "solve_seconds": float(result.seconds),
            "method": result.method,
        }

    return _ihvps.get((run, spec, float(damping), int(test_index)), solve)


def influence_rows(
    progress: Progress | None,
    run: RunConfig,
    specs: tuple,
    damping: float,
    test_index: int,
    payload: bytes | None = None,
) -> list[dict]:
    """Scores of every training point on test point ``test_index`` (n_train,) for each spec, with the solve
    records: the iHVPs per spec (each fitted inverse from the disk cache when there), then the scores of all
    specs in ONE pass over the training set (``scores_from_ihvp`` with k right-hand sides)."""
    import torch

    progress = _quiet(progress)
    start = time.perf_counter()
    solves = []
    for j, spec in enumerate(specs):
        what = "full data" if spec[0] is None else f"{spec[0]} m={spec[1]}"
        progress(0.8 * j / len(specs), f"fitting and solving ({what}, {spec[3]})")
        solves.append(ihvp(run, spec, damping, test_index, payload))
    calc, lock = calculator(run, specs[0], damping, payload)
    S = torch.as_tensor(np.concatenate([s["x"] for s in solves]))
    progress(0.8, "scoring every training point")
    with lock:
        scores = calc.scores_from_ihvp(S, progress=_part(progress, 0.8, 1.0, "scoring"))
    seconds = time.perf_counter() - start
    return [
        {**{k: v for k, v in s.items() if k != "x"}, "scores": scores[j], "seconds": seconds}
        for j, s in enumerate(solves)
    ]


def spread_inverses(run: RunConfig, specs: tuple, damping: float, payload: bytes | None = None):
    """(calculator, lock, fitted inverses) of the spread's specs: from the disk cache, the missing ones fitted
    together by ``fit_across_samples`` (per-point Gauss-Newton pieces shared, exact low-rank solve)."""
    from influence_core import fit_across_samples

    def build():
        net, data = model(run, payload), dataset(run.data, payload)
        calc = ic.InfluenceCalculator(net, data.X_train, data.y_train)
        samples = [sample(run, *spec[:3], payload=payload) for spec in specs]
        solver = specs[0][3]

        def fit_missing(missing: list[int]) -> list:
            return fit_across_samples(
                calc.objective,
                [samples[i] for i in missing],
                solver=solver,
                damping=float(damping),
                curvature=CURVATURE,
                **SOLVER_OPTIONS.get(solver, {}),
            )

        inverses, _ = artifacts.load_or_fit_inverses(
            run,
            calc.objective,
            inverse_configs(run, list(specs), damping, calc.objective, samples),
            fit_missing,
            on_problem=report_problem,
        )
        return calc, threading.Lock(), inverses

    return _spread.get((run, tuple(specs), float(damping)), build)


def seed_spread(
    progress: Progress | None,
    run: RunConfig,
    samplers: tuple,
    m: int,
    seeds: tuple,
    solver: str,
    damping: float,
    test_index: int,
    k: int,
    reference_spec: Spec,
    payload: bytes | None = None,
) -> list[dict]:
    """Per sampler and seed: Spearman and top-k overlap of the scores against the full-data Hessian's."""
    from influence_core import scores_across_samples
    from influence_core.evaluation import metrics

    progress = _quiet(progress)
    specs = tuple((name, int(m), int(s), solver) for name in samplers for s in seeds)
    progress(0.0, "the full-data reference")
    ref = influence_rows(None, run, (reference_spec,), damping, test_index, payload)[0]["scores"]
    progress(0.3, f"fitting {len(specs)} Hessian samples")
    calc, lock, inverses = spread_inverses(run, specs, float(damping), payload)
    progress(0.8, f"scoring under {len(specs)} Hessian samples")
    data, i = dataset(run.data, payload), int(test_index)
    with lock:
        scores, _ = scores_across_samples(calc, inverses, data.X_test[i : i + 1], data.y_test[i : i + 1])
    return [
        {
            "sampler": spec[0],
            "seed": spec[2],
            "spearman_vs_full": metrics.spearman(row[0], ref),
            "topk_overlap_vs_full": metrics.topk_overlap(row[0], ref, k),
        }
        for spec, row in zip(specs, scores)
    ]


def self_influence(
    progress: Progress | None, run: RunConfig, damping: float, payload: bytes | None = None
) -> np.ndarray:
    """(n_train,) self-influence (1/n)∇ℓ_jᵀ(H + δI)⁻¹∇ℓ_j under the full-data Gauss-Newton Hessian (exact)."""
    _quiet(progress)(0.0, "self-influence of every training point")
    n = dataset(run.data, payload).n_train
    calc, lock = calculator(run, (None, n, 0, "exact"), float(damping), payload)
    with lock:
        return calc.self_influence()


# ---------------------------------------------------------------------------------------------------- removal


def removal_task(run: RunConfig, payload: bytes | None = None):
    """``ClassRemoval`` for the model (caches g_c and retrained references), with a lock."""
    from influence_core import ClassRemoval

    return _removal.get(run, lambda: (ClassRemoval(model(run, payload), dataset(run.data, payload)), threading.Lock()))


def removal(
    progress: Progress,
    run: RunConfig,
    removed_class: int,
    sampler: str,
    m: int,
    seed: int,
    solver: str,
    damping: float,
    reference: bool,
    memory: bool,
    payload: bytes | None = None,
) -> dict:
    """One class removal (``ClassRemoval.run``) as its JSON record; with ``reference``, also the retrained
    reference's test predictions under ``"reference_test_pred"`` (so no other process retrains it to show them)."""
    task, lock = removal_task(run, payload)
    with lock:
        record = task.run(
            int(removed_class),
            sampler,
            int(m),
            int(seed),
            solver=solver,
            damping=float(damping),
            retrain_reference=reference,
            measure_memory=memory,
            progress=progress,
            **SOLVER_OPTIONS.get(solver, {}),
        ).to_dict()
        if reference:
            ref = task.reference_model(int(removed_class))
            record["reference_test_pred"] = ic.predict_logits(ref, task.dataset.X_test).argmax(1)
    return record


def reference_predictions(
    progress: Progress, run: RunConfig, removed_class: int, payload: bytes | None = None
) -> np.ndarray:
    """Test predictions of the model retrained from scratch without the class (retrained when not cached)."""
    task, lock = removal_task(run, payload)
    with lock:
        ref = task.reference_model(int(removed_class), progress)
    return ic.predict_logits(ref, task.dataset.X_test).argmax(1)


# ---------------------------------------------------------------------------------------------------- live studies


def live_lds(
    progress: Progress,
    run: RunConfig,
    samplers: tuple,
    ms: tuple,
    n_seeds: int,
    n_subsets: int,
    n_test: int,
    payload: bytes | None = None,
) -> dict:
    """A small LDS study on the model (``influence_core.studies.lds.run_lds_study``); its JSON record."""
    from influence_core import RetrainPlan
    from influence_core.studies.faithfulness import StudyConfig
    from influence_core.studies.lds import run_lds_study

    config = StudyConfig(
        dataset=run.data.name,
        arch=run.model.arch,
        seed=run.data.seed,
        samplers=tuple(samplers),
        ms=tuple(int(m) for m in ms),
        n_seeds=int(n_seeds),
        n_test_points=int(n_test),
        gram_budget_mb=0.0,
    )
    result = run_lds_study(
        config,
        RetrainPlan(n_subsets=int(n_subsets), n_seeds=2),
        dataset=dataset(run.data, payload),
        model=model(run, payload),
        progress=progress,
    )
    record = result.to_json()
    record["retrain_info"] = {
        k: result.context["retrain"].get(k)
        for k in ("cached", "retrained", "wall_seconds", "retrain_seconds_mean", "cache_dir")
    }
    return record


def frontier_point(
    progress: Progress,
    run: RunConfig,
    name: str,
    sampler: str,
    m: int,
    seed: int,
    solver: str,
    damping: float,
    curvature: str,
    options: tuple,
    payload: bytes | None = None,
) -> dict:
    """The current model's influence with one Hessian sample and solver, scored by LDS against the shipped ground
    truth ``name`` (``influence_core.evaluation.ground_truth.lds_against``), with its cost measured as the committed
    frontier's is: sampler inputs + draw + fit + scoring of the ground truth's test points against every training
    point, as a multiple of one forward+backward pass over the training set timed here (wall clock, median of 11).
    Refuses a model whose retrain-cache key is not the file's: its retrains are of another model."""
    import copy

    import torch
    from torch.nn import functional as F

    progress = _quiet(progress)
    progress(0.0, f"reading the ground truth {name}")
    gt = ic.load_ground_truth(name)
    net, data = model(run, payload), dataset(run.data, payload)
    key = ic.retrain_key(data, ic.model_recipe(net), ic.RetrainPlan(**gt.recipe["plan"]))
    if key != gt.recipe["cache_key"]:
        raise ValueError(
            f"this model's retrain key is {key}, the ground truth {name}'s is {gt.recipe['cache_key']}: its retrains "
            "are of another model (recipe, seed, data or torch version), so it is not scored against them"
        )
    idx = gt.test_indices
    X_t, y_t = data.X_test[idx], data.y_test[idx]
    logit_diff = float(np.max(np.abs(ic.predict_logits(net, X_t) - gt.full_logits)))
    progress(0.05, "timing one forward+backward pass over the training set")
    twin = copy.deepcopy(net)  # the shared model's gradients are never touched
    X = torch.as_tensor(data.X_train).to(next(twin.parameters()).dtype)
    y = torch.as_tensor(data.y_train)

    def forward_backward() -> None:
        twin.zero_grad(set_to_none=True)
        F.cross_entropy(twin(X), y, reduction="sum").backward()

    forward_backward()
    passes = []
    for _ in range(11):
        start = time.perf_counter()
        forward_backward()
        passes.append(time.perf_counter() - start)
    base = float(np.median(passes))
    progress(0.15, f"{sampler} sample of m = {m}: drawing and fitting ({solver})")
    start = time.perf_counter()
    drawn = ic.sample_hessian_subset(net, data, sampler, int(m), seed=int(seed))
    calc = ic.InfluenceCalculator(net, data.X_train, data.y_train)
    calc.fit(drawn, solver=solver, damping=float(damping), curvature=curvature, **dict(options))
    progress(0.5, f"scoring {len(idx)} test points against {data.n_train} training points")
    scores = calc.scores(X_t, y_t, progress=_part(progress, 0.5, 0.95, "scoring"))
    seconds = time.perf_counter() - start
    progress(0.95, "LDS against the shipped retrains")
    result = ic.lds_against(scores, gt)
    return {
        "ground_truth": name,
        "sampler": sampler,
        "m": int(m),
        "seed": int(seed),
        "solver": solver,
        "damping": float(damping),
        "curvature": curvature,
        "options": dict(options),
        "lds": float(result.lds),
        "per_test_std": float(np.nanstd(result.per_test)),
        "ceiling": float(result.ceiling),
        "k": int(result.n_subsets),
        "partial": bool(gt.partial),
        "seconds": float(seconds),
        "forward_backward_seconds": base,
        "cost_ratio": float(seconds / base),
        "n_test_points": int(len(idx)),
        "key": key,
        "full_logit_max_abs_diff": logit_diff,
    }


def mislabel(
    progress: Progress, data: DataConfig, weight_decay: float, fraction: float, seed: int, payload: bytes | None = None
):
    """``influence_core.evaluation.mislabel.mislabel_detection`` with logistic regression, exact solve."""
    from influence_core import mislabel_detection

    return mislabel_detection(
        dataset(data, payload),
        "logreg",
        float(fraction),
        int(seed),
        train_settings={"weight_decay": float(weight_decay)},
        progress=progress,
    )


def set_torch_threads() -> None:
    """The app's models are small: torch's intra-op threads only add synchronisation on a shared machine."""
    import torch

    torch.set_num_threads(int(os.environ.get("INFLUENCE_EXPLORER_TORCH_THREADS", "1")))

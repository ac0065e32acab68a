"""dattri 0.3.0's attributors (TRAK, TracIn, Grad-Dot and its influence-function attributors) on an exported MLP or
SmallCNN, run in a separate environment (torch + numpy + dattri only; this file imports nothing from influence_core;
the model is rebuilt by ``side_models``).

    python influence_core/bench/dattri_side.py DIR

DIR holds ``problem.npz`` (written by ``benchmarks/field_compare.py``: X_train, y_train, X_query, y_query, the
model's weights and a JSON ``settings`` string) and ``checkpoints.npz`` with the extra checkpoints, keys
``{name}__{parameter}`` (state_dict names). ``settings["methods"]`` lists the rows to run, each a dict with
``name``, ``kind`` (trak, tracin, explicit, cg, lissa, arnoldi, ekfac, datainf), ``checkpoints`` (names in
checkpoints.npz; ``"final"`` = the model of problem.npz) and the kind's options. Writes ``dattri.npz``: one array
``{name}`` per row, dattri's raw output (n_train, n_query) unchanged (the caller converts it to its convention), and
``dattri.json``: per row the wall seconds of ``cache`` + ``attribute``, the peak resident memory they added (MB,
VmHWM after a reset) and the error if the row failed, plus ``forward_backward_seconds``: one forward+backward pass
of the summed cross-entropy over the training set, median of repeats, measured in this process. Each row runs in
a forked child after an untimed warm-up of its kind on 64 points; the child is stopped (the row then says so) when
its resident memory passes ``settings["max_rss_mb"]`` or it runs longer than ``settings["max_seconds"]``.

Losses given to dattri: the mean cross-entropy of the batch it is called with (a single point for per-sample
gradients, all training points for the Hessian), no weight-decay term; the damping the caller passes is our wd + δ.
TRAK's output function is dattri's (and TRAK's) log p/(1 − p) of the true class, its probability term p.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from side_models import load_problem  # noqa: E402


def _status_kib(key: str, pid: int | None = None) -> int | None:
    try:
        with open(f"/proc/{pid or 'self'}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class _Peak:
    """Peak resident memory added inside the block, MB (VmHWM − VmRSS after malloc_trim and a clear_refs reset)."""

    def __enter__(self) -> "_Peak":
        self.mb = float("nan")
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._base = _status_kib("VmRSS")
        except OSError:
            self._base = None
        return self

    def __exit__(self, *exc: Any) -> None:
        peak = _status_kib("VmHWM")
        if self._base is not None and peak is not None:
            self.mb = (peak - self._base) / 1024


def _batched(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dattri calls a loss with one point without a batch axis (TRAK, TracIn) or with one (the rest)."""
    if y.ndim == 0:
        return x.unsqueeze(0), y.unsqueeze(0)
    return x, y


def _functions(model: torch.nn.Module) -> dict[str, Any]:
    def loss(params: dict, data: tuple) -> torch.Tensor:
        x, y = _batched(*data)
        return F.cross_entropy(functional_call(model, params, (x,)), y.long())

    def trak_output(params: dict, data: tuple) -> torch.Tensor:
        x, y = _batched(*data)
        logp = -F.cross_entropy(functional_call(model, params, (x,)), y.long())
        return logp - torch.log(1 - torch.exp(logp))

    def correct_probability(params: dict, data: tuple) -> torch.Tensor:
        x, y = _batched(*data)
        return torch.exp(-F.cross_entropy(functional_call(model, params, (x,)), y.long()))

    return {"loss": loss, "trak_output": trak_output, "correct_probability": correct_probability}


def _forward_backward_seconds(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, repeats: int = 7) -> float:
    def once() -> float:
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y, reduction="sum").backward()
        return time.perf_counter() - start

    once()
    seconds = statistics.median(once() for _ in range(repeats))
    model.zero_grad(set_to_none=True)
    return seconds


def _attribute(
    spec: dict[str, Any],
    model: torch.nn.Module,
    checkpoints: list[dict],
    X: torch.Tensor,
    y: torch.Tensor,
    Xq: torch.Tensor,
    yq: torch.Tensor,
) -> torch.Tensor:
    from dattri import algorithm as A
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    fn = _functions(model)
    kind = spec["kind"]
    n = len(X)
    batch = int(spec.get("batch_size", n))
    train = DataLoader(TensorDataset(X, y), batch_size=batch, shuffle=False)
    full = DataLoader(TensorDataset(X, y), batch_size=n, shuffle=False)
    test = DataLoader(TensorDataset(Xq, yq), batch_size=int(spec.get("test_batch", len(Xq))), shuffle=False)
    target = fn["trak_output"] if kind == "trak" else fn["loss"]
    task = AttributionTask(
        loss_func=target, model=model, checkpoints=checkpoints if len(checkpoints) > 1 else checkpoints[0]
    )
    damping = float(spec.get("damping", 0.0))
    if kind == "trak":
        att = A.TRAKAttributor(
            task=task,
            correct_probability_func=fn["correct_probability"],
            device="cpu",
            projector_kwargs={
                "proj_dim": int(spec["proj_dim"]),
                "device": "cpu",
                "proj_seed": int(spec.get("proj_seed", 0)),
            },
            regularization=damping,
        )
        att.cache(train)
        return att.attribute(test)
    if kind in ("tracin", "grad_dot"):
        att = A.TracInAttributor(
            task=task,
            weight_list=torch.tensor(spec["weights"], dtype=X.dtype),
            normalized_grad=False,
            device="cpu",
            projector_kwargs={
                "proj_dim": int(spec["proj_dim"]),
                "device": "cpu",
                "proj_seed": int(spec.get("proj_seed", 0)),
            }
            if spec.get("proj_dim")
            else None,
        )
        if not spec.get("proj_dim"):
            att.projector_kwargs = None  # exact gradients (dattri projects by default)
        return att.attribute(train, test)
    if kind == "explicit":
        att = A.IFAttributorExplicit(task=task, device="cpu", regularization=damping)
    elif kind == "cg":
        att = A.IFAttributorCG(
            task=task,
            device="cpu",
            regularization=damping,
            max_iter=int(spec["max_iter"]),
            tol=float(spec.get("tol", 1e-7)),
        )
    elif kind == "lissa":
        scaling = float(spec["scaling"])  # LiSSA's fixed point is (H + damping·scaling·I)⁻¹ v
        att = A.IFAttributorLiSSA(
            task=task,
            device="cpu",
            batch_size=int(spec["lissa_batch"]),
            num_repeat=int(spec.get("num_repeat", 1)),
            recursion_depth=int(spec["recursion_depth"]),
            damping=damping / scaling,
            scaling=scaling,
        )
    elif kind == "arnoldi":
        att = A.IFAttributorArnoldi(
            task=task,
            device="cpu",
            regularization=damping,
            proj_dim=int(spec["proj_dim"]),
            max_iter=int(spec["max_iter"]),
            seed=int(spec.get("seed", 0)),
        )
    elif kind == "ekfac":
        att = A.IFAttributorEKFAC(task=task, device="cpu", damping=damping)
    elif kind == "datainf":
        att = A.IFAttributorDataInf(task=task, device="cpu", regularization=damping)
    else:
        raise ValueError(f"unknown dattri method kind {kind!r}")
    att.cache(full)
    return att.attribute(train, test)


def _run_isolated(stem: Path, work: Any, seed: int, max_rss_mb: float, max_seconds: float) -> dict[str, Any]:
    """``work()`` in a forked child (fresh peak memory, and a runaway attributor cannot take the machine): the child
    writes ``{stem}.npz`` (scores) and ``{stem}.json`` (seconds, peak MB, error); the parent stops it once its
    resident memory passes ``max_rss_mb`` or it runs longer than ``max_seconds``."""
    pid = os.fork()
    if pid == 0:  # child
        row: dict[str, Any] = {"error": None}
        try:
            torch.manual_seed(seed)
            with _Peak() as peak:
                start = time.perf_counter()
                scores = work()
                row["seconds"] = time.perf_counter() - start
            row["peak_mb"] = peak.mb
            np.savez(str(stem) + ".npz", scores=scores.detach().double().cpu().numpy())
        except BaseException as exc:  # noqa: BLE001 - reported as the row's error
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            Path(str(stem) + ".json").write_text(json.dumps(row))
            os._exit(0)
    start = time.monotonic()
    stopped, peak_seen = None, 0.0
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        rss = _status_kib("VmRSS", pid)
        peak_seen = max(peak_seen, (rss or 0) / 1024)
        elapsed = time.monotonic() - start
        if rss is not None and rss / 1024 > max_rss_mb:
            stopped = f"stopped: resident memory above {max_rss_mb:.0f} MB after {elapsed:.0f} s"
        elif elapsed > max_seconds:
            stopped = f"stopped: still running after {max_seconds:.0f} s"
        if stopped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"error": stopped, "seconds": None, "peak_mb": None, "peak_mb_seen": peak_seen}
        time.sleep(0.1)
    try:
        return json.loads(Path(str(stem) + ".json").read_text())
    except (OSError, ValueError):
        return {"error": "the attributor's process died without a result", "seconds": None, "peak_mb": None}


def main(directory: str) -> None:
    d = Path(directory)
    settings, model, (X, y, Xq, yq) = load_problem(d)
    dtype = X.dtype
    stored: dict[str, dict[str, torch.Tensor]] = {
        "final": {k: v.detach().clone() for k, v in model.state_dict().items()}
    }
    if (d / "checkpoints.npz").exists():
        with np.load(d / "checkpoints.npz", allow_pickle=False) as f:
            for key in f.files:
                name, _, param = key.partition("__")
                stored.setdefault(name, {})[param] = torch.as_tensor(f[key]).to(dtype)
    report: dict[str, Any] = {
        "forward_backward_seconds": _forward_backward_seconds(model, X, y),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rows": {},
    }
    try:
        from importlib.metadata import version

        report["dattri"] = version("dattri")
    except Exception:  # pragma: no cover - recorded only
        report["dattri"] = None
    out: dict[str, np.ndarray] = {}
    warmed: set[str] = set()
    limits = {
        "max_rss_mb": float(settings.get("max_rss_mb", 12000)),
        "max_seconds": float(settings.get("max_seconds", 900)),
    }
    report["limits"] = limits
    for i, spec in enumerate(settings["methods"]):
        checkpoints = [stored[c] for c in spec.get("checkpoints", ["final"])]
        if spec["kind"] not in warmed:  # untimed, here: first-call costs (TorchScript of the projector, lazy imports)
            warmed.add(spec["kind"])
            model.load_state_dict(stored["final"])
            try:
                small = {
                    **spec,
                    "batch_size": 32,
                    "test_batch": 2,
                    "recursion_depth": 2,
                    "max_iter": 2,
                    "proj_dim": min(int(spec.get("proj_dim") or 16), 16),
                }
                _attribute(small, model, checkpoints, X[:64], y[:64], Xq[:2], yq[:2])
            except Exception:  # noqa: BLE001 - the timed run reports the error
                pass
        model.load_state_dict(stored["final"])
        row = _run_isolated(
            d / f"row{i}", lambda: _attribute(spec, model, checkpoints, X, y, Xq, yq), int(settings["seed"]), **limits
        )
        row["kind"] = spec["kind"]
        if row["error"] is None:
            with np.load(d / f"row{i}.npz", allow_pickle=False) as f:
                out[spec["name"]] = f["scores"]
        report["rows"][spec["name"]] = row
        print(f"[dattri] {spec['name']}: {row}", file=sys.stderr, flush=True)
    tmp = d / f"dattri.tmp{os.getpid()}.npz"
    np.savez(tmp, **out)
    os.replace(tmp, d / "dattri.npz")
    (d / "dattri.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])

"""The blocked scoring grid: influence scores (n_test, n_train) computed block by block, in bounded memory, on any
executor, optionally straight into a resumable ``.npy`` file on disk.

For a fitted :class:`~influence_core.influence.calculator.InfluenceCalculator` the grid is

    test chunk a (``test_chunk_size`` points):   S_a = (H_S + δI)⁻¹ [∇ℓ(z_t)]_{t∈a}        one batched iHVP
    block (a, b) (``train_chunk_size`` points):  score[a, b] = (1/n) · (∇ℓ_jᵀ s_t)_{t∈a, j∈b}  one block pass (below)

(``Objective.grad_dot``: a forward pass with one tangent per test point, or for many test points on a model that
reuses its weights the block's own per-sample gradients; never the (n, p) training gradients). Peak memory is
therefore set by the two chunk sizes and the model, not by n_train × n_params: a block holds (train_chunk ×
test_chunk) tangent activations or at most ``GRAD_BLOCK_BYTES`` of per-sample gradients, an iHVP holds test_chunk ×
n_params numbers, and only the score matrix itself grows with n_train × n_test, which is why it can go to disk.

Blocks are independent tasks: the :class:`~influence_core.influence.executors.SequentialExecutor` (default) runs them
in this
process; a :class:`~influence_core.influence.executors.DaskExecutor` scatters the problem (model, data, fitted solver)
to its
workers once and then sends one small task per iHVP and per block. Every block is computed by the same function on
the same inputs whatever the executor, and none of the sums in a block spans two blocks, so the chunk sizes and the
executor do not change the arithmetic: in our tests the results agree bit for bit (see docs/SCALE.md).

On disk (``out="scores.npy"``): the matrix is a float64 ``.npy`` file (read it with ``np.load(path, mmap_mode="r")``)
written block by block with positioned writes (so it never occupies this process's memory), and a manifest
``scores.npy.manifest`` (JSON lines: a header identifying the problem, then one line per finished block, then
``{"complete": true}``) records progress: blocks are claimed after an fsync of the data, every few seconds and when
the call ends for any reason (an exception, Ctrl-C), so a hard kill loses at most the last few seconds of blocks. After
an interruption the same call with ``resume=True`` skips the
finished blocks; a manifest for a different problem is refused rather than mixed in. Each finished block's line
carries the CRC-32 of its bytes, checked on resume (and by :func:`verify_score_file`), so a file overwritten or
damaged after it was written is refused instead of returned.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from influence_core.influence.executors import ClusterLostError, Executor, get_executor
from influence_core.io_safety import check_output_file, load_error
from influence_core.progress import Progress
from influence_core.solvers.base import SolveResult
from influence_core.solvers.factor_io import fingerprint as _fingerprint  # SHA-256 of arrays and JSON-able values

if TYPE_CHECKING:  # pragma: no cover
    from influence_core.influence.calculator import InfluenceCalculator

__all__ = [
    "score_grid",
    "ScoringProblem",
    "ScoringReport",
    "DEFAULT_TEST_CHUNK_SIZE",
    "manifest_path",
    "check_chunk_size",
    "verify_score_file",
]

DEFAULT_TEST_CHUNK_SIZE = 128
"""Test points per iHVP batch and per block row when the caller does not choose."""

MANIFEST_SUFFIX = ".manifest"
PARTIAL_SUFFIX = ".partial"
"""The unfinished matrix lives in ``<out>.partial`` until its last block is written (then it is renamed)."""


def check_chunk_size(value: Any, name: str) -> int:
    """A positive integer chunk size, or a ValueError that says so."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer (points per chunk), got {value!r}")
    return int(value)


def manifest_path(out: str | os.PathLike) -> Path:
    """Where the progress manifest of the on-disk score matrix ``out`` lives."""
    return Path(str(out) + MANIFEST_SUFFIX)


# ---------------------------------------------------------------------------------------------------- the problem
class ScoringProblem:
    """Everything a worker needs to compute blocks, picklable: the objective (model and training data source), the
    fitted inverse (:class:`~influence_core.solvers.registry.FittedInverse`: the explicit inverse or Woodbury factors
    of ``exact``, the sample of an iterative solver), the test points or precomputed iHVPs, the training columns.

    In this process it holds the caller's objects (no copies). Pickled (Dask scatter), the workers receive them once
    and never re-form the Hessian. A lock runs the tasks on one copy one at a time, so a worker holds one block's
    gradients at once (threads could share the model safely: every forward pass runs on a per-thread replica).
    """

    def __init__(
        self,
        calc: "InfluenceCalculator",
        X_test: torch.Tensor | None,
        y_test: torch.Tensor | None,
        ihvps: torch.Tensor | None,
        train_idx: np.ndarray,
    ):
        self.objective, self.inverse = calc.objective, calc.inverse
        self.X_test, self.y_test, self.ihvps = X_test, y_test, ihvps
        self.train_idx = train_idx
        self.n = calc.n
        self.damping = calc.config.damping if calc.config is not None else 0.0
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()


def _ihvp_task(problem: ScoringProblem, t0: int, t1: int) -> SolveResult:
    """iHVPs of test points t0..t1 (or the caller's precomputed rows)."""
    with problem.lock:
        if problem.ihvps is not None:
            return SolveResult(problem.ihvps[t0:t1], "given", 0, True, problem.damping)
        G = problem.objective.query_grads(problem.X_test[t0:t1], problem.y_test[t0:t1])
        return problem.inverse.solve(G)


def _score_task(problem: ScoringProblem, solved: SolveResult, j0: int, j1: int) -> tuple[np.ndarray, dict[str, Any]]:
    """score block (test chunk, train points train_idx[j0:j1]) as float64 (k, c), and the summary of its solve."""
    with problem.lock:
        obj = problem.objective
        S = solved.x.to(obj.device, obj.dtype)
        block = obj.grad_dot(S, *obj.batch(problem.train_idx[j0:j1]))  # (c, k)
        return block.T.double().cpu().numpy() / problem.n, _solve_summary(solved)


def _solve_summary(solved: SolveResult) -> dict[str, Any]:
    return {
        "method": solved.method,
        "iterations": solved.iterations,
        "converged": solved.converged,
        "damping": solved.damping,
        "scale": solved.scale,
        "seconds": solved.seconds,
        "trace": list(solved.trace),
        "info": dict(solved.info),
    }


def _merge_solves(summaries: list[dict[str, Any]], n_params: int, dtype: torch.dtype) -> SolveResult | None:
    """One SolveResult describing all per-chunk solves (x is empty: the iHVPs are not kept)."""
    if not summaries:
        return None
    worst = max(summaries, key=lambda s: (s["iterations"], s["trace"][-1] if s["trace"] else 0.0))
    return SolveResult(
        torch.empty(0, n_params, dtype=dtype),
        worst["method"],
        max(s["iterations"] for s in summaries),
        all(s["converged"] for s in summaries),
        worst["damping"],
        worst["trace"],
        worst["scale"],
        sum(s["seconds"] for s in summaries),
        {**worst["info"], "test_chunks": len(summaries)},
    )


# ---------------------------------------------------------------------------------------------------- the output
@dataclass
class ScoringReport:
    """What a scoring run did (returned by :func:`score_grid`; the calculator keeps it as ``last_scoring``)."""

    shape: tuple[int, int]
    test_chunk_size: int
    train_chunk_size: int
    blocks: int
    computed: int
    skipped: int
    seconds: float
    executor: dict[str, Any] = field(default_factory=dict)
    out: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "test_chunk_size": self.test_chunk_size,
            "train_chunk_size": self.train_chunk_size,
            "blocks": self.blocks,
            "computed": self.computed,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "executor": self.executor,
            "out": self.out,
        }


class _MemorySink:
    def __init__(self, shape: tuple[int, int]):
        self.array = np.empty(shape)
        self.done: set[tuple[int, int]] = set()

    def write(self, key: tuple[int, int], rows: slice, cols: slice, block: np.ndarray) -> None:
        self.array[rows, cols] = block

    def result(self) -> np.ndarray:
        return self.array

    def close(self) -> None:
        pass


class _DiskSink:
    """A float64 .npy file written with positioned writes, plus a JSON-lines manifest of finished blocks.

    The matrix is written into ``<out>.partial`` and renamed onto ``out`` (after an fsync) only when every block is
    done, so ``out`` is never a half file and never written through (a symlink at ``out`` is refused before);
    after an interruption the partial file and the manifest stay for ``resume``."""

    def __init__(self, path: Path, shape: tuple[int, int], header: dict[str, Any], resume: bool):
        self.path, self.shape = path, shape
        self.manifest = manifest_path(path)
        self.partial = path.with_name(path.name + PARTIAL_SUFFIX)
        self.done: set[tuple[int, int]] = set()
        self.checksums: dict[tuple[int, int], int] = {}
        self.complete = False
        self.claimed = 0
        for p in (path, self.manifest, self.partial):  # never written through a link, nor into a folder made here
            if os.path.lexists(p) or p == path:
                check_output_file(p, "out (the score file)")
        if path.suffix != ".npy":
            raise ValueError(f"out: the score file must end in .npy (numpy's format), got {path}")
        if resume and self.manifest.is_file() and (path.exists() or self.partial.exists()):
            self.data = self.partial if self.partial.exists() else path
            self._load(header)
        else:
            if resume and path.exists():
                raise ValueError(
                    f"{path} exists but is not a score file written by this package (it has no "
                    f"manifest {self.manifest.name}), so it is not resumed nor overwritten; choose "
                    "another output path (CLI: another --out) or delete it (Python: resume=False "
                    "replaces it)"
                )
            self.manifest.unlink(missing_ok=True)
            self.partial.unlink(missing_ok=True)
            self.data = self.partial
            try:
                np.lib.format.open_memmap(self.partial, mode="w+", dtype=np.float64, shape=shape)  # sparse file
                with open(self.manifest, "x") as fh:
                    fh.write(json.dumps({"header": header}) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException as exc:  # e.g. a full disk: leave no half file behind
                self.partial.unlink(missing_ok=True)
                self.manifest.unlink(missing_ok=True)
                if isinstance(exc, OSError) and not exc.filename:
                    raise OSError(exc.errno, exc.strerror, str(path)) from None
                raise
        self.offset = self._data_offset()
        self.fd = os.open(self.data, os.O_RDWR)
        self.log = open(self.manifest, "a")
        self._unclaimed: list[tuple[tuple[int, int], int]] = []
        self._last_sync = time.monotonic()
        if self.done:
            self.verify(header["test_chunk_size"], header["train_chunk_size"])

    def _read_block(self, rows: slice, cols: slice) -> bytes:
        n_cols, width = self.shape[1], (cols.stop - cols.start) * 8
        return b"".join(
            os.pread(self.fd, width, self.offset + (r * n_cols + cols.start) * 8) for r in range(rows.start, rows.stop)
        )

    def verify(self, test_chunk: int, train_chunk: int) -> None:
        """Check every finished block against the CRC-32 recorded in the manifest when it was written; a block
        whose bytes changed on disk since (overwritten, damaged) is refused with what to do."""
        bad = []
        for a, b in sorted(self.done):
            rows = slice(a * test_chunk, min((a + 1) * test_chunk, self.shape[0]))
            cols = slice(b * train_chunk, min((b + 1) * train_chunk, self.shape[1]))
            if zlib.crc32(self._read_block(rows, cols)) != self.checksums.get((a, b)):
                bad.append((a, b))
        if bad:
            os.close(self.fd)
            self.log.close()
            raise ValueError(
                f"{self.path} was modified or damaged after it was written: {len(bad)} of "
                f"{len(self.done)} finished blocks fail their checksum (first: test chunk {bad[0][0]}, "
                f"train chunk {bad[0][1]}); delete it and {self.manifest.name} and recompute (CLI: "
                "rerun without --resume, which starts afresh)"
            )

    def _data_offset(self) -> int:
        advice = (
            f"delete it and {self.manifest.name} and recompute (CLI: rerun without --resume, which starts "
            "afresh; Python: resume=False)"
        )
        try:
            arr = np.load(self.data, mmap_mode="r")
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(
                f"{self.path} is not a complete score file (cut short or damaged: {load_error(exc)}); {advice}"
            ) from None
        if arr.shape != self.shape or arr.dtype != np.float64 or not arr.flags.c_contiguous:
            raise ValueError(
                f"{self.path} holds a {arr.dtype} array of shape {arr.shape}, expected float64 {self.shape}; {advice}"
            )
        offset = int(arr.offset)
        del arr
        return offset

    def _load(self, header: dict[str, Any]) -> None:
        lines = self.manifest.read_text().splitlines()
        try:
            found = json.loads(lines[0])["header"]
        except (IndexError, ValueError, KeyError, TypeError):
            raise ValueError(
                f"{self.manifest} is not a scoring manifest; delete it (and {self.path}) to start afresh"
            ) from None
        if found != header:
            diff = sorted(k for k in set(found) | set(header) if found.get(k) != header.get(k))
            raise ValueError(
                f"{self.path} was started for a different problem (differs in {diff}); to keep it, "
                "choose another output path (CLI: another --out); to replace it, delete it and "
                f"{self.manifest.name} (or rerun without --resume, which starts afresh; Python: "
                "resume=False)"
            )
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut short by the interruption: that block is simply redone
                continue
            if entry.get("complete"):
                self.complete = True
            elif "block" in entry and "crc32" in entry:
                self.done.add(tuple(entry["block"]))
                self.checksums[tuple(entry["block"])] = int(entry["crc32"])

    def write(self, key: tuple[int, int], rows: slice, cols: slice, block: np.ndarray) -> None:
        n_cols = self.shape[1]
        data = np.ascontiguousarray(block, dtype="<f8")
        try:
            for r, row in enumerate(data):
                os.pwrite(self.fd, row.tobytes(), self.offset + ((rows.start + r) * n_cols + cols.start) * 8)
        except OSError as exc:  # a full disk: say which file (the CLI shows strerror and filename)
            raise OSError(exc.errno, exc.strerror, str(self.data)) from None
        self._unclaimed.append((key, zlib.crc32(data.tobytes())))
        if time.monotonic() - self._last_sync >= self.SYNC_SECONDS:
            self._sync()

    SYNC_SECONDS = 5.0
    """Finished blocks are claimed in the manifest at most this often (and on close), each time after an fsync of the
    data, so the manifest never claims data that are not on disk and fsync costs stay small."""

    def _sync(self) -> None:
        if self._unclaimed:
            os.fsync(self.fd)  # the data are on disk before the manifest says so
            self.log.write("".join(json.dumps({"block": list(k), "crc32": crc}) + "\n" for k, crc in self._unclaimed))
            self.log.flush()
            os.fsync(self.log.fileno())
            self.claimed += len(self._unclaimed)
            self._unclaimed = []
        self._last_sync = time.monotonic()

    def finish(self) -> None:
        self._sync()
        if self.data != self.path:  # every block is on disk (fsynced): the file takes its name
            os.replace(self.data, self.path)
            self.data = self.path
        self.log.write(json.dumps({"complete": True}) + "\n")
        self.log.flush()
        os.fsync(self.log.fileno())

    def result(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")

    def close(self) -> None:
        """Claim what was written (also after an exception or Ctrl-C: those blocks need not be redone)."""
        try:
            self._sync()
        finally:
            os.close(self.fd)
            self.log.close()
            if self.data != self.path and not self.done and not self.claimed:  # nothing worth resuming
                self.data.unlink(missing_ok=True)
                self.manifest.unlink(missing_ok=True)


def verify_score_file(out: str | os.PathLike) -> dict[str, Any]:
    """Check a score file written by ``scores(..., out=...)`` against its manifest: the array's shape and every
    finished block's CRC-32. Returns ``{"blocks": finished, "complete": bool}``; raises ValueError saying what to
    do when the file was cut short, modified or damaged."""
    path = Path(out)
    manifest = manifest_path(path)
    if not (path.is_file() and manifest.is_file()):
        raise ValueError(f"{path} or its manifest {manifest.name} is missing; nothing to verify")
    try:
        header = json.loads(manifest.read_text().splitlines()[0])["header"]
        shape = (int(header["shape"][0]), int(header["shape"][1]))
    except (IndexError, ValueError, KeyError, TypeError):
        raise ValueError(f"{manifest} is not a scoring manifest; delete it and {path.name} and recompute") from None
    sink = _DiskSink(path, shape, header, resume=True)
    sink.close()
    return {"blocks": len(sink.done), "complete": sink.complete}


# ---------------------------------------------------------------------------------------------------- validation
def _as_tensor(a: Any) -> torch.Tensor:
    return a.detach().cpu() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def _test_tensor(name: str, a: Any) -> torch.Tensor:
    """``a`` as a CPU tensor; ragged, string, object or complex input refused in one line naming ``name``."""
    if isinstance(a, torch.Tensor):
        t = a.detach().cpu()
    else:
        try:
            arr = np.asarray(a)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"{name} could not be read as an array (rows of different lengths?): {str(exc)[:120]}"
            ) from None
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        t = torch.as_tensor(arr)
    if t.is_complex():
        raise ValueError(f"{name} is complex ({t.dtype}); pass real numbers")
    return t


def _check_test_data(calc: "InfluenceCalculator", X_test: Any, y_test: Any) -> tuple[torch.Tensor, torch.Tensor]:
    obj = calc.objective
    X = _test_tensor("X_test", X_test)
    y = _test_tensor("y_test", y_test)
    train_X = getattr(obj.source, "X", None)
    if not X.is_floating_point() and isinstance(train_X, torch.Tensor) and train_X.is_floating_point():
        # integer pixels for a model trained on floats: the model's dtype, refused if that would round them
        # (integer inputs of a model trained on integers, e.g. token ids, stay as they are)
        exact = 2 * round(1 / torch.finfo(obj.dtype).eps)  # 2**24 for float32, 2**53 for float64
        if X.numel() and int(X.long().abs().max()) > exact:
            raise ValueError(
                f"X_test holds integers above {exact}, which {obj.dtype} cannot represent exactly; "
                "rescale them or pass floats"
            )
        X = X.to(obj.dtype)
    if X.ndim == len(obj.input_shape) and y.ndim == 0:
        X, y = X.unsqueeze(0), y.unsqueeze(0)
    if X.ndim != len(obj.input_shape) + 1 or tuple(X.shape[1:]) != obj.input_shape:
        raise ValueError(
            f"X_test must have shape (k, {', '.join(map(str, obj.input_shape))}) like the training "
            f"inputs, got {tuple(X.shape)}"
        )
    if y.ndim != 1 or len(y) != len(X) or len(X) == 0:
        raise ValueError(
            f"X_test and y_test must be non-empty with the same length, got {tuple(X.shape)} and {tuple(y.shape)}"
        )
    if X.is_floating_point() and not torch.isfinite(X).all():
        raise ValueError("X_test contains NaN or infinite values")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise ValueError("y_test must hold integer class labels")
    n_classes = obj.n_classes
    y = y.long()
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ValueError(
            f"y_test labels must lie in [0, {n_classes}); got values from {int(y.min())} to {int(y.max())}"
        )
    return X, y


# ---------------------------------------------------------------------------------------------------- the grid
def score_grid(
    calc: "InfluenceCalculator",
    X_test: Any = None,
    y_test: Any = None,
    *,
    ihvps: Any = None,
    train_indices: Any | None = None,
    test_chunk_size: int | None = None,
    train_chunk_size: int | None = None,
    executor: Any = None,
    out: str | os.PathLike | None = None,
    resume: bool = True,
    progress: Progress | None = None,
) -> tuple[np.ndarray, ScoringReport, SolveResult | None]:
    """Influence scores (n_test, n_selected) of a fitted calculator, block by block, with the
    :class:`ScoringReport` of the run and the merged summary of its iHVP solves (None when ``ihvps`` are given or no
    block was computed here).

    Give either test points (``X_test``, ``y_test``) or precomputed iHVPs ``ihvps`` (k, p). ``train_indices``
    selects training columns (None = all). ``test_chunk_size`` (default 128) and ``train_chunk_size`` (default the
    calculator's ``chunk_size``) set the block and so the memory. ``executor``: None (sequential), an
    :class:`~influence_core.influence.executors.Executor`, a ``distributed.Client`` or a scheduler address. ``out``: a
    ``.npy``
    path to write the matrix to (returned as a read-only memmap); ``resume`` continues an interrupted run of the same
    problem found there (False: start afresh). ``progress(fraction, message)`` is called after every block.
    """
    obj = calc.objective
    test_chunk = check_chunk_size(
        DEFAULT_TEST_CHUNK_SIZE if test_chunk_size is None else test_chunk_size, "test_chunk_size"
    )
    train_chunk = check_chunk_size(obj.chunk_size if train_chunk_size is None else train_chunk_size, "train_chunk_size")
    train_idx = obj.subset(train_indices)
    if ihvps is not None:
        if X_test is not None or y_test is not None:
            raise ValueError("pass either test points (X_test, y_test) or precomputed ihvps, not both")
        S = _as_tensor(ihvps)
        if S.ndim == 1:
            S = S.unsqueeze(0)
        if S.ndim != 2 or S.shape[1] != obj.n_params or len(S) == 0:
            raise ValueError(f"ihvps must have shape (k, {obj.n_params}), got {tuple(S.shape)}")
        X, y, k = None, None, len(S)
    else:
        calc._require_fit()
        if X_test is None or y_test is None:
            raise ValueError("pass the test points X_test and y_test")
        X, y = _check_test_data(calc, X_test, y_test)
        S, k = None, len(X)
    shape = (k, len(train_idx))
    test_starts = list(range(0, k, test_chunk))
    train_starts = list(range(0, len(train_idx), train_chunk))
    total = len(test_starts) * len(train_starts)

    if out is not None:
        header = {
            "format": 2,
            "shape": list(shape),
            "test_chunk_size": test_chunk,
            "train_chunk_size": train_chunk,
            "problem": _fingerprint(
                obj.theta,
                getattr(obj.source, "X", type(obj.source).__name__),
                obj.y,
                obj.names,
                obj.task.describe(),
                None if calc.config is None else calc.fit_record(),
                obj.weight_decay,
                train_idx,
                X,
                y,
                S,
            ),
        }
        sink: _MemorySink | _DiskSink = _DiskSink(Path(out), shape, header, resume)
    else:
        sink = _MemorySink(shape)
    owned = not isinstance(executor, Executor)
    start = time.perf_counter()
    computed = 0
    summaries: list[dict[str, Any]] = []
    ex = None
    try:
        if isinstance(sink, _DiskSink) and sink.complete:
            pending: deque = deque()
            ex = None
        else:
            pending = deque(
                (a, b) for a in range(len(test_starts)) for b in range(len(train_starts)) if (a, b) not in sink.done
            )
            ex = get_executor(executor)
        finished = total - len(pending)
        if progress and finished:
            progress(finished / total, f"resuming: {finished}/{total} blocks already on disk")
        computed = len(pending)
        if pending:
            try:
                _run_grid(
                    ex,
                    ScoringProblem(calc, X, y, S, train_idx),
                    pending,
                    test_starts,
                    train_starts,
                    k,
                    len(train_idx),
                    test_chunk,
                    train_chunk,
                    sink,
                    summaries,
                    progress,
                    total,
                    finished,
                )
            except ClusterLostError as exc:
                hint = (
                    f"the finished blocks are kept in {out}: rerun with resume=True (CLI: the same command "
                    "with --resume) once the cluster is back"
                    if out is not None
                    else "nothing was kept: pass out=FILE.npy (CLI: --out FILE.npy) so that a rerun with --resume "
                    "skips the finished blocks"
                )
                raise ClusterLostError(f"{exc}; {hint}") from exc
        if isinstance(sink, _DiskSink) and not sink.complete:
            sink.finish()
        report = ScoringReport(
            shape,
            test_chunk,
            train_chunk,
            total,
            computed,
            total - computed,
            time.perf_counter() - start,
            ex.describe() if ex is not None else {"executor": None},
            None if out is None else str(out),
        )
        solve = _merge_solves(summaries, obj.n_params, obj.dtype) if ihvps is None and summaries else None
        return sink.result(), report, solve
    finally:
        sink.close()
        if owned and ex is not None:
            ex.close()


MAX_RECOVERIES = 5
"""How many times a run re-sends its problem and resubmits lost blocks after workers die before giving up."""


def _run_grid(
    ex: Executor,
    problem: ScoringProblem,
    pending: deque,
    test_starts: list[int],
    train_starts: list[int],
    k: int,
    n_cols: int,
    test_chunk: int,
    train_chunk: int,
    sink: Any,
    summaries: list[dict[str, Any]],
    progress: Progress | None,
    total: int,
    finished: int,
) -> None:
    """Submit iHVP and block tasks with a bounded number in flight; write blocks as they arrive.

    Lost work (a worker died, taking in-flight tasks or the last copy of the scattered problem with it) is
    resubmitted on the remaining workers: the problem is scattered again and every block in flight is requeued, so
    the result is the same matrix, bit for bit. When no worker or no scheduler is left, :class:`ClusterLostError`
    says how many blocks are done (the caller adds how to resume).
    """
    done = [finished]

    def cluster(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the executor; a connection lost on the way means the scheduler is gone."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not ex.is_lost(exc):
                raise
            raise ClusterLostError(
                f"the Dask scheduler is gone ({type(exc).__name__}: {str(exc)[:200]}) after {done[0]}/{total} blocks"
            ) from exc

    handle = cluster(ex.scatter, problem)
    remaining: dict[int, int] = {}
    for a, _ in pending:
        remaining[a] = remaining.get(a, 0) + 1
    solves: dict[int, Any] = {}
    solved: dict[int, dict[str, Any]] = {}
    in_flight: dict[Any, tuple[int, int]] = {}
    window = ex.max_in_flight
    recoveries = 0
    while pending or in_flight:
        while pending and len(in_flight) < window:
            a, b = pending.popleft()
            if a not in solves:
                t0 = test_starts[a]
                solves[a] = cluster(ex.submit, _ihvp_task, handle, t0, min(t0 + test_chunk, k), priority=1)
            j0 = train_starts[b]
            future = cluster(ex.submit, _score_task, handle, solves[a], j0, min(j0 + train_chunk, n_cols))
            in_flight[future] = (a, b)
        future = cluster(ex.wait_first, in_flight)
        a, b = in_flight.pop(future)
        try:
            block, summary = future.result()
        except Exception as exc:
            if not ex.is_lost(exc):
                raise  # an error of the computation itself (a solver failure, ...): not retried
            recoveries += 1
            ex.recover(exc, recoveries > MAX_RECOVERIES, done[0], total)  # raises ClusterLostError when hopeless
            for f, key in [(future, (a, b)), *in_flight.items()]:
                pending.appendleft(key)
                ex.release(f)
            in_flight.clear()
            for f in solves.values():
                ex.release(f)
            solves.clear()
            ex.release(handle)
            handle = cluster(ex.scatter, problem)
            continue
        ex.release(future)
        solved.setdefault(a, summary)
        t0, j0 = test_starts[a], train_starts[b]
        sink.write((a, b), slice(t0, t0 + block.shape[0]), slice(j0, j0 + block.shape[1]), block)
        done[0] += 1
        remaining[a] -= 1
        if remaining[a] == 0:
            ex.release(solves.pop(a))
        if progress:
            progress(
                done[0] / total,
                f"block {done[0]}/{total}: test {t0}-{t0 + block.shape[0]} x train {j0}-{j0 + block.shape[1]}",
            )
    summaries[:] = [solved[a] for a in sorted(solved)]

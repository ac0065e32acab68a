"""Shared helpers of the benchmarks: timing (median of repeats), peak resident memory measured in a child process,
the machine description recorded with every result, and table output (text, Markdown, JSON).

Rules these helpers exist to enforce: numbers are *measured* on this machine in one run and reported
as ratios to a baseline measured in the same run; timings are the median of several repeats after a warm-up (other
processes share the machine); peak memory is the peak resident set size (VmHWM) of a fresh worker process, never an
estimate. Nothing here asserts on a time: tests check the shape of the tables only.

Reuse from another benchmark::

    from influence_core.bench.common import time_call, peak_memory, environment, write_report

    t = time_call(lambda: work(), repeats=5)          # Timing(median=..., values=[...])
    mem = peak_memory(module_level_function, arg)      # MemoryReport(result=..., peak_bytes=..., ...)
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from influence_core.evaluation.memory import current_rss_bytes, peak_rss_bytes, reset_peak_rss
from influence_core.io_safety import atomic_write, check_output_dir, check_output_file, jsonable
from influence_core.runtime import torch_threads  # noqa: F401  (re-exported for the benchmarks)

__all__ = [
    "MissingExtraError",
    "Timing",
    "time_call",
    "MemoryReport",
    "peak_memory",
    "current_rss_bytes",
    "peak_rss_bytes",
    "reset_peak_rss",
    "environment",
    "format_table",
    "markdown_table",
    "write_report",
    "fmt",
]


class MissingExtraError(RuntimeError):
    """A benchmark needs an optional extra that is not installed; the message gives the pip command."""


# ---------------------------------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed calls; ``median`` is the number to report."""

    median: float
    min: float
    max: float
    values: list[float]
    warmup: int

    @property
    def repeats(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "values": list(self.values),
            "repeats": self.repeats,
            "warmup": self.warmup,
        }


def time_call(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> Timing:
    """Median wall-clock time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls (first-call costs
    such as allocator growth and lazy initialisation are not what a benchmark should measure)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
    values = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        values.append(time.perf_counter() - start)
    return Timing(statistics.median(values), min(values), max(values), values, warmup)


# ---------------------------------------------------------------------------------------------------------- memory
@dataclass
class MemoryReport:
    """Peak memory of one call of a function in a fresh worker process.

    peak_bytes: peak RSS while the function ran (VmHWM reset just before the call when the kernel allows it,
    ``reset`` says whether it did; otherwise the peak of the whole worker). baseline_bytes: RSS of the worker just
    before the call (interpreter, imports). process_peak_bytes: peak RSS of the worker over its whole life, as seen
    by the parent through getrusage(RUSAGE_CHILDREN).ru_maxrss when it is the only child, else the worker's VmHWM.
    extra_bytes = peak_bytes − baseline_bytes is what the call itself added.
    """

    result: Any
    peak_bytes: int
    baseline_bytes: int
    process_peak_bytes: int
    reset: bool
    seconds: float

    @property
    def extra_bytes(self) -> int:
        return max(0, self.peak_bytes - self.baseline_bytes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("result")
        d["extra_bytes"] = self.extra_bytes
        return d


def _memory_worker(
    conn: Any,
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    setup: Callable[[], Any] | None,
) -> None:  # pragma: no cover - runs in the child
    try:
        if setup is not None:
            setup()
        baseline = current_rss_bytes() or 0
        reset = reset_peak_rss()
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        conn.send(("ok", result, peak_rss_bytes(), baseline, reset, seconds))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", 0, 0, False, 0.0))
    finally:
        conn.close()


def peak_memory(
    fn: Callable[..., Any],
    *args: Any,
    setup: Callable[[], Any] | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> MemoryReport:
    """Run ``fn(*args, **kwargs)`` once in a fresh ("spawn") worker process and measure its peak resident memory.

    ``fn``, ``setup`` and the arguments must be picklable (module-level functions); ``fn``'s return value comes
    back in ``result`` (keep it small). ``setup()`` runs in the worker before the baseline is taken (e.g. imports,
    building the data), so ``extra_bytes`` isolates the call. A fresh process per configuration means the peak of
    one configuration never leaks into the next. Raises RuntimeError with the worker's traceback if it failed.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = ctx.Process(target=_memory_worker, args=(child, fn, args, kwargs, setup))
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            proc.terminate()
            raise RuntimeError(f"memory worker did not finish within {timeout} s")
        status, result, peak, baseline, reset, seconds = parent.recv()
    except EOFError:
        result, status = f"worker exited with code {proc.exitcode} before reporting", "error"
        peak = baseline = 0
        reset, seconds = False, 0.0
    finally:
        proc.join()
    if status != "ok":
        raise RuntimeError(f"memory worker failed: {result}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    unit = 1 if sys.platform == "darwin" else 1024
    # ru_maxrss of RUSAGE_CHILDREN is the max over all waited-for children: it identifies this worker only if it grew
    process_peak = after * unit if after > before else peak
    return MemoryReport(result, int(peak), int(baseline), int(max(process_peak, peak)), bool(reset), float(seconds))


# ---------------------------------------------------------------------------------------------------------- context
def environment() -> dict[str, Any]:
    """What the numbers were measured on (recorded in every report)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    return info


# ---------------------------------------------------------------------------------------------------------- tables
def fmt(value: Any, digits: int = 3) -> str:
    """Compact cell text: floats to ``digits`` significant digits, None/NaN as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and (abs(value) >= 10**5 or abs(value) < 10**-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return str(value)


def _cells(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> list[list[str]]:
    return [[fmt(row.get(key)) for key, _ in columns] for row in rows]


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Plain-text table for the terminal. ``columns``: (key in the row dicts, header)."""
    headers = [h for _, h in columns]
    body = _cells(rows, columns)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    out = [line, sep] + [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in body
    ]
    return "\n".join(out)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """GitHub-flavoured Markdown table (first column left-aligned, the rest right-aligned)."""
    headers = [h for _, h in columns]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in _cells(rows, columns)]
    return "\n".join(out)


def write_report(
    out: str | os.PathLike, *, title: str, command: str, sections: Sequence[dict[str, Any]], meta: dict[str, Any]
) -> list[Path]:
    """Write a benchmark report. ``out`` ending in ``.md`` writes Markdown, ``.json`` writes JSON, anything else
    writes both ``<out>.md`` and ``<out>.json``. Each section: {"heading", "text" (optional), "rows", "columns"}.
    Returns the paths written."""
    targets = report_paths(out)
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)  # checked by check_report_paths before the benchmark ran
        if path.suffix == ".json":
            payload = {
                "title": title,
                "command": command,
                "meta": meta,
                "sections": [{"heading": s["heading"], "text": s.get("text", ""), "rows": s["rows"]} for s in sections],
            }
            with atomic_write(path) as fh:
                fh.write(json.dumps(payload, indent=2, default=_json_default) + "\n")
        else:
            lines = [f"### {title}", "", f"Generated by `{command}`.", ""]
            for s in sections:
                lines += [f"#### {s['heading']}", ""]
                if s.get("text"):
                    lines += [s["text"], ""]
                lines += [markdown_table(s["rows"], s["columns"]), ""]
            env = meta.get("environment", {})
            if env:
                lines += ["Machine: " + ", ".join(f"{k}={v}" for k, v in env.items()), ""]
            with atomic_write(path) as fh:
                fh.write("\n".join(lines))
    return targets


def report_paths(out: str | os.PathLike) -> list[Path]:
    """The files :func:`write_report` writes for ``out``: itself (``.md``/``.json``), or ``<out>.md`` and
    ``<out>.json``."""
    out = Path(out)
    return (
        [out]
        if out.suffix in (".md", ".json")
        else [out.with_name(out.name + ".md"), out.with_name(out.name + ".json")]
    )


def check_report_paths(out: str | os.PathLike | None) -> None:
    """Check every file of a report before the benchmark runs (each file's folder is the report's folder, which
    may be created: the user named it); nothing is created here."""
    if out is None:
        return
    for path in report_paths(out):
        if path.parent.exists():
            check_output_file(path, "--out")
        else:
            check_output_dir(path.parent, "--out")


def _json_default(obj: Any) -> Any:
    cleaned = jsonable(obj)
    return str(obj) if cleaned is obj else cleaned


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that produced a report, for the report itself."""
    args = list(sys.argv[1:] if argv is None else argv)
    return "python -m influence_core " + " ".join(args)


__all__.append("command_line")


def touch_memory(nbytes: int) -> int:
    """Allocate and touch ``nbytes`` of memory, then free it (a calibration target for :func:`peak_memory`)."""
    block = bytearray(int(nbytes))
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


__all__.append("touch_memory")

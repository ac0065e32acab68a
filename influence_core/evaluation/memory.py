"""Measured (not estimated) resident memory of this process, for the studies and benchmarks.

Linux exposes the current resident set (``VmRSS``) and its high-water mark (``VmHWM``) in ``/proc/self/status``, and
writing ``5`` to ``/proc/self/clear_refs`` resets the high-water mark to the current resident set, so the peak of one
step can be read as VmHWM − VmRSS(before). Elsewhere the functions fall back to ``getrusage`` or report None/NaN.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys

__all__ = ["status_kib", "current_rss_bytes", "peak_rss_bytes", "reset_peak_rss", "PeakMemory"]


def status_kib(key: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (e.g. "VmRSS", "VmHWM"), or None where unavailable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux /proc; None elsewhere)."""
    kib = status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far: /proc VmHWM where available, else ru_maxrss."""
    kib = status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: write "5" to /proc/self/clear_refs). Returns whether it
    worked; where it does not, a later peak includes everything before the call."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak resident memory added inside a ``with`` block, in MB (``.mb``; NaN where unsupported).

    Linux: frees what glibc holds (``malloc_trim(0)``), resets the high-water mark (:func:`reset_peak_rss`), records
    VmRSS, and on exit reports VmHWM − that VmRSS: the pages the block touched on top of what was resident.
    """

    def __init__(self) -> None:
        self.mb = float("nan")
        self._base: int | None = None

    @staticmethod
    def supported() -> bool:
        return sys.platform.startswith("linux") and os.access("/proc/self/clear_refs", os.W_OK)

    def __enter__(self) -> "PeakMemory":
        if not self.supported():
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # pragma: no cover - non-glibc Linux
            pass
        self._base = status_kib("VmRSS") if reset_peak_rss() else None
        return self

    def __exit__(self, *exc: object) -> None:
        peak = status_kib("VmHWM")
        if self._base is not None and peak is not None:
            self.mb = max(0.0, (peak - self._base) / 1024.0)

"""What every study writes, in one place: CSV tables, JSON records, Markdown text and figure files, each written
atomically (temporary file, then rename: an interrupted run never leaves half a file) and JSON-cleaned.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from influence_core.io_safety import atomic_path, atomic_write, jsonable

__all__ = ["write_csv", "write_json", "write_text", "pyplot", "save_matplotlib", "save_plotly"]


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> Path:
    """One row per dict; columns ``fields`` (others ignored), or every key in order of first appearance. NaN is
    written as an empty cell."""
    if fields is None:
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        fields = keys
    with atomic_write(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return Path(path)


def write_json(path: str | Path, record: Any, *, indent: int | None = None, compact: bool = False) -> Path:
    """``record`` through :func:`~influence_core.io_safety.jsonable` (NaN → null, ±inf → "inf"/"-inf")."""
    separators = (",", ":") if compact else None
    with atomic_write(path) as fh:
        fh.write(json.dumps(jsonable(record), indent=indent, separators=separators) + "\n")
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path) as fh:
        fh.write(text)
    return Path(path)


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend; matplotlib is the optional ``plots`` extra, so its
    absence is one clear error naming the install command."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        from influence_core.bench.common import MissingExtraError

        raise MissingExtraError(
            "the studies draw their PNG plots with matplotlib, which is not installed: pip install -e '.[plots]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_matplotlib(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    plt = pyplot()

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)


def save_plotly(fig: Any, path: str | Path, plotlyjs: str | bool = "inline") -> Path:
    """Save a plotly figure as a standalone HTML file; ``plotlyjs``: "inline" (True) embeds plotly.js, "cdn" links
    it."""
    include = True if plotlyjs in ("inline", True) else "cdn"
    with atomic_path(path) as tmp:
        fig.write_html(str(tmp), include_plotlyjs=include)
    return Path(path)

"""The README's frontier table, generated from a committed frontier (``docs/frontier/NAME.json``, written by
``benchmarks/frontier.py``): per cost budget, the most faithful method within it, its LDS and its cost.

    python benchmarks/frontier_table.py docs/frontier/digits_mlp.json                    # print the table
    python benchmarks/frontier_table.py docs/frontier/digits_mlp.json --update README.md  # rewrite it in place

``--update`` replaces what stands between the lines ``<!-- frontier-table: NAME -->`` and ``<!-- /frontier-table
-->`` of the file (``tests/test_frontier_table.py`` checks that the README's table is this one).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

BEGIN = "<!-- frontier-table: {name} -->"
END = "<!-- /frontier-table -->"
SOLVERS = {
    "exact": "exact",
    "low_rank": "exact low-rank",
    "cg": "CG",
    "pcg": "sample-preconditioned CG",
    "lissa": "LiSSA",
    "kfac": "K-FAC",
    "ekfac": "EK-FAC",
    "arnoldi": "Arnoldi",
    "cg_factor": "CG on the stored factor",
}


def readable(label: str) -> str:
    """``benchmarks/frontier.py``'s name of a configuration, readable: "importance m=512 cg" -> "`importance`
    m = 512, CG"; "full-data exact" -> "all training points, exact"; "gradient dot" stays."""
    if label == "gradient dot":
        return "gradient dot (no Hessian)"
    if label.startswith("full-data "):
        solver = label.removeprefix("full-data ")
        return f"all training points, {SOLVERS.get(solver, solver)}"
    sampler, _, rest = label.partition(" m=")
    m, _, solver = rest.partition(" ")
    return f"`{sampler}` m = {int(m):,}, {SOLVERS.get(solver, solver)}"


def _budget(value: Any) -> float:
    return float(value)  # "inf" (JSON has no infinity) reads as math.inf


def rows(result: dict[str, Any]) -> list[str]:
    """The table's Markdown lines: the header, then one row per budget with a method within it (a run of budgets
    that nothing fits is one row naming the cheapest method's cost)."""
    lines = [
        "| budget (× one forward+backward pass) | most faithful method within it | LDS | cost |",
        "|---:|---|---:|---:|",
    ]
    costs = [s["cost_ratio"] for s in result["summary"] if s.get("lds_mean") is not None]
    empty = [b for b in result["budgets"] if b["best"] is None]
    if empty:
        top = max(_budget(b["budget"]) for b in empty)
        lines.append(f"| ≤ {top:,.0f} | none: the cheapest method costs {min(costs):,.0f}× | — | — |")
    for b in result["budgets"]:
        if b["best"] is None:
            continue
        limit = _budget(b["budget"])
        std = b.get("lds_std")
        lds = f"{b['lds_mean']:.3f}" + (f" ± {std:.3f}" if std is not None and std > 0 else "")
        where = "any" if math.isinf(limit) else f"≤ {limit:,.0f}"
        lines.append(f"| {where} | {readable(b['best'])} | {lds} | {b['cost_ratio']:,.0f}× |")
    return lines


def table(result: dict[str, Any]) -> str:
    """The block that stands between the markers (markers included)."""
    name = result["ground_truth"]
    return "\n".join([BEGIN.format(name=name), *rows(result), END])


def update(path: Path, result: dict[str, Any]) -> bool:
    """Rewrite the table of ``result`` in ``path`` between its markers; True when the file changed. Raises
    ValueError when the markers are missing."""
    text = path.read_text()
    begin = BEGIN.format(name=result["ground_truth"])
    if begin not in text or END not in text.split(begin, 1)[1]:
        raise ValueError(f"{path} has no '{begin}' ... '{END}' block to rewrite")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(END, 1)
    new = head + table(result) + tail
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("frontier", help="a committed frontier, e.g. docs/frontier/digits_mlp.json")
    ap.add_argument("--update", default=None, metavar="FILE", help="rewrite the table in FILE (e.g. README.md)")
    args = ap.parse_args(argv)
    result = json.loads(Path(args.frontier).read_text())
    if args.update:
        changed = update(Path(args.update), result)
        print(f"{args.update}: {'updated' if changed else 'already up to date'}")
    else:
        print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

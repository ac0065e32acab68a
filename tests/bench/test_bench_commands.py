"""The benchmark commands run on tiny configurations and produce well-formed tables (no timing assertions)."""

from __future__ import annotations

import json
import math

import pytest

from influence_core.bench import common
from influence_core.bench.compare import min_budget
from influence_core.cli.main import main


def test_time_call_reports_median_of_repeats():
    calls = []
    t = common.time_call(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and t.repeats == 3 and t.warmup == 2
    assert t.min <= t.median <= t.max
    with pytest.raises(ValueError, match="repeats"):
        common.time_call(lambda: None, repeats=0)


def test_peak_memory_is_measured_in_a_child_process():
    report = common.peak_memory(common.touch_memory, 64 * 1024 * 1024)
    assert report.result == 64 * 1024 * 1024
    assert report.peak_bytes >= report.baseline_bytes > 0
    assert report.extra_bytes >= 48 * 1024 * 1024  # the 64 MiB it touched, measured, not estimated
    assert report.process_peak_bytes >= report.peak_bytes
    with pytest.raises(RuntimeError, match="memory worker failed"):
        common.peak_memory(common.touch_memory, -1)


def test_tables_are_well_formed(tmp_path):
    rows = [{"a": "x", "b": 1.23456, "c": None}, {"a": "yy", "b": 1e-7, "c": True}]
    cols = [("a", "A"), ("b", "B"), ("c", "C")]
    text = common.format_table(rows, cols).splitlines()
    assert len(text) == 4 and text[0].split() == ["A", "B", "C"]
    md = common.markdown_table(rows, cols).splitlines()
    assert len(md) == 4 and all(line.count("|") == 4 for line in md)
    paths = common.write_report(
        tmp_path / "r", title="T", command="cmd", meta={}, sections=[{"heading": "H", "rows": rows, "columns": cols}]
    )
    assert sorted(p.suffix for p in paths) == [".json", ".md"]
    assert json.loads((tmp_path / "r.json").read_text())["sections"][0]["rows"][0]["a"] == "x"


def test_min_budget_finds_the_smallest_sufficient_iteration_count():
    calls = []

    def err(k):
        calls.append(k)
        return 0.5**k

    k, e = min_budget(err, 1e-3, 1000)
    assert k == 10 and e <= 1e-3 and 0.5 ** (k - 1) > 1e-3
    assert min_budget(err, 1e-9, 16) == (16, 0.5**16)  # the cap misses the target: say so, don't loop


def _rows(path):
    return json.loads(path.read_text())["sections"][0]["rows"]


def test_bench_query_quick_writes_a_table(tmp_path, capsys):
    out = tmp_path / "query"
    assert main(["bench", "query", "--quick", "--configs", "digits:logreg", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "query / fwd+bwd" in printed and "iHVP / fwd+bwd" in printed
    rows = _rows(tmp_path / "query.json")
    assert [r["solver"] for r in rows] == ["exact", "cg", "lissa"]
    for r in rows:
        for key in ("ratio", "ihvp_ratio", "scoring_ratio", "hvp_ratio", "fwd_bwd_ms"):
            assert math.isfinite(r[key]) and r[key] > 0
        assert r["config"] == "digits:logreg" and r["n"] > 0 and r["p"] == 650
    assert rows[1]["ihvp_rel_err"] < 1e-2 and rows[2]["ihvp_rel_err"] < 1e-2  # measured against exact
    md = (tmp_path / "query.md").read_text()
    assert "| data/model |" in md and md.count("| digits:logreg |") == 3


def test_bench_compare_matches_pydvl_exact(tmp_path):
    pytest.importorskip("pydvl.influence.torch")
    out = tmp_path / "compare.json"
    assert main(["bench", "compare", "--quick", "--solvers", "exact", "--out", str(out)]) == 0
    (row,) = _rows(out)
    assert row["ours"] == "exact" and row["theirs"] == "DirectInfluence"
    assert row["spearman"] >= 0.99 and row["pearson"] >= 0.99
    assert abs(row["scale_times_n"] - 1.0) < 1e-2  # pyDVL's "up" influence is n times our score
    assert row["solve_ratio"] > 0 and row["query_ratio"] > 0


def test_bench_lists_its_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "query" in text and "compare" in text


def test_bench_query_names_a_bad_hessian_option(capsys, monkeypatch):
    import influence_core.bench.query as query

    monkeypatch.setattr(query, "measure_config", lambda *a, **k: pytest.fail("measured before the check"))
    assert main(["bench", "query", "--configs", "digits:logreg", "--hessian", "full", "foo", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --hessian takes 'full' or a sample size (a positive integer), got ['foo', '0']"


@pytest.mark.parametrize(
    "out, message", [("link.md", "symbolic link"), ("d.md", "is a directory"), ("afile/r", "is a file, not a folder")]
)
def test_bench_report_paths_are_checked_before_measuring(tmp_path, capsys, monkeypatch, out, message):
    """The report used to be written after the benchmark, through a symlink, into folders made on the way."""
    import influence_core.bench.query as query

    monkeypatch.setattr(query, "measure_config", lambda *a, **k: pytest.fail("measured before the check"))
    (tmp_path / "victim.txt").write_text("precious")
    (tmp_path / "link.md").symlink_to(tmp_path / "victim.txt")
    (tmp_path / "d.md").mkdir()
    (tmp_path / "afile").write_text("x")
    assert main(["bench", "query", "--configs", "digits:logreg", "--out", str(tmp_path / out)]) == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "victim.txt").read_text() == "precious"

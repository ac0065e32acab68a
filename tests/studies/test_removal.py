"""The class-removal study (``python -m influence_core removal``): a tiny real run end to end, its determinism, the
savings arithmetic against hand-computed values, the generated report, and bad input."""

from __future__ import annotations

import argparse
import csv
import json
import math

import pytest
import torch

from influence_core.cli import removal as removal_cli
from influence_core.cli.main import COMMANDS
from influence_core.studies import removal as study


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    removal_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One real --quick run (trains a digits MLP, 2 samplers x 2 m x 2 seeds x class 0, memory in workers)."""
    out = tmp_path_factory.mktemp("removal-quick")
    threads = torch.get_num_threads()
    assert removal_cli.run(_args("--quick", "--out", str(out))) == 0
    assert torch.get_num_threads() == threads  # the run restores the caller's thread count
    return out


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_wires_the_removal_command():
    assert COMMANDS["removal"][0] == "influence_core.cli.removal"


@pytest.mark.slow
def test_quick_run_writes_complete_well_formed_output(quick_run):
    for name in (
        "results.csv",
        "memory.csv",
        "results.json",
        "samples.json",
        "summary.md",
        "f1_vs_m.png",
        "f1_vs_time.png",
        "memory_vs_m.png",
        "f1_vs_m.html",
        "f1_vs_time.html",
        "memory_vs_m.html",
    ):
        assert (quick_run / name).stat().st_size > 0, name
    for name in ("f1_vs_m.png", "f1_vs_time.png", "memory_vs_m.png"):
        assert (quick_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plotly" in (quick_run / "f1_vs_m.html").read_text()

    rows = _csv(quick_run / "results.csv")
    assert list(rows[0]) == study.ROW_FIELDS
    grid = [r for r in rows if r["sampler"] != "full"]
    assert len(grid) == 2 * 2 * 2 * 1  # samplers x m x seeds x classes
    assert {(r["sampler"], r["m"], r["seed"]) for r in grid} == {
        (s, m, d) for s in ("random", "logit") for m in ("32", "64") for d in ("0", "1")
    }
    assert len([r for r in rows if r["sampler"] == "full"]) == 1
    for r in rows:
        assert r["error"] == "" and r["converged"] == "1"
        for key in ("f1_at_1", "f1_best", "forget_best", "retain_best", "consistency_best", "ref_agree_best"):
            assert 0.0 <= float(r[key]) <= 1.0
        assert float(r["f1_best"]) >= float(r["f1_at_1"])
        assert float(r["solver_seconds"]) > 0 and int(r["iterations"]) > 0 and float(r["self_loss_at_1"]) > 0
        assert -1.0 <= float(r["delta_cos"]) <= 1.0 + 1e-12 and float(r["delta_rel_error"]) >= 0
    full = [r for r in rows if r["sampler"] == "full"]
    assert float(full[0]["delta_cos"]) == pytest.approx(1.0) and float(full[0]["delta_rel_error"]) == 0.0

    memory = _csv(quick_run / "memory.csv")
    assert {(r["sampler"], r["m"]) for r in memory if r["sampler"] != "full"} == {
        ("random", "32"),
        ("random", "64"),
        ("logit", "32"),
        ("logit", "64"),
    }
    assert [r["m"] for r in memory if r["sampler"] == "full"] == [full[0]["m"]]  # the whole pool, measured once
    assert all(float(r["peak_kb"]) > 0 and float(r["peak_rss_kb"]) > float(r["peak_kb"]) for r in memory)

    record = json.loads((quick_run / "results.json").read_text())
    assert record["command"].startswith("python -m influence_core removal --dataset digits --arch mlp")
    cfg = record["config"]
    assert cfg["samplers"] == ["random", "logit"] and cfg["m"] == [32, 64] and cfg["seeds"] == [0, 1]
    assert cfg["curvature"] == "gauss_newton" and cfg["damping"] == 0.01 and cfg["solver"] == "cg"
    assert len(record["summary"]) == 4 and record["failures"] == 0
    for quality in study.QUALITY:
        assert {(s["sampler"], s["m_ref"]) for s in record["savings"][quality]} == {("logit", 32), ("logit", 64)}
    samples = json.loads((quick_run / "samples.json").read_text())
    assert len(samples) == 8 and all(len(s["indices"]) == s["m"] for s in samples)

    md = (quick_run / "summary.md").read_text()
    assert "| random | 32 | 2 |" in md and "| logit | 64 | 2 |" in md and "smallest m reaching it" in md
    assert "cos(Δ, Δ_full)" in md


@pytest.mark.slow
def test_same_seed_gives_the_same_numbers(quick_run, tmp_path):
    out = tmp_path / "again"
    argv = ("--quick", "--seeds", "1", "--memory-configs", "0", "--no-reference", "--no-full", "--out", str(out))
    assert removal_cli.run(_args(*argv)) == 0
    first = {
        (r["sampler"], r["m"], r["seed"]): r
        for r in _csv(quick_run / "results.csv")
        if r["sampler"] != "full" and r["seed"] == "1"
    }
    second = {(r["sampler"], r["m"], r["seed"]): r for r in _csv(out / "results.csv")}
    assert first.keys() == second.keys() and len(first) == 4  # --seeds given explicitly overrides --quick's
    for key in first:
        for field in (
            "f1_at_1",
            "f1_best",
            "best_alpha",
            "self_loss_at_1",
            "consistency_best",
            "iterations",
            "lambda_max",
            "delta_norm",
        ):
            assert first[key][field] == second[key][field], (key, field)
    samples = [s for s in json.loads((quick_run / "samples.json").read_text()) if s["seed"] == 1]
    assert samples == json.loads((out / "samples.json").read_text())


@pytest.mark.slow
def test_report_is_generated_from_the_run(quick_run, tmp_path):
    report = tmp_path / "docs" / "RESULTS.md"
    report.parent.mkdir()  # the report's folder must exist: the command creates none
    assert removal_cli.run(_args("--report", str(report), "--runs", str(quick_run))) == 0
    text = report.read_text()
    record = json.loads((quick_run / "results.json").read_text())
    assert record["command"] in text and "30.1%" in text and "42.2%" in text and "+2.5" in text
    assert "f1_vs_m.png" in text and "results.csv" in text
    assert f"{record['summary'][0]['f1_best']:.3f}" in text  # numbers come from the run's JSON


@pytest.mark.slow
def test_report_summarises_lds_studies_under_current_sampler_names(quick_run, tmp_path):
    """--lds: per m, random against the best other sampler, read from an LDS study's JSON; a sampler written under
    its old name ('curvature') appears under the current one ('importance')."""
    lds = {
        "config": {"study": {"dataset": "toy", "arch": "mlp"}},
        "baselines": [
            {"method": "full-data influence", "lds": 0.7, "ceiling": 0.95},
            {"method": "gradient dot", "lds": 0.4, "ceiling": 0.95},
        ],
        "summary": [
            {"sampler": "random", "m": 8, "lds_mean": 0.5, "lds_std": 0.02},
            {"sampler": "curvature", "m": 8, "lds_mean": 0.61, "lds_std": 0.01},
            {"sampler": "logit", "m": 8, "lds_mean": 0.55, "lds_std": 0.03},
        ],
        "verdict": {"best": None, "goal_met": False, "tolerance": 0.01, "reason": "none reaches it"},
    }
    f = tmp_path / "toy_mlp.json"
    f.write_text(json.dumps(lds))
    report = tmp_path / "RESULTS.md"
    assert removal_cli.run(_args("--report", str(report), "--runs", str(quick_run), "--lds", str(f))) == 0
    text = report.read_text()
    assert "| toy / mlp | 0.700 | 0.400 | 0.950 | 8 | 0.500 ± 0.020 | importance | 0.610 ± 0.010 | 0.50 |" in text
    assert "none reaches it" in text and "--lds " + str(f) in text
    with pytest.raises(ValueError, match="missing.json not found.*lds study --out"):
        removal_cli.run(
            _args("--report", str(report), "--runs", str(quick_run), "--lds", str(tmp_path / "missing.json"))
        )


def _summary(f1: dict, seconds: dict, mem: dict) -> list[dict]:
    return [
        {
            "sampler": s,
            "m": m,
            "f1_best": f1[s][i],
            "solver_seconds": seconds[s][i],
            "peak_kb": mem[s][i],
            "peak_rss_kb": 1000 + mem[s][i],
        }
        for s in f1
        for i, m in enumerate((32, 64, 128))
    ]


def test_savings_and_gain_hand_computed():
    summary = _summary(
        f1={"random": [0.80, 0.85, 0.90], "logit": [0.86, 0.88, 0.89]},
        seconds={"random": [1.0, 2.0, 4.0], "logit": [1.5, 2.5, 5.0]},
        mem={"random": [100.0, 200.0, 400.0], "logit": [100.0, 220.0, 400.0]},
    )
    by_ref = {s["m_ref"]: s for s in study.savings(summary, "f1_best")}
    # random's F1 at m_ref=128 (0.90) is never reached by logit
    assert by_ref[128]["m_star"] is None and math.isnan(by_ref[128]["time_saving_pct"])
    # random's 0.85 at m_ref=64 is reached by logit at m=32: time 1 - 1.5/2 = 25%, memory 1 - 100/200 = 50%
    assert by_ref[64]["m_star"] == 32
    assert by_ref[64]["time_saving_pct"] == pytest.approx(25.0)
    assert by_ref[64]["memory_saving_pct"] == pytest.approx(50.0)
    assert by_ref[64]["m_saving_pct"] == pytest.approx(50.0)
    # at m_ref=32 logit needs the same m and is slower: a negative saving, reported as such
    assert by_ref[32]["m_star"] == 32 and by_ref[32]["time_saving_pct"] == pytest.approx(-50.0)
    gains = {g["m"]: g["gain_points"] for g in study.f1_gain(summary, "f1_best")}
    assert gains == pytest.approx({32: 6.0, 64: 3.0, 128: -1.0})


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--samplers", "feature", "logit", "--out", "X"], "must include 'random'"),
        (["--m", "5000", "--out", "X"], "exceeds"),
        (["--samplers", "random", "nope", "--out", "X"], "unknown sampler"),
        (["--classes", "12", "--out", "X"], "--classes"),
        ([], "--out DIR is required"),
        (["--report", "R.md"], "--report needs --runs"),
    ],
)
def test_bad_input(argv, message, tmp_path):
    argv = [str(tmp_path / a) if a in ("X", "R.md") else a for a in argv]
    with pytest.raises(ValueError, match=message):
        removal_cli.run(_args(*argv))


@pytest.mark.slow
def test_quick_run_reports_the_honest_protocol(quick_run):
    rows = [r for r in _csv(quick_run / "results.csv") if r["sampler"] != "full"]
    for r in rows:
        assert 0.0 <= float(r["f1_sel"]) <= 1.0 and float(r["alpha_sel"]) > 0
        assert 0.0 <= float(r["ref_report_agree_sel"]) <= 1.0 and float(r["ref_reldist_sel"]) > 0
        assert int(r["alpha_edge_low"]) + int(r["alpha_edge_high"]) <= 1
    record = json.loads((quick_run / "results.json").read_text())
    assert "grad_norm" in record["config"]["training_report"] and "grad_tol" in record["config"]["training_report"]
    text = study._honest_markdown(record)
    assert "F1 (reporting half, chosen α)" in text and "| random | 32 |" in text
    assert "gradient norm" in study._stationarity(record)


@pytest.mark.parametrize("run_dir", ["docs/removal/digits", "docs/removal/mnist5k"])
def test_committed_runs_are_reproduced_by_their_command(run_dir):
    """The command recorded with a committed run parses to a configuration that spells out the same command (so the
    presets and flags did not move any setting of the committed results)."""
    import shlex
    from pathlib import Path

    record = json.loads((Path(__file__).resolve().parents[2] / run_dir / "results.json").read_text())
    argv = shlex.split(record["command"])[4:]  # after "python -m influence_core removal"
    config = removal_cli.study_config(_args(*argv))
    assert study.command_line(config) == record["command"]
    want = record["config"]
    inf = config.influence
    assert (inf.solver, inf.damping, inf.curvature) == (want["solver"], want["damping"], want["curvature"])
    assert (inf.solver_options["tol"], inf.solver_options["max_iter"]) == (want["tol"], want["max_iter"])


@pytest.mark.slow
def test_report_checks_its_path_and_names_a_damaged_run_file(quick_run, tmp_path):
    with pytest.raises(ValueError, match="the folder .*new does not exist"):
        removal_cli.run(_args("--report", str(tmp_path / "new" / "R.md"), "--runs", str(quick_run)))
    assert not (tmp_path / "new").exists()  # was created although the command then failed
    damaged = tmp_path / "run"
    damaged.mkdir()
    (damaged / "results.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"--runs: .*run/results.json is not valid JSON"):
        removal_cli.run(_args("--report", str(tmp_path / "R.md"), "--runs", str(damaged)))
    (damaged / "results.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a JSON list, not a run record"):
        removal_cli.run(_args("--report", str(tmp_path / "R.md"), "--runs", str(damaged)))
    assert not (tmp_path / "R.md").exists()

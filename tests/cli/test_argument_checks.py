"""Bad input through the command line: every case ends with one ``error: ...`` line and exit code 2 (1 for out of
memory, 130 for Ctrl-C), before any training when the problem is in the arguments, and never with a traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from influence_core.cli import influence as influence_cmd
from influence_core.cli import main as cli
from influence_core.cli import validate as validate_cmd


@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly if a command gets as far as training: argument errors must be reported before."""

    def trained(*args, **kwargs):
        raise AssertionError("training started before the bad argument was reported")

    for module in (influence_cmd, validate_cmd):
        monkeypatch.setattr(module, "train_model", trained)


def run(capsys, argv):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip()


def one_line_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "/proc/scores.npy"], "pseudo-filesystem"),
        (["--out", "{tmp}/adir.npy"], "is a directory"),
        (["--out", "{tmp}/missing/scores.npy"], "does not exist; create it first"),
        (["--out", "{tmp}/afile/scores.npy"], "is a file, not a folder"),
        (["--damping", "inf"], "--damping must be a finite number"),
        (["--damping", "nan"], "--damping must be a finite number"),
        (["--top", "0"], "--top must be >= 1"),
        (["--top", "-2"], "--top must be >= 1"),
        (["--dataset", "npz"], "--dataset npz needs --path"),
        (["--resume"], "--resume needs --out"),
    ],
)
def test_influence_arguments_are_refused_before_training(capsys, tmp_path, no_training, extra, message):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.npy").mkdir()
    code, err = run(capsys, ["influence", *[e.format(tmp=tmp_path) for e in extra]])
    assert code == 2 and message in one_line_error(err)


@pytest.mark.parametrize(
    "json_path, message",
    [
        ("/proc/loo.json", "pseudo-filesystem"),
        ("{tmp}", "is a directory"),
        ("{tmp}/no/loo.json", "does not exist"),
    ],
)
def test_validate_json_path_is_checked_before_the_retrainings(capsys, tmp_path, no_training, json_path, message):
    code, err = run(capsys, ["validate", "--json", json_path.format(tmp=tmp_path)])
    assert code == 2 and message in one_line_error(err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["removal", "--out", "/proc/removal"], "pseudo-filesystem"),
        (["removal", "--out", "{tmp}/afile"], "is a file, not a directory"),
        (["removal", "--out", "{tmp}/run", "--threads", "0"], "--threads must be >= 1"),
        (["removal", "--report", "/proc/RESULTS.md", "--runs", "{tmp}"], "pseudo-filesystem"),
        (["faithfulness", "--out", "{tmp}/afile"], "is a file, not a directory"),
        (["faithfulness", "--out", "/sys/faith"], "pseudo-filesystem"),
        (["faithfulness", "--dataset", "npz"], "--dataset npz needs --path"),
    ],
)
def test_study_outputs_are_checked_before_the_study(capsys, tmp_path, monkeypatch, argv, message):
    import influence_core.cli.faithfulness as faithfulness
    import influence_core.studies.removal as removal_study

    def study(*args, **kwargs):
        raise AssertionError("the study started before the bad output path was reported")

    monkeypatch.setattr(faithfulness, "run_study", study)
    monkeypatch.setattr(removal_study, "run_study", study)
    (tmp_path / "afile").write_text("x")
    code, err = run(capsys, [a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and message in one_line_error(err)


def test_ctrl_c_is_one_line_naming_resume_and_exit_130(capsys, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(influence_cmd, "train_model", interrupted)
    monkeypatch.setattr(validate_cmd, "train_model", interrupted)
    code, err = run(capsys, ["influence", "--out", str(tmp_path / "s.npy")])
    assert code == 130 and err.count("\n") == 0 and "--resume" in err and "Traceback" not in err
    code, err = run(capsys, ["validate"])  # nothing to resume: no --resume advice
    assert code == 130 and err == "interrupted"


def test_out_of_memory_is_one_line_exit_1(capsys, monkeypatch):
    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(influence_cmd, "train_model", exhausted)
    code, err = run(capsys, ["influence"])
    assert code == 1 and "out of memory" in one_line_error(err) and "--chunk-size" in err


def test_hostile_npz_is_one_line(capsys, tmp_path):
    y = np.zeros(100, dtype=np.int64)
    y[1::2] = 1
    y[[4, 6]] = 10**9
    path = tmp_path / "huge_label.npz"
    np.savez(path, X_train=np.random.default_rng(0).normal(size=(100, 3)), y_train=y)
    code, err = run(capsys, ["influence", "--dataset", "npz", "--path", str(path)])
    assert code == 2 and "contiguous" in one_line_error(err) and len(err) < 400


# --------------------------------------------------------------------------------------- resume: damaged files
SMALL = [
    "influence",
    "--dataset",
    "digits",
    "--arch",
    "logreg",
    "--test-index",
    "0",
    "1",
    "--chunk-size",
    "500",
    "--test-chunk-size",
    "1",
    "--quiet",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real run writing its score matrix to disk (digits, logistic regression: a few seconds)."""
    out = tmp_path_factory.mktemp("run") / "scores.npy"
    assert cli.main([*SMALL, "--out", str(out)]) == 0
    return out, np.load(out).copy()


def test_cli_output_records_the_thread_count(finished_run, capsys):
    out, _ = finished_run
    code = cli.main([*SMALL, "--out", str(out), "--resume"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and report["torch_threads"] >= 1 and report["scoring"]["skipped"] == 6


def test_overwritten_score_file_is_detected_on_resume(finished_run, capsys, tmp_path):
    out, scores = finished_run
    damaged = tmp_path / "scores.npy"
    damaged.write_bytes(out.read_bytes())
    (tmp_path / "scores.npy.manifest").write_bytes(out.with_name("scores.npy.manifest").read_bytes())
    arr = np.load(damaged, mmap_mode="r+")
    arr[1, 700] += 1.0  # one number overwritten after the run finished
    arr.flush()
    del arr
    code, err = run(capsys, [*SMALL, "--out", str(damaged), "--resume"])
    line = one_line_error(err)
    assert code == 2 and "fail their checksum" in line and "delete it" in line and "without --resume" in line


def test_truncated_score_file_on_resume_says_what_to_do(finished_run, capsys, tmp_path):
    out, _ = finished_run
    cut = tmp_path / "scores.npy"
    cut.write_bytes(out.read_bytes()[:5000])
    (tmp_path / "scores.npy.manifest").write_bytes(out.with_name("scores.npy.manifest").read_bytes())
    code, err = run(capsys, [*SMALL, "--out", str(cut), "--resume"])
    line = one_line_error(err)
    assert code == 2 and "cut short or damaged" in line and "without --resume" in line and "mmap" not in line[:60]


def test_settings_mismatch_on_resume_suggests_what_the_cli_offers(finished_run, capsys):
    out, _ = finished_run
    code, err = run(capsys, [*SMALL[:6], "0", "2", *SMALL[8:], "--out", str(out), "--resume"])
    line = one_line_error(err)
    assert code == 2 and "different problem" in line and "another --out" in line and "without --resume" in line

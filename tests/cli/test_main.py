"""The command line: the influence and validate commands, and clear errors with exit code 2."""

import json
import os

import numpy as np
import pytest

from influence_core.cli.main import main


def test_influence_command_prints_top_points_and_saves_scores(tmp_path, capsys):
    out = tmp_path / "scores.npy"
    code = main(
        [
            "influence",
            "--dataset",
            "digits",
            "--arch",
            "logreg",
            "--test-index",
            "0",
            "1",
            "--sampler",
            "logit",
            "--m",
            "64",
            "--top",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "test point 0" in printed and "helpful:" in printed and "harmful:" in printed
    scores = np.load(out)
    assert scores.shape[0] == 2 and np.all(np.isfinite(scores))


def test_validate_command_reports_leave_one_out_correlation(capsys):
    assert main(["validate", "--n-test", "2", "--n-retrain", "3"]) == 0
    printed = capsys.readouterr().out
    assert "mean Pearson" in printed


def test_bad_arguments_give_a_clear_error_and_exit_code_2(capsys):
    assert main(["influence", "--dataset", "cifar"]) == 2
    assert "unknown dataset 'cifar'" in capsys.readouterr().err
    assert main(["influence", "--dataset", "mnist1d", "--sampler", "magic"]) == 2
    assert "magic" in capsys.readouterr().err
    assert main(["influence", "--dataset", "mnist1d", "--damping", "-1"]) == 2
    assert "damping" in capsys.readouterr().err
    assert main(["influence", "--test-index", "100000"]) == 2
    assert "--test-index must lie" in capsys.readouterr().err
    assert main(["influence", "--sampler", "random", "--m", "5000"]) == 2
    assert "larger than the 1437 training points" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ hostile outputs
@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if a command gets as far as loading data, training or running a study: a bad path or option must
    be reported before any of that."""
    import influence_core.cli.influence as influence_cmd
    import influence_core.cli.lds as lds_cmd
    import influence_core.studies.faithfulness as faithfulness
    import influence_core.studies.removal as removal

    def work(*args, **kwargs):
        raise AssertionError("work started before the bad argument was reported")

    for module, names in (
        (influence_cmd, ("train_model", "load_dataset")),
        (lds_cmd, ("train_model", "load_dataset", "run_lds_study")),
        (faithfulness, ("run_study",)),
        (removal, ("run_study",)),
    ):
        for name in names:
            monkeypatch.setattr(module, name, work)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


LDS = ["--arch", "logreg", "--subsets", "2", "--retrain-seeds", "1", "--test-points", "2", "--quiet"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["influence", "--out", "{W}/d"], "--out must be a .npy file path"),  # wrote d.npy and exit 0
        (["influence", "--out", "{W}/link.npy"], "is a symbolic link"),  # wrote through the link
        (["influence", "--out", "{W}/other.npy", "--resume"], "not a score file of this package"),  # overwrote it
        (["influence", "--out", "{W}/text.npy", "--resume"], "not a score file of this package"),
        (["lds", "score", *LDS, "--json", "/dev/full"], "--json /dev/full lies in /dev"),  # failed after retraining
        (["lds", "score", *LDS, "--json", "{W}/link.json"], "--json {W}/link.json is a symbolic link"),
        (["lds", "score", *LDS, "--save-test-indices", "{W}/no/idx.npy"], "--save-test-indices"),
        (["lds", "score", *LDS, "--save-test-indices", "{W}/idx.txt"], "--save-test-indices must end in .npy"),
        (["lds", "score", *LDS, "--cache", "{W}/afile"], "--cache {W}/afile is a file, not a directory"),
        (["lds", "score", *LDS, "--scores", "{W}/missing.npy"], "--scores {W}/missing.npy: no such file"),
        (["lds", "score", *LDS, "--scores", "{W}/text.npy"], "--scores {W}/text.npy is not a readable .npy"),
        (["lds", "score", *LDS, "--scores", "{W}/objects.npy"], "holds Python objects, which are never loaded"),
        (["lds", "score", *LDS, "--scores", "{W}/d"], "--scores {W}/d is a directory"),
        (["lds", "score", *LDS, "--threads", "-1"], r"--threads must be in [0, 1024]"),  # exit 0 before
        (["lds", "score", "--subsets", "1000000000"], "--subsets (K) must be an integer in [2, 100000]"),
        (["lds", "study", *LDS, "--out", "{W}/afile"], "--out {W}/afile is a file, not a directory"),
        (["lds", "study", *LDS, "--out", "{W}/l", "--name", "../x"], "--name '../x' is a file name, not a path"),
        (["lds", "study", *LDS, "--out", "{W}", "--name", "link"], "is a symbolic link"),
        (["faithfulness", "--out", "{W}/f", "--name", "../../escaped"], "--name '../../escaped' is a file name"),
        (["faithfulness", "--out", "{W}/f", "--name", ""], "--name needs a non-empty file name"),
        (["removal", "--report", "{W}/new/r.md", "--runs", "{W}"], "the folder {W}/new does not exist"),
    ],
)
def test_every_output_is_checked_before_any_work(capsys, tmp_path, no_work, argv, message):
    W = tmp_path
    (W / "d").mkdir()
    (W / "d.npy").mkdir()
    (W / "afile").write_text("x")
    (W / "victim.txt").write_text("precious")
    for name in ("link.npy", "link.json", "link.json.tmp", "link_runs.csv"):
        (W / name).symlink_to(W / "victim.txt")
    np.save(W / "other.npy", np.arange(3.0))
    (W / "text.npy").write_text("not an array\n")
    np.save(W / "objects.npy", np.array([{"a": 1}, 2], dtype=object), allow_pickle=True)
    before = {p.name: (p.read_bytes() if p.is_file() and not p.is_symlink() else None) for p in W.iterdir()}
    code = main([a.format(W=W) for a in argv])
    assert code == 2 and message.format(W=W) in _one_line(capsys)
    after = {p.name: (p.read_bytes() if p.is_file() and not p.is_symlink() else None) for p in W.iterdir()}
    assert after == before  # nothing written, nothing created, nothing overwritten
    assert not os.path.exists(W.parent / "escaped.json") and not (W / "x.json").exists()


def test_lds_json_is_written_atomically(tmp_path, capsys, monkeypatch):
    """--json goes through a temporary file renamed into place (it was written in place: a full disk or a kill left
    half a file)."""
    import influence_core.cli.lds as lds_cmd

    written = []
    real = lds_cmd.atomic_write

    def spy(path, *args, **kwargs):
        written.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(lds_cmd, "atomic_write", spy)
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.arange(60) % 2
    np.savez(data, X_train=X[:40], y_train=y[:40], X_test=X[40:], y_test=y[40:])
    target = tmp_path / "r.json"
    assert (
        main(
            [
                "lds",
                "score",
                "--dataset",
                "npz",
                "--path",
                str(data),
                *LDS,
                "--cache",
                str(tmp_path / "c"),
                "--json",
                str(target),
            ]
        )
        == 0
    )
    assert written == [str(target)] and "records" in json.loads(target.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "d.npz", "r.json"]  # no temporary left

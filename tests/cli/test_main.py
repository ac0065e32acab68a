"""The command line: the influence and validate commands, and clear errors with exit code 2."""

import numpy as np

from influence_core.cli.main import main


def test_influence_command_prints_top_points_and_saves_scores(tmp_path, capsys):
    out = tmp_path / "scores.npy"
    code = main(["influence", "--dataset", "digits", "--arch", "logreg", "--test-index", "0", "1",
                 "--sampler", "logit", "--m", "64", "--top", "3", "--out", str(out)])
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

"""Bad and hostile input through the Python API: every case is refused with a clear, short message (or handled
explicitly), never turned into a silent wrong number or a crash. One test per class of defect; each parametrized
case is one bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from influence_core import DatasetError, dataset_from_arrays, load_npz, top_influences, train_model
from influence_core.influence.calculator import InfluenceCalculator
from influence_core.io_safety import OutputPathError, atomic_write, check_output_dir, check_output_file
from influence_core.solvers.cg import solve_cg
from influence_core.solvers.lissa import solve_lissa

sys.path.insert(0, str(Path(__file__).parent / "data"))
from npz_bombs import lying_header, npz_bytes, zeros_bomb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
X4 = np.random.default_rng(0).normal(size=(40, 4))
Y4 = np.arange(40) % 2


# ----------------------------------------------------------------------------------- 1. memory exhaustion (loader)
def _run_limited(code: str, headroom_mb: int = 400, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python whose address space is limited to what it uses after importing the package
    plus ``headroom_mb``: an allocation beyond that raises MemoryError instead of taking the machine down."""
    prelude = textwrap.dedent(f"""
        import resource, sys
        import influence_core
        from influence_core.data.datasets import DatasetError, load_npz
        size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        limit = size + {headroom_mb} * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    """)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def bomb_file(tmp_path_factory):
    """324 MB of float32 zeros (9000 x 9000, above the 256 MiB cap) in a 0.3 MB .npz."""
    path = tmp_path_factory.mktemp("bombs") / "bomb.npz"
    path.write_bytes(zeros_bomb((9000, 9000)))
    return path


def test_decompression_bomb_is_refused_from_its_header_under_a_memory_limit(bomb_file):
    assert bomb_file.stat().st_size < 1_000_000
    proc = _run_limited(f"""
        import time
        start = time.perf_counter()
        try:
            load_npz({str(bomb_file)!r})
        except DatasetError as exc:
            print("refused", round(time.perf_counter() - start, 3), exc)
    """)
    assert proc.returncode == 0 and proc.stdout.startswith("refused"), proc.stderr[-2000:]
    assert "MiB" in proc.stdout and "(9000, 9000)" in proc.stdout
    assert float(proc.stdout.split()[1]) < 2.0  # from the header: no decompression


def test_huge_label_is_refused_before_any_table_sized_by_it(tmp_path):
    path = tmp_path / "label.npz"
    y = np.zeros(200, dtype=np.int64)
    y[1::2] = 1
    y[7] = 10**9
    np.savez_compressed(path, X_train=np.random.default_rng(0).normal(size=(200, 8)), y_train=y)
    proc = _run_limited(f"""
        try:
            load_npz({str(path)!r})
        except DatasetError as exc:
            print("refused", exc)
    """)
    assert proc.returncode == 0 and proc.stdout.startswith("refused"), proc.stderr[-2000:]
    assert "1000000000" in proc.stdout and len(proc.stdout) < 400


@pytest.mark.parametrize("label", [10**6, 5000])
def test_label_errors_stay_short(label):
    y = Y4.copy()
    y[[3, 5]] = label  # twice, so the stratified split itself would accept it
    start = time.perf_counter()
    with pytest.raises(DatasetError) as info:
        dataset_from_arrays(X4, y)
    assert len(str(info.value)) < 400 and time.perf_counter() - start < 5


def test_many_missing_classes_are_listed_briefly():
    y = np.repeat([0, 39], 20)  # classes 1..38 missing (labels below n_train, so not refused by range)
    with pytest.raises(DatasetError, match=r"class\(es\) \[1, 2, .*\.\.\.\] \(38 in all\)") as info:
        dataset_from_arrays(X4, y)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: zeros_bomb((4000, 4000)), "expands to more than 16 MiB"),  # small cap
        (lambda: lying_header((100000, 1000)), "damaged"),  # forged header
        (lambda: npz_bytes(X_train=np.zeros((4, 2), complex), y_train=[0, 1, 0, 1]), "complex"),
        (lambda: npz_bytes(X_train=np.zeros((4, 1, 1, 1, 2)), y_train=[0, 1, 0, 1]), "shape"),  # 5-D
        (lambda: npz_bytes(X_train=np.array([["a", "b"]] * 4), y_train=[0, 1, 0, 1]), "dtype"),  # strings
        (lambda: npz_bytes(X_train=np.zeros((4, 2)), y_train=np.zeros((4, 1))), "1-D"),  # 2-D labels
        (lambda: npz_bytes(X_train=np.zeros((4, 2)), y_train=np.array([0, 1, 0, 1], "U1")), "dtype"),
        (lambda: npz_bytes(X_train=X4, y_train=Y4, class_names=np.array(["c"] * 100)), "class_names"),
    ],
)
def test_hostile_npz_members_are_refused_before_decompressing(make, message):
    with pytest.raises(DatasetError, match=message):
        load_npz(make(), max_decompressed=16 * 2**20)


# ----------------------------------------------------------------------------------- 2. silent wrong results
@pytest.mark.parametrize(
    "X, message",
    [
        (np.zeros((40, 0)), "no features"),
        (X4 + 1j * X4, "complex"),
        (X4 * 1e306, "too large"),  # finite, but the standardisation overflows
        (np.where(X4 > 0, 1e200, -1e200), "too large"),  # variance overflows in float64
    ],
)
def test_inputs_that_would_train_a_wrong_model_are_refused(X, message):
    with pytest.raises(DatasetError, match=message):
        dataset_from_arrays(X, Y4, X, Y4)


@pytest.mark.parametrize("shape", [(-2, -2), (0, 4), (2, 2, 1), (1.5, 2), (2, 3)])
def test_bad_image_shape_is_refused(shape):
    with pytest.raises(DatasetError, match="image_shape"):
        dataset_from_arrays(X4, Y4, image_shape=shape)


@pytest.mark.parametrize(
    "y, message",
    [
        (Y4 + 0.7, "integer"),
        (Y4 - 0.5, "integer"),
        (np.full(40, 1e300), "integer|too large"),
    ],
)
def test_float_labels_are_never_truncated(y, message):
    with pytest.raises(DatasetError, match=message):
        dataset_from_arrays(X4, y, X4, Y4)
    with pytest.raises(DatasetError, match=message):  # test labels are checked the same way
        dataset_from_arrays(X4, Y4, X4, y)


@pytest.fixture(scope="module")
def small():
    ds = dataset_from_arrays(X4, Y4, X4[:6], Y4[:6], name="tiny")
    return ds, train_model(ds, "logreg", seed=0, polish_steps=5)


@pytest.mark.parametrize("y, message", [(Y4 + 0.7, "integer"), (Y4 - 0.5, "integer"), (Y4 + 0j, "integer")])
def test_calculator_refuses_non_integer_labels_for_your_own_data(small, y, message):
    _, model = small
    with pytest.raises(ValueError, match=message):
        InfluenceCalculator(model, X4.astype(np.float32), y)


def test_calculator_refuses_complex_inputs(small):
    _, model = small
    with pytest.raises(ValueError, match="complex"):
        InfluenceCalculator(model, X4 + 1j, Y4)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"weight_decay": float("inf")}, "weight_decay"),
        ({"weight_decay": -1e-3}, "weight_decay"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
    ],
)
def test_training_refuses_bad_settings(small, settings, message):
    ds, _ = small
    with pytest.raises(ValueError, match=message):
        train_model(ds, "mlp", seed=0, epochs=1, **settings)


def test_diverging_training_is_an_error_naming_the_learning_rate(small):
    ds, _ = small
    with pytest.raises(RuntimeError, match=r"diverged.*lr=1e\+30.*lower the learning rate"):
        train_model(ds, "mlp", seed=0, epochs=3, lr=1e30, polish_steps=0)


def test_thread_count_is_recorded_and_results_repeat_at_equal_count(small):
    ds, _ = small
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = train_model(ds, "mlp", seed=0, epochs=2, polish_steps=3)
        b = train_model(ds, "mlp", seed=0, epochs=2, polish_steps=3)
        torch.set_num_threads(2)
        c = train_model(ds, "mlp", seed=0, epochs=2, polish_steps=3)
    finally:
        torch.set_num_threads(before)
    assert a.training_report["torch_threads"] == 1 and c.training_report["torch_threads"] == 2
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)  # same seed, same thread count: bitwise the same weights


# ----------------------------------------------------------------------------------- 4./6. solvers and ranking
def _spd(p=6):
    A = torch.tensor(np.random.default_rng(0).normal(size=(p, p)))
    return lambda V: V @ (A @ A.T + torch.eye(p, dtype=A.dtype))


@pytest.mark.parametrize("solver", [solve_cg, solve_lissa])
@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": -5}, "max_iter"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"tol": float("nan")}, "tol"),
        ({"tol": -1e-3}, "tol"),
        ({"tol": 0.0}, "tol"),
        ({"tol": float("inf")}, "tol"),
    ],
)
def test_iterative_solvers_refuse_a_bad_stopping_rule(solver, options, message):
    with pytest.raises(ValueError, match=message):
        solver(_spd(), torch.ones(2, 6, dtype=torch.float64), 0.1, **options)


def test_top_influences_refuses_nan_scores_instead_of_ranking_them_harmful():
    scores = np.array([0.3, -0.1, np.nan, 0.2, -0.4])
    with pytest.raises(ValueError, match="NaN or infinite.*training point 2"):
        top_influences(scores, 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        top_influences(np.array([0.1, -np.inf, 0.2]), 1)


@pytest.mark.parametrize("k", [0, -3, 1.5, True])
def test_top_influences_refuses_a_bad_k_instead_of_clamping(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        top_influences(np.array([0.1, 0.2, -0.3]), k)


# ----------------------------------------------------------------------------------- 4. output paths, atomic writes
@pytest.mark.parametrize(
    "where, message",
    [
        ("/proc/influence_out.json", "pseudo-filesystem"),
        ("/sys/x.npy", "pseudo-filesystem"),
        ("{tmp}", "is a directory"),
        ("{tmp}/missing/out.json", "does not exist"),
        ("{tmp}/afile/out.json", "is a file, not a folder"),
        ("", "needs a file path"),
    ],
)
def test_output_files_are_checked_before_work(tmp_path, where, message):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputPathError, match=message):
        check_output_file(where.format(tmp=tmp_path), "--json")


@pytest.mark.parametrize(
    "where, message",
    [
        ("/proc/runs", "pseudo-filesystem"),
        ("{tmp}/afile", "is a file"),
        ("{tmp}/afile/sub", "is a file"),
    ],
)
def test_output_directories_are_checked_before_work(tmp_path, where, message):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputPathError, match=message):
        check_output_dir(where.format(tmp=tmp_path))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "result.json"
    target.write_text('{"old": 1}')
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as fh:
            fh.write('{"new": ')
            raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind
    with atomic_write(target) as fh:
        fh.write('{"new": 2}')
    assert json.loads(target.read_text()) == {"new": 2}

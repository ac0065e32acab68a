"""The executor seam: sequential by default, Dask distributed on a LocalCluster (2 single-threaded worker
processes), identical scores, and clear errors for bad options and unreachable schedulers."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
import torch

from influence_core.influence.calculator import InfluenceCalculator
from influence_core.influence.executors import DaskExecutor, SchedulerUnreachableError, SequentialExecutor, get_executor

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def problem(digits, tiny_digits_mlp, fitted_calculator):
    return digits, fitted_calculator(digits, tiny_digits_mlp, "exact")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


def test_default_is_sequential():
    assert isinstance(get_executor(), SequentialExecutor)


@pytest.fixture
def one_thread():
    """Dask starts its workers with OMP_NUM_THREADS=1; torch's per-sample gradient kernels split some reductions by
    thread count, so a bitwise comparison runs the sequential side with one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_dask_local_cluster_matches_sequential_bitwise(problem, client, one_thread):
    """Same blocks, same functions, same inputs, same thread count: the 2-worker run reproduces the sequential
    matrix bit for bit, with the exact solver and with CG (whose iterative iHVPs then also run on the workers)."""
    ds, calc = problem
    X, y = ds.X_test[:9], ds.y_test[:9]
    options = dict(test_chunk_size=4, train_chunk_size=200)
    seq = calc.scores(X, y, **options)
    seq_solve = calc.last_solve.summary()
    par = calc.scores(X, y, executor=client, **options)
    np.testing.assert_array_equal(par, seq)
    assert calc.last_scoring.executor["executor"] == "dask" and calc.last_scoring.executor["workers"] == 2
    assert calc.last_solve.summary()["test_chunks"] == seq_solve["test_chunks"] == 3
    cg = InfluenceCalculator(calc.objective.model, ds.X_train, ds.y_train, chunk_size=128)
    cg.fit(np.arange(300), solver="cg", damping=0.01, curvature="gauss_newton")
    np.testing.assert_array_equal(cg.scores(X, y, executor=DaskExecutor(client), **options), cg.scores(X, y, **options))
    assert cg.last_solve.converged


def test_dask_matches_multithreaded_sequential_to_float32_rounding(problem, client):
    ds, calc = problem
    X, y = ds.X_test[:9], ds.y_test[:9]
    seq = calc.scores(X, y, test_chunk_size=4)
    par = calc.scores(X, y, test_chunk_size=4, executor=client)
    assert np.abs(par - seq).max() <= 1e-6 * np.abs(seq).max()


def test_dask_on_disk_resume_matches(problem, client, tmp_path, one_thread):
    ds, calc = problem
    X, y = ds.X_test[:6], ds.y_test[:6]
    options = dict(test_chunk_size=3, train_chunk_size=400)  # 2 x 4 blocks
    seq = calc.scores(X, y, **options)
    path = tmp_path / "scores.npy"

    def stop_after_three(fraction, message, calls=[]):  # noqa: B006 - the call counter
        calls.append(message)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calc.scores(X, y, executor=client, out=path, progress=stop_after_three, **options)
    got = calc.scores(X, y, executor=client, out=path, **options)
    np.testing.assert_array_equal(got, seq)
    assert calc.last_scoring.skipped == 3


def test_scheduler_address_is_accepted(problem, client, one_thread):
    ds, calc = problem
    X, y = ds.X_test[:2], ds.y_test[:2]
    got = calc.scores(X, y, executor=client.scheduler.address)
    np.testing.assert_array_equal(got, calc.scores(X, y))


def test_unreachable_scheduler_fails_fast_with_a_clear_message():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(SchedulerUnreachableError, match=f"could not reach a Dask scheduler at tcp://127.0.0.1:{port}"):
        get_executor(scheduler=f"tcp://127.0.0.1:{port}", timeout=1.0)
    assert time.perf_counter() - start < 10  # a generous bound against a hang, not a timing assertion


def test_something_else_listening_is_not_a_scheduler():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        with pytest.raises(SchedulerUnreachableError, match="Dask scheduler"):
            get_executor(scheduler=f"tcp://127.0.0.1:{port}", timeout=0.5)
    finally:
        server.close()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"workers": 0}, "workers must be a positive integer"),
        ({"workers": -2}, "workers must be a positive integer"),
        ({"workers": 1.5}, "workers must be a positive integer"),
        ({"scheduler": "localhost"}, "has no port"),
        ({"scheduler": ""}, "non-empty string"),
        ({"workers": 2, "scheduler": "tcp://h:1"}, "only one of"),
    ],
)
def test_bad_executor_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_executor(**kwargs)


def test_bad_executor_type():
    with pytest.raises(TypeError, match="executor must be"):
        get_executor(executor=42)

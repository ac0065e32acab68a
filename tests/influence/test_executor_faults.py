"""Faults during a run: a Dask worker killed by PID mid-run (its blocks are resubmitted on the remaining worker and
the matrix equals the sequential one bit for bit), the scheduler gone (one clear error naming --resume), a score
file corrupted or cut short on disk (detected on resume), and Ctrl-C (one line, exit 130)."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from influence_core.influence.executors import ClusterLostError, DaskExecutor
from influence_core.influence.scoring import manifest_path, verify_score_file

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def problem(digits, tiny_digits_mlp, fitted_calculator):
    return digits, fitted_calculator(digits, tiny_digits_mlp, "cg")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # Dask workers run one thread: bitwise comparisons need the same count here
    yield
    torch.set_num_threads(before)


def test_corrupted_block_is_detected_on_resume_and_by_verify(problem, tmp_path):
    ds, calc = problem
    X, y = ds.X_test[:4], ds.y_test[:4]
    out = tmp_path / "scores.npy"
    good = np.asarray(calc.scores(X, y, out=out, test_chunk_size=2, train_chunk_size=500)).copy()
    assert verify_score_file(out) == {"blocks": 6, "complete": True}
    np.testing.assert_array_equal(
        np.asarray(calc.scores(X, y, out=out, test_chunk_size=2, train_chunk_size=500)), good
    )  # intact: resumed as is
    with open(out, "r+b") as fh:  # overwrite 8 bytes inside block (1, 2) after the run
        fh.seek(-8, os.SEEK_END)
        fh.write(np.float64(0.125).tobytes())
    for check in (
        lambda: verify_score_file(out),
        lambda: calc.scores(X, y, out=out, test_chunk_size=2, train_chunk_size=500),
    ):
        with pytest.raises(
            ValueError,
            match=r"1 of 6 finished blocks fail their checksum.*test chunk 1, train "
            r"chunk 2.*delete it",
        ):
            check()
    got = calc.scores(X, y, out=out, test_chunk_size=2, train_chunk_size=500, resume=False)  # recompute
    np.testing.assert_array_equal(np.asarray(got), good)


@pytest.fixture(scope="module")
def client():
    """One local cluster for the module (2 single-threaded worker processes on 127.0.0.1 only); the last test
    shuts it down."""
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(2, timeout=120)
    yield client
    client.close()
    cluster.close()


class _OneCopyExecutor(DaskExecutor):
    """Scatters the problem to one worker only: the situation of a worker that joined after the scatter. Killing
    that worker loses the only copy, which the old grid could not recover from (FutureCancelledError)."""

    def scatter(self, obj):
        self.holder = sorted(self.client.scheduler_info(n_workers=-1)["workers"])[0]
        return self.client.scatter(obj, workers=[self.holder], broadcast=False, hash=False)


@pytest.mark.slow
def test_worker_killed_mid_run_finishes_bitwise_equal(problem, client, one_thread, tmp_path):
    ds, calc = problem
    X, y = ds.X_test[:8], ds.y_test[:8]
    options = dict(test_chunk_size=4, train_chunk_size=200)  # 2 x 8 blocks
    seq = calc.scores(X, y, **options)
    ex = _OneCopyExecutor(client)
    killed = []

    def kill_holder_after_three_blocks(fraction, message, calls=[]):  # noqa: B006 - the call counter
        calls.append(message)
        if len(calls) == 3:
            pid = client.run(os.getpid, workers=[ex.holder])[ex.holder]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    got = calc.scores(
        X, y, executor=ex, out=tmp_path / "scores.npy", progress=kill_holder_after_three_blocks, **options
    )
    assert killed, "the worker was never killed: the test did not test anything"
    np.testing.assert_array_equal(np.asarray(got), seq)
    assert calc.last_scoring.computed == 16


@pytest.mark.slow
def test_scheduler_gone_names_resume(problem, client, one_thread, tmp_path):
    """Runs last in this module: it shuts the module's cluster down mid-run."""
    ds, calc = problem
    X, y = ds.X_test[:8], ds.y_test[:8]
    options = dict(test_chunk_size=4, train_chunk_size=200)
    out = tmp_path / "scores.npy"

    def stop_scheduler_after_three_blocks(fraction, message, calls=[]):  # noqa: B006 - the call counter
        calls.append(message)
        if len(calls) == 3:
            client.shutdown()  # the scheduler and its workers go away

    with pytest.raises(ClusterLostError, match="--resume") as info:
        calc.scores(X, y, executor=DaskExecutor(client), out=out, progress=stop_scheduler_after_three_blocks, **options)
    assert "3/16 blocks" in str(info.value)
    lines = [json.loads(line) for line in manifest_path(out).read_text().splitlines()]
    assert sum("block" in entry for entry in lines) == 3  # the finished blocks were claimed and will be skipped
    calc.scores(X, y, out=out, **options)
    assert calc.last_scoring.skipped == 3

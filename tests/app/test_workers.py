"""The app's jobs on a real Dask cluster of worker processes (ui.workers): results equal the in-process ones,
Cancel stops a job on its worker and stores nothing, a worker that dies is replaced and its job retried once
(then one readable line), and four sessions at once on the Influence page get the sequential numbers and no error.
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
from apptest_helpers import errors, ok

from influence_core.progress import Cancelled

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of one worker process, used by the app's job board for this module's tests."""
    from ui import workers

    patch = pytest.MonkeyPatch()
    patch.setenv(workers.ENV_WORKERS, "1")
    workers.shutdown()
    workers.client()
    try:
        yield workers
    finally:
        workers.shutdown()
        patch.undo()


def _pid(progress) -> int:
    return os.getpid()


def _die_once(progress, marker: str) -> int:
    """Kills its worker process the first time (``marker`` absent), returns the pid the second time."""
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write("died once")
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def _always_die(progress) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float32 summation order (one torch thread in both processes, but other CPU kernels may be
    picked): relative to the largest score."""
    return np.allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(b).max()))


def test_influence_on_a_worker_process_equals_the_in_process_result(cluster, trained_fast_run):
    from ui import compute
    from ui.workers import Task

    run = trained_fast_run
    assert cluster.call(Task(_pid)) != os.getpid()  # the job ran in another process
    specs = (("random", 40, 0, "exact"), ("logit", 40, 1, "cg"), (None, 1437, 0, "exact"))
    remote = cluster.call(Task(compute.influence_rows, (run, specs, 0.01, 11, None)))
    local = compute.influence_rows(None, run, specs, 0.01, 11)
    assert len(remote) == 3
    for r, loc in zip(remote, local):
        assert r["scores"].shape == (1437,) and _close(r["scores"], loc["scores"])
    assert not _close(remote[0]["scores"], local[2]["scores"])  # the comparison can fail: different Hessians


def test_cancel_stops_the_job_on_its_worker_and_stores_nothing(cluster):
    import time

    from ui import artifacts, compute
    from ui.config import ModelConfig, RunConfig
    from ui.workers import RemoteJob, Task

    run = RunConfig(model=ModelConfig(hidden=13, epochs=400, polish_steps=10))
    job = RemoteJob(("model", run), "training", Task(compute.train, (run, None)))
    job.start()
    start = time.time()
    while job.fraction <= 0:  # the worker's progress reaches this process
        assert time.time() - start < 120 and not job.done.is_set(), job.error
        time.sleep(0.05)
    assert job.message and job.message != "starting"
    job.token.cancel("training: cancelled")
    assert job.done.wait(30)
    assert isinstance(job.error, Cancelled) and job.fraction < 0.5
    assert not artifacts.is_stored(artifacts.MODEL_KIND, run.cache_key())
    assert cluster.call(Task(_pid))  # the worker is free for the next job


def test_a_dead_worker_is_replaced_and_its_job_retried_once_then_one_readable_line(cluster, tmp_path):
    from ui.workers import KILLED_MESSAGE, Task

    before = cluster.call(Task(_pid))
    after = cluster.call(Task(_die_once, (str(tmp_path / "marker"),)))
    assert (tmp_path / "marker").exists() and after != before  # it ran again, on a fresh worker process
    with pytest.raises(RuntimeError) as caught:
        cluster.call(Task(_always_die))
    assert KILLED_MESSAGE in str(caught.value) and "\n" not in str(caught.value)
    assert cluster.call(Task(_pid))  # and the cluster still works


def _comparison(at) -> dict[str, float]:
    """The Influence page's comparison table: {pair: Spearman}."""
    for frame in at.dataframe:
        table = frame.value
        if "pair" in table.columns and "Spearman" in table.columns:
            return dict(zip(table["pair"], table["Spearman"]))
    raise AssertionError("no comparison table on the page")


def test_four_sessions_at_once_get_the_sequential_numbers_and_no_error(cluster, app_page, trained_fast_run):
    from influence_core.evaluation import metrics
    from ui import compute

    run = trained_fast_run
    settings = [(3, 30), (4, 45), (5, 30), (3, 45)]  # (test point, m): two sessions share a model and a test
    pages, failures = [], []

    def session(index: int, m: int) -> None:
        at = app_page("pages/2_Influence.py", run=run, timeout=300)
        at.session_state["inf_mode"] = "by index"
        at.session_state["inf_index"] = index
        at.session_state["inf_m"] = m
        try:
            at.run()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)
        pages.append((index, m, at))

    threads = [threading.Thread(target=session, args=s) for s in settings]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not failures and len(pages) == 4
    for index, m, at in pages:
        ok(at)
        assert not errors(at), errors(at)
        shown = _comparison(at)
        specs = (("logit", m, 0, "exact"), ("random", m, 0, "exact"), (None, 1437, 0, "exact"))
        a, b, full = (row["scores"] for row in compute.influence_rows(None, run, specs, 0.01, index))
        expected = {
            "A: logit vs B: random": metrics.spearman(a, b),
            "A: logit vs full data": metrics.spearman(a, full),
            "B: random vs full data": metrics.spearman(b, full),
        }
        assert shown.keys() == expected.keys()
        for pair, value in expected.items():
            assert abs(shown[pair] - value) < 1e-4, (index, m, pair, shown[pair], value)


def test_a_cluster_left_without_workers_is_restarted_and_the_call_retried(cluster, monkeypatch):
    """A nanny that loses the race with a killed worker leaves the cluster with none (dask/distributed#3196): a job
    waiting on it restarts the local cluster after NO_WORKER_SECONDS and fails with one line; ``call`` retries once
    on the fresh cluster. Simulated by scaling the cluster to no worker."""
    import time

    from ui.workers import NoWorkers, RemoteJob, Task

    monkeypatch.setattr(cluster, "NO_WORKER_SECONDS", 2.0)
    monkeypatch.setattr(cluster, "WORKER_CHECK_SECONDS", 0.5)

    def empty_cluster():
        cluster.client()
        old = cluster._cluster
        old.scale(0)
        deadline = time.monotonic() + 60
        while cluster.client().scheduler_info(n_workers=1)["workers"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not cluster.client().scheduler_info(n_workers=1)["workers"]
        return old

    old = empty_cluster()
    job = RemoteJob(("no-workers", 1), "a job", Task(_pid))
    job.start()
    assert job.done.wait(60)
    with pytest.raises(NoWorkers, match="no compute worker was running for .* s, so they were restarted"):
        job.outcome()
    assert "\n" not in str(job.error) and cluster._cluster is None  # shut down: the next job starts a fresh one
    old = empty_cluster()
    assert cluster.call(Task(_pid)) > 0 and cluster._cluster is not old  # retried once on a fresh cluster

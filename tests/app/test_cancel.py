"""Cancelling long work in the app: the shared job board's rule (a job stops only when no other session still waits
on it) with real training in threads, and an AppTest that a page whose training is cancelled says so, stores no
model, does not restart by itself, and trains again on "Start again"."""

from __future__ import annotations

import threading
import time

import pytest
from apptest_helpers import errors, ok

from influence_core.progress import Cancelled

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def slow_run(hidden: int):
    """A digits MLP with many epochs: long enough to be cancelled after its first epoch (a few seconds in all)."""
    from ui.config import ModelConfig, RunConfig

    return RunConfig(model=ModelConfig(hidden=hidden, epochs=80, polish_steps=10))


def training_job(run):
    """(compute, store): the app's model job for ``run`` (as ``ui.state.ensure_model`` starts it), and its store."""
    from ui import compute
    from ui.state import _model_store, adopt_model

    return (lambda progress: adopt_model(run, compute.train(progress, run))), _model_store()


def wait_until(condition, timeout: float = 60.0) -> None:
    start = time.time()
    while not condition():
        assert time.time() - start < timeout, "timed out"
        time.sleep(0.01)


def test_one_session_cancelling_does_not_stop_another_sessions_training():
    from ui import artifacts
    from ui.jobs import JobBoard, wait

    run = slow_run(hidden=9)
    compute, store = training_job(run)
    board = JobBoard()
    a = board.join(("model", run), "training", compute, "A")
    b = board.join(("model", run), "training", compute, "B")
    assert a is b  # one computation for both sessions
    wait_until(lambda: a.fraction > 0)
    assert board.cancel(("model", run), "A") is False  # B still waits: the job goes on
    with pytest.raises(Cancelled):
        wait(a, "A", lambda f, m: None)  # A's own wait ends at once
    model = wait(b, "B", lambda f, m: None)
    assert model.training_report["test_accuracy"] > 0.5 and run in store["models"]
    assert artifacts.is_stored(artifacts.MODEL_KIND, run.cache_key())


@pytest.mark.slow
def test_the_last_waiting_session_cancelling_stops_the_work_and_stores_nothing():
    from ui import artifacts
    from ui.jobs import JobBoard, wait

    run = slow_run(hidden=10)
    compute, store = training_job(run)
    board = JobBoard()
    job = board.join(("model", run), "training", compute, "A")
    board.join(("model", run), "training", compute, "B")
    board.leave(("model", run), "B")  # B's page was rerun by another click: it no longer waits
    wait_until(lambda: job.fraction > 0)
    messages = []
    assert board.cancel(("model", run), "A") is True
    assert job.done.wait(30)  # stopped at the next epoch, long before the 80 epochs
    assert isinstance(job.error, Cancelled) and job.fraction < 0.5
    assert run not in store["models"] and not artifacts.is_stored(artifacts.MODEL_KIND, run.cache_key())
    assert board.get(("model", run)) is None  # the next request starts afresh ...
    again = board.join(("model", run), "training", compute, "A")
    assert again is not job
    model = wait(again, "A", lambda f, m: messages.append(m))  # ... and trains cleanly
    assert again.fraction == 1.0 and messages[-1] != "starting"
    assert model.training_report["loaded_from_disk"] is False
    assert artifacts.is_stored(artifacts.MODEL_KIND, run.cache_key())


@pytest.mark.slow
def test_page_shows_cancelled_stores_nothing_and_starts_again(app_page):
    from ui import artifacts
    from ui.state import _model_store, job_board

    run = slow_run(hidden=11)
    key = ("model", run)
    at = app_page("pages/2_Influence.py", run=run)
    at.session_state["session_id"] = "apptest-session"
    cancelled = []

    def press_cancel() -> None:  # what the Cancel button's callback does, from this session, mid-training
        wait_until(lambda: job_board().get(key) is not None and job_board().get(key).fraction > 0)
        job = job_board().get(key)
        cancelled.append(job_board().cancel(key, "apptest-session"))
        job.done.wait(30)

    helper = threading.Thread(target=press_cancel)
    helper.start()
    ok(at.run())
    helper.join(60)
    assert cancelled == [True]
    assert any("Training mlp on digits: cancelled" in i.value for i in at.info), [i.value for i in at.info]
    assert not errors(at) and not at.get("plotly_chart")  # the page stopped after saying so
    assert run not in _model_store()["models"] and not artifacts.is_stored(artifacts.MODEL_KIND, run.cache_key())

    ok(at.run())  # a rerun (any other click) does not restart the cancelled training
    assert job_board().get(key) is None and any("cancelled" in i.value for i in at.info)

    at.button(key=next(b.key for b in at.button if b.label == "Start again")).click()
    ok(at.run())  # trains again, cleanly
    assert not errors(at) and not any("cancelled" in i.value for i in at.info)
    assert run in _model_store()["models"] and artifacts.is_stored(artifacts.MODEL_KIND, run.cache_key())
    assert at.get("plotly_chart")  # the Influence page is drawn

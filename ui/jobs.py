"""Long computations of the app as cancellable background jobs shared by sessions (no Streamlit here).

A :class:`Job` runs ``compute(progress)`` once in a daemon thread (:class:`ui.workers.RemoteJob`: the thread only
watches the same work on a Dask worker); ``progress`` is the engine's callback wrapped by
:func:`influence_core.progress.cancellable`, so a cancel stops the work at its next progress point (an epoch, an
L-BFGS polish step, a removal phase, an LDS retrain) with :class:`influence_core.progress.Cancelled`, before
anything is stored. The job keeps the latest ``(fraction, message)``; the waiting page draws it (``ui.state.
run_job``): the work itself never touches Streamlit, so it survives a rerun of the page that asked for it.

**The sharing rule.** :class:`JobBoard` keeps one job per key (e.g. ("model", run)): every session asking for the
same key while it runs waits on the same job (nothing is computed twice). A session *waits* on a job from its
request until the job ends, it presses Cancel, or it asks for another job (a session's script waits on one job at a
time). A Cancel stops the session's own wait at once (its page says "cancelled"); the job itself is cancelled only
when **no other session is still waiting on it**: one student's Cancel never stops the training another student is
waiting for, and the last waiter's Cancel stops the work at its next progress point. A session that stops waiting
without cancelling (another click reran its page, it asked for something else) leaves the job running; a job
nobody waits on any more runs to its end, so its result is cached for the next request. A cancelled job leaves the
board at once: the next request for its key starts a fresh job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from influence_core import Cancelled, CancelToken, Progress, cancellable

__all__ = ["Job", "JobBoard"]


class Job:
    """One computation in a daemon thread: latest progress, result or error, who waits and who cancelled."""

    def __init__(self, key: Hashable, label: str, compute: Callable[[Progress], Any]) -> None:
        self.key, self.label = key, label
        self.token = CancelToken()
        self.fraction, self.message = 0.0, "starting"
        self.started = time.time()
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.waiting: set[str] = set()
        self.cancelled_by: set[str] = set()
        self._compute = compute
        self.thread = threading.Thread(target=self._run, name=f"job-{label}"[:60], daemon=True)

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = min(max(float(fraction), 0.0), 1.0), str(message)

    def _run(self) -> None:
        try:
            self.result = self._compute(cancellable(self._progress, self.token))
        except BaseException as exc:  # noqa: BLE001 - Cancelled and errors are handed to every waiting session
            self.error = exc
        finally:
            self.on_done()
            self.done.set()

    def start(self) -> None:
        self.thread.start()

    def on_done(self) -> None:  # replaced by the board: drop the job from it
        pass

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    def outcome(self) -> Any:
        """The result once :attr:`done` (re-raises the job's error, :class:`Cancelled` when it was cancelled)."""
        if self.error is not None:
            raise self.error
        return self.result


class JobBoard:
    """The running jobs of the process, one per key (see the module docstring for the sharing rule)."""

    def __init__(self, make: Callable[[Hashable, str, Callable[[Progress], Any]], Job] = Job) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[Hashable, Job] = {}
        self._make = make  # e.g. ui.workers.make_job: the work on a Dask worker

    def join(self, key: Hashable, label: str, compute: Callable[[Progress], Any], session: str) -> Job:
        """The running job for ``key`` (started now with ``compute`` when there is none, or the one there is
        cancelled), with ``session`` added to its waiting sessions (and removed from any other job's)."""
        with self._lock:
            for other in self._jobs.values():
                if other.key != key:
                    self._leave_locked(other, session)
            job = self._jobs.get(key)
            if job is None or job.cancelled:
                job = self._make(key, label, compute)
                job.on_done = lambda job=job: self._finished(job)
                self._jobs[key] = job
                job.start()
            job.waiting.add(session)
            job.cancelled_by.discard(session)
            return job

    def _finished(self, job: Job) -> None:
        with self._lock:
            if self._jobs.get(job.key) is job:
                del self._jobs[job.key]

    def _leave_locked(self, job: Job, session: str) -> None:
        job.waiting.discard(session)

    def cancel(self, key: Hashable, session: str) -> bool:
        """``session`` stops waiting on the job for ``key`` and cancels it unless another session still waits on
        it. Returns True when the job was cancelled (False: others still wait, or there is no such job)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                return False
            job.waiting.discard(session)
            job.cancelled_by.add(session)
            if job.waiting:
                return False
            job.token.cancel(f"{job.label}: cancelled")
            del self._jobs[key]  # the next request starts afresh
            return True

    def leave(self, key: Hashable, session: str) -> None:
        """``session`` no longer waits on ``key``'s job, without cancelling it (the job runs on)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None:
                self._leave_locked(job, session)

    def get(self, key: Hashable) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())


def wait(job: Job, session: str, draw: Callable[[float, str], None], poll_seconds: float = 0.25) -> Any:
    """Wait for ``job``, calling ``draw(fraction, message)`` every ``poll_seconds`` from the waiting thread, and
    return its result (raises its error, or :class:`Cancelled` as soon as ``session`` or every waiter cancelled)."""
    draw(job.fraction, job.message)
    while not job.done.wait(poll_seconds):
        if session in job.cancelled_by or job.cancelled:
            raise Cancelled(f"{job.label}: cancelled")
        draw(job.fraction, job.message)
    if session in job.cancelled_by:
        raise Cancelled(f"{job.label}: cancelled")
    return job.outcome()

"""Where the app's heavy work runs: the worker processes of a Dask cluster, never the server's threads.

Streamlit serves every session on a thread of one process; training, fits, scoring, the across-seed spread, class
removal, the live LDS and the mislabel demo computed there held its GIL and shared its models between threads. Here
they run as Dask tasks (:mod:`ui.compute` functions of small keys; models reach the workers through the disk
cache's keys) and the server's threads only submit, poll progress, cancel and draw.

**Settings** (read when the first job is submitted):

- ``INFLUENCE_EXPLORER_DASK_SCHEDULER=tcp://host:8786`` uses an existing Dask scheduler, so a larger class can add
  machines: start ``dask scheduler`` and, on each machine, ``dask worker tcp://host:8786 --nthreads 1`` from the
  project's root with the project's environment (the workers import ``ui.compute`` and ``influence_core``) and
  the same ``INFLUENCE_EXPLORER_CACHE_DIR`` where the machines share a filesystem (else each worker keeps its own
  disk cache and trains a model it has not seen once). Set the scheduler's
  ``distributed.scheduler.allowed-failures`` to 1 for the retry rule below.
- Otherwise a ``distributed.LocalCluster`` of ``INFLUENCE_EXPLORER_WORKERS`` worker processes (default: the
  machine's cores), one thread each (one job per worker at a time; torch with one thread, see
  :func:`ui.compute.set_torch_threads`), at a lowered CPU priority, so the server and the browsers come first.
- ``INFLUENCE_EXPLORER_WORKERS=0`` runs the jobs in threads of the server process instead (the app tests do, to
  keep them fast and to see the server's in-process test doubles; ``tests/app/test_workers.py`` tests the cluster).

**Progress and Cancel.** A task reports ``progress(fraction, message)`` into a ``distributed.Variable`` named after
its job (at most every ``REPORT_EVERY`` seconds) and, at the same points, checks a ``distributed.Event`` that Cancel
sets: the next progress point raises :class:`influence_core.progress.Cancelled`, the worker returns at once and
nothing half-done is stored (the engine stores only finished work). ``future.cancel()`` then drops the task if it
had not started.

**A worker that dies** (out of memory, killed) is restarted by its nanny; the scheduler gives its job to a worker
once more (``allowed-failures = 1``); when that one dies too the student reads one line
(:data:`KILLED_MESSAGE`), never a traceback. Errors raised by the engine come back as themselves (one readable line
through :func:`ui.errors.readable`). A nanny can lose the race with a worker killed while it restarts and leave the
cluster with no worker at all (dask/distributed#3196); a job that has waited :data:`NO_WORKER_SECONDS` on a
cluster without workers restarts the local cluster and fails with one line (:class:`NoWorkers`), which
:func:`call` retries once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from influence_core import Cancelled, Progress

from . import jobs

__all__ = ["Task", "RemoteJob", "make_job", "call", "run_everywhere", "in_process", "settings", "client", "shutdown"]

ENV_WORKERS = "INFLUENCE_EXPLORER_WORKERS"
ENV_SCHEDULER = "INFLUENCE_EXPLORER_DASK_SCHEDULER"
NICE = 5
POLL_SECONDS = 0.2
REPORT_EVERY = 0.25
KILLED_MESSAGE = (
    "the worker process computing it stopped (out of memory, or killed) and so did the fresh worker "
    "it was retried on; choose a smaller model, dataset or sample size, or ask the teacher to give "
    "the server more memory"
)
NO_WORKER_SECONDS = 60.0
"""How long a job waits on a cluster that has no worker before the local cluster is restarted (a nanny restarts
a killed worker within seconds)."""
WORKER_CHECK_SECONDS = 5.0
LOG = logging.getLogger("influence_explorer")


class NoWorkers(RuntimeError):
    """The cluster had no worker for :data:`NO_WORKER_SECONDS` while a job waited (the local one is restarted)."""


@dataclass(frozen=True)
class Task:
    """``fn(progress, *args)`` for a worker: ``fn`` importable by name (a :mod:`ui.compute` function), ``args``
    small keys (configurations, scalars)."""

    fn: Callable[..., Any]
    args: tuple = field(default_factory=tuple)

    def __call__(self, progress: Progress) -> Any:
        from . import artifacts, cache_budget

        with cache_budget.lease(artifacts.cache_dir()):  # the files this job uses are never evicted under it
            return self.fn(progress, *self.args)


def settings() -> dict[str, Any]:
    """``{"scheduler": address or None, "workers": local worker processes}`` from the environment."""
    address = os.environ.get(ENV_SCHEDULER, "").strip() or None
    raw = os.environ.get(ENV_WORKERS, "").strip()
    try:
        n = int(raw) if raw else (os.cpu_count() or 1)
    except ValueError:
        raise ValueError(
            f"{ENV_WORKERS} must be a whole number of worker processes (0 = compute in the server process), got {raw!r}"
        ) from None
    if n < 0:
        raise ValueError(f"{ENV_WORKERS} must be 0 or more, got {n}")
    return {"scheduler": address, "workers": n}


def in_process() -> bool:
    """True when jobs run in threads of the server process (``INFLUENCE_EXPLORER_WORKERS=0``, no scheduler)."""
    s = settings()
    return s["scheduler"] is None and s["workers"] == 0


# ---------------------------------------------------------------------------------------------------- cluster

_lock = threading.Lock()
_client = None
_cluster = None


class _WorkerSetup:
    """Run in every worker process when it starts (also one restarted by its nanny): lowered CPU priority (one
    torch thread is set by the first job, :func:`execute`). A ``distributed.WorkerPlugin`` by duck typing."""

    name = "influence-explorer-setup"

    def setup(self, worker: Any) -> None:  # on the worker's event loop: nothing slow here (no torch import)
        try:
            os.nice(NICE)
        except (AttributeError, OSError):  # not permitted or not available: normal priority
            pass

    def teardown(self, worker: Any) -> None:
        pass

    def transition(self, *args: Any, **kwargs: Any) -> None:
        pass

    def release_key(self, *args: Any, **kwargs: Any) -> None:
        pass


def client():
    """The process's ``distributed.Client``: connected to ``INFLUENCE_EXPLORER_DASK_SCHEDULER``, else to a local
    cluster started now (see the module docstring). Raises RuntimeError with one readable line when the scheduler
    cannot be reached."""
    global _client, _cluster
    with _lock:
        if _client is not None and _client.status == "running":
            return _client
        import dask
        import distributed

        s = settings()
        dask.config.set({"distributed.scheduler.allowed-failures": 1})  # a job is retried once when its worker dies
        try:
            if s["scheduler"] is not None:
                _client = distributed.Client(s["scheduler"], set_as_default=False, timeout=15)
            else:
                _cluster = distributed.LocalCluster(
                    n_workers=max(s["workers"], 1),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=":0",
                    env={"OMP_NUM_THREADS": "1", "INFLUENCE_EXPLORER_TORCH_THREADS": "1"},
                    silence_logs=logging.ERROR,
                )
                _client = distributed.Client(_cluster, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            where = s["scheduler"] or "a local cluster"
            raise RuntimeError(
                f"the compute workers ({where}) cannot be reached: {exc}; check {ENV_SCHEDULER} or restart the server"
            ) from None
        plugin = _WorkerSetup()
        try:
            from distributed import WorkerPlugin

            plugin = type("WorkerSetup", (_WorkerSetup, WorkerPlugin), {})()
        except ImportError:  # pragma: no cover - every supported distributed has it
            pass
        _client.register_plugin(plugin, name=_WorkerSetup.name)
        return _client


def shutdown() -> None:
    """Close the client and the local cluster (the tests; a server simply exits)."""
    global _client, _cluster
    with _lock:
        if _client is not None:
            _client.close()
        if _cluster is not None:
            _cluster.close()
        _client = _cluster = None


def start_in_background() -> None:
    """Start the cluster (spawning workers and importing torch in them takes seconds) without waiting."""
    if in_process():
        return

    def start() -> None:
        try:
            client().run(_import_compute)
        except Exception:  # noqa: BLE001 - the first job reports it to its page
            LOG.exception("starting the compute workers failed")

    threading.Thread(target=start, name="dask-start", daemon=True).start()


def _import_compute() -> None:
    import ui.compute  # noqa: F401 - imports torch and the engine in the worker before the first job


def run_everywhere(fn: Callable[[], Any]) -> list[Any]:
    """``fn()`` in every worker process (or in this process when jobs run here): e.g. forget in-memory models
    after the disk cache is cleared, or gather the disk-cache problems the workers met."""
    if in_process():
        return [fn()]
    with _lock:
        started = _client is not None and _client.status == "running"
    if not started:
        return []
    return list(client().run(fn).values())


# ---------------------------------------------------------------------------------------------------- jobs


def execute(job_id: str, task: Task) -> tuple[str, Any]:
    """In a worker: ``task`` with a progress callback that publishes ``(fraction, message)`` and raises
    :class:`Cancelled` once the job's cancel event is set. Returns ("done", result) or ("cancelled", reason)
    (Cancelled is a BaseException: it is turned into a value here, not left to Dask's task machinery)."""
    from distributed import Event, Variable, get_client

    from .compute import set_torch_threads

    set_torch_threads()
    dask_client = get_client()
    board = Variable(f"ie-progress-{job_id}", client=dask_client)
    stop = Event(f"ie-cancel-{job_id}", client=dask_client)
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] < REPORT_EVERY:
            return
        last[0] = now
        if stop.is_set():
            raise Cancelled(f"{message}: cancelled")
        board.set([min(max(float(fraction), 0.0), 1.0), str(message)])

    try:
        return "done", task(progress)
    except Cancelled as exc:
        return "cancelled", str(exc)


class _TaskError(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class RemoteJob(jobs.Job):
    """A :class:`ui.jobs.Job` whose work runs on a Dask worker: its thread only submits the task, copies the
    worker's progress into ``fraction``/``message``, forwards Cancel, and hands the result or error to every
    waiting session."""

    def __init__(self, key: Hashable, label: str, task: Task) -> None:
        super().__init__(key, label, task)
        self.task = task
        self.id = uuid.uuid4().hex

    def _run(self) -> None:
        try:
            self.result = self._watch()
        except _TaskError as raised:  # the work's own error (e.g. a ValueError for impossible settings)
            self.error = raised.error
        except (OSError, TimeoutError, concurrent.futures.CancelledError) as exc:  # the cluster, not the work
            LOG.warning("%s: lost the compute workers: %r", self.label, exc)
            self.error = RuntimeError(
                f"{self.label}: the connection to the compute workers was lost "
                f"({type(exc).__name__}); ask again, or ask the teacher to restart the server"
            )
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting session
            self.error = exc
        finally:
            self.on_done()
            self.done.set()

    def _watch(self) -> Any:
        from distributed import Event, Variable
        from distributed.scheduler import KilledWorker

        dask_client = client()
        name = getattr(self.task.fn, "__name__", "job")
        board = Variable(f"ie-progress-{self.id}", client=dask_client)
        stop = Event(f"ie-cancel-{self.id}", client=dask_client)
        board.set([0.0, "waiting for a worker"])  # set before the worker reports: reading it never waits
        future = dask_client.submit(execute, self.id, self.task, key=f"{name}-{self.id}", pure=False)
        checked = without_workers = time.monotonic()
        try:
            while not future.done():
                if self.token.cancelled:
                    stop.set()
                    future.cancel()
                    raise Cancelled(self.token.reason)
                fraction, message = board.get(timeout=10)
                self._progress(fraction, message)
                time.sleep(POLL_SECONDS)
                now = time.monotonic()
                if now - checked >= WORKER_CHECK_SECONDS:
                    checked = now
                    if dask_client.scheduler_info(n_workers=1)["workers"]:
                        without_workers = now
                    elif now - without_workers >= NO_WORKER_SECONDS:
                        future.cancel()
                        raise _no_workers(self.label, now - without_workers)
            try:
                status, value = future.result()
            except KilledWorker:
                raise RuntimeError(f"{self.label}: {KILLED_MESSAGE}") from None
            except Exception as exc:  # noqa: BLE001 - raised by the task itself: handed on as it is
                raise _TaskError(exc) from None
            if status == "cancelled":
                raise Cancelled(value)
            self._progress(1.0, "done")
            return value
        finally:
            try:
                board.delete()
            except Exception:  # noqa: BLE001 - the scheduler is gone: nothing to clean up
                pass


def _no_workers(label: str, seconds: float) -> NoWorkers:
    """Restart the local cluster (a remote one is left to its operator) and say so in one line."""
    local = _cluster is not None
    LOG.warning("%s: no compute worker for %.0f s%s", label, seconds, "; restarting the local cluster" if local else "")
    if local:
        shutdown()  # here, before the job ends: the next client() starts a fresh cluster
        return NoWorkers(
            f"{label}: no compute worker was running for {seconds:.0f} s, so they were restarted; ask again"
        )
    return NoWorkers(
        f"{label}: no compute worker has been connected to the scheduler for {seconds:.0f} s; start the workers "
        f"({ENV_SCHEDULER})"
    )


def make_job(key: Hashable, label: str, compute: Callable[[Progress], Any]) -> jobs.Job:
    """The job for ``compute``: on the Dask workers for a :class:`Task` (unless jobs run in this process), else
    in a thread here (a plain callable: work that needs this process's objects)."""
    if isinstance(compute, Task) and not in_process():
        return RemoteJob(key, label, compute)
    return jobs.Job(key, label, compute)


def call(task: Task, progress: Progress | None = None) -> Any:
    """``task`` run to its end without a page: on the workers (waiting here), or in this thread when jobs run
    in this process. Used outside sessions (``python -m ui.prepare``, tests, the benchmark)."""
    if in_process():
        return task(progress or (lambda f, m: None))

    def run_once() -> RemoteJob:
        job = RemoteJob(("call", uuid.uuid4().hex), getattr(task.fn, "__name__", "job"), task)
        job.start()
        job.done.wait()
        return job

    job = run_once()
    if isinstance(job.error, NoWorkers):
        job = run_once()  # the local cluster was restarted: once more on the fresh one
    return job.outcome()

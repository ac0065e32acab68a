"""The executor seam: where the blocks of a computation run.

Two executors share one small interface (``scatter``, ``submit``, ``wait_first``, ``n_workers``, ``close``):

- :class:`SequentialExecutor` (the default) runs every task in this process, at submission, with torch using all
  the cores it is allowed.
- :class:`DaskExecutor` runs tasks on a Dask distributed cluster: the workers of a ``distributed.Client`` you pass,
  of a scheduler at an address (``tcp://host:8786``, a real multi-machine cluster), or of a ``LocalCluster`` of
  ``n_workers`` single-threaded worker processes started for you (a laptop). Needs ``pip install .[dask]``.

Use :func:`get_executor` to turn user options into an executor, preferably as a context manager so that a cluster it
started is shut down::

    with get_executor(workers=2) as ex:          # or scheduler="tcp://10.0.0.5:8786", or executor=client
        scores = calc.scores(X_test, y_test, executor=ex)

What is shipped to workers must be picklable: the scoring grid scatters its inputs (the model object, the training
and test arrays and the fitted solver state) once per worker and then sends only block coordinates per task. On a
multi-machine cluster the workers need this package installed (``pip install .[dask]``) so the model classes
import; a model class defined in a notebook or ``__main__`` travels by value through cloudpickle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "Executor",
    "SequentialExecutor",
    "DaskExecutor",
    "SchedulerUnreachableError",
    "ClusterLostError",
    "get_executor",
    "DEFAULT_CONNECT_TIMEOUT",
]

DEFAULT_CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a Dask scheduler before giving up with :class:`SchedulerUnreachableError`."""


class SchedulerUnreachableError(RuntimeError):
    """No Dask scheduler answered at the given address within the connect timeout."""


class ClusterLostError(RuntimeError):
    """The Dask cluster went away mid-run (scheduler gone, or no worker left) and the lost work could not be
    resubmitted; the message says how many blocks were finished and how to resume."""


class _Done:
    """A finished 'future' of the sequential executor."""

    __slots__ = ("_value",)

    def __init__(self, value: Any):
        self._value = value

    def result(self) -> Any:
        return self._value

    def done(self) -> bool:
        return True


class Executor:
    """Interface of an executor. Tasks are plain module-level functions of picklable arguments; arguments may be
    handles returned by :meth:`scatter` or futures returned by :meth:`submit` (resolved before the task runs)."""

    name = "executor"
    n_workers = 1

    @property
    def max_in_flight(self) -> int:
        """How many tasks to keep submitted at once (enough to keep every worker busy, few enough to bound the
        memory of results waiting to be collected)."""
        return 2 * self.n_workers + 1

    def scatter(self, obj: Any) -> Any:
        """Make ``obj`` available to every worker once; returns a handle to pass to :meth:`submit`."""
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = 0) -> Any:
        """Run ``fn(*args)``; returns a future with ``.result()``. Higher ``priority`` runs first (Dask)."""
        raise NotImplementedError

    def wait_first(self, futures: Iterable[Any]) -> Any:
        """Block until at least one of ``futures`` is finished and return one finished future."""
        raise NotImplementedError

    def release(self, future: Any) -> None:
        """Forget a future (frees its result on the workers)."""

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.n_workers}

    def is_lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` (raised by a future's result) means lost work (a dead worker, lost data) rather than an
        error of the task itself."""
        return False

    def recover(self, exc: BaseException, give_up: bool, finished: int, total: int) -> None:
        """Called after lost work, before it is resubmitted: returns when workers are there to take it, else
        raises :class:`ClusterLostError`."""
        raise ClusterLostError(f"lost work after {finished}/{total} blocks: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Release what this executor started (a no-op for borrowed clients)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SequentialExecutor(Executor):
    """Runs each task immediately in this process (no pickling, no copies)."""

    name = "sequential"
    n_workers = 1
    max_in_flight = 1  # type: ignore[assignment]  # tasks run at submission: one block in memory at a time

    def scatter(self, obj: Any) -> Any:
        return obj

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = 0) -> _Done:
        args = tuple(a.result() if isinstance(a, _Done) else a for a in args)
        return _Done(fn(*args))

    def wait_first(self, futures: Iterable[Any]) -> Any:
        for f in futures:
            return f
        raise ValueError("wait_first() needs at least one future")


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "Dask execution needs the 'dask' extra: pip install '.[dask]' (or pip install 'dask[distributed]')"
        ) from exc
    return distributed


def _probe(address: str, timeout: float) -> dict[str, Any]:
    """Ask the scheduler at ``address`` who it is, giving up after about ``timeout`` seconds.

    Done with a bare Dask comm in a helper thread (so it also works inside a running event loop, e.g. Jupyter) before
    any ``Client`` exists: a failed ``Client`` would linger and delay interpreter exit by several seconds.
    """
    import asyncio
    import threading

    from distributed.comm import connect

    async def ask() -> Any:
        comm = await connect(address, timeout=timeout)
        try:
            await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout)
            return await asyncio.wait_for(comm.read(), timeout)
        finally:
            comm.abort()

    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["reply"] = asyncio.run(ask())
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="dask-scheduler-probe", daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    if thread.is_alive():
        outcome["error"] = TimeoutError(f"no answer after {timeout} s")
    return outcome


def _connect(address: str, timeout: float) -> Any:
    """A ``distributed.Client`` for ``address``, or a clear error within about ``timeout`` seconds."""
    distributed = _import_distributed()
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"the scheduler address must be a non-empty string like 'tcp://host:8786', got {address!r}")
    address = address.strip()
    if ":" not in address.split("://", 1)[-1]:
        raise ValueError(f"scheduler address {address!r} has no port; use the form tcp://host:8786")
    start = time.perf_counter()
    outcome = _probe(address, timeout)
    waited = time.perf_counter() - start
    error = outcome.get("error")
    if isinstance(error, ValueError):
        raise ValueError(f"bad scheduler address {address!r}: {error}; use the form tcp://host:8786") from error
    if isinstance(error, (OSError, TimeoutError)):
        raise SchedulerUnreachableError(
            f"could not reach a Dask scheduler at {address} within {waited:.1f} s ({error}). Start one with "
            f"'dask scheduler' (and workers with 'dask worker {address} --nthreads 1'), check the host and port, "
            "or run without --scheduler for the sequential executor"
        ) from error
    reply = outcome.get("reply")
    if error is not None or not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        what = f"{type(error).__name__}: {error}" if error is not None else f"reply {str(reply)[:80]!r}"
        raise SchedulerUnreachableError(
            f"{address} answered but is not a Dask scheduler ({what}); check the host and port (the scheduler "
            "listens on 8786 by default; 8787 is its dashboard)"
        ) from error
    return distributed.Client(address, timeout=f"{timeout}s", set_as_default=False)


class DaskExecutor(Executor):
    """Runs tasks on a Dask distributed cluster.

    Pass exactly one of: ``client`` (a ``distributed.Client`` you own; it is not closed here), ``address`` (a
    scheduler such as ``tcp://host:8786``; connecting gives up after ``timeout`` seconds), or ``n_workers`` (start a
    ``LocalCluster`` of that many single-threaded worker processes, shut down by :meth:`close`).
    """

    name = "dask"

    def __init__(
        self,
        client: Any = None,
        *,
        address: str | None = None,
        n_workers: int | None = None,
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ):
        distributed = _import_distributed()
        if sum(x is not None for x in (client, address, n_workers)) != 1:
            raise ValueError("DaskExecutor needs exactly one of client=, address= or n_workers=")
        if not (timeout > 0):
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self._distributed = distributed
        self._cluster = None
        self._owns_client = False
        if client is not None:
            if not isinstance(client, distributed.Client):
                raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
            self.client = client
        elif address is not None:
            self.client = _connect(address, timeout)
            self._owns_client = True
        else:
            n = _check_workers(n_workers)
            self._cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self.client = distributed.Client(self._cluster, set_as_default=False)
            self._owns_client = True
        try:  # a local cluster waits for all its workers: the problem is then scattered to every one of them
            self.client.wait_for_workers(n_workers or 1, timeout=max(timeout, 30.0))
        except (TimeoutError, OSError) as exc:
            self.close()
            raise SchedulerUnreachableError(
                f"the Dask scheduler at {self.client.scheduler.address} has no workers; start some with "
                f"'dask worker {self.client.scheduler.address} --nthreads 1'"
            ) from exc

    @property
    def n_workers(self) -> int:  # type: ignore[override]
        return max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))

    @property
    def address(self) -> str:
        return self.client.scheduler.address

    def scatter(self, obj: Any) -> Any:
        return self.client.scatter(obj, broadcast=True, hash=False)

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = 0) -> Any:
        return self.client.submit(fn, *args, pure=False, priority=priority)

    def wait_first(self, futures: Iterable[Any]) -> Any:
        futures = list(futures)
        if not futures:
            raise ValueError("wait_first() needs at least one future")
        import concurrent.futures

        with self.client.as_current():  # wait() looks up the current client; ours need not be the default
            try:
                done, _ = self._distributed.wait(futures, return_when="FIRST_COMPLETED")
            except concurrent.futures.CancelledError:
                # wait() itself raises when futures were cancelled ("already forgotten": their worker died with
                # the only copy of their inputs). Hand one back: its result() raises the same error, which the
                # caller recognises as lost work and recovers from (is_lost, recover), instead of taking it for
                # a lost scheduler.
                cancelled = [f for f in futures if f.cancelled()]
                if not cancelled:
                    raise
                return cancelled[0]
        return next(iter(done))

    def release(self, future: Any) -> None:
        release = getattr(future, "release", None)
        if release is not None:
            release()

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.n_workers, "scheduler": self.address}

    RECOVERY_WAIT = 30.0
    """Seconds to wait for a worker (e.g. one restarted by its nanny) after all were lost."""

    def is_lost(self, exc: BaseException) -> bool:
        import asyncio
        import concurrent.futures

        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker

        lost = (
            concurrent.futures.CancelledError,
            asyncio.CancelledError,
            KilledWorker,
            CommClosedError,
            OSError,
            TimeoutError,
        )
        return isinstance(exc, lost) or type(exc).__name__ in (
            "FutureCancelledError",
            "CancelledError",
            "ClosedClientError",
        )

    def recover(self, exc: BaseException, give_up: bool, finished: int, total: int) -> None:
        what = f"{type(exc).__name__}: {str(exc)[:200]}"
        if give_up:
            raise ClusterLostError(
                f"the Dask cluster kept losing work ({what}) after {finished}/{total} blocks; "
                "check the workers' logs and memory"
            ) from exc
        if self.client.status not in ("running", "connecting"):
            raise ClusterLostError(
                f"the Dask scheduler at {self.address} is gone ({what}) after {finished}/{total} blocks"
            ) from exc
        try:
            self.client.wait_for_workers(1, timeout=self.RECOVERY_WAIT)
        except Exception as err:  # noqa: BLE001 - timeout, or the scheduler went away meanwhile
            raise ClusterLostError(
                f"no Dask worker left at {self.address} ({what}) after {finished}/{total} "
                f"blocks, none came back within {self.RECOVERY_WAIT:.0f} s"
            ) from err

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
            self._owns_client = False
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def _check_workers(workers: Any) -> int:
    try:
        n = int(workers)
    except (TypeError, ValueError):
        raise ValueError(f"workers must be a positive integer, got {workers!r}") from None
    if n != workers or n < 1:
        raise ValueError(f"workers must be a positive integer (number of local Dask worker processes), got {workers!r}")
    return n


def get_executor(
    executor: Any = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> Executor:
    """The executor for the user's options.

    ``executor``: None, an :class:`Executor`, a ``distributed.Client``, or a scheduler address string.
    ``workers``: start a local Dask cluster of that many single-threaded worker processes.
    ``scheduler``: connect to a running Dask scheduler (``tcp://host:8786``); fails with
    :class:`SchedulerUnreachableError` after ``timeout`` seconds if nothing answers.
    With none of them: the :class:`SequentialExecutor`.
    """
    given = [
        name for name, v in (("executor", executor), ("workers", workers), ("scheduler", scheduler)) if v is not None
    ]
    if len(given) > 1:
        raise ValueError(f"pass only one of executor, workers and scheduler (got {', '.join(given)})")
    if isinstance(executor, Executor):
        return executor
    if isinstance(executor, str):
        try:
            return DaskExecutor(address=executor, timeout=timeout)
        except ValueError as exc:
            raise ValueError(f"executor={executor!r}: {exc}") from None
    if executor is not None:
        if type(executor).__name__ == "Client" and type(executor).__module__.startswith("distributed"):
            return DaskExecutor(executor, timeout=timeout)
        raise TypeError(
            f"executor must be an influence_core.influence.executors.Executor, a distributed.Client or a "
            f"scheduler address, got {type(executor).__name__}"
        )
    if scheduler is not None:
        return DaskExecutor(address=scheduler, timeout=timeout)
    if workers is not None:
        return DaskExecutor(n_workers=_check_workers(workers), timeout=timeout)
    return SequentialExecutor()

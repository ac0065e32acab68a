"""The one progress-callback type of the engine, and cancellation carried by it.

Every long step takes ``progress(fraction, message)`` with ``fraction`` in [0, 1] and a short human-readable
``message``; the CLI prints it, the app draws a bar, tests record it. ``None`` means no reporting.

Cancellation uses the same seam, so no long loop needs its own hook: wrap the callback with
:func:`cancellable` and a :class:`CancelToken`; after ``token.cancel()`` the next progress point (an Adam epoch,
an L-BFGS polish step, a class-removal phase, an LDS retrain, a study run, a scoring block) raises
:class:`Cancelled`. The exception unwinds the computation before anything is stored: the app's disk cache
(:class:`influence_core.array_store.ArrayStore`) saves only what ``compute()`` returned, the class-removal
reference and the LDS retrain cache keep only finished retrains, so the next request recomputes cleanly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Progress = Callable[[float, str], None]
"""``progress(fraction in [0, 1], message) -> None``."""


class Cancelled(BaseException):
    """Raised at a progress point after :meth:`CancelToken.cancel`.

    A ``BaseException`` (like ``KeyboardInterrupt`` and ``asyncio.CancelledError``), so the ``except Exception``
    blocks that record a failed run and carry on (studies, scoring) do not swallow it."""


class CancelToken:
    """A thread-safe cancellation flag: ``cancel()`` from any thread, ``check()`` at progress points."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` when :meth:`cancel` was called."""
        if self._event.is_set():
            raise Cancelled(self.reason)


def cancellable(progress: Progress | None, token: CancelToken) -> Progress:
    """``progress`` (or no reporting when None) that first raises :class:`Cancelled` once ``token`` is
    cancelled: pass it wherever a long step takes ``progress``."""

    def report(fraction: float, message: str) -> None:
        token.check()
        if progress is not None:
            progress(fraction, message)

    return report


__all__ = ["Progress", "Cancelled", "CancelToken", "cancellable"]

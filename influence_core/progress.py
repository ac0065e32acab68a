"""The one progress-callback type of the engine.

Every long step takes ``progress(fraction, message)`` with ``fraction`` in [0, 1] and a short human-readable
``message``; the CLI prints it, the app draws a bar, tests record it. ``None`` means no reporting.
"""

from __future__ import annotations

from typing import Callable

Progress = Callable[[float, str], None]
"""``progress(fraction in [0, 1], message) -> None``."""

__all__ = ["Progress"]

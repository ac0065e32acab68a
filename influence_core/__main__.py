"""``python -m influence_core ...``: see :mod:`influence_core.cli`."""

from .cli import main

raise SystemExit(main())

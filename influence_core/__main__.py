"""``python -m influence_core ...``: see :mod:`influence_core.cli.main`."""

from influence_core.cli.main import main

raise SystemExit(main())

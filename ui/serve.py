"""Start the app: ``python -m ui.serve [streamlit options]`` is ``streamlit run app.py [options]`` that imports the
engine while the server boots (``make app`` uses it).

Streamlit runs ``app.py`` only when the first browser session connects, so that session used to pay for importing
torch, the engine and the pages' helpers (seconds, by ``python -X importtime``) after the
browser had loaded Streamlit's frontend. Here a background thread imports them as soon as the process starts, while
the server starts listening and the browser loads the frontend; the first session then finds them in
``sys.modules``. Nothing is computed and no session state is touched: only modules are imported (Python's import
locks make a session that imports the same module meanwhile wait for it, not import it twice).
"""

from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app.py"
PRELOAD = (
    "torch",
    "influence_core",
    "influence_core.models.training",
    "influence_core.sampling.samplers",
    "influence_core.influence.calculator",
    "ui.state",
    "ui.components",
    "ui.figures",
    "plotly.graph_objects",
)
"""What the home page imports: imported at once."""
PRELOAD_LATER = (
    "torch._dynamo",
    "torch._decomp.decompositions_for_jvp",
    "scipy.stats",
    "scipy.linalg",
    "sklearn.cluster",
)
"""What the first influence query imports (torch.func's jvp loads torch._dynamo, seconds by ``python -X importtime``)
and the samplers' scipy.stats and scikit-learn: imported once the first page is drawn (``ui.warmup.FIRST_PAGE_DRAWN``,
set by ``app.py``), or after ``LATER_AFTER_S`` without a visitor. Imported beside the first page, they held the GIL
while it ran (seen by hand with py-spy; not a committed benchmark)."""
LATER_AFTER_S = 30.0


def preload(modules: tuple[str, ...] = PRELOAD, later: tuple[str, ...] = ()) -> None:
    """Import ``modules``, then, once the first page is drawn, ``later`` (errors are left to the page that needs
    the module: it reports them)."""
    from ui.warmup import FIRST_PAGE_DRAWN

    for stage, names in enumerate((modules, later)):
        if stage and names:
            FIRST_PAGE_DRAWN.wait(LATER_AFTER_S)
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the page importing it shows the error with its context
                return


def main(argv: list[str] | None = None) -> None:
    from ui.warmup import start_in_background

    start_in_background()  # the map worker process compiles UMAP while the server boots (ui/map_worker.py)
    from ui import workers

    workers.start_in_background()  # the Dask workers start and import the engine while the server boots
    threading.Thread(target=preload, args=(PRELOAD, PRELOAD_LATER), name="preload-imports", daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()

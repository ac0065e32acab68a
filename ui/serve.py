"""Start the app: ``python -m ui.serve [streamlit options]`` is ``streamlit run app.py [options]`` that imports the
engine while the server boots (``make app`` uses it).

Streamlit runs ``app.py`` only when the first browser session connects, so that session used to pay for importing
torch, the engine and the pages' helpers (about 4 s of the cold start on this project's 2-core machine) after the
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
PRELOAD = ("torch", "influence_core", "influence_core.models.training", "influence_core.sampling.samplers",
           "influence_core.influence.calculator", "ui.state", "ui.components", "ui.figures", "plotly.graph_objects",
           # what the first influence query imports (torch.func's jvp loads torch._dynamo: 2.8 s), and the samplers'
           # scipy.stats and scikit-learn: after the home page's modules, so the first page does not wait for them
           "torch._dynamo", "torch._decomp.decompositions_for_jvp", "scipy.stats", "scipy.linalg",
           "sklearn.cluster")


def preload(modules: tuple[str, ...] = PRELOAD) -> None:
    """Import ``modules`` (errors are left to the page that needs the module: it reports them)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the page importing it shows the error with its context
            return


def main(argv: list[str] | None = None) -> None:
    from ui.warmup import start_in_background

    start_in_background()  # the map worker process compiles UMAP while the server boots (ui/map_worker.py)
    threading.Thread(target=preload, name="preload-imports", daemon=True).start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()

"""Influence Explorer: the entry point. ``streamlit run app.py`` (or ``make app``).

It names the pages (so the sidebar says "Home", not the file name "app") and runs the chosen one; the pages live
in ``pages/``, the shared helpers in ``ui/``, and all maths in ``influence_core``.
"""

import streamlit as st

from ui.warmup import FIRST_PAGE_DRAWN, start_in_background

start_in_background()  # once per server (python -m ui.serve starts it at launch): UMAP's compilation, in the map
# worker process (ui/map_worker.py), so it never holds this process's GIL

PAGES = [
    st.Page("pages/0_Home.py", title="Home", default=True),
    st.Page("pages/5_Lesson.py", title="Lesson"),
    st.Page("pages/1_Samplers.py", title="Samplers"),
    st.Page("pages/2_Influence.py", title="Influence"),
    st.Page("pages/3_Class_removal.py", title="Class removal"),
    st.Page("pages/4_Faithfulness.py", title="Faithfulness"),
    st.Page("pages/6_Explorer.py", title="Explorer"),
    st.Page("pages/7_Glossary.py", title="Glossary"),
]

st.navigation(PAGES).run()
FIRST_PAGE_DRAWN.set()  # python -m ui.serve now imports what later pages need (ui/serve.py)

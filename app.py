"""Influence Explorer: the entry point. ``streamlit run app.py`` (or ``make app``).

It names the pages (so the sidebar says "Home", not the file name "app") and runs the chosen one; the pages live
in ``pages/``, the shared helpers in ``ui/``, and all maths in ``influence_core``.
"""

import streamlit as st

from ui.warmup import start_in_background

PAGES = [
    st.Page("pages/0_Home.py", title="Home", default=True),
    st.Page("pages/5_Lesson.py", title="Lesson"),
    st.Page("pages/1_Samplers.py", title="Samplers"),
    st.Page("pages/2_Influence.py", title="Influence"),
    st.Page("pages/3_Class_removal.py", title="Class removal"),
    st.Page("pages/4_Faithfulness.py", title="Faithfulness"),
    st.Page("pages/6_Explorer.py", title="Explorer"),
]

st.navigation(PAGES).run()
# Once per server process, AFTER the first page is drawn: compile what the first UMAP map runs (ui/warmup.py).
# Started before the page, its numba compilation held the GIL while the first page imported torch and drew
# (cold start 14.7-16.5 s against 11-12 s without it, load 1).
start_in_background()

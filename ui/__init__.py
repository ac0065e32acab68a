"""Shared code of the Streamlit pages (not part of the engine).

- :mod:`ui.config`: small frozen, hashable configurations (data + model) used as cache keys.
- :mod:`ui.state`: cached loaders (``st.cache_resource`` / ``st.cache_data``) around ``influence_core``'s public API.
- :mod:`ui.figures`: plotly figure builders and display helpers (no Streamlit import).
- :mod:`ui.selection`: the pure function that turns a plotly selection event into row ids (no Streamlit import).
"""

"""Glossary page: every term the app uses, in a sentence or two."""

import streamlit as st

from ui.components import page_header
from ui.glossary import glossary_markdown

page_header("Glossary")
st.markdown("The words used on the other pages. Each page also has a *Words on this page* panel with its own.")
st.markdown(glossary_markdown())

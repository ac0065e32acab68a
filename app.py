"""Influence Explorer: Streamlit entry point (placeholder home page until the app lands)."""

import streamlit as st

st.set_page_config(page_title="Influence Explorer", layout="wide")
st.title("Influence Explorer")
st.write("Influence functions with the Hessian estimated on a well-chosen sample of the training data.")

"""Every colour the app uses, in one place (no Streamlit import), so that no two meanings share a colour.

- **Classes** (training points coloured by label or prediction) use :data:`CLASS_PALETTE`: a qualitative palette of
  mid-tone colours with no grey, no black, no dark blue and no orange.
- **State** (not in the sample; correct / wrong test points; helpful / harmful training points; the chosen test
  point) uses only what the class palette lacks: light grey for "not in the sample", the pair dark blue (good:
  correct, helpful) / orange (bad: wrong, harmful) together with distinct symbols (thin cross vs cross, open circle
  vs open diamond), and black with a white outline for the chosen point. Classes are filled dots; state markers are
  crosses, open rings and a star, so they differ in shape as well as colour.
- **Samplers** have one fixed colour each across the whole app (:func:`sampler_colour`), whatever the selection
  order, so "logit" is the same colour in every chart.
"""

from __future__ import annotations

import hashlib

CLASS_PALETTE = (
    "#e15759",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#76b7b2",
    "#a0cbe8",
    "#b6992d",
    "#d37295",
    "#8cd17d",
    "#f1ce63",
    "#86bcb6",
    "#d4a6c8",
    "#e6b8a2",
    "#c9e07a",
    "#c994c7",
    "#dbdb8d",
    "#9edae5",
    "#f7b6d2",
)

GOOD = "#0b3c8c"  # dark blue: correct test points, helpful training points
BAD = "#ff7f00"  # orange: wrong test points, harmful training points
NOT_IN_SAMPLE = "rgba(190,190,190,0.45)"  # light grey: training points outside the Hessian sample
CHOSEN = "black"  # the chosen test point (a star with a white outline)
POPULATION = "#b0b0b0"  # the whole training set in distribution charts; "before removal" bars
REFERENCE = "#222222"  # the model retrained from scratch

# Confidence (max softmax) as a light-to-dark green scale: no dark blue, no orange, no grey.
CONFIDENCE_SCALE = [[0.0, "#e5f5e0"], [0.5, "#74c476"], [1.0, "#00441b"]]

SAMPLER_COLOURS = {
    "random": "#9467bd",
    "feature": "#1f77b4",
    "logit": "#d62728",
    "class_stratified": "#bcbd22",
    "logit_kmeans": "#8c564b",
    "importance": "#17becf",
    "full": "#222222",
}
_EXTRA = ("#7f7f00", "#e377c2", "#393b79", "#637939", "#7b4173", "#843c39")


def class_colour(c: int) -> str:
    """Colour of class ``c`` (wraps around after 20 classes)."""
    return CLASS_PALETTE[int(c) % len(CLASS_PALETTE)]


def sampler_colour(name: str) -> str:
    """The one colour of sampler ``name`` everywhere in the app; a user-registered sampler gets a colour derived
    from its name (stable across sessions and selection orders)."""
    if name in SAMPLER_COLOURS:
        return SAMPLER_COLOURS[name]
    return _EXTRA[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(_EXTRA)]

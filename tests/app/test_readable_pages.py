"""Terms explained where they appear (issue 23, items 2 and 7): sampler sentences from the registry, readable table
columns without "None" cells, the glossary, and a Home page that shows only what applies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from apptest_helpers import ok

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_every_sampler_has_a_sentence_and_a_new_one_brings_its_own():
    from influence_core.sampling.samplers import SAMPLERS, available_samplers, register_sampler
    from ui.summaries import sampler_help

    for name in available_samplers():
        assert len(sampler_help(name)) > 30 and name not in ("",)

    @register_sampler("every_other", needs=())
    def every_other(inputs, pool, m, rng):
        """Takes every other point of the pool.

        More detail that is not the sentence."""
        return pool[::2][:m], None

    try:
        assert sampler_help("every_other") == "Takes every other point of the pool."
    finally:
        SAMPLERS.pop("every_other")


def test_tables_show_readable_names_and_no_none():
    from ui.export import readable

    df = pd.DataFrame(
        {"sampler": ["a", "b"], "spearman_vs_full": [0.5, 0.6], "peak_mb": [np.nan, 3.0], "margin": [0.1, None]}
    )
    out = readable(df)
    assert list(out.columns) == ["sampler", "Spearman with full data", "peak memory (MB)", "lead over the next (LDS)"]
    assert out.iloc[0, 2] == "n/a" and out.iloc[1, 3] == "n/a" and "None" not in out.astype(str).to_string()


def test_glossary_covers_the_terms_of_the_issue(app_page):
    from ui.glossary import GLOSSARY, PAGE_TERMS

    for term in (
        "influence score",
        "Hessian sample",
        "Gauss-Newton",
        "damping",
        "F1 (class removal)",
        "honest F1",
        "LDS",
        "noise ceiling",
        "gradient dot",
        "TV distance",
        "self-influence",
    ):
        assert term in GLOSSARY
    assert all(t in GLOSSARY for terms in PAGE_TERMS.values() for t in terms)
    at = app_page("pages/7_Glossary.py")
    ok(at.run())
    assert "**noise ceiling**" in "\n".join(m.value for m in at.markdown)


def test_model_names_tell_kept_models_apart():
    from ui.config import ModelConfig, RunConfig, run_label

    a, b, c = (
        RunConfig(),
        RunConfig(model=ModelConfig(hidden=64, epochs=40)),
        RunConfig(model=ModelConfig(arch="logreg")),
    )
    assert [run_label(r, [a, b, c]) for r in (a, b, c)] == [
        "mlp on digits (hidden 32, 30 epochs)",
        "mlp on digits (hidden 64, 40 epochs)",
        "logreg on digits",
    ]


def test_home_shows_only_the_controls_that_apply(app_page):
    at = app_page("app.py")
    ok(at.run())
    labels = [n.label for n in at.number_input]
    assert "MLP hidden width" in labels and "MNIST-1D samples" not in labels
    assert not at.get("file_uploader")
    at.selectbox(key="form_arch").set_value("cnn")
    ok(at.run())
    assert "MLP hidden width" not in [n.label for n in at.number_input]
    at.selectbox(key="form_dataset").set_value("mnist1d")
    ok(at.run())
    assert "MNIST-1D samples" in [n.label for n in at.number_input]


def test_influence_caption_says_when_it_was_loaded_from_the_cache():
    from ui.figures import computed_caption

    row = {"method": "exact", "iterations": 0, "solve_seconds": 0.0, "seconds": 1.2}
    assert "loaded from the cache" in computed_caption(row, 0.01, 1437, 3)
    assert "0 iterations" not in computed_caption(row, 0.01, 1437, 3)
    cg = {"method": "cg", "iterations": 41, "solve_seconds": 0.3, "seconds": 0.5}
    assert "computed just now" in computed_caption(cg, 0.5, 1437, 3) and "41 iterations" in computed_caption(
        cg, 0.5, 1437, 3
    )


def test_numbers_are_formatted_by_their_size():
    from ui.export import number_format

    assert number_format([3.1e-4, -2e-6]) == "%.1e"  # self-influence reads 3.1e-04, never 0.000
    assert number_format([0.5, 0.01]) == "%.3f"
    assert number_format([1437.0, 3.0]) == "%.1f"
    assert number_format([float("nan")]) == number_format([0.0]) == "%.3f"


def test_tables_keep_constant_columns_in_the_csv_but_off_the_screen(app_page):
    """The Samplers page's summary says m and the seed above the table; its on-screen columns fit 1024 px (the
    browser test measures that), the CSV keeps them."""
    import json

    at = app_page("pages/1_Samplers.py")
    ok(at.run())
    frame = at.dataframe[0]
    config = json.loads(frame.proto.columns)
    assert config["m"]["hidden"] and config["seed"]["hidden"]
    assert not any(c.get("hidden") for name, c in config.items() if name not in ("m", "seed", "_index"))
    assert {"m", "seed", "class TV", "confidence TV"} <= set(frame.value.columns)  # the CSV's columns
    assert any("m = 100, seed 0" in c.value for c in at.caption)


def test_reference_tables_read_each_run_against_the_retrained_model():
    from ui.summaries import reference_tables

    run = {
        "sampler": "logit",
        "seed": 3,
        "reference": {
            "prediction_agreement": {"alpha_1": 0.5, "best_alpha": 0.9},
            "report_agreement": {"selected_alpha": 0.8},
            "relative_distance": {"selected_alpha": 0.7},
            "param_distance": {"alpha_1": 2.0, "original": 3.0},
        },
    }
    agree, distance = reference_tables([run])
    assert agree.to_dict("records") == [
        {"sampler": "logit", "seed": 3, "agreement (α=1)": 0.5, "agreement (best α)": 0.9, "agreement (honest)": 0.8}
    ]
    assert distance.iloc[0].tolist() == ["logit", 3, 0.7, 2.0, 3.0]


def test_influence_caption_says_when_the_scores_come_from_the_cache(app_page):
    at = ok(app_page("pages/2_Influence.py").run())
    at.number_input(key="inf_seed").set_value(11)  # a spec nobody computed yet
    ok(at.run())
    assert any("computed just now" in c.value for c in at.caption)
    at.slider(key="inf_k").set_value(5)  # the same scores again: a cache hit
    ok(at.run())
    assert any("loaded from the cache" in c.value and "the first time" in c.value for c in at.caption)
    assert not any("0 iterations" in c.value for c in at.caption)  # a direct solve says so

"""How the pages show a failure (ui/errors.py): any engine exception, not only ValueError / RuntimeError, is one
readable line on the page, the progress bar is removed and the previous results are kept; a training failure keeps
the previous model."""

from __future__ import annotations

import pytest
from apptest_helpers import errors, ok, progress_bars, run_removal

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_any_engine_exception_is_shown_the_bar_removed_and_results_kept(app_page, failing_sampler):
    at = ok(app_page("pages/3_Class_removal.py").run())
    run_removal(at)
    kept = at.session_state["rm_results"]
    for kind in (MemoryError, TypeError, KeyError):
        failing_sampler["kind"] = kind
        at.multiselect(key="rm_samplers").set_value(["exploding"])
        at.button(key="rm_run").click()
        ok(at.run())  # no raw traceback
        assert any(e.startswith("Class removal failed:") for e in errors(at)), errors(at)
        assert not progress_bars(at)  # the bar is gone after the failure
        assert at.session_state["rm_results"] is kept  # the previous results stay
        assert list(at.dataframe[0].value.sampler) == ["random", "logit"]
    assert any("ran out of memory" in e for e in errors(at)) or any("KeyError" in e for e in errors(at))


@pytest.mark.parametrize("page", ["pages/1_Samplers.py", "pages/2_Influence.py"])
def test_samplers_and_influence_pages_survive_any_engine_exception(app_page, failing_sampler, page):
    failing_sampler["kind"] = TypeError
    at = app_page(page)
    at.session_state["smp_samplers"] = ["random", "exploding"]
    at.session_state["inf_a"] = "exploding"
    ok(at.run())
    assert any("unexpected TypeError" in e and "simulated failure" in e for e in errors(at)), errors(at)


def test_readable_names_the_problem_for_every_exception_type():
    from ui.errors import readable

    assert readable(ValueError("m = 5 is too large")) == "m = 5 is too large"
    assert "ran out of memory" in readable(MemoryError())
    assert "unexpected TypeError: bad" in readable(TypeError("bad"))


def test_training_failure_leaves_no_progress_bar_and_keeps_the_model(app_page):
    import io

    import numpy as np

    at = ok(app_page("app.py").run())
    at.selectbox(key="form_dataset").set_value("npz")  # MNIST-1D no longer offers the CNN; a tabular upload does
    ok(at.run())
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, X_train=rng.normal(size=(60, 5)), y_train=np.arange(60) % 3)
    at.file_uploader(key="form_upload").upload("tabular.npz", buf.getvalue())
    at.selectbox(key="form_arch").set_value("cnn")  # tabular: the CNN refuses it
    at.button[0].click()
    ok(at.run())
    assert any(e.startswith("Could not train with these settings") for e in errors(at)), errors(at)
    assert not progress_bars(at)
    assert "mlp on digits" in at.subheader[-1].value

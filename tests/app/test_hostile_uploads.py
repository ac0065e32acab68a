"""Hostile uploads through the home page (AppTest): each is refused by the engine with an error on the page, the
app keeps running and keeps the previous model. The memory-exhaustion cases (a decompression bomb, a huge label)
are refused from the file's headers and label range in well under a second, before anything large is built. An upload
over the app's size limit is refused naming the limit, and a session keeps at most the upload of its current model and
the latest one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from apptest_helpers import errors, ok

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from npz_bombs import lying_header, npz_bytes, zeros_bomb  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4))
Y = np.arange(60) % 3


def _huge_label() -> bytes:
    y = Y.copy()
    y[[5, 9]] = 10**9
    return npz_bytes(X_train=X, y_train=y)


CASES = {
    "bomb": (lambda: zeros_bomb((6000, 6000), "|u1"), "expands to more than"),  # 36 MB of bytes in a 40 KB file
    "huge_label": (_huge_label, "contiguous"),
    "lying_header": (lambda: lying_header((100000, 1000)), "damaged"),
    "complex": (lambda: npz_bytes(X_train=X + 1j, y_train=Y), "complex"),
    "float_labels": (lambda: npz_bytes(X_train=X, y_train=Y + 0.7), "integer class labels"),
    "zero_features": (lambda: npz_bytes(X_train=np.zeros((60, 0)), y_train=Y), "no features"),
    "overflow": (lambda: npz_bytes(X_train=X * 1e306, y_train=Y), "too large"),
    "negative_image_shape": (lambda: npz_bytes(X_train=X, y_train=Y, image_shape=np.array([-2, -2])), "image_shape"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_upload_shows_an_error_and_keeps_the_previous_model(app_page, case):
    make, message = CASES[case]
    at = app_page("app.py").run()
    assert not at.exception
    at.selectbox(key="form_dataset").set_value("npz")
    at.run()  # the uploader is drawn only once "upload a .npz file" is chosen
    at.file_uploader(key="form_upload").upload(f"{case}.npz", make())
    at.button[0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any(message in e for e in errors), errors
    assert all(len(e) < 600 for e in errors)
    assert "mlp on digits" in at.subheader[-1].value  # still running, on the previous model


def test_upload_over_the_limit_names_the_limit(app_page):
    at = ok(app_page("app.py").run())
    assert not at.get("file_uploader")  # digits chosen: no upload box
    at.selectbox(key="form_dataset").set_value("npz")
    at.run()  # the uploader is drawn only once "upload a .npz file" is chosen
    assert "25 MB" in at.get("file_uploader")[0].proto.label
    at.file_uploader(key="form_upload").upload("big.npz", b"\0" * (26 * 1024 * 1024))
    at.button[0].click()
    ok(at.run())
    assert any("over the 25 MB upload limit" in e and "27.3 MB" in e for e in errors(at)), errors(at)
    assert "mlp on digits" in at.subheader[-1].value


def test_session_keeps_at_most_the_current_and_the_latest_upload(app_page):
    import io

    from sklearn.datasets import load_digits

    d = load_digits()
    payloads = []
    for n in (300, 310, 320):
        buf = io.BytesIO()
        np.savez(buf, X_train=d.images[:n], y_train=d.target[:n])
        payloads.append(buf.getvalue())
    at = ok(app_page("app.py").run())
    at.selectbox(key="form_dataset").set_value("npz")
    at.run()  # the uploader is drawn only once "upload a .npz file" is chosen
    at.number_input(key="form_epochs").set_value(2)
    at.number_input(key="form_hidden").set_value(8)
    for i, payload in enumerate(payloads):
        at.file_uploader(key="form_upload").upload(f"d{i}.npz", payload)
        at.button[0].click()
        ok(at.run())
        assert not errors(at)
        assert len(at.session_state["npz_payloads"]) == 1  # only the current model's upload
    at.file_uploader(key="form_upload").upload("broken.npz", b"not a zip")
    at.button[0].click()
    ok(at.run())
    assert len(at.session_state["npz_payloads"]) == 2  # the current one survives a failed upload
    assert "upload d2.npz" in at.subheader[-1].value


def test_a_job_for_an_upload_carries_its_bytes_so_an_evicted_cache_entry_is_rebuilt(wine_run, monkeypatch, tmp_path):
    """The disk cache may evict an upload (its byte budget, another session's clean-up) while the session still
    holds it: every job for the upload carries its bytes (``state._payload``, also with the disk cache on), and a
    worker that no longer finds it rebuilds it from them; without them it can only say "upload it again" (a CI run
    once failed so)."""
    import influence_core as ic
    from ui import artifacts, state
    from ui.config import DataConfig

    run, payloads = wine_run
    monkeypatch.setenv("INFLUENCE_EXPLORER_CACHE_DIR", str(tmp_path / "evicted"))  # a cache without the upload
    assert artifacts.disk_store() is not None
    monkeypatch.setattr(state.st, "session_state", {state.PAYLOAD_KEY: dict(payloads)})
    payload = state._payload(run.data)
    assert payload == payloads[run.data.npz_digest]
    assert state._payload(DataConfig()) is None  # built-in data travels by name
    data = artifacts.dataset(run.data, payload)
    assert data.n_train + data.n_test == 178 and data.X_train.shape[1] == 13
    with pytest.raises(ic.DatasetError, match="upload it again"):
        artifacts.dataset(DataConfig(name="npz", npz_digest="0" * 64, npz_filename="gone.npz"), None)

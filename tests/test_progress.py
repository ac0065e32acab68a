"""Cancellation through the progress seam (influence_core.progress): a cancel stops training, class-removal
retraining and LDS retrains at their next progress point with ``Cancelled``, and nothing half-done is stored (the
app's disk cache, the class-removal reference cache, the LDS retrain cache); the next request recomputes cleanly.

Each test cancels from inside a progress call and checks that the very next progress point raised (no progress
message after the cancel): without the check in ``cancellable`` the work runs to its end and the tests fail."""

from __future__ import annotations

import numpy as np
import pytest

from influence_core import train_model
from influence_core.progress import Cancelled, CancelToken, cancellable


class CancelAt:
    """A progress callback that records messages and cancels ``token`` at the first message containing ``text``."""

    def __init__(self, text: str) -> None:
        self.text, self.token, self.seen = text, CancelToken(), []

    def __call__(self, fraction: float, message: str) -> None:
        self.seen.append(message)
        if self.text in message and not self.token.cancelled:
            self.token.cancel("stop")

    @property
    def progress(self):
        return cancellable(self, self.token)

    def after_cancel(self) -> list[str]:
        first = next(i for i, m in enumerate(self.seen) if self.text in m)
        return self.seen[first + 1 :]


def test_token_and_wrapper():
    token = CancelToken()
    calls = []
    report = cancellable(lambda f, m: calls.append((f, m)), token)
    report(0.5, "half")
    token.check()  # not cancelled: no exception
    token.cancel("user pressed Cancel")
    with pytest.raises(Cancelled, match="user pressed Cancel"):
        report(0.6, "more")
    assert calls == [(0.5, "half")] and token.cancelled
    assert not isinstance(Cancelled("x"), Exception)  # passes through `except Exception` of studies and scoring
    cancellable(None, CancelToken())(0.1, "no reporting, still checked")


def test_cancel_during_adam_epochs_stores_no_model_and_the_next_request_trains(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("INFLUENCE_EXPLORER_CACHE_DIR", str(tmp_path))
    from ui import artifacts
    from ui.config import ModelConfig, RunConfig

    run = RunConfig(model=ModelConfig(hidden=8, epochs=30, polish_steps=10))
    hook = CancelAt("epoch 2/30")
    with pytest.raises(Cancelled):
        artifacts.load_or_train(run, digits, hook.progress)
    assert hook.after_cancel() == []  # stopped at the next progress point (epoch 3 never reported)
    assert not artifacts.is_stored(artifacts.MODEL_KIND, run.cache_key())
    assert artifacts.disk_store().entries() == [] and not list(tmp_path.rglob("*.tmp*"))

    seen = []
    model = artifacts.load_or_train(run, digits, lambda f, m: seen.append(m))  # recomputes cleanly
    assert model.training_report["loaded_from_disk"] is False and "epoch 30/30" in seen
    assert artifacts.is_stored(artifacts.MODEL_KIND, run.cache_key())


def test_cancel_during_the_lbfgs_polish(digits):
    hook = CancelAt("L-BFGS")  # logistic regression: L-BFGS steps only
    with pytest.raises(Cancelled):
        train_model(digits, "logreg", seed=0, progress=hook.progress)
    assert len(hook.seen) == 1 and hook.after_cancel() == []


def test_cancel_during_class_removal_retraining_keeps_no_reference(digits, tiny_digits_mlp):
    from influence_core.removal.class_removal import _REFERENCE_CACHE, ClassRemoval, _reference_key

    task = ClassRemoval(tiny_digits_mlp, digits)
    c = 4
    _REFERENCE_CACHE.pop(_reference_key(tiny_digits_mlp, digits, c), None)
    hook = CancelAt("retraining: epoch 1/")
    with pytest.raises(Cancelled):
        task.run(c, "random", 50, 0, solver="cg", retrain_reference=True, progress=hook.progress)
    assert hook.after_cancel() == []
    assert c not in task._references and _reference_key(tiny_digits_mlp, digits, c) not in _REFERENCE_CACHE

    seen = []
    result = task.run(c, "random", 50, 0, solver="cg", retrain_reference=True, progress=lambda f, m: seen.append(m))
    assert result.reference is not None and any("retraining: epoch 3/3" in m for m in seen)
    assert c in task._references


def test_cancel_between_lds_retrains_keeps_only_finished_ones(digits, tmp_path):
    from influence_core.evaluation.lds import RetrainPlan, retrain_outputs

    model = train_model(digits, "logreg", seed=0)
    plan = RetrainPlan(n_subsets=4, n_seeds=1)
    hook = CancelAt("retrained subset 0")
    with pytest.raises(Cancelled):
        retrain_outputs(model, digits, plan, cache_dir=tmp_path, progress=hook.progress)
    assert hook.after_cancel() == []
    files = sorted(p.name for p in tmp_path.rglob("k*_r*.npz"))  # finished retrains only (the executor may
    assert 1 <= len(files) < 4 and not list(tmp_path.rglob("*.tmp*"))  # have finished one more in flight)

    seen = []
    out = retrain_outputs(model, digits, plan, cache_dir=tmp_path, progress=lambda f, m: seen.append(m))
    assert seen[0].startswith(f"LDS retrains: {len(files)} of 4 cached") and np.isfinite(out.logits).all()
    assert len(seen) == 1 + 4 - len(files)  # the rest retrained, the finished ones reused

"""Training: deterministic per seed, recorded objective, progress reporting, optimum for logistic regression, bad
settings refused, divergence named, thread count recorded."""

import numpy as np
import pytest
import torch

from influence_core import dataset_from_arrays, load_dataset, train_model
from influence_core.curvature.objective import Objective


@pytest.fixture(scope="module")
def small():
    return load_dataset("mnist1d", num_samples=300)


def _params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_same_seed_same_model_and_progress_is_reported(small):
    seen = []
    a = train_model(small, "mlp", seed=4, epochs=3, progress=lambda f, msg: seen.append(f))
    b = train_model(small, "mlp", seed=4, epochs=3)
    c = train_model(small, "mlp", seed=5, epochs=3)
    assert torch.equal(_params(a), _params(b))
    assert not torch.equal(_params(a), _params(c))
    assert seen and seen[-1] == 1.0 and all(x <= y for x, y in zip(seen, seen[1:]))
    assert a.weight_decay == 1e-3 and a.training_config["epochs"] == 3
    assert a.training_report["train_accuracy"] > 0.5


def test_on_epoch_sees_the_adam_iterates_of_the_run(small):
    """The hook gets the model after each Adam epoch: under a constant learning rate the iterate after epoch 2 of a
    3-epoch run is the model of a 2-epoch run without polish (same batches, same steps), and the run's result is
    the one without the hook."""
    seen: dict[int, torch.Tensor] = {}
    a = train_model(small, "mlp", seed=4, epochs=3, on_epoch=lambda e, m: seen.__setitem__(e, _params(m).clone()))
    assert sorted(seen) == [1, 2, 3]
    two = train_model(small, "mlp", seed=4, epochs=2, polish_steps=0, max_polish_steps=0)
    assert torch.equal(seen[2], _params(two))
    assert not torch.equal(seen[2], seen[3])
    assert torch.equal(_params(a), _params(train_model(small, "mlp", seed=4, epochs=3)))
    with pytest.raises(TypeError, match="on_epoch must be a function on_epoch\\(epoch, model\\) or None, got int"):
        train_model(small, "mlp", seed=4, epochs=3, on_epoch=3)


def test_logistic_regression_reaches_the_optimum(digits, digits_logreg64):
    """The gradient of the full objective (mean CE + wd/2 ||θ||²) vanishes at the trained weights."""
    model = digits_logreg64
    obj = Objective(model, digits.X_train, digits.y_train, model.weight_decay)
    gradient = obj.grad_sum() / obj.n + model.weight_decay * obj.theta
    assert gradient.norm().item() < 1e-6
    assert model.training_report["test_accuracy"] > 0.9


def test_cnn_on_images_and_bad_settings(digits, small):
    cnn = train_model(digits, "cnn", seed=0, epochs=1, polish_steps=0)
    assert cnn.features(torch.as_tensor(digits.X_test[:2])).shape[0] == 2
    with pytest.raises(ValueError, match="no image_shape"):
        train_model(small, "cnn")
    with pytest.raises(ValueError, match="unknown architecture"):
        train_model(small, "transformer")
    with pytest.raises(ValueError, match="unknown training setting"):
        train_model(small, "mlp", learning_rate=0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        train_model(small, "mlp", weight_decay=-1)
    assert np.isfinite(cnn.training_report["test_accuracy"])


def test_polish_continues_until_the_gradient_tolerance(small):
    """After ``polish_steps`` L-BFGS goes on (up to ``max_polish_steps``) until ||∇L|| <= grad_tol; the final norm,
    recomputed here from scratch, and whether the tolerance was reached are recorded with the model."""
    loose = train_model(small, "mlp", seed=0, epochs=2, polish_steps=5, max_polish_steps=5)
    tight = train_model(small, "mlp", seed=0, epochs=2, polish_steps=5, grad_tol=1e-3, max_polish_steps=2000)
    assert loose.training_report["grad_norm"] > 1e-3 and not loose.training_report["grad_tol_reached"]
    assert tight.training_report["grad_tol_reached"] and tight.training_report["grad_tol"] == 1e-3
    obj = Objective(tight, small.X_train, small.y_train, tight.weight_decay)
    gradient = obj.grad_sum() / obj.n + tight.weight_decay * obj.theta
    assert gradient.norm().item() <= 1.5e-3
    assert tight.training_config["grad_tol"] == 1e-3 and tight.training_config["max_polish_steps"] == 2000


def test_cosine_schedule_decays_the_adam_learning_rate_to_zero(small, monkeypatch):
    """lr_schedule="cosine": lr_t = lr (1 + cos(pi t / T)) / 2 over the T mini-batch steps (recorded with the
    model); "constant" keeps lr; any other name is refused."""
    seen = []
    real_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    model = train_model(small, "mlp", seed=0, epochs=2, batch_size=60, lr=0.01, polish_steps=0, lr_schedule="cosine")
    T = 2 * int(np.ceil(small.n_train / 60))
    assert len(seen) == T
    expected = [0.01 * 0.5 * (1 + np.cos(np.pi * t / T)) for t in range(T)]
    assert np.allclose(seen, expected, rtol=1e-12) and seen[-1] < 0.05 * 0.01  # the last step: lr (1 + cos(7π/8))/2
    assert model.training_config["lr_schedule"] == "cosine"
    seen.clear()
    train_model(small, "mlp", seed=0, epochs=1, batch_size=60, lr=0.01, polish_steps=0)
    assert set(seen) == {0.01}
    with pytest.raises(ValueError, match="lr_schedule"):
        train_model(small, "mlp", lr_schedule="linear")


# ------------------------------------------------------------------------------------------ hostile settings
@pytest.mark.parametrize(
    "settings, message",
    [
        ({"grad_tol": float("nan")}, "grad_tol must be a finite number > 0"),  # was accepted, then "not reached"
        ({"grad_tol": -1.0}, "grad_tol must be a finite number > 0"),
        ({"max_polish_steps": -5}, r"max_polish_steps must be an integer in \[0, 1000000\]"),
        ({"max_polish_steps": 10**15}, r"max_polish_steps must be an integer in \[0, 1000000\]"),
        ({"epochs": 2.5}, "epochs must be an integer"),  # was a TypeError from range()
        ({"epochs": "3"}, "epochs must be an integer"),
        ({"epochs": 10**9}, r"epochs must be an integer in \[0, 100000\]"),
        ({"batch_size": 0.5}, "batch_size must be an integer"),
        ({"polish_steps": 2.5}, "polish_steps must be an integer"),
        ({"hidden": (2.5,)}, "hidden .* must be an integer"),  # was truncated to 2
        ({"hidden": (10**9,)}, r"hidden .* must be an integer in \[1, 65536\]"),
        ({"lr": "fast"}, "lr .* must be a finite number > 0"),
        ({"weight_decay": None}, "weight_decay must be a finite number >= 0"),
        ({"device": "cuda:7"}, "device"),
        ({"device": "meta"}, "device 'meta' holds no data"),
        ({"device": "nonsense"}, "device must be a torch device"),
    ],
)
def test_bad_training_settings_are_refused_before_training(small, settings, message):
    with pytest.raises(ValueError, match=message):
        train_model(small, "mlp", seed=0, **settings)


@pytest.mark.parametrize("seed", [-1, 2.5, 2**40, "0"])
def test_bad_seed_is_refused(small, seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        train_model(small, "logreg", seed=seed)


def test_train_model_needs_a_dataset(small):
    with pytest.raises(TypeError, match="dataset must be an influence_core Dataset.*dataset_from_arrays"):
        train_model((small.X_train, small.y_train, small.X_test, small.y_test), "logreg")


# --------------------------------------------------------------------------- bad settings, divergence, threads
X4 = np.random.default_rng(0).normal(size=(40, 4))
Y4 = np.arange(40) % 2


@pytest.fixture(scope="module")
def tiny():
    """40 random 4-feature points, two classes."""
    return dataset_from_arrays(X4, Y4, X4[:6], Y4[:6], name="tiny")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"weight_decay": float("inf")}, "weight_decay"),
        ({"weight_decay": -1e-3}, "weight_decay"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
    ],
)
def test_training_refuses_bad_settings(tiny, settings, message):
    with pytest.raises(ValueError, match=message):
        train_model(tiny, "mlp", seed=0, epochs=1, **settings)


def test_diverging_training_is_an_error_naming_the_learning_rate(tiny):
    with pytest.raises(RuntimeError, match=r"diverged.*lr=1e\+30.*lower the learning rate"):
        train_model(tiny, "mlp", seed=0, epochs=3, lr=1e30, polish_steps=0)


def test_thread_count_is_recorded_and_results_repeat_at_equal_count(tiny):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = train_model(tiny, "mlp", seed=0, epochs=2, polish_steps=3)
        b = train_model(tiny, "mlp", seed=0, epochs=2, polish_steps=3)
        torch.set_num_threads(2)
        c = train_model(tiny, "mlp", seed=0, epochs=2, polish_steps=3)
    finally:
        torch.set_num_threads(before)
    assert a.training_report["torch_threads"] == 1 and c.training_report["torch_threads"] == 2
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)  # same seed, same thread count: bitwise the same weights

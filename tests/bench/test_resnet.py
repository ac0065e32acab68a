"""ResNet-18 for 28x28 single-channel digits (models/zoo.py) and its study (``bench resnet``), on tiny widths."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from influence_core import InfluenceCalculator, build_model, load_dataset, train_model
from influence_core.bench import resnet as study
from influence_core.cli.main import main
from influence_core.io_safety import jsonable

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")

# torchvision's resnet18 has 11,689,512 parameters (1000 classes, 3-channel 7x7 stem): remove its stem
# (64·3·7·7) and head (512·1000 + 1000), add a 1-channel 3x3 stem (64·1·3·3) and a 10-way head (512·10 + 10).
RESNET18_MNIST_PARAMS = 11_689_512 - 64 * 3 * 7 * 7 + 64 * 1 * 3 * 3 - (512 * 1000 + 1000) + (512 * 10 + 10)


@pytest.fixture(scope="module")
def tiny_mnist():
    """40 training and 20 test points of mnist5k (4 and 2 per class)."""
    full = load_dataset("mnist5k")
    train = np.sort(np.concatenate([np.flatnonzero(full.y_train == k)[:4] for k in range(10)]))
    test = np.sort(np.concatenate([np.flatnonzero(full.y_test == k)[:2] for k in range(10)]))
    return dataclasses.replace(
        full,
        X_train=full.X_train[train],
        y_train=full.y_train[train],
        X_test=full.X_test[test],
        y_test=full.y_test[test],
    )


def test_resnet18_has_the_standard_architecture_and_parameter_count():
    model = build_model("resnet18", 784, 10, (28, 28))
    assert sum(p.numel() for p in model.parameters()) == RESNET18_MNIST_PARAMS == 11_172_810
    assert model.conv1.weight.shape == (64, 1, 3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3, model.layer4)] == [2, 2, 2, 2]
    assert model.head.weight.shape == (10, 512)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 20  # 2 per block, 3 shortcuts, stem


def test_resnet18_matches_torchvision_layer_shapes_when_torchvision_imports():
    try:
        from torchvision.models import resnet18
    except Exception as exc:  # noqa: BLE001 - its CUDA-linked wheel raises RuntimeError beside a CPU torch
        pytest.skip(f"torchvision does not import here: {type(exc).__name__}")
    reference = resnet18(num_classes=10)
    reference.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    ours = build_model("resnet18", 784, 10, (28, 28))
    theirs = {k.replace("fc.", "head."): v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == theirs


def test_input_adaptation_keeps_28x28_in_the_first_stage():
    model = build_model("resnet18", 784, 10, (28, 28), width=4).eval()
    sizes = {}
    for name in ("layer1", "layer2", "layer3", "layer4"):
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: sizes.__setitem__(name, tuple(out.shape[1:]))
        )
    x = torch.randn(3, 784)
    with torch.no_grad():
        flat, image = model(x), model(x.reshape(3, 1, 28, 28))
        features = model.features(x)
    assert sizes == {"layer1": (4, 28, 28), "layer2": (8, 14, 14), "layer3": (16, 7, 7), "layer4": (32, 4, 4)}
    assert flat.shape == (3, 10) and features.shape == (3, 32)
    assert torch.equal(flat, image)
    with pytest.raises(ValueError, match="at least 8x8"):
        build_model("resnet18", 36, 10, (6, 6))
    with pytest.raises(ValueError, match="image_shape"):
        build_model("resnet18", 784, 10, None)
    with pytest.raises(ValueError, match="width"):
        build_model("resnet18", 784, 10, (28, 28), width=0)


def test_train_model_trains_resnet18_without_polish_and_says_so(tiny_mnist):
    model = train_model(tiny_mnist, "resnet18", seed=0, epochs=2, width=4, lr=3e-3)
    report = model.training_report
    assert not model.training and model.weight_decay == 1e-3 and model.training_config["width"] == 4
    assert report["polish"].startswith("skipped") and np.isnan(report["grad_norm"])
    assert not report["grad_tol_reached"]
    assert next(model.parameters()).dtype == torch.float32
    assert 0.0 <= report["test_accuracy"] <= 1.0
    # BatchNorm's running statistics moved away from their initial values during training
    assert not torch.allclose(model.bn1.running_mean, torch.zeros_like(model.bn1.running_mean))


def test_resnet_influence_equals_the_exact_solve_on_the_last_stage(tiny_mnist):
    """Ground truth through the public API: CG on the Gauss-Newton matrix of the last stage + head (width 1:
    2,218 parameters) gives the exact solve's scores; and the model's train mode does not change them."""
    torch.manual_seed(0)
    model = build_model("resnet18", 784, 10, (28, 28), width=1)
    model.weight_decay = 1e-2
    X, y = tiny_mnist.X_train, tiny_mnist.y_train
    Xt, yt = tiny_mnist.X_test[:3], tiny_mnist.y_test[:3]
    sample = np.arange(0, 40, 4)

    def scores(solver: str, **options):
        calc = InfluenceCalculator(model, X, y, params=["layer4", "head"], chunk_size=16)
        calc.fit(sample, solver=solver, damping=0.1, curvature="gauss_newton", **options)
        return calc.scores(Xt, yt), calc.objective.n_params

    model.eval()
    exact, p = scores("exact")
    assert p == sum(v.numel() for k, v in model.named_parameters() if k.startswith(("layer4.", "head.")))
    model.train()  # the engine evaluates in eval mode and restores the flag
    cg, _ = scores("cg", tol=1e-8, max_iter=2000)
    assert model.training and model.bn1.training
    assert exact.shape == (3, 40) and np.abs(exact).max() > 0
    np.testing.assert_allclose(cg, exact, rtol=1e-3, atol=1e-3 * np.abs(exact).max())


@pytest.mark.slow
def test_study_command_smoke_through_the_cli(tmp_path):
    out = tmp_path / "resnet"
    cache = tmp_path / "model.npz"
    argv = [
        "bench",
        "resnet",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--n-train",
        "40",
        "--n-test",
        "20",
        "--width",
        "4",
        "--samplers",
        "random",
        "logit",
        "--m",
        "4",
        "--eval-test",
        "20",
        "--query-m",
        "8",
        "--alphas",
        "1",
        "16",
        "--model-cache",
        str(cache),
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    record = json.loads(
        (out / "resnet18.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}")
    )
    markdown = (out / "resnet18.md").read_text()
    runs = record["removal"]["runs"]
    assert [(r["sampler"], r["m"], r["solver"]) for r in runs] == [
        ("random", 4, "cg"),
        ("random", 4, "lissa"),
        ("logit", 4, "lissa"),
    ]
    assert not record["removal"]["failures"]
    assert all(r["seconds"] > 0 and 1 <= r["iterations"] <= 10 and len(r["indices"]) == 4 for r in runs)
    assert all(r["sample_classes"][0] == 0 for r in runs)  # Hessian samples come from the remaining classes
    model = build_model("resnet18", 784, 10, (28, 28), width=4)
    last_stage = sum(v.numel() for k, v in model.named_parameters() if k.startswith(("layer4.", "head.")))
    assert record["params"]["n_params"] == record["query"]["n_params"] == last_stage
    assert record["query"]["scores_shape"] == [2, 40]
    assert record["training"]["n_params"] == sum(v.numel() for v in model.parameters())
    assert record["training"]["report"]["polish"].startswith("skipped")
    assert record["training"]["report"]["grad_norm"] is None  # NaN in the report: not computed
    assert "| random | 4 | cg |" in markdown and "load average" in markdown
    assert not (out / "resnet18.partial.json").exists()  # the checkpoint file is replaced by the final outputs
    # the cached model is reused by a second run with the same training settings; checkpoints after each step
    saved = []
    again = study.run_study(
        study.ResNetStudyConfig(
            device="cpu",
            n_train=40,
            n_test=20,
            width=4,
            samplers=("random",),
            m=(4,),
            eval_test=20,
            query_m=8,
            alphas=(1.0,),
            model_cache=str(cache),
        ),
        checkpoint=lambda record: saved.append(sorted(record)),
    )
    assert again["training"]["source"].startswith("loaded from")
    assert "training" in saved[0] and "query" not in saved[0] and "removal" in saved[-1] and len(saved) == 4
    assert again["training"]["report"]["test_accuracy"] == record["training"]["report"]["test_accuracy"]


def test_saved_model_loads_back_with_the_same_outputs(tmp_path, tiny_mnist):
    model = train_model(tiny_mnist, "resnet18", seed=1, epochs=1, width=2)
    study.save_model(model, tmp_path / "m.npz")
    loaded = study.load_model(tmp_path / "m.npz", tiny_mnist)
    x = torch.as_tensor(tiny_mnist.X_test)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.training_report == jsonable(model.training_report)  # NaN (grad_norm) stored as null
    assert loaded.weight_decay == model.weight_decay and not loaded.training


def test_study_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="m must list"):
        study.ResNetStudyConfig(m=())
    with pytest.raises(ValueError, match="n_train"):
        study.ResNetStudyConfig(n_train=5)
    with pytest.raises(ValueError, match="device"):
        study.ResNetStudyConfig(device="tpu")


@CUDA
def test_study_runs_on_cuda(tmp_path):
    record = study.run_study(
        study.ResNetStudyConfig(
            device="cuda",
            n_train=40,
            n_test=20,
            width=4,
            samplers=("random",),
            m=(4,),
            eval_test=20,
            query_m=8,
            alphas=(1.0,),
        )
    )
    assert record["device"].startswith("cuda")
    assert record["removal"]["runs"] and all("cuda_peak_mb" in r for r in record["removal"]["runs"])
    assert record["query"]["scores_shape"] == [2, 40]


def test_one_pass_logits_and_features_equal_the_two_passes(tiny_mnist):
    from influence_core import penultimate_features, predict_logits, sampler_inputs
    from influence_core.models.zoo import logits_and_features

    model = build_model("resnet18", 784, 10, (28, 28), width=2).eval()
    logits, features = logits_and_features(model, tiny_mnist.X_train, batch_size=16)
    np.testing.assert_array_equal(logits, predict_logits(model, tiny_mnist.X_train, batch_size=16))
    np.testing.assert_array_equal(features, penultimate_features(model, tiny_mnist.X_train, batch_size=16))
    inputs = sampler_inputs(model, tiny_mnist)
    np.testing.assert_allclose(inputs.features, features, rtol=1e-6, atol=1e-6)

    class Wrapped(torch.nn.Module):  # not a zoo classifier: no one-pass shortcut
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x)

    assert logits_and_features(Wrapped(), tiny_mnist.X_train) is None

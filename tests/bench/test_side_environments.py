"""The side scripts of ``bench kfac-compare`` rebuild our MLP and SmallCNN from their weights exactly (the other
libraries then score the same model)."""

import sys
from pathlib import Path

import pytest
import torch

import influence_core.bench as bench
from influence_core import train_model

sys.path.insert(0, str(Path(bench.__file__).parent))
from side_models import rebuild  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_side_models_give_our_logits(digits, arch):
    model = train_model(digits, arch, seed=0, epochs=2)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    side = rebuild(weights, {"arch": arch, "image_shape": list(digits.image_shape)}, torch.float32)
    X = torch.as_tensor(digits.X_test[:20], dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(side(X), model(X), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="rebuild 'mlp' and 'cnn'"):
        rebuild(weights, {"arch": "logreg"}, torch.float32)


def test_kfac_compare_is_a_bench_subcommand():
    assert bench.SUBCOMMANDS["kfac-compare"][0] == "influence_core.bench.kfac_compare"

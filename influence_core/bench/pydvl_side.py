"""pyDVL 0.10's EkfacInfluence and ArnoldiInfluence scores for an exported MLP or CNN, run in a separate environment
(torch + numpy + pydvl only; this file imports nothing from influence_core).

    python influence_core/bench/pydvl_side.py DIR

DIR holds ``problem.npz`` (written by :mod:`influence_core.bench.kfac_compare`): X_train, y_train, X_query, y_query,
the model's weights (``state_dict`` names) and a JSON ``settings`` string (method "ekfac" or "arnoldi", arch,
image_shape, regularization = wd + δ, rank, threads, batch size, dtype). Writes ``pydvl.npz``: ``scores``
(n_query, n_train), pyDVL's "up" influence = ∇ℓ_queryᵀ (H + λI)⁻¹ ∇ℓ_train (no 1/n; our sign), and
the fit / score seconds. pyDVL's EK-FAC supports nn.Linear layers only (no Conv2d).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parent))
from side_models import load_problem  # noqa: E402


def main(directory: str) -> None:
    from pydvl.influence import InfluenceMode
    from pydvl.influence.torch import ArnoldiInfluence, EkfacInfluence
    from pydvl.influence.torch.util import SecondOrderMode

    d = Path(directory)
    settings, model, (X, y, Xq, yq) = load_problem(d)
    batch = int(settings["batch_size"])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=batch)
    reg = float(settings["regularization"])
    if settings["method"] == "ekfac":
        inf = EkfacInfluence(model, update_diagonal=True, hessian_regularization=reg)
    else:
        # one full batch: the Hessian of the mean loss over all points, like ours (pyDVL averages batch Hessians)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=len(X))
        inf = ArnoldiInfluence(
            model,
            F.cross_entropy,
            regularization=reg,
            rank=int(settings["rank"]),
            tol=float(settings.get("tol", 1e-6)),
            second_order_mode=SecondOrderMode.HESSIAN,
        )
    start = time.perf_counter()
    inf = inf.fit(loader)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    parts = [
        inf.influences(Xq, yq, X[i : i + batch], y[i : i + batch], mode=InfluenceMode.Up).detach().double()
        for i in range(0, len(X), batch)
    ]
    score = time.perf_counter() - start
    np.savez(d / "pydvl.npz", scores=torch.cat(parts, dim=1).numpy(), fit_seconds=fit, score_seconds=score)


if __name__ == "__main__":
    main(sys.argv[1])

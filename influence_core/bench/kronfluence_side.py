"""Kronfluence's EK-FAC scores for an exported MLP or SmallCNN, run in a separate environment (torch + numpy +
kronfluence 1.0.1 only; this file imports nothing from influence_core; the model is rebuilt by ``side_models``).

    python influence_core/bench/kronfluence_side.py DIR

DIR holds ``problem.npz`` (written by :mod:`influence_core.bench.kfac_compare`): X_train, y_train, X_query,
y_query, the model's weights (``state_dict`` names) and a JSON ``settings`` string (arch, image_shape, damping,
fisher, threads, batch size). Writes ``kronfluence.npz``: ``scores`` (n_query, n_train) =
g_queryᵀ (F + λI)⁻¹ g_train (no 1/n) and the fit / score seconds.
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
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    d = Path(directory)
    settings, model, (X, y, Xq, yq) = load_problem(d)

    empirical = settings["fisher"] == "empirical"

    class Classification(Task):
        def compute_train_loss(self, batch, model, sample=False):
            inputs, labels = batch
            logits = model(inputs)
            if not sample:
                return F.cross_entropy(logits, labels, reduction="sum")
            with torch.no_grad():
                probs = torch.softmax(logits.detach(), dim=-1)
                sampled = torch.multinomial(probs, num_samples=1).flatten()
            return F.cross_entropy(logits, sampled, reduction="sum")

        def compute_measurement(self, batch, model):
            inputs, labels = batch
            return F.cross_entropy(model(inputs), labels, reduction="sum")

    train = torch.utils.data.TensorDataset(X, y)
    query = torch.utils.data.TensorDataset(Xq, yq)
    task = Classification()
    model = prepare_model(model, task)
    analyzer = Analyzer(
        analysis_name="compare", model=model, task=task, cpu=True, disable_tqdm=True, output_dir=str(d / "kronfluence")
    )
    f64 = torch.float64
    factor_args = FactorArguments(
        strategy="ekfac",
        use_empirical_fisher=empirical,
        activation_covariance_dtype=f64,
        gradient_covariance_dtype=f64,
        per_sample_gradient_dtype=f64,
        lambda_dtype=f64,
    )
    score_args = ScoreArguments(
        damping_factor=float(settings["damping"]),
        score_dtype=f64,
        per_sample_gradient_dtype=f64,
        precondition_dtype=f64,
    )
    batch = int(settings["batch_size"])
    start = time.perf_counter()
    analyzer.fit_all_factors(
        factors_name="ekfac",
        dataset=train,
        per_device_batch_size=batch,
        factor_args=factor_args,
        overwrite_output_dir=True,
    )
    fit = time.perf_counter() - start
    start = time.perf_counter()
    analyzer.compute_pairwise_scores(
        scores_name="scores",
        factors_name="ekfac",
        query_dataset=query,
        train_dataset=train,
        per_device_query_batch_size=min(batch, len(query)),
        per_device_train_batch_size=batch,
        score_args=score_args,
        overwrite_output_dir=True,
    )
    score = time.perf_counter() - start
    scores = analyzer.load_pairwise_scores("scores")["all_modules"].double().numpy()
    np.savez(d / "kronfluence.npz", scores=scores, fit_seconds=fit, score_seconds=score)


if __name__ == "__main__":
    main(sys.argv[1])

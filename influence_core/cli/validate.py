"""``python -m influence_core validate``: leave-one-out ground truth on a convex model (logistic regression trained
to the optimum in float64): Pearson correlation of predicted vs actual test-loss change, per test point."""

from __future__ import annotations

import argparse
import json

import numpy as np

from influence_core.data.datasets import load_dataset
from influence_core.evaluation.leave_one_out import leave_one_out_check
from influence_core.io_safety import atomic_write, check_output_file
from influence_core.models.training import train_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits", help="dataset name (digits, mnist5k, mnist1d)")
    parser.add_argument("--weight-decay", type=float, default=1e-2, help="wd of the convex training objective")
    parser.add_argument("--n-test", type=int, default=5, help="number of test points (seeded choice)")
    parser.add_argument("--n-retrain", type=int, default=10, help="most influential points retrained per test point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the per-test-point results to this JSON file")


def run(args: argparse.Namespace) -> int:
    if args.json:
        check_output_file(args.json, "--json")  # before the retrainings, not after
    dataset = load_dataset(args.dataset, seed=args.seed)
    if not 1 <= args.n_test <= dataset.n_test:
        raise ValueError(f"--n-test must be in [1, {dataset.n_test}]")
    model = train_model(dataset, "logreg", seed=args.seed, weight_decay=args.weight_decay, dtype="float64")
    test_idx = np.sort(np.random.default_rng(args.seed).choice(dataset.n_test, args.n_test, replace=False))
    check = leave_one_out_check(model, dataset, test_idx, n_retrain=args.n_retrain)
    print(
        f"leave-one-out on {args.dataset} / logistic regression (wd={args.weight_decay}), "
        f"{len(check['retrained_indices'])} retrainings"
    )
    print("| test point | Pearson (predicted vs actual loss change) |\n|---:|---:|")
    for t, r in zip(check["test_indices"], check["pearson"]):
        print(f"| {t} | {r:.4f} |")
    print(
        f"mean Pearson {check['pearson'].mean():.4f}, min {check['pearson'].min():.4f}, "
        f"sign agreement {check['sign_agreement']:.3f}"
    )
    if args.json:
        with atomic_write(args.json) as fh:
            json.dump({k: np.asarray(v).tolist() for k, v in check.items()}, fh, indent=1)
    return 0

"""How much does the Hessian sample change the influence scores, at which m, by which measure? The lesson's step 2
quotes this measurement (``docs/lesson/seed_agreement.json``) beside its live numbers for one test point.

    python benchmarks/lesson_seeds.py [--out docs/lesson/seed_agreement.json]

On the lesson's model (the app's default digits MLP: hidden 32, 30 epochs, seed 0) and 21 test points (the first
misclassified one, the lesson's, and every 18th), for each sampler and m, five seeds of the Hessian sample
(exact Gauss-Newton solve, damping 0.01), three measures averaged over the test points:

- ``top10_shared``: share of the top-10 helpful training points two seeds have in common (mean over seed pairs);
- ``seed_spearman``: Spearman correlation between two seeds' scores of all training points (mean over pairs);
- ``full_spearman``: Spearman correlation of a seed's scores with the full-data scores (mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLERS = ("random", "importance", "feature", "logit")
MS = (20, 50, 100, 200, 400)
SEEDS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/lesson/seed_agreement.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    import influence_core as ic
    from influence_core.evaluation import metrics
    from influence_core.influence.across_samples import fit_across_samples, scores_across_samples
    from ui.config import DEFAULT_RUN

    start, before = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    cfg = DEFAULT_RUN.model
    data = ic.load_dataset("digits", seed=DEFAULT_RUN.data.seed)
    model = ic.train_model(data, arch=cfg.arch, seed=cfg.seed, **cfg.train_kwargs())
    calc = ic.InfluenceCalculator(model, data.X_train, data.y_train)
    calc.fit(solver="exact", damping=0.01, curvature="gauss_newton")
    wrong = np.flatnonzero(ic.predict_logits(model, data.X_test).argmax(1) != data.y_test)
    tests = [int(wrong[0])] + list(range(0, data.n_test, 18))
    full = calc.scores(data.X_test[tests], data.y_test[tests])
    inputs = ic.sampler_inputs(model, data)
    rows = []
    pairs = [(a, b) for a in range(SEEDS) for b in range(a + 1, SEEDS)]
    for m in MS:
        for name in SAMPLERS:
            samples = [ic.sample_hessian_subset(model, data, name, m, seed=s, inputs=inputs) for s in range(SEEDS)]
            inverses = fit_across_samples(
                calc.objective, samples, solver="exact", damping=0.01, curvature="gauss_newton"
            )
            scores, _ = scores_across_samples(calc, inverses, data.X_test[tests], data.y_test[tests])
            sc = np.asarray(scores)
            per_test = np.array(
                [
                    (
                        np.mean([metrics.topk_overlap(sc[a][t], sc[b][t], 10) for a, b in pairs]),
                        np.mean([metrics.spearman(sc[a][t], sc[b][t]) for a, b in pairs]),
                        np.mean([metrics.spearman(sc[s][t], full[t]) for s in range(SEEDS)]),
                    )
                    for t in range(len(tests))
                ]
            )
            rows.append(
                {
                    "sampler": name,
                    "m": m,
                    "top10_shared": float(per_test[:, 0].mean()),
                    "seed_spearman": float(per_test[:, 1].mean()),
                    "full_spearman": float(per_test[:, 2].mean()),
                    "lesson_point": {
                        "top10_shared": float(per_test[0, 0]),
                        "seed_spearman": float(per_test[0, 1]),
                        "full_spearman": float(per_test[0, 2]),
                    },
                }
            )
            print(rows[-1], flush=True)
    record = {
        "what": __doc__.split("\n\n")[0],
        "command": "python benchmarks/lesson_seeds.py " + " ".join(sys.argv[1:]),
        "model": {
            "dataset": "digits",
            "arch": cfg.arch,
            "hidden": cfg.hidden,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "test_accuracy": model.training_report["test_accuracy"],
        },
        "test_points": tests,
        "seeds": SEEDS,
        "damping": 0.01,
        "curvature": "gauss_newton",
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
        "load_before": before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out)


if __name__ == "__main__":
    main()

"""When does self-influence find mislabelled training points better than the training loss? The lesson's step 6
quotes this measurement (``docs/lesson/mislabel_rankings.json``).

    python benchmarks/lesson_mislabel.py [--out docs/lesson/mislabel_rankings.json]

On digits (the lesson's data), for each model below: flip a share of the training labels (seeded), train on them,
rank the training points by self-influence (full-data Gauss-Newton + damping 0.01, exact solve) and by training
loss, and record the AUC of each detection curve and the share of flipped labels found after inspecting 10%
(``influence_core.evaluation.mislabel.mislabel_detection``). Models: logistic regression at three weight decays
(strong to weak regularisation) and the app's default MLP (hidden 32); label noise 10% and 30%. The mean training
loss of the flipped and of the clean points says how far each model fits (memorises) the wrong labels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = [
    ("logreg", {"weight_decay": 1e-2}, 0.1),
    ("logreg", {"weight_decay": 1e-3}, 0.1),
    ("logreg", {"weight_decay": 1e-5}, 0.1),
    ("logreg", {"weight_decay": 1e-3}, 0.3),
    ("mlp", None, 0.1),
    ("mlp", None, 0.3),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/lesson/mislabel_rankings.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    import influence_core as ic
    from influence_core.evaluation.mislabel import mislabel_detection
    from ui.config import DEFAULT_RUN

    data = ic.load_dataset("digits", seed=0)
    rows = []
    before = [round(x, 2) for x in os.getloadavg()]
    for arch, settings, fraction in CASES:
        settings = dict(settings) if settings is not None else DEFAULT_RUN.model.train_kwargs()
        start = time.perf_counter()
        result = mislabel_detection(data, arch, fraction, args.seed, train_settings=settings)
        by = {r["ranking"]: r for r in result.summary()}
        import numpy as np

        clean = np.setdiff1d(np.arange(data.n_train), result.flipped)
        rows.append(
            {
                "model": arch,
                "settings": {k: v for k, v in settings.items() if k != "hidden"}
                | ({"hidden": list(settings["hidden"])} if "hidden" in settings else {}),
                "flipped_share": fraction,
                "seed": args.seed,
                "auc_self_influence": by["self-influence"]["AUC"],
                "auc_training_loss": by["training loss"]["AUC"],
                "found_10_self_influence": by["self-influence"]["found after 10%"],
                "found_10_training_loss": by["training loss"]["found after 10%"],
                "mean_loss_flipped": float(result.train_loss[result.flipped].mean()),
                "mean_loss_clean": float(result.train_loss[clean].mean()),
                "test_accuracy": result.test_accuracy,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(rows[-1], flush=True)
    record = {
        "what": __doc__.split("\n\n")[0],
        "command": "python benchmarks/lesson_mislabel.py " + " ".join(sys.argv[1:]),
        "dataset": "digits (seed 0 split)",
        "damping": 0.01,
        "curvature": "gauss_newton",
        "rows": rows,
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

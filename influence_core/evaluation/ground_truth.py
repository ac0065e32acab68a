"""Shipped LDS ground truth: the retrained outputs behind an LDS table, in one pickle-free file, so any
(n_test, n_train) score matrix is scored against retraining in seconds, without retraining.

A ground-truth file ``NAME.npz`` (written by :func:`save_ground_truth`, read by :func:`load_ground_truth`, which
never unpickles) holds, for K_done finished subsets of the LDS protocol (:mod:`influence_core.evaluation.lds`):

    masks_packed   (K_done, ⌈n/8⌉) uint8   subset masks (True = kept) packed along the training axis (np.packbits)
    logits         (R, K_done, T, C) float32  test logits of the studied test points after each retrain
    full_logits    (T, C) float32            the same test points under the model trained on all n points
    test_indices   (T,) int64                the studied test points (indices into the dataset's test split)
    y_test         (T,) int64                their labels
    recipe         0-d unicode string        the JSON recipe (below)

The recipe says how to regenerate every array: the dataset (name, split seed, options, SHA-256 of its arrays), the
architecture and training settings (the retrain recipe of :func:`~influence_core.evaluation.lds.retrain_outputs`),
the test-point rule (``np.sort(default_rng(test_seed).choice(n_test, T, replace=False))``), the plan (K, α, R,
subsets seed), the retrain seeds, the retrain cache key, the code version, the noise ceiling for both outputs, and
``k_done``/``partial`` (a long run is shipped as its finished prefix of subsets, k = 0 … K_done − 1, and completed
later). Loading checks every shape and dtype against the recipe and recomputes the masks and test indices from
their seeds, so a file that does not match its recipe is refused.

Registered ground truths (:data:`GROUND_TRUTHS`): ``digits_logreg``, ``digits_mlp``, ``mnist5k_mlp`` (the recipes and
test points of the LDS studies) and ``mnist5k_cnn`` (the app's CNN recipe). The files live in the repository's
``ground_truth/`` folder (``$INFLUENCE_GROUND_TRUTH_DIR`` overrides it).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from influence_core.evaluation.lds import (
    CACHE_VERSION,
    OUTPUTS,
    LDSResult,
    RetrainPlan,
    _training_recipe,
    cache_key,
    draw_subsets,
    linear_datamodeling_score,
    noise_ceiling,
    output_values,
    retrain_outputs,
)
from influence_core.io_safety import atomic_path, jsonable

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "GROUND_TRUTHS",
    "GroundTruth",
    "GroundTruthSpec",
    "build_ground_truth",
    "compare_ground_truths",
    "ground_truth_dir",
    "ground_truth_path",
    "lds_against",
    "ground_truths_of_recipe",
    "load_ground_truth",
    "model_recipe",
    "retrain_key",
    "save_ground_truth",
    "shipped_recipe",
    "spec_recipe",
    "test_indices_for",
    "training_recipe",
]

FORMAT = "influence-explorer/lds-ground-truth"
FORMAT_VERSION = 1
_ARRAYS = ("masks_packed", "logits", "full_logits", "test_indices", "y_test", "recipe")
_DEFINING = ("name", "dataset", "model", "test_points", "plan", "retrain_seeds", "cache_key", "cache_version")
"""Recipe fields that define the arrays (the rest records how and when they were made)."""


@dataclass(frozen=True)
class GroundTruthSpec:
    """What to retrain: dataset (split ``seed``), ``arch`` + ``train_settings`` (for ``train_model``), the studied test
    points (``n_test_points`` drawn with ``test_seed``) and the LDS ``plan``."""

    name: str
    dataset: str
    arch: str
    train_settings: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    n_test_points: int = 100
    test_seed: int = 0
    plan: RetrainPlan = field(default_factory=RetrainPlan)
    description: str = ""


GROUND_TRUTHS: dict[str, GroundTruthSpec] = {
    spec.name: spec
    for spec in (
        GroundTruthSpec(
            "digits_logreg",
            "digits",
            "logreg",
            {"dtype": "float64"},
            description="digits, logistic regression trained in float64 by L-BFGS to its optimum "
            "(the recipe of `lds score --arch logreg`)",
        ),
        GroundTruthSpec(
            "digits_mlp",
            "digits",
            "mlp",
            description="digits, MLP (64 hidden units; the recipe of the digits MLP LDS study)",
        ),
        GroundTruthSpec(
            "mnist5k_mlp",
            "mnist5k",
            "mlp",
            description="MNIST-5k, MLP (64 hidden units; the recipe of the mnist5k MLP LDS study)",
        ),
        # The app's CNN recipe (ui.config.ModelConfig(arch="cnn").train_kwargs(); a test keeps the two equal).
        GroundTruthSpec(
            "mnist5k_cnn",
            "mnist5k",
            "cnn",
            {
                "epochs": 30,
                "lr": 3e-3,
                "weight_decay": 1e-3,
                "batch_size": 128,
                "lr_schedule": "cosine",
                "polish_steps": 60,
                "max_polish_steps": 60,
            },
            description="MNIST-5k, CNN with the app's recipe (30 cosine-decayed Adam epochs at batch 128, "
            "60 L-BFGS iterations)",
        ),
    )
}


def ground_truth_dir() -> Path:
    """``$INFLUENCE_GROUND_TRUTH_DIR`` or the repository's ``ground_truth/`` folder."""
    env = os.environ.get("INFLUENCE_GROUND_TRUTH_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "ground_truth"


def ground_truth_path(name_or_path: str | os.PathLike) -> Path:
    """A registered name (→ ``ground_truth_dir()/NAME.npz``) or a path to a ``.npz`` file."""
    text = str(name_or_path)
    if text in GROUND_TRUTHS:
        return ground_truth_dir() / f"{text}.npz"
    if text.endswith(".npz") or os.sep in text or "/" in text:
        return Path(text)
    raise ValueError(
        f"ground truth {text!r} is neither a registered name ({sorted(GROUND_TRUTHS)}) nor a path to a .npz file"
    )


def test_indices_for(n_test: int, n_points: int, seed: int) -> np.ndarray:
    """The studies' test points: ``np.sort(default_rng(seed).choice(n_test, n_points, replace=False))``."""
    return np.sort(np.random.default_rng(seed).choice(n_test, n_points, replace=False)).astype(np.int64)


@dataclass
class GroundTruth:
    """Retrained test logits ``logits`` (R, K_done, T, C) for subsets ``masks`` (K_done, n), with ``full_logits``
    (T, C), ``test_indices`` (T,), ``y_test`` (T,) and the JSON ``recipe``."""

    masks: np.ndarray
    logits: np.ndarray
    full_logits: np.ndarray
    test_indices: np.ndarray
    y_test: np.ndarray
    recipe: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.recipe["name"])

    @property
    def k_done(self) -> int:
        return int(self.masks.shape[0])

    @property
    def partial(self) -> bool:
        return self.k_done < int(self.recipe["plan"]["n_subsets"])

    @property
    def n_train(self) -> int:
        return int(self.masks.shape[1])

    def outputs(self, output: str = "loss") -> np.ndarray:
        """(R, K_done, T) retrained outputs f_t (``"loss"`` or ``"margin"``, see :func:`output_values`)."""
        return output_values(self.logits, self.y_test, output)


# --------------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------------


def lds_against(scores: Any, ground_truth: GroundTruth | str | os.PathLike, output: str = "loss") -> LDSResult:
    """LDS of ``scores`` (T, n_train), rows in the order of ``ground_truth.test_indices``, against the shipped
    retrained outputs, with their noise ceiling (the same numbers as :func:`~influence_core.evaluation.lds.lds` on
    the retrains the file came from). ``ground_truth``: a :class:`GroundTruth`, a registered name or a path."""
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
    S = np.asarray(scores)
    T, n = len(gt.test_indices), gt.n_train
    if S.ndim != 2 or S.shape != (T, n):
        raise ValueError(
            f"scores must be a (n_test, n_train) = ({T}, {n}) matrix for ground truth {gt.name!r} "
            f"(one row per test point, in the order of its test_indices; one column per training point), "
            f"got shape {S.shape}"
        )
    Y = gt.outputs(output)
    scored = linear_datamodeling_score(S, gt.masks, Y)
    ceil = noise_ceiling(Y)
    return LDSResult(
        scored["lds"],
        scored["per_test"],
        ceil["ceiling"],
        ceil["seed_agreement"],
        output,
        gt.k_done,
        int(gt.logits.shape[0]),
    )


# --------------------------------------------------------------------------------------------------------------------
# Which shipped ground truth describes a model
# --------------------------------------------------------------------------------------------------------------------
# A ground truth scores influence of exactly one model: its retrains are of that model's recipe, seed and data. The
# retrain-cache key (:func:`~influence_core.evaluation.lds.cache_key`: dataset arrays, training recipe, α, subsets seed,
# torch version) names them, and a file records it; a model is scored against a file only when its key is the file's.


def model_recipe(model: Any) -> dict[str, Any]:
    """The retrain recipe of ``model`` (made by ``train_model``): what its LDS retrains use and its key hashes."""
    return _training_recipe(model)


def training_recipe(arch: str, seed: int = 0, **settings: Any) -> dict[str, Any]:
    """The retrain recipe that ``train_model(dataset, arch, seed=seed, **settings)`` would record, without training
    (equal to :func:`model_recipe` of the trained model)."""
    from types import SimpleNamespace

    from influence_core.models.training import TrainingConfig

    if "hidden" in settings:
        settings["hidden"] = tuple(int(h) for h in np.atleast_1d(settings["hidden"]).tolist())
    cfg = TrainingConfig(arch=arch, seed=seed, **settings)
    return _training_recipe(
        SimpleNamespace(training_config={**asdict(cfg), "hidden": list(cfg.hidden)}, weight_decay=cfg.weight_decay)
    )


def retrain_key(dataset: Any, recipe: dict[str, Any], plan: RetrainPlan | None = None) -> str:
    """The retrain-cache key of a model with retrain ``recipe`` trained on ``dataset``, under ``plan``'s α and subsets
    seed (default: the LDS studies' plan): the ``cache_key`` a ground-truth file of that model records."""
    plan = plan or RetrainPlan()
    return cache_key(dataset, recipe, plan.alpha, plan.subsets_seed)[0]


def spec_recipe(name_or_spec: str | GroundTruthSpec) -> dict[str, Any]:
    """The retrain recipe of a registered ground truth's model (from its spec; no file, no training)."""
    spec = _spec(name_or_spec)
    return training_recipe(spec.arch, spec.seed, **spec.train_settings)


def ground_truths_of_recipe(dataset_name: str, split_seed: int, recipe: dict[str, Any]) -> list[str]:
    """Registered ground truths whose model has this dataset (name, split seed, no options) and retrain ``recipe``:
    the candidates for a model; whether a shipped file holds its retrains is then decided by the key
    (:func:`shipped_recipe`, :func:`retrain_key`), which also covers the data's arrays and the torch version."""
    return [
        spec.name
        for spec in GROUND_TRUTHS.values()
        if spec.dataset == dataset_name
        and not spec.dataset_options
        and spec.seed == int(split_seed)
        and spec_recipe(spec) == recipe
    ]


def shipped_recipe(name_or_path: str | os.PathLike) -> dict[str, Any] | None:
    """The recipe of a ground-truth file (its ``cache_key``, plan, ``k_done``, ...), read from the file without its
    arrays and not validated (:func:`load_ground_truth` validates), or None when there is no such file or it is not
    a readable ground-truth file."""
    path = ground_truth_path(name_or_path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            text = f["recipe"] if "recipe" in f.files else None
        recipe = json.loads(str(text)) if text is not None and text.dtype.kind == "U" and text.ndim == 0 else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    return recipe if isinstance(recipe, dict) and recipe.get("format") == FORMAT else None


# --------------------------------------------------------------------------------------------------------------------
# Building from the retrain cache
# --------------------------------------------------------------------------------------------------------------------


def _code_version() -> str:
    from influence_core import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}" + (f"+git.{commit}" if commit else "")


def _spec(name_or_spec: str | GroundTruthSpec) -> GroundTruthSpec:
    if isinstance(name_or_spec, GroundTruthSpec):
        return name_or_spec
    if name_or_spec not in GROUND_TRUTHS:
        raise ValueError(f"unknown ground truth {name_or_spec!r}; registered: {sorted(GROUND_TRUTHS)}")
    return GROUND_TRUTHS[name_or_spec]


def build_ground_truth(
    name_or_spec: str | GroundTruthSpec,
    *,
    cache_dir: Any = None,
    executor: Any = None,
    max_retrains: int | None = None,
    progress: Any = None,
) -> GroundTruth:
    """Train the spec's model, retrain its LDS plan (cached and resumable in ``cache_dir``, see
    :func:`retrain_outputs`; at most ``max_retrains`` new retrains, 0 = read the cache only) and collect the finished
    prefix of subsets k = 0 … K_done − 1 (every seed done) as a :class:`GroundTruth`. Raises if fewer than 2
    subsets are finished (the LDS needs K >= 2)."""
    from influence_core.data.datasets import load_dataset
    from influence_core.models.training import train_model

    spec = _spec(name_or_spec)
    dataset = load_dataset(spec.dataset, seed=spec.seed, **spec.dataset_options)
    model = train_model(dataset, spec.arch, seed=spec.seed, **spec.train_settings)
    idx = test_indices_for(dataset.n_test, spec.n_test_points, spec.test_seed)
    retrained = retrain_outputs(
        model, dataset, spec.plan, cache_dir=cache_dir, executor=executor, max_retrains=max_retrains, progress=progress
    )
    done = np.isfinite(retrained.logits).all(axis=(2, 3)).all(axis=0)  # (K,) every seed finished
    k_done = int(np.argmin(done)) if not done.all() else len(done)
    if k_done < 2:
        raise ValueError(
            f"only {k_done} of {spec.plan.n_subsets} subsets of {spec.name!r} are retrained (every seed); "
            "the LDS needs at least 2: run more retrains (--max-retrains) first"
        )
    logits = retrained.logits[:, :k_done][:, :, idx].astype(np.float32)
    y = np.asarray(dataset.y_test)[idx].astype(np.int64)
    info = retrained.info
    ceilings = {
        out: {k: v for k, v in noise_ceiling(output_values(logits, y, out)).items() if k != "per_test_ceiling"}
        for out in OUTPUTS
    }
    recipe = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "description": spec.description,
        "dataset": {
            "name": spec.dataset,
            "seed": spec.seed,
            "options": dict(spec.dataset_options),
            "data_sha256": info["key_record"]["data_sha256"],
            "n_train": dataset.n_train,
            "n_test": dataset.n_test,
            "n_classes": dataset.n_classes,
        },
        "model": {
            "arch": spec.arch,
            "seed": spec.seed,
            "train_settings": dict(spec.train_settings),
            "retrain_recipe": info["recipe"],
        },
        "test_points": {
            "n": spec.n_test_points,
            "seed": spec.test_seed,
            "rule": "np.sort(np.random.default_rng(seed).choice(n_test, n, replace=False))",
        },
        "plan": asdict(spec.plan),
        "subset_size": info["subset_size"],
        "retrain_seeds": info["retrain_seeds"],
        "cache_key": info["cache_key"],
        "cache_version": CACHE_VERSION,
        "torch": info["key_record"]["torch"],
        "code_version": _code_version(),
        "k_done": k_done,
        "partial": k_done < spec.plan.n_subsets,
        "noise_ceiling": ceilings,
        "retrain_seconds_mean": float(np.nanmean(_seconds(retrained, k_done))),
        "max_grad_norm": info["max_grad_norm"],
        "full_model_test_accuracy": float(model.training_report.get("test_accuracy", float("nan")))
        if hasattr(model, "training_report")
        else None,
    }
    return GroundTruth(
        retrained.masks[:k_done].copy(), logits, retrained.full_logits[idx].astype(np.float32), idx, y, jsonable(recipe)
    )


def _seconds(retrained: Any, k_done: int) -> np.ndarray:
    directory = retrained.info.get("cache_dir")
    out = []
    if directory:
        for k in range(k_done):
            for r in range(retrained.plan.n_seeds):
                path = Path(directory) / f"k{k:04d}_r{r:02d}.npz"
                try:
                    with np.load(path, allow_pickle=False) as f:
                        out.append(float(f["seconds"]))
                except (OSError, ValueError, KeyError):
                    pass
    return np.asarray(out or [np.nan])


# --------------------------------------------------------------------------------------------------------------------
# Saving and validated loading
# --------------------------------------------------------------------------------------------------------------------


def save_ground_truth(gt: GroundTruth, path: str | os.PathLike, *, sidecar: bool = True) -> Path:
    """Write ``gt`` to ``path`` (.npz, compressed, atomic) and, with ``sidecar``, its recipe to ``path`` with suffix
    ``.json`` (a readable copy; the recipe inside the .npz is the one that loading checks)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"a ground-truth file must end in .npz, got {path}")
    _validate(gt.masks, gt.logits, gt.full_logits, gt.test_indices, gt.y_test, gt.recipe, str(path))
    text = json.dumps(jsonable(gt.recipe), sort_keys=True)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        masks_packed=np.packbits(gt.masks, axis=1),
        logits=gt.logits.astype(np.float32),
        full_logits=gt.full_logits.astype(np.float32),
        test_indices=gt.test_indices.astype(np.int64),
        y_test=gt.y_test.astype(np.int64),
        recipe=np.array(text),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    if sidecar:
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(jsonable(gt.recipe), indent=1, sort_keys=True) + "\n")
    return path


def load_ground_truth(name_or_path: str | os.PathLike) -> GroundTruth:
    """Read and validate a ground-truth file (a registered name or a path). Never unpickles; refuses a file whose
    arrays do not match its recipe (shapes, dtypes, subsets and test points recomputed from their seeds), and a file
    loaded by a registered name whose recipe is not that name's."""
    path = ground_truth_path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"ground truth {str(name_or_path)!r}: no file {path} (build it with "
            f"`python -m influence_core lds ground-truth NAME`)"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            found = sorted(f.files)
            arrays = {k: f[k] for k in _ARRAYS if k in found}
    except ValueError as exc:  # numpy: "Object arrays cannot be loaded when allow_pickle=False", or a pickle file
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise ValueError(
                f"ground truth {path} holds pickled objects; ground-truth files are pickle-free and this one is refused"
            ) from None
        raise ValueError(f"ground truth {path} is not a readable .npz file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"ground truth {path} is not a readable .npz file ({exc})") from None
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise ValueError(
            f"ground truth {path} lacks the arrays {missing} (found {found}); it is not a ground-truth file"
        )
    text = arrays["recipe"]
    if text.dtype.kind != "U" or text.ndim != 0:
        raise ValueError(f"ground truth {path}: 'recipe' must be a JSON string, got {text.dtype} {text.shape}")
    try:
        recipe = json.loads(str(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"ground truth {path}: its recipe is not valid JSON ({exc})") from None
    if not isinstance(recipe, dict) or recipe.get("format") != FORMAT:
        raise ValueError(f"ground truth {path}: its recipe does not declare format {FORMAT!r}; not a ground-truth file")
    if not isinstance(recipe.get("format_version"), int) or recipe["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"ground truth {path} has format version {recipe.get('format_version')!r}; this code reads "
            f"versions <= {FORMAT_VERSION} (update influence_core)"
        )
    try:
        n = int(recipe["dataset"]["n_train"])
        packed = arrays["masks_packed"]
        if packed.dtype != np.uint8 or packed.ndim != 2 or packed.shape[1] != (n + 7) // 8:
            raise ValueError(
                f"'masks_packed' must be uint8 (K_done, {(n + 7) // 8}), got {packed.dtype} {packed.shape}"
            )
        masks = np.unpackbits(packed, axis=1, count=n).astype(bool)
        gt = GroundTruth(
            masks, arrays["logits"], arrays["full_logits"], arrays["test_indices"], arrays["y_test"], recipe
        )
        _validate(gt.masks, gt.logits, gt.full_logits, gt.test_indices, gt.y_test, recipe, str(path))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"ground truth {path}: its recipe lacks or mistypes the field {exc}") from None
    text_name = str(name_or_path)
    if text_name in GROUND_TRUTHS:
        _check_spec(recipe, GROUND_TRUTHS[text_name], str(path))
    return gt


def _validate(
    masks: np.ndarray,
    logits: np.ndarray,
    full: np.ndarray,
    idx: np.ndarray,
    y: np.ndarray,
    recipe: dict[str, Any],
    where: str,
) -> None:
    """Shapes, dtypes and values against the recipe; masks and test indices recomputed from their seeds."""

    def bad(msg: str) -> ValueError:
        return ValueError(f"ground truth {where}: {msg}")

    ds, plan = recipe["dataset"], recipe["plan"]
    n, n_test, C = int(ds["n_train"]), int(ds["n_test"]), int(ds["n_classes"])
    K, R, alpha, sseed = int(plan["n_subsets"]), int(plan["n_seeds"]), float(plan["alpha"]), int(plan["subsets_seed"])
    T, tseed = int(recipe["test_points"]["n"]), int(recipe["test_points"]["seed"])
    k_done = masks.shape[0]
    if masks.dtype != bool or masks.ndim != 2 or masks.shape[1] != n or not 2 <= k_done <= K:
        raise bad(
            f"masks must be boolean (K_done, n) with n = {n} and 2 <= K_done <= K = {K}, got {masks.dtype} "
            f"{masks.shape}"
        )
    if int(recipe.get("k_done", -1)) != k_done or bool(recipe.get("partial")) != (k_done < K):
        raise bad(
            f"the recipe says k_done = {recipe.get('k_done')}, partial = {recipe.get('partial')}, the file "
            f"holds {k_done} of {K} subsets"
        )
    if not np.array_equal(masks, draw_subsets(n, K, alpha, sseed)[:k_done]):
        raise bad(
            f"the subset masks are not the ones drawn by the recipe (n = {n}, K = {K}, alpha = {alpha}, subsets "
            f"seed {sseed})"
        )
    if logits.dtype != np.float32 or logits.shape != (R, k_done, T, C):
        raise bad(
            f"logits must be float32 (R, K_done, T, C) = ({R}, {k_done}, {T}, {C}), got {logits.dtype} {logits.shape}"
        )
    if full.dtype != np.float32 or full.shape != (T, C):
        raise bad(f"full_logits must be float32 (T, C) = ({T}, {C}), got {full.dtype} {full.shape}")
    if not (np.isfinite(logits).all() and np.isfinite(full).all()):
        raise bad("the logits hold NaN/inf")
    if idx.dtype != np.int64 or not np.array_equal(idx, test_indices_for(n_test, T, tseed)):
        raise bad(f"test_indices are not the recipe's ({T} of {n_test} test points drawn with seed {tseed})")
    if y.dtype != np.int64 or y.shape != (T,) or (T and (y.min() < 0 or y.max() >= C)):
        raise bad(f"y_test must be int64 labels in [0, {C}) of shape ({T},), got {y.dtype} {y.shape}")


def _check_spec(recipe: dict[str, Any], spec: GroundTruthSpec, where: str) -> None:
    """A file loaded by a registered name must carry that name's recipe (not a foreign one)."""
    expected = {
        "name": spec.name,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "arch": spec.arch,
        "train_settings": jsonable(dict(spec.train_settings)),
        "plan": jsonable(asdict(spec.plan)),
        "test_points": [spec.n_test_points, spec.test_seed],
    }
    found = {
        "name": recipe.get("name"),
        "dataset": recipe["dataset"].get("name"),
        "seed": recipe["dataset"].get("seed"),
        "arch": recipe["model"].get("arch"),
        "train_settings": recipe["model"].get("train_settings"),
        "plan": recipe.get("plan"),
        "test_points": [recipe["test_points"].get("n"), recipe["test_points"].get("seed")],
    }
    diff = sorted(k for k in expected if expected[k] != found[k])
    if diff:
        raise ValueError(
            f"ground truth {where} was made with a different recipe than the registered {spec.name!r} "
            f"(differs in {diff}: {[found[k] for k in diff]} instead of {[expected[k] for k in diff]}); "
            "load it by its path, or rebuild it"
        )


def compare_ground_truths(committed: GroundTruth, rebuilt: GroundTruth, output: str = "loss") -> dict[str, Any]:
    """Check a regenerated ground truth against the committed one on their common subsets: the defining recipe
    fields must be equal, and the retrained outputs must agree at least as well as two retrain seeds do
    (mean over test points of the Spearman over k between the two files' R-seed mean outputs >= the committed
    seed-vs-seed agreement − 0.05); identical arrays (the same machine) give max |Δ logit| = 0."""
    diff = sorted(k for k in _DEFINING if committed.recipe.get(k) != rebuilt.recipe.get(k))
    k = min(committed.k_done, rebuilt.k_done)
    a, b = committed.logits[:, :k], rebuilt.logits[:, :k]
    max_abs = float(np.max(np.abs(a.astype(np.float64) - b))) if k else float("nan")
    from influence_core.evaluation.metrics import rowwise_spearman

    ya = output_values(a, committed.y_test, output).mean(axis=0)
    yb = output_values(b, rebuilt.y_test, output).mean(axis=0)
    agreement = float(np.nanmean(rowwise_spearman(ya.T, yb.T))) if k >= 2 else float("nan")
    seeds = noise_ceiling(output_values(a, committed.y_test, output))["seed_agreement"] if k >= 2 else float("nan")
    threshold = (seeds - 0.05) if np.isfinite(seeds) else 0.9
    same = not diff and k >= 2 and (max_abs == 0.0 or agreement >= threshold)
    return {
        "ok": bool(same),
        "recipe_differs_in": diff,
        "subsets_compared": k,
        "committed_k_done": committed.k_done,
        "rebuilt_k_done": rebuilt.k_done,
        "max_abs_logit_diff": max_abs,
        "output_agreement": agreement,
        "seed_agreement": seeds,
        "threshold": threshold,
    }

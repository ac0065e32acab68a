"""Small frozen configurations: they are the cache keys of everything the app computes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from influence_core import preset_values

DATASET_CHOICES = ("digits", "mnist5k", "mnist1d", "npz")
ARCH_CHOICES = ("mlp", "logreg", "cnn")
TABULAR_DATASETS = ("mnist1d",)  # no image_shape: the CNN would refuse them


def arch_choices(dataset: str) -> tuple[str, ...]:
    """The models the home page offers for ``dataset``: no CNN for tabular data (MNIST-1D). An upload keeps it
    (it may hold images; the engine refuses a CNN without ``image_shape`` with a clear message)."""
    return tuple(a for a in ARCH_CHOICES if not (a == "cnn" and dataset in TABULAR_DATASETS))


@dataclass(frozen=True)
class DataConfig:
    """Which dataset: a built-in name, or ``"npz"`` with the SHA-256 digest of the uploaded bytes."""

    name: str = "digits"
    seed: int = 0
    num_samples: int = 2000  # mnist1d only
    npz_digest: str | None = None
    npz_filename: str | None = None

    def label(self) -> str:
        if self.name == "npz":
            return f"upload {self.npz_filename or ''} ({(self.npz_digest or '')[:8]})"
        if self.name == "mnist1d":
            return f"mnist1d (n={self.num_samples})"
        return self.name


POLISH_STEPS = 100  # full-batch L-BFGS iterations after Adam, then on towards the gradient-norm tolerance
CNN_RECIPE = {"batch_size": 128, "lr_schedule": "cosine", "polish_steps": 60, "max_polish_steps": 60}
"""The CNN's workshop recipe: 30 Adam epochs at batch 128 with the learning rate decayed to 0 along a cosine, then 60
float32 L-BFGS iterations, bounded (no float64 polish on to the 1e-3 gradient-norm tolerance): about as accurate as
the MLP's recipe in a fraction of its time, at a larger final gradient norm (recorded in the training report and
shown on the home page). The comparison is ``benchmarks/app/measure_cnn_recipes.py``, its result
``docs/app_timings/cnn_recipes_1thread.json``."""


@dataclass(frozen=True)
class ModelConfig:
    """Training settings passed to ``influence_core.train_model``. ``polish_steps=None`` is the architecture's
    recipe: ``POLISH_STEPS`` (MLP, logistic regression), ``CNN_RECIPE`` (CNN)."""

    arch: str = "mlp"
    hidden: int = 32
    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 1e-3
    seed: int = 0
    polish_steps: int | None = None

    def train_kwargs(self) -> dict:
        kw = {
            "epochs": self.epochs,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            **(CNN_RECIPE if self.arch == "cnn" else {"polish_steps": POLISH_STEPS}),
        }
        if self.polish_steps is not None:
            kw["polish_steps"] = self.polish_steps
        if self.arch == "mlp":
            kw["hidden"] = (self.hidden,)
        return kw


@dataclass(frozen=True)
class RunConfig:
    """Data + model: identifies one trained model (shared read-only by every session that asks for it)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def cache_key(self) -> dict:
        """What identifies this run's cached artifacts: the fields plus the training settings they resolve to
        (:meth:`ModelConfig.train_kwargs`), so a change of an architecture's recipe (``CNN_RECIPE``,
        ``POLISH_STEPS``) never reuses a model trained with the old one."""
        return {**asdict(self), "train_kwargs": self.model.train_kwargs()}


DEFAULT_RUN = RunConfig()

APP_PRESET = "interactive"
"""The influence settings of the app (:data:`influence_core.PRESETS`): the engine's defaults with CG's iteration
budget bounded so that a page answers in bounded time."""
_APP = preset_values(APP_PRESET)
CURVATURE = _APP["curvature"]
"""Gauss-Newton: the sampled Hessian of a network is often indefinite, the Gauss-Newton matrix is PSD."""
SOLVER_OPTIONS = {"exact": {}, "cg": dict(_APP["solver_options"]), "lissa": {"tol": 1e-4, "max_iter": 5000}}
"""The options of each solver the pages offer (influence and class removal alike); CG's are the preset's."""
INFLUENCE_PAGE_DEFAULTS = {"sampler_a": "logit", "sampler_b": "random", "m": 100, "seed": 0, "damping": _APP["damping"]}
"""What the Influence page shows first (``python -m ui.prepare`` fits these inverses ahead, for the default runs)."""


# ---------------------------------------------------------------------------------------------------- URL

_QUERY_FIELDS = {"data": ("name", str), "n": ("num_samples", int)}
_MODEL_QUERY_FIELDS = {
    "model": ("arch", str),
    "hidden": ("hidden", int),
    "epochs": ("epochs", int),
    "lr": ("lr", float),
    "wd": ("weight_decay", float),
    "seed": ("seed", int),
}


def run_to_query(run: RunConfig) -> dict[str, str]:
    """The data and model choice as URL query parameters (``?data=digits&model=mlp&hidden=32&...``), so a browser
    reload or a shared link keeps it. An uploaded .npz cannot live in a URL: it is named there
    (``data=upload&file=<name>&sha=<first 12 hex digits>``) and :func:`upload_in_query` lets the home page say
    which file to upload again after a reload."""
    data = run.data if run.data.name != "npz" else DataConfig()
    query = {key: str(getattr(data, attr)) for key, (attr, _) in _QUERY_FIELDS.items()}
    if run.data.name == "npz":
        query.update(
            {"data": "upload", "file": run.data.npz_filename or "upload.npz", "sha": (run.data.npz_digest or "")[:12]}
        )
    query.update(
        {
            key: repr(getattr(run.model, attr)) if conv is float else str(getattr(run.model, attr))
            for key, (attr, conv) in _MODEL_QUERY_FIELDS.items()
        }
    )
    if data.name != "mnist1d":
        query.pop("n")
    if run.model.polish_steps is not None:
        query["polish"] = str(run.model.polish_steps)
    return query


def upload_in_query(query: dict[str, str]) -> str | None:
    """The file name of an upload named by the URL (see :func:`run_to_query`), or None."""
    if query.get("data") != "upload":
        return None
    return f"{query.get('file', 'upload.npz')} (SHA-256 {query.get('sha', '?')}…)"


def run_label(run: RunConfig, others: list[RunConfig] = ()) -> str:
    """ "mlp on digits", plus the settings that tell ``run`` apart from the ``others`` of the same architecture
    and data (e.g. "hidden 64, 40 epochs"), so a list of models never shows two equal names."""
    base = f"{run.model.arch} on {run.data.label()}"
    same = [o for o in others if o != run and o.model.arch == run.model.arch and o.data == run.data]
    fields = [
        ("hidden", "hidden {}"),
        ("epochs", "{} epochs"),
        ("lr", "lr {:g}"),
        ("weight_decay", "wd {:g}"),
        ("seed", "seed {}"),
        ("polish_steps", "{} polish steps"),
    ]
    if run.model.arch != "mlp":
        fields = fields[1:]
    details = [
        fmt.format(getattr(run.model, attr))
        for attr, fmt in fields
        if any(getattr(o.model, attr) != getattr(run.model, attr) for o in same)
    ]
    return base + (f" ({', '.join(details)})" if details else "")


def run_from_query(query: dict[str, str]) -> RunConfig:
    """The RunConfig named by URL query parameters; any missing, unknown or malformed value falls back to its
    default (a hand-edited URL never breaks the page)."""

    def read(conv, text, default):
        try:
            value = conv(text)
        except (TypeError, ValueError):
            return default
        if isinstance(value, float) and not (value == value and abs(value) < float("inf")):
            return default
        return value

    data_kw, model_kw = {}, {}
    for key, (attr, conv) in _QUERY_FIELDS.items():
        if key in query:
            data_kw[attr] = read(conv, query[key], getattr(DataConfig, attr))
    for key, (attr, conv) in _MODEL_QUERY_FIELDS.items():
        if key in query:
            model_kw[attr] = read(conv, query[key], getattr(ModelConfig, attr))
    if "polish" in query:
        polish = read(int, query["polish"], None)
        if polish is not None and 0 <= polish <= 10_000:
            model_kw["polish_steps"] = polish
    if data_kw.get("name") not in set(DATASET_CHOICES) - {"npz"}:
        data_kw.pop("name", None)
    if model_kw.get("arch") not in ARCH_CHOICES:
        model_kw.pop("arch", None)
    limits = {
        "num_samples": (200, 20000),
        "hidden": (2, 512),
        "epochs": (0, 500),
        "lr": (1e-5, 1.0),
        "weight_decay": (0.0, 1.0),
        "seed": (0, 1_000_000),
    }
    for kw in (data_kw, model_kw):
        for attr, (lo, hi) in limits.items():
            if attr in kw and not lo <= kw[attr] <= hi:
                del kw[attr]
    return RunConfig(data=DataConfig(**data_kw), model=ModelConfig(**model_kw))


# ---------------------------------------------------------------------------------------------------- MNIST-1D

MNIST1D_USABLE = 0.55  # below this test accuracy the home page shows the hint and the suggested settings
MNIST1D_SUGGESTED = RunConfig(
    data=DataConfig(name="mnist1d", num_samples=10000),
    model=ModelConfig(arch="mlp", hidden=128, epochs=40, lr=3e-3, weight_decay=1e-3),
)
MNIST1D_HINT = (
    "MNIST-1D is built to be hard for models without convolutions: with the defaults (2,000 samples, 32 "
    "hidden units, 30 epochs) the MLP reaches about 45% test accuracy and logistic regression about "
    "34%. More data helps most: 10,000 samples (8,000 for training), 128 hidden units and 40 epochs "
    "reach about 70% (under a minute of training on one core), 20,000 samples about 78% (a few "
    "minutes). The button below trains the 10,000-sample model."
)

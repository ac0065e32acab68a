"""Small frozen configurations: they are the cache keys of everything the app computes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

DATASET_CHOICES = ("digits", "mnist5k", "mnist1d", "npz")
ARCH_CHOICES = ("mlp", "logreg", "cnn")


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


@dataclass(frozen=True)
class ModelConfig:
    """Training settings passed to ``influence_core.train_model``."""

    arch: str = "mlp"
    hidden: int = 32
    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 1e-3
    seed: int = 0
    polish_steps: int = 100

    def train_kwargs(self) -> dict:
        kw = {"epochs": self.epochs, "lr": self.lr, "weight_decay": self.weight_decay,
              "polish_steps": self.polish_steps}
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


DEFAULT_RUN = RunConfig()

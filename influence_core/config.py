"""One configuration of the influence computation, shared by every entry point (API, CLI, studies, app).

:class:`InfluenceConfig` carries the algorithm's settings and nothing else: the curvature, the damping δ, the solver of
(H_S + δI)⁻¹ and its options, and the Hessian sample S (sampler, m, seed, sampler options). Where the work runs
(executor, chunk sizes, output file, progress) travels apart from it, as arguments of the call.

Defaults (the ``"default"`` preset), written once here and read by :func:`influence_core.influence_scores`,
:meth:`influence_core.InfluenceCalculator.fit`, :func:`influence_core.class_removal`, the ``influence`` command and
the app:

- ``curvature="gauss_newton"``: positive semi-definite on any sample, so (G_S + δI) is positive definite for δ > 0
  and CG converges; the Hessian of a small sample of a non-convex model is often indefinite.
- ``damping=0.01``: keeps the system well conditioned when the sample is small, on the scale of the mean curvature.
- ``solver="cg"``: matrix-free (HVPs only), so it works for any number of parameters p; ``exact`` forms a p×p matrix.
- ``m=None``: the whole training set (or, for class removal, the whole remaining pool), the faithful reference;
  set ``m`` (and ``sampler``) to estimate the Hessian on a sample.

Named presets (:data:`PRESETS`, :meth:`InfluenceConfig.preset`): ``"default"``; ``"exact"`` (the true Hessian
without damping, inverted exactly: the ground truth on a convex model such as logistic regression); ``"study"``
(the class-removal study's solve: CG to a relative residual of 1e-4 within 10,000 iterations); ``"interactive"``
(the app: CG with an iteration budget that bounds the latency of a page).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InfluenceConfig", "PRESETS", "available_presets", "preset_values", "FULL_SAMPLE"]

FULL_SAMPLE = "full"
"""The sampler name recorded when the Hessian is taken on the whole training set (or pool): ``m=None``."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class InfluenceConfig:
    """The settings of (H_S + δI)⁻¹: curvature, damping, solver and its options, and the Hessian sample S.

    Validated on construction (one line per bad field); ``to_dict``/``from_dict`` give a JSON record; presets by
    name (:meth:`preset`); :meth:`replace` for a variant. Equal configurations give the same scores.
    """

    curvature: str = field(
        default="gauss_newton",
        metadata=_help(
            "curvature of the sampled objective: 'gauss_newton' (positive semi-definite on any sample) or 'hessian'"
        ),
    )
    damping: float = field(
        default=0.01, metadata=_help("δ >= 0 added to the curvature: (H_S + δI)⁻¹; on the scale of the mean curvature")
    )
    solver: str = field(
        default="cg",
        metadata=_help(
            "registered solver of (H_S + δI) x = b: exact, cg, lissa, low_rank, kfac, ekfac, arnoldi, or your own"
        ),
    )
    solver_options: Mapping[str, Any] = field(
        default_factory=dict,
        metadata=_help("the solver's own options (e.g. tol, max_iter for cg), checked against its signature"),
    )
    sampler: str = field(
        default="random",
        metadata=_help("registered sampler that draws the Hessian sample when m is set (e.g. random, logit, feature)"),
    )
    m: int | None = field(
        default=None,
        metadata=_help(
            "points in the Hessian sample; None = the whole training set (the removal: the whole remaining pool)"
        ),
    )
    seed: int = field(default=0, metadata=_help("seed of the sampler (the same seed gives the same sample)"))
    sampler_options: Mapping[str, Any] = field(
        default_factory=dict, metadata=_help("the sampler's own options, checked against its signature")
    )

    def __post_init__(self) -> None:
        from influence_core.sampling.samplers import available_samplers, check_sampler_options
        from influence_core.solvers.registry import solver_problems

        object.__setattr__(self, "solver_options", _options(self.solver_options, "solver_options"))
        object.__setattr__(self, "sampler_options", _options(self.sampler_options, "sampler_options"))
        problems = solver_problems(self.solver, self.curvature, self.damping, self.solver_options)
        if self.sampler != FULL_SAMPLE and self.sampler not in available_samplers():
            problems.append(
                f"unknown sampler {self.sampler!r}; choose one of {available_samplers()} (or "
                f"{FULL_SAMPLE!r} with m=None for the whole training set)"
            )
        elif self.sampler == FULL_SAMPLE and self.sampler_options:
            problems.append(f"sampler {FULL_SAMPLE!r} takes no sampler_options, got {sorted(self.sampler_options)}")
        elif self.sampler != FULL_SAMPLE:
            try:
                check_sampler_options(self.sampler, self.sampler_options)
            except ValueError as exc:
                problems.append(f"sampler_options: {exc}")
        if self.m is not None and (isinstance(self.m, bool) or not isinstance(self.m, numbers.Integral) or self.m < 1):
            problems.append(
                f"m must be an integer with 1 <= m <= the training points (the Hessian sample's size), "
                f"or None for the whole training set; got {self.m!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            problems.append(f"seed must be an integer >= 0, got {self.seed!r}")
        if problems:
            raise ValueError("\n".join(problems))
        object.__setattr__(self, "damping", float(self.damping))
        if self.m is not None:
            object.__setattr__(self, "m", int(self.m))
        object.__setattr__(self, "seed", int(self.seed))

    def __hash__(self) -> int:
        return hash(repr(sorted(self.to_dict().items())))

    # ------------------------------------------------------------------ construction
    @classmethod
    def preset(cls, name: str) -> InfluenceConfig:
        """The named preset (see :data:`PRESETS`)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {available_presets()}")
        return cls(**PRESETS[name])

    def replace(self, **changes: Any) -> InfluenceConfig:
        """A copy with ``changes`` (validated). Changing the solver drops the old solver's options unless new
        ``solver_options`` are given; changing the sampler drops its options likewise."""
        if "solver" in changes and changes["solver"] != self.solver and "solver_options" not in changes:
            changes["solver_options"] = {}
        if "sampler" in changes and changes["sampler"] != self.sampler and "sampler_options" not in changes:
            changes["sampler_options"] = {}
        return dataclasses.replace(self, **changes)

    def with_overrides(
        self,
        *,
        solver: str | None = None,
        damping: float | None = None,
        curvature: str | None = None,
        **solver_options: Any,
    ) -> InfluenceConfig:
        """This configuration with the keyword shortcuts of the entry points applied (None = keep): a new solver
        drops the old one's options; ``solver_options`` are merged over the (kept) options."""
        changes: dict[str, Any] = {
            k: v for k, v in (("solver", solver), ("damping", damping), ("curvature", curvature)) if v is not None
        }
        base = self.replace(**changes) if changes else self
        if solver_options:
            base = base.replace(solver_options={**base.solver_options, **solver_options})
        return base

    # ------------------------------------------------------------------ records
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record; :meth:`from_dict` rebuilds an equal configuration."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["solver_options"], out["sampler_options"] = dict(self.solver_options), dict(self.sampler_options)
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> InfluenceConfig:
        """The configuration of a :meth:`to_dict` record (unknown keys are refused, missing ones take defaults)."""
        if not isinstance(record, Mapping):
            raise TypeError(f"InfluenceConfig.from_dict takes a dict, got {type(record).__name__}")
        unknown = sorted(set(record) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"InfluenceConfig has no fields {unknown}; its fields are {field_names()}")
        return cls(**record)

    def fit_kwargs(self) -> dict[str, Any]:
        """``solver``, ``damping``, ``curvature`` and the solver's options, as :func:`fit_inverse` takes them."""
        return {"solver": self.solver, "damping": self.damping, "curvature": self.curvature, **self.solver_options}

    @property
    def full(self) -> bool:
        """True when the Hessian is taken on the whole training set (or pool): ``m`` is None or the sampler is
        ``"full"``."""
        return self.m is None or self.sampler == FULL_SAMPLE


def _options(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"InfluenceConfig.{name} must be a dict of option names to values, got {value!r}")
    for key, v in value.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"InfluenceConfig.{name}[{key!r}] must be finite, got {v!r}")
    return dict(value)


def field_names() -> list[str]:
    """The fields of :class:`InfluenceConfig`, in order."""
    return [f.name for f in dataclasses.fields(InfluenceConfig)]


def field_help(name: str) -> str:
    """The help text of one field (used by the command line)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(InfluenceConfig)}[name]


def preset_values(name: str) -> dict[str, Any]:
    """The field values of a preset without building (and validating) it: cheap, imports no solver or torch."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {available_presets()}")
    values = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(InfluenceConfig)
    }
    return {**values, **PRESETS[name]}


def available_presets() -> list[str]:
    """Names of the presets."""
    return list(PRESETS)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "exact": {"curvature": "hessian", "damping": 0.0, "solver": "exact"},
    "study": {"solver_options": {"tol": 1e-4, "max_iter": 10_000}},
    "interactive": {"solver_options": {"tol": 1e-6, "max_iter": 500}},
}
"""Named configurations, as the fields that differ from the defaults (module doc); :meth:`InfluenceConfig.preset`
builds one. Add a preset with a line here."""

"""influence_core.config: the one configuration of the influence computation. Its validation (one line per bad
field), its JSON record, its presets, and that every entry point (API, CLI, studies, app) has its defaults."""

from __future__ import annotations

import argparse
import inspect
import json

import numpy as np
import pytest

from influence_core import InfluenceCalculator, class_removal, fit_inverse, influence_scores
from influence_core.config import PRESETS, InfluenceConfig, available_presets, field_help, preset_values
from influence_core.removal.class_removal import (
    DEFAULT_CURVATURE,
    DEFAULT_DAMPING,
    DEFAULT_SOLVER,
    ClassRemoval,
    _removal_config,
)

DEFAULT = InfluenceConfig()
SETTINGS = ("solver", "damping", "curvature")


# ---------------------------------------------------------------------------------------------------- the dataclass


def test_defaults_are_the_documented_choice():
    assert (DEFAULT.curvature, DEFAULT.damping, DEFAULT.solver, DEFAULT.m) == ("gauss_newton", 0.01, "cg", None)
    assert DEFAULT.full and DEFAULT.solver_options == {} and DEFAULT.sampler_options == {}
    assert InfluenceConfig.preset("default") == DEFAULT


def test_every_field_has_help_text():
    for name in inspect.signature(InfluenceConfig).parameters:
        assert len(field_help(name)) > 20, name


@pytest.mark.parametrize("name", available_presets())
def test_presets_are_valid_and_round_trip_through_json(name):
    config = InfluenceConfig.preset(name)
    again = InfluenceConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and hash(again) == hash(config)
    assert preset_values(name) == config.to_dict()  # the cheap reading (the app's) agrees with the built one


def test_the_presets_hold_the_settings_they_name():
    exact = InfluenceConfig.preset("exact")
    assert (exact.solver, exact.damping, exact.curvature) == ("exact", 0.0, "hessian")
    assert InfluenceConfig.preset("study").solver_options == {"tol": 1e-4, "max_iter": 10_000}
    assert InfluenceConfig.preset("interactive").solver_options == {"tol": 1e-6, "max_iter": 500}
    assert set(PRESETS) == {"default", "exact", "study", "interactive"}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"solver": "newton"}, "unknown solver 'newton'"),
        ({"curvature": "fisher"}, "unknown curvature 'fisher'"),
        ({"damping": -0.1}, "damping must be a finite number >= 0, got -0.1"),
        ({"damping": float("nan")}, "damping must be a finite number"),
        ({"damping": True}, "damping must be a finite number"),
        ({"solver_options": {"tols": 1e-3}}, "solver 'cg' takes no options ['tols']"),
        ({"solver_options": {"max_iter": 0}}, "max_iter must be an integer >= 1"),
        ({"sampler": "magic", "m": 10}, "unknown sampler 'magic'"),
        ({"m": 0}, "1 <= m"),
        ({"m": 2.5}, "1 <= m"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        (
            {"sampler": "logit", "m": 10, "sampler_options": {"bins": 3}},
            "sampler_options: sampler 'logit' does not take",
        ),
        ({"solver_options": [1, 2]}, "solver_options must be a dict"),
    ],
)
def test_each_bad_field_is_one_line_naming_it(changes, message):
    with pytest.raises(ValueError) as info:
        InfluenceConfig(**changes)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_several_bad_fields_give_one_line_each():
    with pytest.raises(ValueError) as info:
        InfluenceConfig(solver="newton", damping=-1.0, m=0, seed=-2)
    lines = str(info.value).splitlines()
    assert len(lines) == 4
    assert [w for w in ("solver", "damping", "m must", "seed") if any(w in line for line in lines)] == [
        "solver",
        "damping",
        "m must",
        "seed",
    ]


def test_unknown_preset_and_unknown_record_fields_are_refused():
    with pytest.raises(ValueError, match="unknown preset 'turbo'.*default"):
        InfluenceConfig.preset("turbo")
    with pytest.raises(ValueError, match=r"no fields \['tol'\]"):
        InfluenceConfig.from_dict({"solver": "cg", "tol": 1e-3})


def test_overrides_drop_the_old_solvers_options_and_merge_new_ones():
    study = InfluenceConfig.preset("study")
    assert study.with_overrides(solver="exact").solver_options == {}  # cg's tol would be refused by exact
    assert study.with_overrides(tol=1e-8).solver_options == {"tol": 1e-8, "max_iter": 10_000}
    assert study.with_overrides() == study
    assert study.with_overrides(damping=0.5).damping == 0.5
    options = {"tol": 1e-3}
    config = InfluenceConfig(solver_options=options)
    options["tol"] = 1.0  # the configuration holds a copy of the caller's dict
    assert config.solver_options == {"tol": 1e-3}


# ---------------------------------------------------------------------------------------------------- entry points


def _none_defaults(fn, names=SETTINGS):
    params = inspect.signature(fn).parameters
    return {name: params[name].default for name in names}


def test_api_shortcuts_default_to_the_configuration():
    """The keyword shortcuts of every API entry point default to None (= the configuration's value), and the
    registry's fit_inverse defaults to the configuration's values: the defaults are written once."""
    for fn in (influence_scores, InfluenceCalculator.fit, class_removal, ClassRemoval.run):
        assert _none_defaults(fn) == dict.fromkeys(SETTINGS), fn.__qualname__
        assert inspect.signature(fn).parameters["config"].default is None
    for fn in (class_removal, ClassRemoval.run):
        assert _none_defaults(fn, ("sampler", "m", "seed")) == dict.fromkeys(("sampler", "m", "seed"))
    assert _none_defaults(fit_inverse) == {k: getattr(DEFAULT, k) for k in SETTINGS}
    assert (DEFAULT_SOLVER, DEFAULT_DAMPING, DEFAULT_CURVATURE) == (DEFAULT.solver, DEFAULT.damping, DEFAULT.curvature)
    assert _removal_config(None, None, None, None, None, None, None, {}) == DEFAULT


def test_fit_without_settings_uses_the_configuration(digits, digits_logreg64):
    calc = InfluenceCalculator(digits_logreg64, digits.X_train, digits.y_train).fit()
    assert calc.config == DEFAULT and calc.inverse.solver == "cg" and calc.inverse.curvature == "gauss_newton"
    assert calc.fit_record()["hessian_indices"] is None
    calc.fit(config=InfluenceConfig.preset("exact"), damping=0.5)
    assert (calc.config.solver, calc.config.curvature, calc.config.damping) == ("exact", "hessian", 0.5)


def test_influence_scores_passes_its_configuration_to_the_fit(digits, digits_logreg64, monkeypatch):
    seen = []
    monkeypatch.setattr(InfluenceCalculator, "scores", lambda self, *a, **k: seen.append(self.config) or 0)
    influence_scores(digits_logreg64, digits, [0])
    influence_scores(digits_logreg64, digits, [0], config=InfluenceConfig.preset("study"), solver="lissa")
    assert seen[0] == DEFAULT
    assert seen[1] == InfluenceConfig.preset("study").replace(solver="lissa")


def test_a_configured_sample_is_drawn_by_the_fit(digits, digits_logreg64):
    config = InfluenceConfig(sampler="logit", m=40, seed=3, solver="exact")
    calc = InfluenceCalculator(digits_logreg64, digits.X_train, digits.y_train).fit(config=config)
    again = InfluenceCalculator(digits_logreg64, digits.X_train, digits.y_train).fit(config=config.replace(seed=4))
    assert len(calc.hessian_indices) == 40 and not np.array_equal(calc.hessian_indices, again.hessian_indices)
    from influence_core import sample_hessian_subset

    sample = sample_hessian_subset(digits_logreg64, digits, "logit", 40, seed=3)
    np.testing.assert_array_equal(calc.hessian_indices, sample.indices)


def _parse(module, argv=()):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_influence_command_has_the_configurations_defaults():
    from influence_core.cli import influence as command

    assert command._config(_parse(command)) == DEFAULT
    args = _parse(command, ["--preset", "exact", "--damping", "0.1", "--sampler", "logit", "--m", "64"])
    assert command._config(args) == InfluenceConfig.preset("exact").replace(damping=0.1, sampler="logit", m=64)


def test_the_removal_study_names_its_preset():
    from influence_core.cli import removal as command

    config = command.study_config(_parse(command, ["--out", "x"]))
    assert config.influence == InfluenceConfig.preset("study")
    other = command.study_config(_parse(command, ["--out", "x", "--solver", "exact"])).influence
    assert other.solver == "exact" and other.solver_options == {}  # tol/max_iter belong to the iterative solvers


def test_the_faithfulness_and_lds_studies_name_their_preset():
    from influence_core.studies.faithfulness import StudyConfig
    from influence_core.studies.lds import full_data_scores

    study = InfluenceConfig.preset("study")
    assert (StudyConfig().damping, StudyConfig().curvature) == (study.damping, study.curvature)
    params = inspect.signature(full_data_scores).parameters
    assert (params["damping"].default, params["curvature"].default) == (study.damping, study.curvature)


def test_the_app_reads_its_preset():
    from ui import config as app

    interactive = InfluenceConfig.preset(app.APP_PRESET)
    assert app.APP_PRESET == "interactive"
    assert app.CURVATURE == interactive.curvature
    assert app.INFLUENCE_PAGE_DEFAULTS["damping"] == interactive.damping
    assert app.SOLVER_OPTIONS["cg"] == interactive.solver_options
    for solver, options in app.SOLVER_OPTIONS.items():  # every option set is valid for its solver
        interactive.replace(solver=solver, solver_options=options)


def test_class_removal_takes_its_sample_and_solve_from_the_configuration(digits, digits_logreg64):
    config = InfluenceConfig(solver="exact", sampler="logit", m=40, seed=1, sampler_options={"n_bins": 3})
    res = class_removal(digits_logreg64, digits, 2, config=config, alphas=[1.0])
    assert (res.sampler, res.m, res.seed, res.solver, res.curvature) == ("logit", 40, 1, "exact", "gauss_newton")
    assert res.hessian_sample.options["n_bins"] == 3
    other = class_removal(digits_logreg64, digits, 2, seed=2, config=config, alphas=[1.0])  # a shortcut overrides
    assert other.seed == 2 and not np.array_equal(other.hessian_sample.indices, res.hessian_sample.indices)
    with pytest.warns(DeprecationWarning, match="chunk_size"):
        chunked = class_removal(digits_logreg64, digits, 2, config=config, alphas=[1.0], hessian_batch=7)
    assert chunked.config["hessian_batch"] == 7
    np.testing.assert_allclose(chunked.delta.numpy(), res.delta.numpy(), rtol=1e-8, atol=1e-12)
    full = ClassRemoval(digits_logreg64, digits).run(2, config=InfluenceConfig(solver="exact"), alphas=[1.0])
    assert full.sampler == "full" and full.m == int(np.sum(digits.y_train != 2))

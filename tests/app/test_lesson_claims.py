"""The lesson says only what its numbers show (issue 23, item 1).

Pure tests: each sentence builder in ``ui.lesson`` names the winner the numbers give and flips when the numbers
flip. AppTests: each step's shown numbers are recomputed through the engine (not through the page or its caches)
on the lesson's model, and the step's claims must agree with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from apptest_helpers import errors, ok

from ui.lesson import SeedStats, lds_claims, map_claims, mislabel_claims, removal_claims, seeds_claims

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ pure
def stats(top_r, rho_r, full_r, top_i, rho_i, full_i):
    return [
        SeedStats("random", top_r, rho_r, full_r, full_r - 0.05, full_r + 0.05),
        SeedStats("importance", top_i, rho_i, full_i, full_i - 0.05, full_i + 0.05),
    ]


def test_seed_claims_name_the_steadier_sampler_from_the_numbers():
    text = " ".join(seeds_claims(stats(0.91, 0.75, 0.58, 0.64, 0.70, 0.67), 50))
    assert "**random** is steadier at the top" in text and "**importance** is closer to it" in text
    assert "here it does not: random is the steadier one on the top-10 and the whole ranking" in text
    assert "91%" in text and "64%" in text and "ρ = 0.75" in text
    flipped = " ".join(seeds_claims(stats(0.60, 0.70, 0.58, 0.90, 0.85, 0.60), 50))
    assert "**importance** is steadier at the top" in flipped and "here it holds on the top-10 and the whole" in flipped
    tied = " ".join(seeds_claims(stats(0.80, 0.95, 0.9, 0.82, 0.96, 0.91), 50))
    assert "the two are about the same" in tied and "about equally consistent" in tied
    assert "order the training set almost the same way" in tied


def removal_record(sampler, f1_sel, alpha=30.0, forget1=0.02, retain1=0.99):
    return {
        "sampler": sampler,
        "m": 100,
        "at_one": {"f1": 2 * forget1 * retain1 / (forget1 + retain1), "forget": forget1, "retain": retain1},
        "selected": {"f1": f1_sel, "alpha": alpha},
        "reference": {"relative_distance": {"alpha_1": 0.97, "selected_alpha": 0.6}},
    }


def test_removal_claims_explain_alpha_one_and_the_sampler_spread():
    text = " ".join(removal_claims([removal_record("random", 0.951), removal_record("feature", 0.953)], "3"))
    assert "forgets 2% of the class's test points" in text and "It does not forget the class" in text
    assert "The α step does the forgetting" in text and "lengthened to α = 30" in text
    assert "The sampler barely matters here" in text and "at most 0.002" in text
    text = " ".join(removal_claims([removal_record("random", 0.80), removal_record("feature", 0.95)], "3"))
    assert "**feature** gives the highest honest F1 (0.950), 0.150 above the lowest (random)" in text
    tied = " ".join(
        removal_claims(
            [removal_record("random", 0.95), removal_record("feature", 0.95), removal_record("importance", 0.90)], "3"
        )
    )
    assert "**random** and **feature** give the highest honest F1" in tied
    done = " ".join(removal_claims([removal_record("random", 0.90, forget1=0.9)], "3"))
    assert "It does not forget the class" not in done


def test_mislabel_claims_compare_self_influence_with_the_loss():
    found = {"self-influence": 0.9, "training loss": 0.89}
    assert (
        "no better than the training loss"
        in mislabel_claims({"self-influence": 0.944, "training loss": 0.942}, found)[0]
    )
    assert "better than the training loss" in mislabel_claims({"self-influence": 0.96, "training loss": 0.90}, found)[0]
    assert "The training loss finds" in mislabel_claims({"self-influence": 0.80, "training loss": 0.90}, found)[0]


def test_lds_and_map_claims_follow_the_numbers():
    rows = [
        {"sampler": "random", "m": 128, "lds_mean": 0.60, "lds_std": 0.01},
        {"sampler": "importance", "m": 128, "lds_mean": 0.65, "lds_std": 0.01},
    ]
    text = " ".join(lds_claims(rows, {"full-data influence": 0.75, "gradient dot": 0.45}, 0.99, 128))
    assert "**importance** (LDS 0.650" in text and "67% of the way" in text and "larger than the spread" in text
    rows[1]["lds_std"] = 0.1
    assert "treat them as tied" in " ".join(
        lds_claims(rows, {"full-data influence": 0.75, "gradient dot": 0.45}, 0.99, 128)
    )
    gaps = [
        {"sampler": "random", "class_tv": 0.1, "confidence_tv": 0.2, "mean confidence": 0.95},
        {"sampler": "importance", "class_tv": 0.3, "confidence_tv": 0.1, "mean confidence": 0.80},
    ]
    text = " ".join(map_claims(gaps, 0.94))
    assert "class mix: **random**" in text and "confidence mix: **importance**" in text
    assert "**importance** leans towards points the model is unsure about" in text


# ------------------------------------------------------------------------------------------------ pages
def lesson_step(app_page, key, run=None, timeout=600):
    at = app_page("app.py", run=run, timeout=timeout)
    ok(at.run())
    at.switch_page("pages/5_Lesson.py")
    ok(at.run())
    at.button(key=f"lesson_go_{key}").click()
    ok(at.run())
    assert not errors(at), errors(at)
    return at


def said(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def first_wrong(model, data):
    import influence_core as ic

    wrong = np.flatnonzero(ic.predict_logits(model, data.X_test).argmax(1) != data.y_test)
    return int(wrong[0]) if len(wrong) else 0


def test_step_2_numbers_and_claims_match_an_independent_computation(app_page, trained_fast_run):
    """Five seeds of random and importance at m = 50, each fitted by its own InfluenceCalculator (exact
    Gauss-Newton, damping 0.01), the measures computed with scipy: the page's metrics and words must match."""
    from scipy.stats import spearmanr

    from influence_core import InfluenceCalculator, sample_hessian_subset
    from ui.state import get_dataset, get_model

    at = lesson_step(app_page, "seeds")
    model, data = get_model(trained_fast_run), get_dataset(trained_fast_run.data)
    t = first_wrong(model, data)

    def scores(sample):
        calc = InfluenceCalculator(model, data.X_train, data.y_train)
        calc.fit(sample, solver="exact", damping=0.01, curvature="gauss_newton")
        return calc.scores(data.X_test[t : t + 1], data.y_test[t : t + 1])[0]

    full = scores(None)
    measured = {}
    for name in ("random", "importance"):
        runs = [scores(sample_hessian_subset(model, data, name, 50, seed=s)) for s in range(5)]
        pairs = [(a, b) for a in range(5) for b in range(a + 1, 5)]
        top = [set(np.argsort(-r, kind="stable")[:10]) for r in runs]
        measured[name] = (
            np.mean([len(top[a] & top[b]) / 10 for a, b in pairs]),
            np.mean([spearmanr(runs[a], runs[b]).statistic for a, b in pairs]),
            np.mean([spearmanr(r, full).statistic for r in runs]),
        )
    metrics = {m.label: m.value for m in at.metric}
    for name, (top, rho, full_rho) in measured.items():
        assert metrics[f"{name}: top-10 shared by two seeds"] == f"{top:.0%}"
        assert metrics[f"{name}: Spearman between two seeds"] == f"{rho:.2f}"
        assert metrics[f"{name}: Spearman with full data"] == f"{full_rho:.2f}"
    text = said(at)
    (top_r, rho_r, _), (top_i, rho_i, _) = measured["random"], measured["importance"]
    if abs(top_r - top_i) >= 0.05:
        assert f"**{'random' if top_r > top_i else 'importance'}** is steadier at the top" in text
    else:
        assert "the two are about the same" in text
    if rho_r - rho_i >= 0.05 and top_r - top_i >= 0.05:
        assert "here it does not" in text
    if rho_i - rho_r >= 0.05 and top_i - top_r >= 0.05:
        assert "here it holds" in text


def test_step_4_claims_match_a_class_removal_run_by_the_engine(app_page, trained_fast_run):
    from influence_core import ClassRemoval
    from ui.state import get_dataset, get_model

    at = lesson_step(app_page, "removal")
    task = ClassRemoval(get_model(trained_fast_run), get_dataset(trained_fast_run.data))
    rec = task.run(
        3, "random", 100, 0, solver="cg", damping=0.01, retrain_reference=True, tol=1e-6, max_iter=500
    ).to_dict()
    text = said(at)
    assert f"forgets {rec['at_one']['forget']:.0%} of the class's test points" in text
    assert f"(F1 {rec['at_one']['f1']:.3f})" in text
    if rec["selected"]["f1"] - rec["at_one"]["f1"] >= 0.05:
        assert f"α = {rec['selected']['alpha']:.3g}" in text and "The α step does the forgetting" in text
    table = at.dataframe[0].value.set_index("sampler")
    assert table.loc["random", "F1 (α = 1)"] == pytest.approx(rec["at_one"]["f1"], abs=1e-3)


def test_step_6_claims_match_a_mislabel_run_by_the_engine(app_page, trained_fast_run):
    from influence_core.evaluation.mislabel import mislabel_detection
    from ui.state import get_dataset

    at = lesson_step(app_page, "mislabel")
    result = mislabel_detection(
        get_dataset(trained_fast_run.data),
        "logreg",
        0.1,
        0,
        train_settings={"weight_decay": float(trained_fast_run.model.weight_decay)},
    )
    auc = {r["ranking"]: r["AUC"] for r in result.summary()}
    text = said(at)
    si, loss = auc["self-influence"], auc["training loss"]
    expect = (
        "no better than the training loss"
        if abs(si - loss) < 0.01
        else "Self-influence finds the flipped labels better"
        if si > loss
        else "The training loss finds"
    )
    assert expect in text and f"{si:.2f}" in text and f"{loss:.2f}" in text


def test_step_5_uses_the_study_of_the_lessons_own_model():
    """The default digits MLP (hidden 32) has its own committed study; a model without one gets none."""
    from ui.config import DEFAULT_RUN, ModelConfig, RunConfig
    from ui.faithfulness import load_study, study_for

    name = study_for(DEFAULT_RUN)
    assert name is not None
    data = json.loads((ROOT / "docs" / "lds" / f"{name}.json").read_text())
    training = data["context"]["faithfulness_context"]["model"]["training_config"]
    assert training["hidden"] == [DEFAULT_RUN.model.hidden] and training["epochs"] == DEFAULT_RUN.model.epochs
    assert study_for(RunConfig(model=ModelConfig(hidden=8))) is None
    study = load_study(name)
    full = next(b["lds"] for b in data["baselines"] if b["method"] == "full-data influence")
    text = " ".join(lds_claims(study.rows, study.baselines, study.ceiling, 128))
    assert f"full-data Hessian reaches {full:.3f}" in text
    at128 = [r for r in data["summary"] if r["m"] == 128]
    best = max(at128, key=lambda r: r["lds_mean"])
    assert f"LDS {best['lds_mean']:.3f}" in text


def test_step_5_says_when_no_study_describes_the_model(app_page):
    at = lesson_step(app_page, "lds")
    assert any("No committed LDS study" in w.value for w in at.warning)


def test_seed_study_claims_say_at_which_m_and_by_which_measure():
    from ui.lesson import seed_study_claims

    rows = [
        {"sampler": "random", "m": m, "top10_shared": t, "seed_spearman": r, "full_spearman": f}
        for m, t, r, f in ((20, 0.78, 0.69, 0.60), (200, 0.69, 0.70, 0.76))
    ]
    rows += [
        {"sampler": "importance", "m": m, "top10_shared": t, "seed_spearman": r, "full_spearman": f}
        for m, t, r, f in ((20, 0.69, 0.64, 0.64), (200, 0.77, 0.79, 0.87))
    ]
    text = " ".join(seed_study_claims(rows))
    assert "share 69%–78% of their top-10 at m = 20–200" in text and "ρ = 0.69–0.70" in text
    assert "disagree at every m measured" in text
    assert "closer to the full-data answer than random (Spearman ahead by 0.05 or more) at m = 200." in text
    assert (
        "importance's seeds agree with each other over the whole ranking clearly more than random's (by 0.05 or "
        "more) only at m = 200" in text
    )
    rows[1]["seed_spearman"] = 0.95
    assert "settles (ρ ≥ 0.9) from m = 200" in " ".join(seed_study_claims(rows))


def test_the_committed_seed_study_is_of_the_lessons_model():
    from ui.config import DEFAULT_RUN, ModelConfig, RunConfig
    from ui.lesson import SEED_STUDY, load_seed_study

    if not (ROOT / SEED_STUDY).exists():
        pytest.fail(f"{SEED_STUDY} is missing: python benchmarks/lesson_seeds.py")
    study = load_seed_study(DEFAULT_RUN)
    assert study is not None and {r["sampler"] for r in study["rows"]} >= {"random", "importance"}
    assert load_seed_study(RunConfig(model=ModelConfig(hidden=8))) is None


def test_mislabel_study_claims_split_models_that_fit_the_wrong_labels():
    from ui.lesson import load_mislabel_study, mislabel_study_claims

    rows = [
        {"model": "logreg", "mean_loss_flipped": 3.0, "auc_self_influence": 0.944, "auc_training_loss": 0.942},
        {"model": "mlp", "mean_loss_flipped": 0.3, "auc_self_influence": 0.95, "auc_training_loss": 0.93},
    ]
    text = " ".join(mislabel_study_claims(rows))
    assert "does not fit the flipped labels (logistic regression" in text and "at most 0.002 AUC" in text
    assert "fits the flipped labels (the MLP" in text and "leads the loss by 0.020–0.020 AUC" in text
    rows[1]["auc_self_influence"] = 0.90
    assert "from -0.030 to -0.030" in " ".join(mislabel_study_claims(rows))
    study = load_mislabel_study()
    assert study is not None, "docs/lesson/mislabel_rankings.json is missing: python benchmarks/lesson_mislabel.py"
    for row in study["rows"]:
        assert 0.5 < row["auc_self_influence"] <= 1 and 0.5 < row["auc_training_loss"] <= 1

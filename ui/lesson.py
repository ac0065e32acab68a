"""The workshop lesson (no Streamlit): six steps, each a title, what it sets up, what to look at and an exercise.

Each step's :meth:`Step.settings` are the session-state keys of the other pages' widgets (``inf_*`` on Influence,
``smp_*`` on Samplers, ``rm_*`` on Class removal, ``faith_*`` on Faithfulness, ``exp_*`` on Explorer), so one click
on the lesson page prepares the page the step points to: the student opens it and finds the same test point,
samplers, m and seeds the lesson talks about.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import RunConfig

LESSON_M = 50  # a small Hessian sample (3.5% of the digits training set)
LESSON_SEEDS = 5
LESSON_CLASS = 3
LESSON_REMOVAL_M = 100
MISLABEL_SHARE = 0.10
LESSON_SAMPLERS = ("random", "feature", "importance")


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    goal: str
    look_at: str
    exercise: str
    page: str
    page_label: str

    def settings(self, test_index: int) -> dict[str, object]:
        """Session-state values that set up the page this step points to (for test point ``test_index``)."""
        t = int(test_index)
        if self.key == "score":
            return {
                "inf_mode": "by index",
                "inf_index": t,
                "inf_a": "random",
                "inf_b": "importance",
                "inf_m": 200,
                "inf_seed": 0,
                "inf_full": True,
                "inf_k": 8,
            }
        if self.key == "seeds":
            return {
                "inf_mode": "by index",
                "inf_index": t,
                "inf_a": "random",
                "inf_b": "importance",
                "inf_m": LESSON_M,
                "inf_seed": 0,
                "inf_full": True,
                "inf_nseeds": LESSON_SEEDS,
                "inf_spread": True,
            }
        if self.key == "map":
            return {
                "smp_samplers": list(LESSON_SAMPLERS),
                "smp_m": LESSON_M,
                "smp_seed": 0,
                "smp_method": "pca",
                "smp_space": "features",
                "smp_colour": "label",
            }
        if self.key == "removal":
            return {
                "rm_class": LESSON_CLASS,
                "rm_samplers": ["feature", "importance"],
                "rm_m": LESSON_REMOVAL_M,
                "rm_seeds": 1,
                "rm_solver": "cg",
                "rm_reference": True,
                "rm_memory": False,
            }
        if self.key == "lds":
            return {"faith_study": "digits_mlp", "faith_budget": "m", "faith_limit": 128.0, "faith_limit_kind": "m"}
        if self.key == "mislabel":
            return {"exp_colour": "self-influence", "exp_index_kind": "train"}
        raise KeyError(self.key)


STEPS: tuple[Step, ...] = (
    Step(
        "score",
        "1. What is an influence score?",
        "One test point and the training points that helped or harmed its prediction most, with the Hessian of "
        "the whole training set (the best an influence function can do on this model).",
        "The score of training point j is (1/n)·∇ℓ(test)ᵀ(H + δI)⁻¹∇ℓ(j): the predicted increase of the test "
        "loss if j were removed (positive = helpful, negative = harmful). Compare the labels of the helpful and "
        "harmful points with the test point's true and predicted labels (counted under the pictures).",
        "Before you look: guess which digit the most harmful training point shows. Then open the Influence page, "
        "click another wrong (orange) cross on the map and check whether your rule still holds.",
        "pages/2_Influence.py",
        "Open Influence with this test point",
    ),
    Step(
        "seeds",
        "2. How much does the Hessian sample change the answer?",
        f"The same test point with the Hessian estimated on {LESSON_M} training points, five times with five "
        "seeds, for the random sampler and for the importance sampler.",
        "Three measures, computed below for this test point: how many of the top-10 helpful points two seeds "
        "share, how well two seeds agree on the order of all training points (Spearman), and how close each seed "
        "is to the full-data answer. A practitioner who ran this once would report whatever their seed gave.",
        f"On the Influence page (the spread is switched on), raise m from {LESSON_M} to 400: does the Spearman "
        "with the full-data scores rise for both samplers, and does the gap between them grow or shrink?",
        "pages/2_Influence.py",
        "Open Influence (spread across seeds)",
    ),
    Step(
        "map",
        "3. What does a representative sample look like?",
        f"The {LESSON_M} points each sampler puts into the Hessian (seed 0), on a PCA map of the model's features.",
        "Each map's caption says the sampler's rule. The table measures how far each sample's class mix and "
        "confidence mix are from the whole training set (TV distance: 0 = the same, 1 = nothing in common).",
        "On the Samplers page, change the seed a few times: which sampler's picture changes least? Switch the map "
        "to logits: does the answer change?",
        "pages/1_Samplers.py",
        "Open Samplers with these samples",
    ),
    Step(
        "removal",
        "4. Class removal against retraining",
        f"Forget class {LESSON_CLASS} with one influence (Newton) step, the Hessian on {LESSON_REMOVAL_M} points "
        "of the other classes, and compare with a model retrained from scratch without the class.",
        "α = 1 is the step the influence function predicts; the honest F1 is measured on the reporting half of "
        "the test set at the step size α chosen on the other half. Agreement = share of reporting-half test points "
        "on which the updated model predicts what the retrained one predicts; θ distance = distance to the retrained "
        "parameters, as a share of the original model's.",
        "On the Class removal page (these settings and their result are shown there), run the same removal for "
        "class 0 and class 7: how large is α each time, and is the difference between samplers larger than between "
        "classes?",
        "pages/3_Class_removal.py",
        "Open Class removal with these settings",
    ),
    Step(
        "lds",
        "5. Which sampler is faithful? (LDS)",
        "The linear datamodeling score from the committed study of this model: retrain on many random halves of "
        "the training set and ask how well each sampler's scores rank what retraining actually did.",
        "The noise ceiling is what retraining reaches against itself; the full-data line is the best an influence "
        "function does here; the gradient dot ignores the Hessian. Bands are ± one standard deviation over "
        "sampler seeds.",
        "On the Faithfulness page, set the budget to m = 64, then to a solve time of 0.1 s: which sampler would "
        "you pick each time, and is its lead larger than the across-seed band?",
        "pages/4_Faithfulness.py",
        "Open Faithfulness",
    ),
    Step(
        "mislabel",
        "6. Find the mislabelled examples",
        f"Flip {MISLABEL_SHARE:.0%} of the training labels (seeded), train logistic regression on them, and "
        "inspect the training set in the order of self-influence (1/n)·∇ℓ_jᵀ(H + δI)⁻¹∇ℓ_j, or of the training "
        "loss.",
        "The curve is the share of flipped labels found against the share of the training set inspected; random "
        "inspection is the diagonal. Compare the self-influence curve with the training loss's.",
        "How much of the training set do you need to inspect to find half of the flipped labels? Then open the "
        "Explorer, coloured by the self-influence of the app's own model (trained on the clean labels): are its "
        "highest values ambiguous digits, or digits that look mislabelled in the original data?",
        "pages/6_Explorer.py",
        "Open Explorer coloured by self-influence",
    ),
)
STEP_KEYS = tuple(s.key for s in STEPS)
BUTTON_LABELS = {
    "score": "1. Influence score",
    "seeds": "2. Sample & seeds",
    "map": "3. Samples on a map",
    "removal": "4. Class removal",
    "lds": "5. Faithfulness",
    "mislabel": "6. Mislabels",
}
"""Short labels of the step buttons (the full titles head each step): readable on a projector at 1024 px."""


def lesson_run(current: RunConfig, default: RunConfig) -> RunConfig:
    """The model the lesson uses: the current one when it is a digits MLP or logistic regression (so a teacher's
    trained model is kept), else ``default`` (the digits MLP)."""
    if current.data.name == "digits" and current.model.arch in ("mlp", "logreg"):
        return current
    return default


# ---------------------------------------------------------------------------------------------------- claims
# Every sentence below is built from the numbers the lesson shows, with the comparison made here (never typed in
# a text that could drift from the data): the tests recompute the numbers through the engine and check the words.

TIE = 0.05
"""Two shares or correlations closer than this are called "about the same" (a seed-to-seed wobble)."""


def _pair_mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class SeedStats:
    """How much one sampler's answer for one test point moves across seeds (k = the top-k size):

    top_shared: mean over seed pairs of |top-k helpful of seed a ∩ of seed b| / k;
    seed_rho: mean over seed pairs of the Spearman correlation of the two seeds' scores (the whole ranking);
    full_rho / full_rho_lo / full_rho_hi: Spearman with the full-data scores, mean and range over seeds."""

    sampler: str
    top_shared: float
    seed_rho: float
    full_rho: float
    full_rho_lo: float
    full_rho_hi: float


def seed_stats(sampler: str, seed_scores: list[np.ndarray], full: np.ndarray, k: int = 10) -> SeedStats:
    """:class:`SeedStats` of the (n_train,) scores of one test point under each seed's Hessian sample."""
    from influence_core.evaluation import metrics

    pairs = [(a, b) for a in range(len(seed_scores)) for b in range(a + 1, len(seed_scores))]
    rho = [metrics.spearman(s, full) for s in seed_scores]
    return SeedStats(
        sampler,
        _pair_mean([metrics.topk_overlap(seed_scores[a], seed_scores[b], k) for a, b in pairs]),
        _pair_mean([metrics.spearman(seed_scores[a], seed_scores[b]) for a, b in pairs]),
        float(np.mean(rho)),
        float(np.min(rho)),
        float(np.max(rho)),
    )


def _which(values: dict[str, float], higher: str, tie: float = TIE) -> str:
    """ "**a** is {higher}" for the larger of two values, or "they are about the same" within ``tie``."""
    (a, va), (b, vb) = values.items()
    if abs(va - vb) < tie:
        return "the two are about the same"
    return f"**{a if va > vb else b}** is {higher}"


def seeds_claims(stats: list[SeedStats], m: int, k: int = 10) -> list[str]:
    """What step 2's numbers say, for two samplers (the first is the random baseline), in four sentences."""
    base, other = stats
    top = {base.sampler: base.top_shared, other.sampler: other.top_shared}
    whole = {base.sampler: base.seed_rho, other.sampler: other.seed_rho}
    full = {base.sampler: base.full_rho, other.sampler: other.full_rho}
    lowest = min(base.seed_rho, other.seed_rho)
    out = [
        f"**At the very top**, two seeds of {base.sampler} share {base.top_shared:.0%} of their top-{k} helpful "
        f"points, two seeds of {other.sampler} {other.top_shared:.0%}: {_which(top, 'steadier at the top')}.",
        f"**Over the whole ranking** (Spearman between two seeds' scores of all training points) {base.sampler} "
        f"reaches ρ = {base.seed_rho:.2f} and {other.sampler} ρ = {other.seed_rho:.2f}: "
        + (
            f"with m = {m} points, the order of the training points below the top few depends on the seed."
            if lowest < 0.9
            else f"two samples of m = {m} points order the training set almost the same way."
        ),
        f"**Against the full-data answer** (Spearman, mean over seeds) {base.sampler} reaches "
        f"{base.full_rho:.2f} and {other.sampler} {other.full_rho:.2f}: {_which(full, 'closer to it')}.",
    ]
    supports = [
        name
        for name, values in (("the top-10", top), ("the whole ranking", whole))
        if values[other.sampler] - values[base.sampler] >= TIE
    ]
    contradicts = [
        name
        for name, values in (("the top-10", top), ("the whole ranking", whole))
        if values[base.sampler] - values[other.sampler] >= TIE
    ]
    if supports and not contradicts:
        verdict = f"here it holds on {' and '.join(supports)}."
    elif contradicts and not supports:
        gain = (
            "closeness to the full-data answer"
            if full[other.sampler] - full[base.sampler] >= TIE
            else "nothing measurable on this test point"
        )
        verdict = (
            f"here it does not: {base.sampler} is the steadier one on {' and '.join(contradicts)}; what "
            f"{other.sampler} buys is {gain}."
        )
    elif supports and contradicts:
        verdict = (
            f"here it holds on {' and '.join(supports)} and is reversed on {' and '.join(contradicts)}: "
            "which sampler is 'consistent' depends on the measure."
        )
    else:
        verdict = "here the two samplers are about equally consistent on both measures."
    out.append(f"The paper expects the random sample to be the inconsistent one; {verdict}")
    return out


def removal_claims(records: list[dict], class_name: str) -> list[str]:
    """What step 4's class removals say (one record per sampler, ``ClassRemoval.run(...).to_dict()`` with a
    retrained reference): what α = 1 predicts, what the α chosen on the selection half does, how much the
    sampler matters."""
    base = records[0]
    one, sel, ref = base["at_one"], base["selected"], base["reference"]
    rel_one, rel_sel = ref["relative_distance"]["alpha_1"], ref["relative_distance"]["selected_alpha"]
    keeps = one["forget"] < 0.5
    out = [
        f"**α = 1 is the influence function's own prediction** of the model retrained without class "
        f"{class_name}: with the {base['sampler']} sample it forgets {one['forget']:.0%} of the class's test "
        f"points and keeps {one['retain']:.0%} of the others (F1 {one['f1']:.3f}). "
        + (
            f"It does not forget the class: the model still predicts {class_name} for most of its test points, "
            f"and the parameters stay at {rel_one:.0%} of the original distance to the retrained ones. Removing a "
            "whole class (about a tenth of the data) is far outside the small change a first-order (linear) "
            "prediction is accurate for."
            if keeps
            else f"It leaves the parameters at {rel_one:.0%} of the original distance to the retrained ones."
        )
    ]
    if sel["f1"] - one["f1"] >= TIE:
        out.append(
            "**The α step does the forgetting**: the same direction "
            + ("lengthened" if sel["alpha"] > 1 else "shortened")
            + f" to α = {sel['alpha']:.3g} "
            f"(chosen on the selection half of the test set) reaches an honest F1 of {sel['f1']:.3f} on the "
            f"other half, at {rel_sel:.0%} of the original distance to the retrained parameters. What the "
            "influence function contributes is the direction of the update, not its length."
        )
    else:
        out.append(
            f"The α chosen on the selection half ({sel['alpha']:.3g}) changes little: honest F1 "
            f"{sel['f1']:.3f} against {one['f1']:.3f} at α = 1."
        )
    f1 = {r["sampler"]: r["selected"]["f1"] for r in records}
    spread = max(f1.values()) - min(f1.values())
    best = [name for name, value in f1.items() if value >= max(f1.values()) - 1e-3]
    if spread < 0.01:
        out.append(
            f"**The sampler barely matters here**: the honest F1 of {', '.join(f1)} differ by at most "
            f"{spread:.3f}. The paper reports a gain from representative samples; on this model, at this "
            "m, the α step dwarfs any difference between samples."
        )
    else:
        lead = " and ".join(f"**{b}**" for b in best) + (" give" if len(best) > 1 else " gives")
        out.append(
            f"{lead} the highest honest F1 ({f1[best[0]]:.3f}), {spread:.3f} above the lowest "
            f"({min(f1, key=f1.get)}); with one seed per sampler, check on the Class removal page (several "
            "seeds) whether that lead is larger than the spread across seeds."
        )
    return out


def lds_claims(rows: list[dict], baselines: dict[str, float], ceiling: float, m: int = 128) -> list[str]:
    """What step 5's committed study says at m <= ``m``: the full-data line and the noise ceiling, the best
    sampler and how much of the gap from the gradient dot to the full-data line it closes, the random baseline."""
    full, dot = baselines.get("full-data influence", float("nan")), baselines.get("gradient dot", float("nan"))
    within = [r for r in rows if r["m"] == m]
    out = [
        f"Retraining agrees with itself at LDS {ceiling:.3f} (the noise ceiling); influence with the full-data "
        f"Hessian reaches {full:.3f}, the gradient dot (no Hessian) {dot:.3f}."
    ]
    if within:
        best = max(within, key=lambda r: r["lds_mean"])
        rnd = next((r for r in within if r["sampler"] == "random"), None)
        share = (best["lds_mean"] - dot) / (full - dot) if full > dot else float("nan")
        text = (
            f"At m = {m}, the best sampler is **{best['sampler']}** (LDS {best['lds_mean']:.3f} ± "
            f"{best['lds_std']:.3f} over seeds), {share:.0%} of the way from the gradient dot to the full-data "
            "line"
        )
        if rnd is not None and rnd is not best:
            lead = best["lds_mean"] - rnd["lds_mean"]
            spread = max(best["lds_std"], rnd["lds_std"])
            text += f"; random reaches {rnd['lds_mean']:.3f}, so the lead over random ({lead:.3f}) is " + (
                "larger than the spread across seeds."
                if lead > spread
                else "within the spread across seeds: treat them as tied."
            )
        out.append(text + ("" if text.endswith(".") else "."))
    return out


def mislabel_claims(auc: dict[str, float], found: dict[str, float]) -> list[str]:
    """What step 6's detection curves say: self-influence against the training loss (AUC and share found after
    inspecting 10%), and why they agree or not."""
    si, loss = auc["self-influence"], auc["training loss"]
    if abs(si - loss) < 0.01:
        head = (
            f"**Self-influence finds the flipped labels no better than the training loss** here (AUC "
            f"{si:.2f} against {loss:.2f}; {found['self-influence']:.0%} against {found['training loss']:.0%} "
            "found after inspecting 10%)."
        )
    elif si > loss:
        head = (
            f"**Self-influence finds the flipped labels better than the training loss** (AUC {si:.2f} against "
            f"{loss:.2f}; {found['self-influence']:.0%} against {found['training loss']:.0%} after 10%)."
        )
    else:
        head = (
            f"**The training loss finds the flipped labels better than self-influence** (AUC {loss:.2f} against "
            f"{si:.2f}; {found['training loss']:.0%} against {found['self-influence']:.0%} after 10%)."
        )
    why = (
        "Why: for logistic regression a point's gradient is (p − y) ⊗ x, so its self-influence grows with the "
        "same misfit its loss measures: a flipped label the model does not fit has both a large loss and a large "
        "self-influence, and the two rankings nearly coincide. Self-influence can add something only where the "
        "loss is small on wrong labels, i.e. for a model flexible enough to fit them."
    )
    return [head, why]


def map_claims(rows: list[dict], population_confidence: float) -> list[str]:
    """What step 3's table says: which sample is closest to the training set's class mix and confidence mix
    (``class_tv``, ``confidence_tv`` per sampler), and which samples lean to less confident points (mean
    confidence more than 0.02 below the training set's ``population_confidence``)."""
    cls = min(rows, key=lambda r: r["class_tv"])
    conf = min(rows, key=lambda r: r["confidence_tv"])
    out = [
        f"Closest to the training set's class mix: **{cls['sampler']}** (TV distance {cls['class_tv']:.2f}); "
        f"closest to its confidence mix: **{conf['sampler']}** (TV distance {conf['confidence_tv']:.2f})."
    ]
    low = [r for r in rows if r["mean confidence"] < population_confidence - 0.02]
    means = ", ".join(f"{r['sampler']} {r['mean confidence']:.2f}" for r in rows)
    out.append(
        f"Mean confidence of each sample: {means} (training set {population_confidence:.2f}). "
        + (
            f"{' and '.join('**' + r['sampler'] + '**' for r in low)} lean{'s' if len(low) == 1 else ''} "
            "towards points the model is unsure about."
            if low
            else "No sample leans towards points the model is unsure about by more than 0.02."
        )
    )
    return out


SEED_STUDY = "docs/lesson/seed_agreement.json"
"""The committed measurement behind step 2's "at which m" (``python benchmarks/lesson_seeds.py``)."""


def seed_study_claims(rows: list[dict], base: str = "random", other: str = "importance") -> list[str]:
    """What the committed seed study says (per sampler and m: ``top10_shared``, ``seed_spearman``,
    ``full_spearman``, means over its test points): how much ``base`` samples agree at the top and over the whole
    ranking across m, and from which m ``other`` is closer to the full-data answer."""
    mine = sorted((r for r in rows if r["sampler"] == base), key=lambda r: r["m"])
    theirs = {r["m"]: r for r in rows if r["sampler"] == other}
    if not mine:
        return []
    top = [r["top10_shared"] for r in mine]
    whole = [r["seed_spearman"] for r in mine]
    ms = f"m = {mine[0]['m']}–{mine[-1]['m']}"
    out = [
        f"Over the study's test points, two {base} samples share {min(top):.0%}–{max(top):.0%} of their top-10 at "
        f"{ms}, but correlate only ρ = {min(whole):.2f}–{max(whole):.2f} over the whole ranking: "
        + (
            "by this measure random samples disagree at every m measured."
            if max(whole) < 0.9
            else f"the whole ranking settles (ρ ≥ 0.9) from m = "
            f"{next(r['m'] for r in mine if r['seed_spearman'] >= 0.9)}."
        )
    ]
    closer = [r["m"] for r in mine if r["m"] in theirs and theirs[r["m"]]["full_spearman"] - r["full_spearman"] >= TIE]
    steadier = [
        r["m"] for r in mine if r["m"] in theirs and theirs[r["m"]]["seed_spearman"] - r["seed_spearman"] >= TIE
    ]
    if closer:
        out.append(
            f"{other} is closer to the full-data answer than {base} (Spearman ahead by 0.05 or more) at m = "
            f"{', '.join(str(m) for m in closer)}."
        )
    else:
        out.append(f"{other} is never closer to the full-data answer than {base} by 0.05 or more in this study.")
    out.append(
        f"{other}'s seeds agree with each other over the whole ranking clearly more than {base}'s (by 0.05 or "
        f"more) only at m = {', '.join(str(m) for m in steadier)}."
        if steadier
        else f"{other}'s seeds never agree with each other clearly more than {base}'s (by 0.05 or more): what "
        "it gains is closeness to the full-data answer, not consistency."
    )
    return out


def load_seed_study(run: RunConfig, root=None) -> dict | None:
    """The committed seed study (:data:`SEED_STUDY`) when it was measured on ``run``'s model (dataset, arch,
    hidden width, epochs, seed), else None (a study of another model says nothing about this one)."""
    import json
    from pathlib import Path

    path = (Path(root) if root else Path(__file__).resolve().parents[1]) / SEED_STUDY
    if not path.exists():
        return None
    study = json.loads(path.read_text())
    model = study.get("model", {})
    if (model.get("dataset"), model.get("arch"), model.get("hidden"), model.get("epochs"), model.get("seed")) != (
        run.data.name,
        run.model.arch,
        run.model.hidden,
        run.model.epochs,
        run.model.seed,
    ):
        return None
    return study


MISLABEL_STUDY = "docs/lesson/mislabel_rankings.json"
"""The committed measurement behind step 6's "when" (``python benchmarks/lesson_mislabel.py``)."""
FITS_LOSS = float(np.log(2.0))
"""A model "fits" the flipped labels when their mean training loss is below ln 2 (the noisy label then gets more
than half of the probability, on average)."""


def mislabel_study_claims(rows: list[dict]) -> list[str]:
    """When self-influence beats the training loss, from the committed measurement's rows (per model: AUC of both
    rankings and the mean training loss of the flipped points): the models that fit the flipped labels against
    those that do not."""
    out = []
    for fits, what in ((False, "does not fit the flipped labels"), (True, "fits the flipped labels")):
        group = [r for r in rows if (r["mean_loss_flipped"] < FITS_LOSS) == fits]
        if not group:
            continue
        lead = [r["auc_self_influence"] - r["auc_training_loss"] for r in group]
        models = ", ".join(dict.fromkeys("logistic regression" if r["model"] == "logreg" else "the MLP" for r in group))
        loss = [r["mean_loss_flipped"] for r in group]
        verdict = (
            f"self-influence and the loss differ by at most {max(abs(x) for x in lead):.3f} AUC"
            if max(abs(x) for x in lead) < 0.01
            else f"self-influence leads the loss by {min(lead):.3f}–{max(lead):.3f} AUC"
            if min(lead) > 0
            else f"the difference ranges from {min(lead):+.3f} to {max(lead):+.3f} AUC (self-influence minus loss)"
        )
        out.append(
            f"Where the model {what} ({models}; mean training loss on them {min(loss):.2f}–{max(loss):.2f}, "
            f"{len(group)} settings), {verdict}."
        )
    return out


def load_mislabel_study(root=None) -> dict | None:
    """The committed mislabel measurement (:data:`MISLABEL_STUDY`), or None when it is missing."""
    import json
    from pathlib import Path

    path = (Path(root) if root else Path(__file__).resolve().parents[1]) / MISLABEL_STUDY
    return json.loads(path.read_text()) if path.exists() else None

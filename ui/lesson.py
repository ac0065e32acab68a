"""The workshop lesson (no Streamlit): six steps, each a title, what it sets up, what to look at and an exercise.

Each step's :meth:`Step.settings` are the session-state keys of the other pages' widgets (``inf_*`` on Influence,
``smp_*`` on Samplers, ``rm_*`` on Class removal, ``faith_*`` on Faithfulness, ``exp_*`` on Explorer), so one click
on the lesson page prepares the page the step points to: the student opens it and finds the same test point,
samplers, m and seeds the lesson talks about.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig

LESSON_M = 50  # a small Hessian sample: the random sample's inconsistency is plain at this size
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
            return {"inf_mode": "by index", "inf_index": t, "inf_a": "random", "inf_b": "importance",
                    "inf_m": 200, "inf_seed": 0, "inf_full": True, "inf_k": 8}
        if self.key == "seeds":
            return {"inf_mode": "by index", "inf_index": t, "inf_a": "random", "inf_b": "importance",
                    "inf_m": LESSON_M, "inf_seed": 0, "inf_full": True, "inf_nseeds": LESSON_SEEDS,
                    "inf_spread": True}
        if self.key == "map":
            return {"smp_samplers": list(LESSON_SAMPLERS), "smp_m": LESSON_M, "smp_seed": 0, "smp_method": "pca",
                    "smp_space": "features", "smp_colour": "label"}
        if self.key == "removal":
            return {"rm_class": LESSON_CLASS, "rm_samplers": ["feature", "importance"], "rm_m": LESSON_REMOVAL_M,
                    "rm_seeds": 1, "rm_solver": "cg", "rm_reference": True, "rm_memory": False}
        if self.key == "lds":
            return {"faith_study": "digits_mlp", "faith_budget": "m", "faith_limit": 128.0, "faith_limit_kind": "m"}
        if self.key == "mislabel":
            return {"exp_colour": "self-influence", "exp_index_kind": "train"}
        raise KeyError(self.key)


STEPS: tuple[Step, ...] = (
    Step("score", "1. What is an influence score?",
         "One test point and the training points that helped or harmed its prediction most, with the Hessian of "
         "the whole training set (the best an influence function can do on this model).",
         "The score of training point j is (1/n)·∇ℓ(test)ᵀ(H + δI)⁻¹∇ℓ(j): the predicted increase of the test "
         "loss if j were removed. Helpful points (positive) usually share the test point's true label; harmful "
         "ones (negative) often look like it but carry another label.",
         "Before you look: guess which digit the most harmful training point shows. Then open the Influence page, "
         "click another wrong (orange) cross on the map and check whether your rule still holds.",
         "pages/2_Influence.py", "Open Influence with this test point"),
    Step("seeds", "2. Why is a random Hessian sample inconsistent?",
         f"The same test point with the Hessian estimated on {LESSON_M} random training points, five times with "
         "five seeds, beside five importance samples of the same size.",
         "Compare the top-5 lists across seeds, and each seed's Spearman correlation and top-10 overlap with the "
         "full-data answer: seeds can agree on the very top and still rank the rest differently, and all of them "
         "can miss the full-data answer in the same way. A practitioner who ran this once would report whichever "
         "ranking their seed gave.",
         f"On the Influence page (the spread is switched on), raise m from {LESSON_M} to 400: how does the spread "
         "change? Is sampler B (importance) steadier than random at the same m?",
         "pages/2_Influence.py", "Open Influence (spread across seeds)"),
    Step("map", "3. What does a representative sample look like?",
         f"The {LESSON_M} points each sampler puts into the Hessian, on a PCA map of the model's features.",
         "Random leaves holes and clumps; the feature sampler spreads one point per k-means cluster; the importance "
         "sampler favours uncertain points (and reweights them). The table says how far each sample's class and "
         "confidence mix is from the whole training set.",
         "On the Samplers page, change the seed a few times: which sampler's picture changes least? Switch the map "
         "to logits: does the answer change?",
         "pages/1_Samplers.py", "Open Samplers with these samples"),
    Step("removal", "4. Class removal against retraining",
         f"Forget class {LESSON_CLASS} with one influence (Newton) step, the Hessian on {LESSON_REMOVAL_M} points "
         "of the other classes, and compare with a model retrained from scratch without the class.",
         "The honest F1 is measured on the reporting half of the test set at the step size α chosen on the other "
         "half. Agreement = share of reporting-half test points on which the updated model predicts what the "
         "retrained one predicts.",
         "On the Class removal page, run the same removal for class 0 and class 7: does the same sampler win? Is "
         "the difference between samplers larger than between classes?",
         "pages/3_Class_removal.py", "Open Class removal with these settings"),
    Step("lds", "5. Which sampler is faithful? (LDS)",
         "The linear datamodeling score from the committed study: retrain on 100 random halves of the training set "
         "and ask how well each sampler's scores rank what retraining actually did.",
         "The noise ceiling is what retraining reaches against itself; the full-data line is the best an influence "
         "function does here. Look for the sampler that reaches the full-data line at the smallest m.",
         "On the Faithfulness page, set the budget to m = 64, then to a solve time of 0.1 s: which sampler would "
         "you pick each time, and is its lead larger than the across-seed band?",
         "pages/4_Faithfulness.py", "Open Faithfulness"),
    Step("mislabel", "6. Find the mislabelled examples",
         f"Flip {MISLABEL_SHARE:.0%} of the training labels (seeded), train logistic regression on them, and "
         "inspect the training set in the order of self-influence (1/n)·∇ℓ_jᵀ(H + δI)⁻¹∇ℓ_j.",
         "The curve is the share of flipped labels found against the share of the training set inspected; random "
         "inspection is the diagonal. The training loss is the simplest ranking: compare.",
         "How much of the training set do you need to inspect to find half of the flipped labels? Then open the "
         "Explorer, coloured by the self-influence of the app's own model (trained on the clean labels): are its "
         "highest values ambiguous digits, or digits that look mislabelled in the original data?",
         "pages/6_Explorer.py", "Open Explorer coloured by self-influence"),
)
STEP_KEYS = tuple(s.key for s in STEPS)


def lesson_run(current: RunConfig, default: RunConfig) -> RunConfig:
    """The model the lesson uses: the current one when it is a digits MLP or logistic regression (so a teacher's
    trained model is kept), else ``default`` (the digits MLP)."""
    if current.data.name == "digits" and current.model.arch in ("mlp", "logreg"):
        return current
    return default

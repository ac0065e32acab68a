"""The words a student meets in the app, each explained in a sentence or two (no Streamlit): the Glossary page lists
them all, and each page opens a "Words on this page" panel with the ones it uses."""

from __future__ import annotations

GLOSSARY: dict[str, str] = {
    "influence score": "score[t, j] = (1/n) ∇ℓ(z_t)ᵀ (H + δI)⁻¹ ∇ℓ(z_j): the predicted increase of test point t's "
    "loss if training point j were removed and the model retrained. Positive = helpful (the "
    "point helped the prediction), negative = harmful.",
    "Hessian": "The curvature of the training loss with respect to the model's parameters (a p × p matrix). Influence "
    "needs its inverse applied to a gradient (an inverse-Hessian-vector product, iHVP).",
    "Hessian sample": "The m training points the Hessian is estimated on, chosen by a sampler, instead of all n: "
    "cheaper, but the scores then depend on which points were drawn (and on the seed).",
    "sampler": "The rule that picks the Hessian sample (random, feature, logit, importance, ...); each sampler menu "
    "says its rule in one sentence.",
    "m": "The Hessian sample size: how many training points the Hessian is estimated on.",
    "seed": "The number that fixes the random choices (which points a sampler draws); the same seed gives the same "
    "sample.",
    "Gauss-Newton": "The part of the Hessian that is always positive semi-definite, Jᵀ(∇²ℓ)J (J: the network's "
    "Jacobian): it drops the term with second derivatives of the network, so the inverse exists. The "
    "app uses it for every model (for logistic regression it equals the Hessian).",
    "damping": "δ added to the Hessian's diagonal (H + δI) before inverting it: keeps the solve stable when some "
    "directions have almost no curvature; larger δ shrinks every score towards the gradient dot.",
    "self-influence": "(1/n) ∇ℓ_jᵀ (H + δI)⁻¹ ∇ℓ_j: the influence of a training point on its own loss, i.e. how "
    "much its own loss would rise if it were left out; large for points the model can fit only "
    "by memorising them (e.g. wrong labels).",
    "gradient dot": "The score ∇ℓ(test)ᵀ∇ℓ(train) without any Hessian (H replaced by I): the cheapest baseline.",
    "Spearman": "Rank correlation of two score vectors (1 = same order, 0 = unrelated): how similarly two Hessians "
    "rank the training points.",
    "top-k overlap": "The share of the k highest-scoring training points that two rankings have in common.",
    "TV distance": "Total-variation distance between two distributions (e.g. a sample's class shares and the whole "
    "training set's): half the sum of the absolute differences; 0 = identical, 1 = no overlap.",
    "F1 (class removal)": "The harmonic mean of forget (1 − accuracy on the removed class's test points) and retain "
    "(accuracy on the other classes): high only when the class is forgotten AND the rest kept.",
    "α (step size)": "The update is θ + αΔ with Δ the influence function's predicted change; α = 1 is the influence "
    "function's own prediction, larger α goes further along the same direction.",
    "honest F1": "F1 on one half of the test set (reporting half) at the α chosen on the other half (selection "
    "half): unlike the best F1 along the α path, it does not pick α on the data it is scored on.",
    "LDS": "Linear datamodeling score: retrain the model on many random halves of the training set and take the "
    "Spearman correlation between the test losses that influence scores predict and those retraining "
    "produced (1 = influence ranks the retrained outcomes perfectly).",
    "noise ceiling": "The LDS that retraining reaches against itself (two retraining seeds of the same halves): no "
    "influence method can be expected to beat it.",
    "shipped ground truth": "The retrained outputs of the LDS for one model, kept in the repository "
    "(ground_truth/): any way of computing influence on that very model (same recipe, seed and data) is scored "
    "by LDS in seconds, without retraining; another model's influence cannot be scored against them.",
    "Pareto frontier": "Among methods measured by cost and faithfulness, those that no other method beats on both: "
    "none is at most as costly and at least as faithful. Below the frontier, a cheaper method does as well.",
    "cost (× forward+backward)": "Time to compute influence (sample, fit, and scores of the test points against "
    "every training point) divided by the time of one forward and backward pass over the training set, so it "
    "compares across machines.",
    "iHVP solver": "How (H + δI)⁻¹v is computed: exact (a factorisation, small models), cg (conjugate gradient), "
    "lissa (a Neumann series), or factored approximations (kfac, ekfac, arnoldi).",
}
"""Term -> one or two plain sentences. Pages list the terms they use in :data:`PAGE_TERMS`."""

PAGE_TERMS: dict[str, tuple[str, ...]] = {
    "samplers": ("Hessian sample", "sampler", "m", "seed", "TV distance"),
    "influence": (
        "influence score",
        "Hessian sample",
        "Gauss-Newton",
        "damping",
        "iHVP solver",
        "Spearman",
        "top-k overlap",
    ),
    "removal": ("α (step size)", "F1 (class removal)", "honest F1", "Gauss-Newton", "damping", "iHVP solver"),
    "faithfulness": (
        "LDS",
        "noise ceiling",
        "shipped ground truth",
        "Pareto frontier",
        "cost (× forward+backward)",
        "gradient dot",
        "Hessian sample",
        "m",
        "iHVP solver",
    ),
    "lesson": (
        "influence score",
        "Hessian sample",
        "Spearman",
        "top-k overlap",
        "TV distance",
        "α (step size)",
        "honest F1",
        "LDS",
        "noise ceiling",
        "gradient dot",
        "self-influence",
    ),
    "explorer": ("influence score", "self-influence", "Hessian sample", "damping"),
}


def glossary_markdown(terms=None) -> str:
    """Markdown definition list of ``terms`` (all when None), in the given order."""
    names = list(GLOSSARY) if terms is None else list(terms)
    return "\n\n".join(f"**{t}**: {GLOSSARY[t]}" for t in names)

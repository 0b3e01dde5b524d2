"""Ranking from a reviewer's marks: images like these positives and unlike those negatives.

With positives only, the query is their mean direction (kNN). Once there is a
negative, a linear classifier is fitted on the standardised embeddings, as
Scale's Autotag does, and every image is scored by it. A random sample of
unmarked images joins the negatives with a small weight: edge cases are rare, so
most of the lake is a fair guess of "not this", and it keeps the classifier from
keying on whatever the few marked images happen to share. On the demo lake this
cut the images viewed per edge case found from 1.50 to 1.33 (BENCHMARKS.md).

``loop_scores`` is the reviewer loop (`edgemine similar ... --not ...` when the lake
has predictions): the classifier's score plus the production model's doubt, weighted
by how well the doubt told the marks apart so far. Over the benchmark's five kinds of
edge case it cut the mean views per edge image from 19.96 to 8.61 (docs/MINING.md).
The production model's predicted class (one-hot) joins its features: 8.33 to 8.01
over 15 seeds per kind. On pretrained embeddings (EfficientNet-Lite0, ImageNet) the
classifier sees the raw standardised embedding: PCA whitening (``whitening``,
``LoopSettings.whiten``) helped random-weight embeddings (8.61 to 8.34) but costs
pretrained ones (3.88 to 3.20 without it), and the doubt weighs 2 x skill, not 32
(3.20 to 2.66; docs/MINING.md, "On pretrained features").
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from mining.core.errors import SearchError
from mining.search.index import VectorIndex

UNLABELED_SAMPLE = 300
UNLABELED_WEIGHT = 0.1
L2 = 1.0
WHITEN_SAMPLE = 10_000


def mean_direction(vectors: np.ndarray) -> np.ndarray:
    """float32 (d,): the normalised mean of unit rows (n, d), the query for 'like these'."""
    direction = np.asarray(vectors, np.float32).mean(0)
    norm = np.linalg.norm(direction)
    if norm == 0:
        raise SearchError("the positives cancel out: their mean direction is zero")
    return direction / norm


def classifier_query(index: VectorIndex, positives: np.ndarray, negatives: np.ndarray, *,
                     exclude: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """float32 (d,): a direction ``q`` whose inner product with an image vector ranks
    it as the fitted classifier does. The classifier is linear on standardised
    vectors (x - mean) / std, so its score is ``x . (w / std)`` plus a constant."""
    return _classifier(index.vectors, np.concatenate([positives, negatives]), len(positives), exclude=exclude,
                       seed=seed, settings=LOOP, stats=index.stats())


@dataclass(frozen=True)
class LoopSettings:
    """How the reviewer loop scores the lake (tests/benchmarks/bench_mining.py chose these).

    ``whiten``: principal components the classifier sees, each scaled to unit
    variance (PCA whitening fitted on the lake, see ``whitening``; 0, the default:
    the raw standardised embedding, better on pretrained embeddings);
    ``prior_first``: weight of the model's doubt beside the seeds' similarity before
    any negative; ``prior_feature``: scale of the doubt columns appended to the
    classifier's features; ``blend``: weight of the seeds' similarity beside the
    classifier's score, halved after ``blend_half`` marks; ``prior_score``: weight of
    the doubt added to the classifier's score, times its skill on the marks so far
    when ``prior_adaptive`` (see _doubt_skill; 2 on pretrained embeddings, 32 was
    chosen on random ones); ``predicted_feature``: whether the model's
    predicted class (one-hot, ``predicted`` of loop_scores) joins the classifier's features."""

    whiten: int = 0
    prior_first: float = 0.0
    prior_feature: float = 0.0
    prior_score: float = 2.0
    prior_adaptive: bool = True
    predicted_feature: bool = True
    blend: float = 0.0
    blend_half: int = 20
    unlabeled: int = UNLABELED_SAMPLE
    unlabeled_weight: float = UNLABELED_WEIGHT
    l2: float = L2


LOOP = LoopSettings()


def _z(values: np.ndarray) -> np.ndarray:
    """Values as z-scores (mean 0, std 1), so that scores of different kinds add."""
    std = values.std(0)
    return (values - values.mean(0)) / np.where(std > 0, std, 1)


def loop_scores(index: VectorIndex, positives: np.ndarray, negatives: np.ndarray, *,
                prior: np.ndarray | None = None, positive_prior: np.ndarray | None = None,
                negative_prior: np.ndarray | None = None, exclude: np.ndarray | None = None, seed: int = 0,
                settings: LoopSettings = LOOP, predicted: np.ndarray | None = None,
                positive_predicted: np.ndarray | None = None,
                negative_predicted: np.ndarray | None = None) -> np.ndarray:
    """float32 (n,): a score for every index position, higher is more like the
    positives (float32 (p, d)) and unlike the negatives (float32 (m, d), may be empty).

    ``prior``: float32 (n, f) per index position, the production model's doubt
    (mining.search.similar.model_uncertainty), or None; ``positive_prior`` / ``negative_prior``
    the same for the marks, (p, f) and (m, f) (None: the lake's mean, e.g. for a file).
    ``predicted``: float32 (n, c) per index position, the one-hot of the production
    model's predicted class (mining.search.similar.predicted_classes), or None;
    ``positive_predicted`` / ``negative_predicted`` the same for the marks (None: the
    lake's mean). Appended to the classifier's features (``settings.predicted_feature``).
    Scores are z-scored parts added: the classifier's (once there is a negative), the
    seeds' similarity and the doubt, weighted by ``settings``."""
    similarity = _z(index.vectors @ mean_direction(positives))
    scores = similarity
    marks = len(positives) + len(negatives)
    if len(negatives):
        features, marked = index.vectors, np.concatenate([positives, negatives])
        if settings.whiten:
            mean, projection = _index_whitening(index, settings.whiten)
            features, marked = _whiten(features, mean, projection), _whiten(marked, mean, projection)
        if prior is not None and settings.prior_feature:
            doubt = settings.prior_feature * _z(prior)
            features = np.concatenate([features, doubt], 1)
            marked_prior = _marks_prior(prior, doubt, positive_prior, len(positives), negative_prior, len(negatives))
            marked = np.concatenate([marked, marked_prior], 1)
        if predicted is not None and settings.predicted_feature:
            # Why: the model's mistakes are not spread like its classes (an unseen class is
            # called any class alike, tiny objects are confused with the small ones), a
            # signal the embedding lacks; the classifier standardises each column, so
            # these weigh as much as one whitened component each (docs/MINING.md).
            features = np.concatenate([features, np.asarray(predicted, np.float32)], 1)
            marked_predicted = _marks_rows(predicted, (positive_predicted, len(positives)),
                                           (negative_predicted, len(negatives)))
            marked = np.concatenate([marked, marked_predicted], 1)
        w = _classifier(features, marked, len(positives), exclude=exclude, seed=seed, settings=settings)
        scores = _z(features @ w)
        blend = settings.blend * settings.blend_half / (settings.blend_half + marks)
        scores = scores + blend * similarity
        if prior is not None and settings.prior_score:
            weight = settings.prior_score
            if settings.prior_adaptive:
                weight *= _doubt_skill(prior, positive_prior, negative_prior)
            scores = scores + weight * _z(prior.mean(1))
    elif prior is not None and settings.prior_first:
        scores = scores + settings.prior_first * _z(prior.mean(1))
    return scores.astype(np.float32)


def whitening(vectors: np.ndarray, components: int, sample: int = WHITEN_SAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """PCA whitening of the lake's embeddings: float32 mean (d,) and projection (d, c)
    such that ``(x - mean) @ projection`` has ``c`` uncorrelated unit-variance columns
    (c = ``components``, at most d and the rows fitted on; fitted on a seeded
    ``sample`` of rows for a large lake).

    Why: a random or generic backbone spreads its variance over a few directions
    that say little about a given edge case; standardising per dimension does not
    undo correlations, whitening does, so a classifier fitted on a few dozen marks
    weighs the quieter directions where snow, a new camera or small objects show up
    (over the benchmark's five kinds with random ResNet18 weights: mean 8.61 to 8.34
    views per edge image with 5 seeds, 8.41 to 8.06 with 10; glare worse, 1.9 to 2.9;
    docs/MINING.md). The weakest components are dropped: whitening them up only
    amplifies noise (256 of 512 was worse than 128). A pretrained embedding's loud
    directions are the ones that matter (object class, weather), so the loop leaves
    it off by default (``LoopSettings.whiten = 0``)."""
    # imported here: a search without negatives never needs it
    from sklearn.decomposition import PCA

    vectors = np.asarray(vectors, np.float32)
    if len(vectors) > sample:
        vectors = vectors[np.sort(np.random.default_rng(0).choice(len(vectors), sample, replace=False))]
    # one BLAS thread, as in fit_linear: on a busy machine more only wait for each other
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        pca = PCA(n_components=min(components, *vectors.shape), svd_solver="covariance_eigh").fit(vectors)
    scale = np.sqrt(np.maximum(pca.explained_variance_, 1e-12))
    return pca.mean_.astype(np.float32), (pca.components_.T / scale).astype(np.float32)


_WHITENINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _index_whitening(index: VectorIndex, components: int) -> tuple[np.ndarray, np.ndarray]:
    """``whitening`` of the index's vectors, fitted once per index object (its vectors
    never change; a grown lake loads a new index): a reviewer's session ranks many
    pages, and the PCA costs more than one page's classifier."""
    cached = _WHITENINGS.setdefault(index, {})
    if components not in cached:
        cached[components] = whitening(index.vectors, components)
    return cached[components]


def _whiten(rows: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """float32 (n, c): rows (n, d) whitened, then L2-normalised as the embeddings are."""
    out = (np.asarray(rows, np.float32) - mean) @ projection
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.where(norm > 0, norm, 1)).astype(np.float32)


def _doubt_skill(prior: np.ndarray, positive_prior: np.ndarray | None, negative_prior: np.ndarray | None) -> float:
    """How well the model's doubt told the marks apart so far: 2 AUC - 1 of the mean
    doubt, positives against negatives, clipped to [0, 1] (0 without both)."""
    if positive_prior is None or negative_prior is None or not len(positive_prior) or not len(negative_prior):
        return 0.0
    p, n = np.asarray(positive_prior).mean(1), np.asarray(negative_prior).mean(1)
    auc = ((p[:, None] > n[None]).mean() + 0.5 * (p[:, None] == n[None]).mean())
    return float(np.clip(2 * auc - 1, 0, 1))


def _marks_prior(prior, doubt, positive_prior, p, negative_prior, m) -> np.ndarray:
    """The scaled doubt columns of the marks, as ``doubt`` has them for the lake."""
    scale = doubt.std(0) / np.where(prior.std(0) > 0, prior.std(0), 1)
    return ((_marks_rows(prior, (positive_prior, p), (negative_prior, m)) - prior.mean(0)) * scale).astype(np.float32)


def _marks_rows(values: np.ndarray, *given_counts: tuple[np.ndarray | None, int]) -> np.ndarray:
    """float32 (p + m, c): the marks' rows of a per-image array ``values`` (n, c), each
    group given as (rows or None, count); None stands for the lake's mean (a file
    from outside has no prediction)."""
    mean = np.asarray(values, np.float32).mean(0)
    rows = [np.tile(mean, (count, 1)) if given is None else np.asarray(given, np.float32).reshape(count, -1)
            for given, count in given_counts]
    return np.concatenate(rows).astype(np.float32)


def _classifier(features: np.ndarray, marked: np.ndarray, positives: int, *, exclude: np.ndarray | None,
                seed: int, settings: LoopSettings, stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """float32 (f,): ``q`` whose inner product with a feature row ranks it as the
    classifier fitted on the marks (the first ``positives`` rows of ``marked``
    positive, the rest negative) and a weak-negative sample of unmarked rows does."""
    mean, std = stats if stats is not None else (features.mean(0), features.std(0))
    std = np.where(std > 0, std, 1)
    rng = np.random.default_rng(seed)
    pool = np.arange(len(features)) if exclude is None else np.setdiff1d(np.arange(len(features)), exclude)
    unlabeled = features[rng.choice(pool, min(settings.unlabeled, len(pool)), replace=False)]
    x = (np.concatenate([marked, unlabeled]) - mean) / std
    negatives = len(marked) - positives
    labels = np.concatenate([np.ones(positives), np.zeros(negatives + len(unlabeled))])
    negative_mass = negatives + settings.unlabeled_weight * len(unlabeled)
    weights = np.concatenate([np.full(positives, negative_mass / positives), np.ones(negatives),
                              np.full(len(unlabeled), settings.unlabeled_weight)])
    w = fit_linear(x.astype(np.float32), labels, weights, settings.l2)
    return (w / std).astype(np.float32)


def fit_linear(features: np.ndarray, labels: np.ndarray, weights: np.ndarray, l2: float = L2) -> np.ndarray:
    """Weighted L2-regularised logistic regression (scipy's L-BFGS with the exact
    gradient); returns the float32 (d,) weights (the bias does not change a ranking).

    ``features`` float32 (n, d), ``labels`` (n,) 0/1, ``weights`` (n,) per sample. The
    loss is the weighted mean log-loss plus ``l2 * |w|^2 / n``."""
    from scipy.optimize import minimize  # imported here: a search without negatives never needs it
    from scipy.special import expit
    from threadpoolctl import threadpool_limits

    x = np.ascontiguousarray(features, np.float64)
    y = np.asarray(labels, np.float64)
    sample_weight = np.asarray(weights, np.float64) / np.sum(weights)
    n, d = x.shape

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        z = x @ w + b
        # log(1 + e^z) - y z, written to stay finite for large |z|
        value = float(sample_weight @ (np.logaddexp(0, z) - y * z)) + l2 * float(w @ w) / n
        residual = sample_weight * (expit(z) - y)
        grad = np.concatenate([x.T @ residual + 2 * l2 * w / n, [residual.sum()]])
        return value, grad

    # One BLAS thread: the problem is small, and L-BFGS-B's many tiny calls slow down
    # 100x when a busy machine's BLAS threads wait for each other.
    with threadpool_limits(1, user_api="blas"):
        result = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 200})
    return result.x[:d].astype(np.float32)

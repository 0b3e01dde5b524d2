"""Ranking from a reviewer's marks: images like these positives and unlike those negatives.

With positives only, the query is their mean direction (kNN). Once there is a
negative, a linear classifier is fitted on the standardised embeddings, as
Scale's Autotag does, and every image is scored by it. A random sample of
unmarked images joins the negatives with a small weight: edge cases are rare, so
most of the lake is a fair guess of "not this", and it keeps the classifier from
keying on whatever the few marked images happen to share. On the demo lake this
cut the images viewed per edge case found from 1.50 to 1.33 (BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np

from mining.errors import SearchError
from mining.index import VectorIndex

UNLABELED_SAMPLE = 300
UNLABELED_WEIGHT = 0.1
L2 = 1.0


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
    mean, std = index.stats()
    rng = np.random.default_rng(seed)
    pool = np.arange(len(index)) if exclude is None else np.setdiff1d(np.arange(len(index)), exclude)
    unlabeled = index.vectors[rng.choice(pool, min(UNLABELED_SAMPLE, len(pool)), replace=False)] if len(pool) else index.vectors[:0]
    features = (np.concatenate([positives, negatives, unlabeled]) - mean) / std
    labels = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives) + len(unlabeled))])
    negative_mass = len(negatives) + UNLABELED_WEIGHT * len(unlabeled)
    weights = np.concatenate([
        np.full(len(positives), negative_mass / len(positives)),  # balance the classes
        np.ones(len(negatives)),
        np.full(len(unlabeled), UNLABELED_WEIGHT),
    ])
    w = fit_linear(features.astype(np.float32), labels, weights)
    return (w / std).astype(np.float32)


def fit_linear(features: np.ndarray, labels: np.ndarray, weights: np.ndarray, l2: float = L2) -> np.ndarray:
    """Weighted L2-regularised logistic regression (torch L-BFGS); returns the
    float32 (d,) weights (the bias does not change a ranking)."""
    import torch  # imported here: a search without negatives never needs it (start-up of `edgemine similar`)

    x = torch.from_numpy(np.ascontiguousarray(features, np.float32))
    y = torch.from_numpy(np.asarray(labels, np.float32))
    sample_weight = torch.from_numpy(np.asarray(weights, np.float32))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=100, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, weight=sample_weight, reduction="sum")
        value = value / sample_weight.sum() + l2 * w.square().sum() / len(y)
        value.backward()
        return value

    with torch.random.fork_rng(devices=[]):
        optimizer.step(loss)
    return w.detach().numpy().copy()

"""Diverse picks: k-center greedy (the coreset of Sener & Savarese, 2018) over vectors.

Each pick is the candidate farthest (Euclidean) from everything picked so far, and
from the ``centers`` given (what was already reviewed), so 100 picks cover the
candidates rather than crowd into their densest corner. The result is the classic
2-approximation of the k-center problem (Gonzalez, 1985): the largest distance from
any candidate to its nearest pick is at most twice the best possible.

One pick costs one pass over the candidates (a matrix-vector product: ``n x d``
multiply-adds), so ``k`` picks cost ``k`` passes; the passes run on the GPU when the
device policy gives one (torch), else as float32 BLAS on the CPU.
BENCHMARKS.md has the timings against a plain numpy loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mining.core.errors import QueueError

log = logging.getLogger(__name__)

CHUNK_ROWS = 1 << 16  # rows per block when distances to many centers are taken at once


@dataclass(frozen=True)
class CoresetPicks:
    """``order``: int64 (k,), rows of the candidates in the order picked.
    ``distances``: float32 (k,), each pick's Euclidean distance to the nearest earlier
    pick or given center when it was picked (inf for a first pick with no centers);
    non-increasing, and ``distances[-1]`` bounds every candidate's distance to its
    nearest pick once done (the covering radius), up to float32 rounding."""

    order: np.ndarray
    distances: np.ndarray


def k_center_greedy(vectors: np.ndarray, k: int, *, centers: np.ndarray | None = None, first: int | None = None,
                    device: str = "cpu") -> CoresetPicks:
    """Pick ``k`` rows of ``vectors`` by k-center greedy.

    Args:
        vectors: float32 (n, d) candidates.
        k: how many to pick (at most n).
        centers: float32 (m, d) points already covered (reviewed images); the first
            pick is then the candidate farthest from them.
        first: the row to pick first when there are no ``centers`` (a sampler's top
            candidate); default row 0.
        device: ``cpu``, or a torch device (``cuda``) to run the passes there.

    Returns:
        CoresetPicks: the rows in the order picked, with their distances.

    Raises:
        QueueError: no candidates, or k < 1.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if n == 0:
        raise QueueError("no candidates to pick diverse images from")
    if k < 1:
        raise QueueError(f"the number of diverse picks must be at least 1, got {k}")
    k = min(k, n)
    if device.startswith("cuda"):
        return _greedy_torch(x, k, centers, first, device)
    norms = np.einsum("ij,ij->i", x, x)
    if centers is not None and len(centers):
        nearest = _nearest_sq_distance(x, norms, np.asarray(centers, np.float32))
        start = int(np.argmax(nearest))
    else:
        nearest = np.full(n, np.inf, np.float32)
        start = 0 if first is None else int(first)
    order = np.empty(k, np.int64)
    distances = np.empty(k, np.float32)
    pick = start
    scratch = np.empty(n, np.float32)
    for step in range(k):
        order[step] = pick
        distances[step] = np.sqrt(max(float(nearest[pick]), 0.0))
        # Squared distance to the new pick: |x|^2 - 2 x.c + |c|^2, one matrix-vector product.
        np.matmul(x, x[pick], out=scratch)
        scratch *= -2.0
        scratch += norms
        scratch += norms[pick]
        np.minimum(nearest, scratch, out=nearest)
        nearest[pick] = -1.0  # picked: never again (rounding can leave its own distance above 0)
        if step + 1 < k:
            pick = int(np.argmax(nearest))
    return CoresetPicks(order, distances)


def _nearest_sq_distance(x: np.ndarray, norms: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """float32 (n,): squared distance of each row of ``x`` to its nearest center, in blocks of rows."""
    center_norms = np.einsum("ij,ij->i", centers, centers)
    out = np.empty(len(x), np.float32)
    for start in range(0, len(x), CHUNK_ROWS):
        block = x[start:start + CHUNK_ROWS] @ centers.T
        out[start:start + CHUNK_ROWS] = norms[start:start + CHUNK_ROWS] + (center_norms[None, :] - 2 * block).min(1)
    return out


def _greedy_torch(x: np.ndarray, k: int, centers: np.ndarray | None, first: int | None, device: str) -> CoresetPicks:
    import torch

    with torch.inference_mode():
        points = torch.from_numpy(x).to(device)
        norms = (points * points).sum(1)
        if centers is not None and len(centers):
            c = torch.from_numpy(np.asarray(centers, np.float32)).to(device)
            nearest = torch.full((len(points),), float("inf"), device=device)
            for start in range(0, len(points), CHUNK_ROWS):
                block = (
                    norms[start : start + CHUNK_ROWS, None]
                    - 2 * points[start : start + CHUNK_ROWS] @ c.T
                    + (c * c).sum(1)[None]
                )
                nearest[start:start + CHUNK_ROWS] = block.min(1).values
            pick = int(nearest.argmax())
        else:
            nearest = torch.full((len(points),), float("inf"), device=device)
            pick = 0 if first is None else int(first)
        order = torch.empty(k, dtype=torch.int64, device=device)
        distances = torch.empty(k, dtype=torch.float32, device=device)
        current = torch.tensor(pick, device=device)
        for step in range(k):  # no host round trip per pick: the argmax stays on the device
            order[step] = current
            distances[step] = nearest[current].clamp(min=0).sqrt()
            d = norms - 2 * (points @ points[current]) + norms[current]
            torch.minimum(nearest, d, out=nearest)
            nearest[current] = -1.0
            current = nearest.argmax()
        return CoresetPicks(order.cpu().numpy(), distances.cpu().numpy())


def k_center_brute_force(vectors: np.ndarray, k: int, *, centers: np.ndarray | None = None,
                         first: int = 0) -> CoresetPicks:
    """The same greedy from the full (n, n) distance matrix in float64: the reference the
    tests compare with (small n only)."""
    x = np.asarray(vectors, np.float64)
    full = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0))
    if centers is not None and len(centers):
        c = np.asarray(centers, np.float64)
        nearest = np.sqrt(np.maximum(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1), 0)).min(1)
        pick = int(np.argmax(nearest))
    else:
        nearest = np.full(len(x), np.inf)
        pick = first
    order, distances = [], []
    for _ in range(min(k, len(x))):
        order.append(pick)
        distances.append(nearest[pick])
        nearest = np.minimum(nearest, full[pick])
        nearest[order] = -1
        pick = int(np.argmax(nearest))
    return CoresetPicks(np.array(order, np.int64), np.array(distances, np.float32))

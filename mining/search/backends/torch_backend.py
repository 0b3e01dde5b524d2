"""torch on a GPU (or any torch device): exact kNN as matmul + top-k, Lloyd's
k-means with a k-means++ start. For CUDA machines whose faiss has no GPU
support; the tests run it on the CPU against numpy brute force."""

from __future__ import annotations

import numpy as np
import torch

from mining.search.backends import KMeansResult, check_kmeans_args, check_knn_args

# Rows of the database scored per matmul: bounds the (queries x rows) score block.
CHUNK_ROWS = 1 << 20


class TorchBackend:
    name = "torch"

    def __init__(self, device: torch.device | str = "cuda"):
        self.device = torch.device(device)

    def put(self, database: np.ndarray) -> torch.Tensor:
        """The database resident on the device, for repeated ``knn`` calls."""
        return torch.from_numpy(np.ascontiguousarray(database, dtype=np.float32)).to(self.device)

    def knn(self, database: np.ndarray | torch.Tensor, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(database, torch.Tensor):
            database, queries, k = check_knn_args(database, queries, k)
            database = self.put(database)
        else:
            if len(database) == 0:
                raise ValueError("knn over an empty database: there is nothing to search")
            # Shapes checked against one stand-in row: no copy of the resident rows back to the host.
            _, queries, _ = check_knn_args(np.zeros((1, database.shape[1]), np.float32), queries, k)
            k = min(k, len(database))
        q = torch.from_numpy(queries).to(self.device)
        best_scores, best_indices = None, None
        # TF32 would trade exactness for speed; these are exact float32 products.
        with torch.inference_mode(), _no_tf32():
            for start in range(0, len(database), CHUNK_ROWS):
                scores = q @ database[start : start + CHUNK_ROWS].T
                top = scores.topk(min(k, scores.shape[1]), dim=1)
                indices = top.indices + start
                if best_scores is None:
                    best_scores, best_indices = top.values, indices
                    continue
                joined = torch.cat([best_scores, top.values], 1)
                merged = joined.topk(min(k, joined.shape[1]), dim=1)
                best_scores = merged.values
                best_indices = torch.cat([best_indices, indices], 1).gather(1, merged.indices)
        return best_scores.cpu().numpy(), best_indices.cpu().numpy().astype(np.int64)

    def kmeans(self, x: np.ndarray, k: int, *, niter: int = 20, seed: int = 0) -> KMeansResult:
        x = check_kmeans_args(x, k)
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode(), _no_tf32():
            points = torch.from_numpy(x).to(self.device)
            centroids = _kmeans_plus_plus(points, k, generator)
            iterations = 0
            for iterations in range(1, niter + 1):  # noqa: B007 (reported below)
                assignment, _ = _assign(points, centroids)
                updated = _update(points, assignment, centroids, k)
                moved = (updated - centroids).abs().max().item()
                centroids = updated
                if moved == 0:
                    break
            assignment, distances = _assign(points, centroids)
        distances = distances.clamp_min(0).cpu().numpy()
        return KMeansResult(
            centroids=centroids.cpu().numpy(),
            assignment=assignment.cpu().numpy().astype(np.int64),
            distances=distances,
            inertia=float(distances.sum(dtype=np.float64)),
            iterations=iterations,
        )


def _assign(points: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each point and the squared distance to it. The choice uses
    cdist's matmul form (fast on a GPU); the distance reported is recomputed
    directly, since the matmul form loses digits far from the origin."""
    nearest = torch.cdist(points, centroids).argmin(dim=1)
    return nearest, (points - centroids[nearest]).square().sum(1)


def _update(points: torch.Tensor, assignment: torch.Tensor, previous: torch.Tensor, k: int) -> torch.Tensor:
    sums = torch.zeros_like(previous).index_add_(0, assignment, points)
    counts = torch.bincount(assignment, minlength=k).unsqueeze(1)
    centroids = sums / counts.clamp_min(1)
    empty = (counts[:, 0] == 0).nonzero()[:, 0]
    if len(empty):
        # An empty cluster restarts on the points farthest from their centroid.
        _, distances = _assign(points, centroids)
        centroids[empty] = points[distances.topk(len(empty)).indices]
    return centroids


def _kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ (Arthur and Vassilvitskii, 2007): each next centre drawn with
    probability proportional to the squared distance to the nearest centre so far."""
    first = torch.randint(len(points), (1,), generator=generator).item()
    chosen = [first]
    nearest = (points - points[first]).square().sum(1)
    for _ in range(1, k):
        weights = nearest.double().cpu()
        if weights.sum() <= 0:  # fewer distinct points than k: take any unused row
            pick = next(i for i in range(len(points)) if i not in set(chosen))
        else:
            pick = torch.multinomial(weights, 1, generator=generator).item()
        chosen.append(pick)
        nearest = torch.minimum(nearest, (points - points[pick]).square().sum(1))
    return points[chosen].clone()


class _no_tf32:
    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self.saved

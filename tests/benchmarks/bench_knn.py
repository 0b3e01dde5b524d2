"""Benchmark: kNN search and k-means (the vector index and narrowing) against
numpy brute force and scikit-learn, on synthetic embedding-like vectors.

Data: seeded, L2-normalised float32 vectors of 512 dims, generated in chunks of
100,000 rows. Uniform vectors on the sphere have no neighbour structure (every
ANN index looks broken on them), so two generators that look like embeddings:

- ``mixture``: a Gaussian mixture of 4,096 centres (256 groups of 16: group
  centres N(0, I/d), each centre its group's plus N(0, 0.36 I/d), normalised),
  Zipf(0.5) cluster sizes; a point is its centre plus noise of norm U(0.5, 0.9)
  (per cluster) with variances falling as 1/i in a fixed random rotation
  (effective dimension about 28), then normalised. Tight, well separated clusters.
- ``manifold``: a random ReLU feature map of a 32-d latent Gaussian mixture
  (4,096 latent centres N(0, I), per-centre spread U(0.3, 0.6), Zipf(0.5)
  sizes): x = normalise(relu(z W)), W (32 x 512) N(0, 1/32), plus isotropic noise
  of norm 0.1, normalised again. Continuous, overlapping structure, all-positive
  coordinates (random pairs at cosine ~0.3, like CNN features): harder for IVF.

Queries are held-out draws from the same distribution (their own random stream).

Measured, in one run on one machine:

- kNN, k=100, one query at a time (p50, p95 latency): numpy brute force
  (``vectors @ q`` + argpartition), the flat index (exact; its results are the
  ground truth), and the IVF index the library picks for this size
  (``choose_spec``; IVF build = train + add), over a sweep of nprobe;
  recall@100 against exact.
- k-means on pools of 20k and 100k rows drawn at random from the data, K in
  8..64: ``get_backend("cpu").kmeans`` (FAISS, k-means++, 20 iterations) against
  ``sklearn.cluster.KMeans(n_clusters=K, n_init=1, random_state=0)`` (k-means++,
  max_iter 300, tol 1e-4), the same capped at 20 iterations (how much of the
  speedup is iteration count), and the torch backend on the CPU. Inertias are
  recomputed the same way (float64) from each result's centroids. Where ours is
  more than 1% worse, it runs again with 40 iterations.
- one narrowing step on a 20k pool: ``cluster_pool`` with K=8 (a ``pick``), and
  ``take_pool`` + ``cluster_pool`` on the IVF index (a ``start``, lake write left
  out), with the share of the exact 20k (and default-size) pool that take_pool finds.

``--device cuda`` instead measures exact kNN on the GPU (torch backend, the
vectors generated on the GPU, 10M by default) for batches of 100 queries.

    python tests/benchmarks/bench_knn.py [--vectors 1000000] [--queries 200] [--quick] [--json]
    python tests/benchmarks/bench_knn.py --device cuda [--vectors 10000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import faiss  # noqa: E402
import sklearn  # noqa: E402
import threadpoolctl  # noqa: E402
import torch  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

from mining.core.config import IndexConfig, MiningConfig  # noqa: E402
from mining.search.backends import get_backend  # noqa: E402
from mining.search.backends.torch_backend import TorchBackend  # noqa: E402
from mining.search.clustering import cluster_pool, take_pool  # noqa: E402
from mining.search.index import IndexSpec, VectorIndex, choose_spec  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

DIM = 512
K = 100
CHUNK = 100_000
GENERATORS = ("mixture", "manifold")
STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


# -- data ---------------------------------------------------------------------
def generator_params(kind: str, seed: int) -> dict:
    """The fixed parts of a generator (centres, sizes, maps): small numpy arrays."""
    rng = np.random.default_rng([seed, GENERATORS.index(kind), 0])
    centres = 4096
    weights = (np.arange(centres) + 1.0) ** -0.5
    cumulative = np.cumsum(rng.permutation(weights / weights.sum()))
    if kind == "mixture":
        groups = rng.standard_normal((256, DIM)) / np.sqrt(DIM)
        means = np.repeat(groups, centres // 256, 0) + 0.6 * rng.standard_normal((centres, DIM)) / np.sqrt(DIM)
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        spectrum = (np.arange(DIM) + 1.0) ** -0.5  # standard deviations: variances fall as 1/i
        rotation, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
        return {"kind": kind, "latent": DIM, "cumulative": cumulative, "means": means.astype(np.float32),
                "scale": rng.uniform(0.5, 0.9, centres).astype(np.float32),
                "map": (spectrum[:, None] / np.linalg.norm(spectrum) * rotation.T).astype(np.float32)}
    if kind == "manifold":
        latent = 32
        return {"kind": kind, "latent": latent, "cumulative": cumulative,
                "means": rng.standard_normal((centres, latent)).astype(np.float32),
                "scale": rng.uniform(0.3, 0.6, centres).astype(np.float32),
                "map": (rng.standard_normal((latent, DIM)) / np.sqrt(latent)).astype(np.float32)}
    raise ValueError(f"unknown generator {kind!r}; allowed: {', '.join(GENERATORS)}")


def sample_rows(p: dict, labels, z, noise):
    """Rows for cluster ``labels`` from latent draws ``z`` (n, latent) and ``noise``
    (n, DIM), both standard normal. Plain operators only, so the same code runs on
    numpy arrays (CPU) and torch tensors (GPU)."""
    if p["kind"] == "mixture":
        x = p["means"][labels] + (z @ p["map"]) * p["scale"][labels][:, None]
        return x / ((x * x).sum(1)[:, None]) ** 0.5
    h = (p["means"][labels] + z * p["scale"][labels][:, None]) @ p["map"]
    h = h * (h > 0)
    h = h / ((h * h).sum(1)[:, None]) ** 0.5
    x = h + noise * (0.1 / DIM**0.5)
    return x / ((x * x).sum(1)[:, None]) ** 0.5


def generate(p: dict, n: int, seed: int, stream: int) -> np.ndarray:
    """float32 (n, DIM), chunk by chunk, each chunk its own seeded random stream."""
    out = np.empty((n, DIM), np.float32)
    centres = len(p["means"])
    for i, start in enumerate(range(0, n, CHUNK)):
        m = min(CHUNK, n - start)
        rng = np.random.default_rng([seed, GENERATORS.index(p["kind"]), stream, i])
        labels = np.minimum(np.searchsorted(p["cumulative"], rng.random(m)), centres - 1)
        z = rng.standard_normal((m, p["latent"]), dtype=np.float32)
        noise = rng.standard_normal((m, DIM), dtype=np.float32) if p["kind"] == "manifold" else None
        out[start:start + m] = sample_rows(p, labels, z, noise)
        if n >= 10 * CHUNK and i % 5 == 4:
            say(f"  generated {start + m:,} / {n:,}")
    return out


# -- kNN ------------------------------------------------------------------------
def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth)]))


def timed_queries(search, queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    """One query at a time, after one untimed warm-up query."""
    search(queries[0])
    seconds, found = [], []
    for q in queries:
        started = time.perf_counter()
        positions = search(q)
        seconds.append(time.perf_counter() - started)
        found.append(positions)
    return seconds, found


def numpy_knn(vectors: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """What a user writes: all scores, argpartition, sort the top k."""
    scores = vectors @ q
    top = np.argpartition(scores, -k)[-k:]
    return top[np.argsort(-scores[top])]


def bench_knn(
    name: str, vectors: np.ndarray, queries: np.ndarray, nprobes: list[int] | None
) -> tuple[list[dict], dict, VectorIndex]:
    n = len(vectors)
    ids = np.arange(n).astype(str)
    rows = []

    say(f"{name}: flat (exact) search, {len(queries)} single queries")
    flat = VectorIndex.build(ids, vectors, IndexSpec("flat"))
    seconds, truth = timed_queries(lambda q: flat.search(q[None], K)[1][0], queries)
    rows.append({"data": name, "method": "flat (exact)", "index": "flat", "build_s": 0.0, "nprobe": None,
                 **percentiles(seconds), "recall": 1.0})
    top_scores = np.array([float(vectors[t[0]] @ q) for t, q in zip(truth, queries)])
    last_scores = np.array([float(vectors[t[-1]] @ q) for t, q in zip(truth, queries)])
    random_pairs = float(np.median(queries @ vectors[:: max(1, n // 1000)].T))
    structure = {"top1_cosine_median": round(float(np.median(top_scores)), 3),
                 "top100_cosine_median": round(float(np.median(last_scores)), 3),
                 "random_cosine_median": round(random_pairs, 3)}

    say(f"{name}: numpy brute force, {len(queries)} single queries")
    seconds, found = timed_queries(lambda q: numpy_knn(vectors, q, K), queries)
    rows.insert(0, {"data": name, "method": "numpy brute force", "index": "none", "build_s": 0.0, "nprobe": None,
                    **percentiles(seconds), "recall": round(recall(found, truth), 4)})

    spec = choose_spec(n, IndexConfig())
    auto_kind = spec.kind
    if spec.kind == "flat":  # small --quick runs: auto would stay exact; measure its IVF anyway
        spec = choose_spec(n, IndexConfig(kind="ivf"))
    say(f"{name}: building {spec.describe()} over {n:,} vectors (auto picks {auto_kind} here)")
    started = time.perf_counter()
    ivf = VectorIndex.build(ids, vectors, spec, seed=0)
    build_s = time.perf_counter() - started
    sweep = nprobes or [2**i for i in range(int(np.log2(spec.nlist)) - 1) if 2**i <= spec.nlist // 4]
    sweep = sorted(set(sweep) | {spec.nprobe})
    for nprobe in sweep:
        index = ivf.with_nprobe(nprobe)
        seconds, found = timed_queries(lambda q, index=index: index.search(q[None], K)[1][0], queries)
        rows.append({"data": name, "method": "IVF" + (" (default nprobe)" if nprobe == spec.nprobe else ""),
                     "index": f"IVF{spec.nlist},Flat", "build_s": round(build_s, 1), "nprobe": nprobe,
                     **percentiles(seconds), "recall": round(recall(found, truth), 4)})
        say(f"  nprobe {nprobe}: p50 {rows[-1]['p50_ms']} ms, recall@100 {rows[-1]['recall']}")
    numpy_p50 = rows[0]["p50_ms"]
    for row in rows:
        row["speedup_vs_numpy"] = round(numpy_p50 / row["p50_ms"], 1)
    reaching = [r for r in rows if r["nprobe"] and r["recall"] >= 0.95]
    summary = {"data": name, "n": n, "auto_kind": auto_kind, "spec": spec.describe(), "build_s": round(build_s, 1),
               "default_nprobe": spec.nprobe, "first_nprobe_recall_095": reaching[0]["nprobe"] if reaching else None,
               "p50_ms_at_that_nprobe": reaching[0]["p50_ms"] if reaching else None, **structure}
    return rows, summary, ivf


# -- k-means ----------------------------------------------------------------------
def exact_inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum of squared L2 distances to the nearest centroid, in float64."""
    c = centroids.astype(np.float64)
    c2 = (c * c).sum(1)
    total = 0.0
    for start in range(0, len(x), 20_000):
        block = x[start:start + 20_000].astype(np.float64)
        d = (block * block).sum(1)[:, None] - 2 * block @ c.T + c2
        total += float(np.maximum(d.min(1), 0).sum())
    return total


def time_it(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), result


def bench_kmeans(
    name: str, vectors: np.ndarray, pools: list[int], ks: list[int], repeats: int, torch_too: bool
) -> list[dict]:
    backend = get_backend("cpu")
    torch_cpu = TorchBackend("cpu")
    backend.kmeans(vectors[:2000], 8, niter=2, seed=0)  # warm-up: OpenMP threads, faiss code paths
    rows = []
    for size in pools:
        rng = np.random.default_rng([1, size])
        x = np.ascontiguousarray(vectors[np.sort(rng.choice(len(vectors), size, replace=False))])
        for k in ks:
            say(f"{name}: k-means of {size:,} x {DIM}, K={k}")
            ours_s, ours = time_it(lambda x=x, k=k: backend.kmeans(x, k, niter=20, seed=0), repeats)
            started = time.perf_counter()
            sk = KMeans(n_clusters=k, n_init=1, random_state=0).fit(x)
            sk_s = time.perf_counter() - started
            ours_inertia, sk_inertia = exact_inertia(x, ours.centroids), exact_inertia(x, sk.cluster_centers_)
            row = {
                "data": name,
                "pool": size,
                "k": k,
                "ours_s": round(ours_s, 3),
                "ours_iters": ours.iterations,
                "ours_inertia": round(ours_inertia, 2),
                "sklearn_s": round(sk_s, 3),
                "sklearn_iters": int(sk.n_iter_),
                "sklearn_inertia": round(sk_inertia, 2),
                "inertia_ratio": round(ours_inertia / sk_inertia, 4),
                "speedup": round(sk_s / ours_s, 1),
            }
            if row["inertia_ratio"] > 1.01:
                s40, r40 = time_it(lambda x=x, k=k: backend.kmeans(x, k, niter=40, seed=0), repeats)
                row |= {
                    "ours40_s": round(s40, 3),
                    "ours40_inertia_ratio": round(exact_inertia(x, r40.centroids) / sk_inertia, 4),
                    "ours40_speedup": round(sk_s / s40, 1),
                }
            # sklearn stopped at our iteration count: how much of the speedup is iterations.
            started = time.perf_counter()
            sk20 = KMeans(n_clusters=k, n_init=1, random_state=0, max_iter=20).fit(x)
            row |= {"sklearn20_s": round(time.perf_counter() - started, 3),
                    "sklearn20_inertia_ratio": round(exact_inertia(x, sk20.cluster_centers_) / sk_inertia, 4)}
            if torch_too:
                t_s, t_res = time_it(lambda x=x, k=k: torch_cpu.kmeans(x, k, niter=20, seed=0), 1)
                row |= {
                    "torch_s": round(t_s, 3),
                    "torch_inertia_ratio": round(exact_inertia(x, t_res.centroids) / sk_inertia, 4),
                }
            rows.append(row)
            say(f"  ours {ours_s:.2f}s  sklearn {sk_s:.2f}s ({sk.n_iter_} iters)  inertia ratio {row['inertia_ratio']}")
    return rows


def bench_narrowing(
    name: str, flat_vectors: np.ndarray, ivf: VectorIndex, query: np.ndarray, pool: int, k: int, repeats: int
) -> dict:
    """``cluster_pool`` alone (a pick), and take_pool + similarity + cluster_pool (a start)."""
    backend = get_backend("cpu")
    say(f"{name}: narrowing step, pool {pool:,}, K={k}")
    positions = np.sort(np.argpartition(flat_vectors @ query, -pool)[-pool:])  # the pool nearest the seed
    similarity = flat_vectors[positions] @ query
    pick_times = [time_it(lambda: cluster_pool(ivf, positions, similarity, k, backend, niter=20, seed=0), 1)[0]
                  for _ in range(repeats)]

    def start():
        found = take_pool(ivf, query[None], None, pool)
        cluster_pool(ivf, found, ivf.vectors[found] @ query, k, backend, niter=20, seed=0)
        return found

    start_times, found = [], None
    for _ in range(repeats):
        seconds, found = time_it(start, 1)
        start_times.append(seconds)
    # IVF returns at most what its nprobe cells hold: the pool a start gets, and how
    # much of the exact pool it is.
    start_pool, start_pool_recall = len(found), len(np.intersect1d(found, positions)) / pool
    # The same at the default pool size (MiningConfig.pool).
    default_pool = MiningConfig().pool
    exact_default = np.argpartition(flat_vectors @ query, -default_pool)[-default_pool:]
    default_recall = len(np.intersect1d(take_pool(ivf, query[None], None, default_pool), exact_default)) / default_pool
    return {
        "data": name,
        "pool": pool,
        "k": k,
        "index": ivf.spec.describe(),
        "cluster_pool_p50_s": round(float(np.median(pick_times)), 3),
        "cluster_pool_max_s": round(max(pick_times), 3),
        "start_p50_s": round(float(np.median(start_times)), 3),
        "start_max_s": round(max(start_times), 3),
        "start_pool": start_pool,
        "start_pool_recall": round(start_pool_recall, 4),
        "default_pool": default_pool,
        "default_pool_recall": round(default_recall, 4),
    }


# -- GPU ----------------------------------------------------------------------------
def run_gpu(args) -> dict:
    """Exact kNN on the GPU (torch backend) over vectors generated on the GPU."""
    if not torch.cuda.is_available():
        sys.exit(
            "bench_knn --device cuda: torch sees no CUDA GPU on this machine; run without --device (CPU benchmark)"
        )
    device = torch.device(args.device)
    n = args.vectors or 10_000_000
    kind = args.data[0]
    p = generator_params(kind, args.seed)
    gpu_p = {key: (torch.from_numpy(v).to(device) if isinstance(v, np.ndarray) else v) for key, v in p.items()}

    def draw(rows: int, stream: int) -> torch.Tensor:
        out = torch.empty((rows, DIM), dtype=torch.float32, device=device)
        g = torch.Generator(device=device).manual_seed(args.seed * 100 + stream)
        step = 1_000_000
        for start in range(0, rows, step):
            m = min(step, rows - start)
            labels = torch.searchsorted(
                gpu_p["cumulative"], torch.rand(m, dtype=torch.float64, device=device, generator=g)
            )
            labels.clamp_(max=len(p["means"]) - 1)
            z = torch.randn((m, p["latent"]), device=device, generator=g)
            noise = torch.randn((m, DIM), device=device, generator=g) if kind == "manifold" else None
            out[start:start + m] = sample_rows(gpu_p, labels, z, noise)
        return out

    say(f"generating {n:,} x {DIM} ({kind}) on {torch.cuda.get_device_name(device)}")
    database = draw(n, 0)
    torch.cuda.synchronize(device)
    batches = max(3, args.queries // args.batch)
    queries = draw(args.batch * batches, 1).cpu().numpy()
    # Sanity: a database row as a query must find itself first.
    probe_rows = [0, n // 2, n - 1]
    queries[: len(probe_rows)] = database[probe_rows].cpu().numpy()
    backend = TorchBackend(device)
    for _ in range(3):
        backend.knn(database, queries[: args.batch], K)  # warm-up: kernels, allocator
    seconds = []
    for b in range(batches):
        batch = queries[b * args.batch:(b + 1) * args.batch]
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        _, indices = backend.knn(database, batch, K)  # returns numpy: synchronised
        seconds.append(time.perf_counter() - started)
        if b == 0:
            assert list(indices[: len(probe_rows), 0]) == probe_rows, indices[: len(probe_rows), 0]
    return {"machine": machine(device), "device": str(device), "backend": backend.name, "data": kind, "vectors": n,
            "batch": args.batch, "batches": batches, "k": K, **percentiles(seconds),
            "per_query_ms": round(1000 * float(np.median(seconds)) / args.batch, 3),
            "target_p50_under_50ms": bool(np.percentile(seconds, 50) < 0.05)}


# -- report ---------------------------------------------------------------------------
def machine(device: torch.device | None = None) -> str:
    return describe({"faiss": faiss.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
                     "torch": torch.__version__},
                    gpu=torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else None)


def markdown(report: dict) -> str:
    if "per_query_ms" in report:
        r = report
        return "\n".join([
            f"Machine: {r['machine']}", "",
            "| device | backend | data | vectors | batch | p50 ms | p95 ms | per query ms | p50 < 50 ms |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
            (f"| {r['device']} | {r['backend']} | {r['data']} | {r['vectors']:,} | {r['batch']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['per_query_ms']} | {'yes' if r['target_p50_under_50ms'] else 'no'} |"),
        ])
    lines = [
        f"Machine: {report['machine']}",
        (
            f"Threads: {report['threads']}; load average at start {report['load_start']}, at end {report['load_end']}; "
            f"{report['vectors']:,} vectors x {DIM}, {report['queries']} single queries, k={K}."
        ),
        "",
    ]
    for s in report["knn_summary"]:
        lines.append(
            f"- {s['data']}: median cosine of the 1st / 100th neighbour {s['top1_cosine_median']} / "
            f"{s['top100_cosine_median']}, of random pairs {s['random_cosine_median']}; auto index: {s['spec']} "
            f"(built in {s['build_s']} s); first nprobe with recall@100 >= 0.95: {s['first_nprobe_recall_095']} "
            f"(p50 {s['p50_ms_at_that_nprobe']} ms); default nprobe {s['default_nprobe']}"
        )
    lines += ["", "| data | method | index | nprobe | p50 ms | p95 ms | recall@100 | p50 speedup vs numpy |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in report["knn"]:
        lines.append(
            f"| {r['data']} | {r['method']} | {r['index']} | {r['nprobe'] or ''} | {r['p50_ms']} | {r['p95_ms']} | "
            f"{r['recall']:.4f} | {r['speedup_vs_numpy']}x |"
        )
    lines += [
        "",
        (
            "| data | pool | K | ours s (iters) | sklearn s (iters) | inertia ours/sklearn | speedup | "
            "ours niter 40: s, inertia ratio, speedup | sklearn max_iter 20: s, its inertia / sklearn full | "
            "torch-cpu s, inertia ratio |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in report["kmeans"]:
        again = f"{r['ours40_s']}, {r['ours40_inertia_ratio']}, {r['ours40_speedup']}x" if "ours40_s" in r else ""
        torch_cell = f"{r['torch_s']}, {r['torch_inertia_ratio']}" if "torch_s" in r else ""
        lines.append(f"| {r['data']} | {r['pool']:,} | {r['k']} | {r['ours_s']} ({r['ours_iters']}) | {r['sklearn_s']} "
                     f"({r['sklearn_iters']}) | {r['inertia_ratio']} | {r['speedup']}x | {again} | "
                     f"{r['sklearn20_s']}, {r['sklearn20_inertia_ratio']} | {torch_cell} |")
    lines += ["", ("| data | pool | K | cluster_pool p50 s (max) | index | take_pool + cluster_pool p50 s (max) | "
              "pool take_pool returned | of the exact pool | same at the default pool |"),
              "|---|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in report["narrowing"]:
        lines.append(
            f"| {r['data']} | {r['pool']:,} | {r['k']} | "
            f"{r['cluster_pool_p50_s']} ({r['cluster_pool_max_s']}) | {r['index']} | "
            f"{r['start_p50_s']} ({r['start_max_s']}) | {r['start_pool']:,} | {r['start_pool_recall']:.3f} | "
            f"{r['default_pool_recall']:.3f} of {r['default_pool']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--vectors",
        type=int,
        help="database size (default 1,000,000; 10,000,000 with --device cuda; 50,000 with --quick)",
    )
    parser.add_argument("--queries", type=int, help="single queries timed (default 200; 50 with --quick)")
    parser.add_argument(
        "--data", nargs="+", choices=GENERATORS, default=list(GENERATORS), help="generators to run (default both)"
    )
    parser.add_argument(
        "--nprobe", type=int, nargs="+", help="nprobe values to sweep (default: powers of two up to nlist/4)"
    )
    parser.add_argument("--pools", type=int, nargs="+", help="k-means pool sizes (default 20000 100000)")
    parser.add_argument("--clusters", type=int, nargs="+", help="k-means K values (default 8 16 32 64)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of our k-means and of the narrowing step (median)")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch backend's k-means on the CPU")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for faiss, BLAS, sklearn, torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (default), or cuda[:N]: exact kNN on the GPU only")
    parser.add_argument("--batch", type=int, default=100, help="--device cuda: queries per batch")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    if args.device != "cpu":
        if not args.device.startswith("cuda"):
            parser.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
        args.queries = args.queries or 2000
        report = run_gpu(args)
        print(json.dumps(report, indent=1) if args.json else markdown(report))
        return

    n = args.vectors or (50_000 if args.quick else 1_000_000)
    n_queries = args.queries or (50 if args.quick else 200)
    pools = args.pools or ([5_000, 20_000] if args.quick else [20_000, 100_000])
    ks = args.clusters or ([8, 32] if args.quick else [8, 16, 32, 64])
    pools = [p for p in pools if p <= n]
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    report = {"machine": machine(), "threads": args.threads, "load_start": [round(v, 1) for v in os.getloadavg()],
              "vectors": n, "queries": n_queries, "knn": [], "knn_summary": [], "kmeans": [], "narrowing": []}
    with threadpoolctl.threadpool_limits(args.threads):
        for kind in args.data:
            p = generator_params(kind, args.seed)
            say(f"generating {n:,} x {DIM} ({kind})")
            vectors = generate(p, n, args.seed, stream=0)
            queries = generate(p, n_queries, args.seed, stream=1)
            rows, summary, ivf = bench_knn(kind, vectors, queries, args.nprobe)
            report["knn"] += rows
            report["knn_summary"].append(summary)
            report["narrowing"].append(
                bench_narrowing(kind, vectors, ivf, queries[0], min(20_000, n // 2), 8, args.repeats)
            )
            del ivf
            gc.collect()
            report["kmeans"] += bench_kmeans(kind, vectors, pools, ks, args.repeats, not args.no_torch)
            del vectors
            gc.collect()
    report["load_end"] = [round(v, 1) for v in os.getloadavg()]
    report["seconds"] = round(time.perf_counter() - STARTED)
    print(json.dumps(report, indent=1) if args.json else markdown(report))


if __name__ == "__main__":
    main()

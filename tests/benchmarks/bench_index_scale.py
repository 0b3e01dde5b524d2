"""Benchmark: the vector index at 10M vectors in bounded memory (issue 25).

Data: seeded synthetic embeddings, the ``mixture`` generator of bench_knn.py at
any width (4,096 Gaussian clusters in 256 groups, Zipf(0.5) sizes, noise with
variances falling as 1/i in a random rotation, rows L2-normalised), generated
100,000 rows at a time into a float16 ``np.memmap`` on disk (10M x 512 = 10 GB),
never whole in memory. 100 queries are held-out draws of the same distribution.

For each index kind the library supports at that size (``flat``, ``ivf``,
``ivfpq``; a kind whose build would hold more than ``--budget-gib`` in memory is
skipped and said so: IVF-flat holds its lists, 4 x width bytes a vector), one
child process builds it with ``index_store.build_and_save`` (the float32 snapshot
written in chunks into the index's folder, IVF trained on a sample of
64 rows per list, rows added 65,536 at a time) and another opens the saved index
with ``load_index`` (memory-mapped) and runs the 100 queries one at a time.
Measured per kind: build time, peak memory while building and after opening
(``RssAnon``: the process's own memory; ``VmHWM``: its peak resident set, which
also counts pages of mapped files, reclaimable), size on disk, query time
(p50, p95 over the 100 queries, k=100, after one warm-up query) and recall@100
against exact search. The ceiling row, "exact (chunked)", is brute force over
the float16 data file, 1M rows at a time in float32 (the ground truth), timed
for the 100 queries at once.

    nice -n 19 python tests/benchmarks/bench_index_scale.py [--n 10000000] [--dim 512] [--dir /tmp/...] [--json]
    python tests/benchmarks/bench_index_scale.py --n 200000      # a quick run

Needs free disk for the data (2 x width bytes a vector) and each index's float32
snapshot (4 x width bytes a vector); it checks before starting and deletes
everything it wrote at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mining.core.config import IndexConfig  # noqa: E402
from mining.search.index import KINDS, IndexSpec, choose_spec  # noqa: E402

K = 100
QUERIES = 100
CHUNK = 100_000
EXACT_CHUNK = 1_000_000
CLUSTERS = 4096
STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


# -- memory -----------------------------------------------------------------------
class PeakMemory:
    """Samples /proc/self/status every 50 ms: the largest RssAnon seen, and VmHWM."""

    def __init__(self):
        self.anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.anon = max(self.anon, status_kib()["RssAnon"])

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.anon = max(self.anon, status_kib()["RssAnon"])


def status_kib() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0])
    return fields


def gib(kib: int) -> float:
    return round(kib / 2**20, 2)


# -- data ---------------------------------------------------------------------------
def generator(dim: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, 0])
    weights = (np.arange(CLUSTERS) + 1.0) ** -0.5
    groups = rng.standard_normal((256, dim)) / np.sqrt(dim)
    means = np.repeat(groups, CLUSTERS // 256, 0) + 0.6 * rng.standard_normal((CLUSTERS, dim)) / np.sqrt(dim)
    spectrum = (np.arange(dim) + 1.0) ** -0.5
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return {"cumulative": np.cumsum(rng.permutation(weights / weights.sum())),
            "means": (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32),
            "scale": rng.uniform(0.5, 0.9, CLUSTERS).astype(np.float32),
            "map": (spectrum[:, None] / np.linalg.norm(spectrum) * rotation.T).astype(np.float32)}


def draw(p: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.minimum(np.searchsorted(p["cumulative"], rng.random(n)), CLUSTERS - 1)
    z = rng.standard_normal((n, len(p["map"])), dtype=np.float32)
    x = p["means"][labels] + (z @ p["map"]) * p["scale"][labels][:, None]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def generate(path: Path, n: int, dim: int, seed: int) -> np.ndarray:
    """float16 (n, dim) .npy on disk, CHUNK rows at a time; queries (float32) returned."""
    p = generator(dim, seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for i, start in enumerate(range(0, n, CHUNK)):
        out[start : start + CHUNK] = draw(p, min(CHUNK, n - start), np.random.default_rng([seed, 1, i]))
        if i % 20 == 19:
            say(f"  generated {start + CHUNK:,} / {n:,}")
    out.flush()
    del out
    return draw(p, QUERIES, np.random.default_rng([seed, 2])).astype(np.float32)


def exact_top(data: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact top-K positions per query over the float16 file, EXACT_CHUNK rows at a time."""
    import faiss

    started = time.perf_counter()
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(data), EXACT_CHUNK):
        block = np.ascontiguousarray(data[start : start + EXACT_CHUNK], dtype=np.float32)
        scores, rows = faiss.knn(queries, block, min(K, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        joined = np.concatenate([best_scores, scores], 1)
        order = np.argsort(-joined, axis=1, kind="stable")[:, :K]
        best_scores = np.take_along_axis(joined, order, 1)
        best = np.take_along_axis(np.concatenate([best, rows + start], 1), order, 1)
    return best, time.perf_counter() - started


def make_ids(n: int) -> np.ndarray:
    """Image-id-like keys (20 hex digits), position i -> i in hex: recall compares positions."""
    return np.char.zfill(np.char.mod("%x", np.arange(n)), 20)


# -- children: one build, one open + queries, each in a fresh process ----------------
def child_build(args) -> dict:
    from mining.core.lake import Lake
    from mining.search.index_store import Manifest, build_and_save

    data = np.load(args.data, mmap_mode="r")
    spec = IndexSpec(**json.loads(args.spec))
    ids = make_ids(len(data))
    started = time.perf_counter()
    with PeakMemory() as peak:
        _, manifest = build_and_save(Lake(args.lake), ids, data, spec, Manifest("synthetic", spec.kind, spec, 0))
    return {"build_s": round(time.perf_counter() - started, 1), "build_rss_anon_gib": gib(peak.anon),
            "build_vmhwm_gib": gib(status_kib()["VmHWM"]), "version": manifest.version}


def child_open(args) -> dict:
    from mining.core.lake import Lake
    from mining.search.index_store import load_index, load_manifest

    queries = np.load(args.queries)
    lake = Lake(args.lake)
    started = time.perf_counter()
    index = load_index(lake, load_manifest(lake, "synthetic", args.kind))
    opened = status_kib()
    open_s = time.perf_counter() - started
    mapped = isinstance(index.vectors, np.memmap) and isinstance(index.ids, np.memmap)
    index.search(queries[:1], K)  # warm-up
    seconds, found = [], []
    with PeakMemory() as peak:
        for q in queries:
            t = time.perf_counter()
            found.append(index.search(q, K)[1][0])
            seconds.append(time.perf_counter() - t)
    ms = np.asarray(seconds) * 1000
    return {"open_s": round(open_s, 2), "open_rss_anon_gib": gib(opened["RssAnon"]),
            "open_vmrss_gib": gib(opened["VmRSS"]), "query_rss_anon_gib": gib(peak.anon),
            "query_vmhwm_gib": gib(status_kib()["VmHWM"]), "memory_mapped": mapped,
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "found": np.asarray(found).tolist()}


def run_child(*argv: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {argv[:2]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the run ------------------------------------------------------------------------
def kinds_at(n: int, dim: int, budget_gib: float) -> tuple[list[tuple[str, IndexSpec]], list[str]]:
    """(kind, spec) to measure at ``n``, and why any kind was skipped."""
    chosen, skipped = [], []
    for kind in KINDS[1:]:
        held = {"flat": 0, "ivf": n * dim * 4, "ivfpq": n * 64}[kind] / 2**30  # what the build holds in memory
        if kind == "flat" and n * dim * 4 / 2**30 > budget_gib:  # a flat search scans every float32 row per query
            skipped.append(f"flat: {n * dim * 4 / 2**30:.0f} GiB scanned per query (the exact row stands in)")
        elif held > budget_gib:
            skipped.append(f"{kind}: its build holds {held:.0f} GiB of lists in memory (budget {budget_gib} GiB)")
        else:
            chosen.append((kind, choose_spec(n, IndexConfig(kind=kind))))
    return chosen, skipped


def check_disk(folder: Path, need: float) -> None:
    free = shutil.disk_usage(folder).free
    if free < need * 1.1:
        raise SystemExit(f"needs {need / 2**30:.0f} GiB free in {folder}, has {free / 2**30:.0f} GiB: use --dir or a "
                         "smaller --n")


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def measure(args) -> dict:
    import faiss

    from tests.benchmarks.machine import describe

    work = Path(args.dir) / f"bench-index-scale-{args.n}"
    work.mkdir(parents=True, exist_ok=True)
    chosen, skipped = kinds_at(args.n, args.dim, args.budget_gib)
    need = args.n * args.dim * (2 + 4 * len(chosen))
    check_disk(work, need)
    result = {"machine": describe({"faiss": faiss.__version__, "numpy": np.__version__}), "n": args.n,
              "dim": args.dim, "kinds": {}, "skipped": skipped}
    try:
        data_path, queries_path = work / "data.npy", work / "queries.npy"
        say(f"generating {args.n:,} x {args.dim} float16 rows into {data_path}")
        t = time.perf_counter()
        np.save(queries_path, generate(data_path, args.n, args.dim, args.seed))
        result["generate_s"] = round(time.perf_counter() - t, 1)
        say("exact top-100 of the queries (chunked brute force)")
        truth, exact_s = exact_top(np.load(data_path, mmap_mode="r"), np.load(queries_path))
        result["exact"] = {"batch_s": round(exact_s, 1), "per_query_ms": round(exact_s / QUERIES * 1000, 1),
                           "recall": 1.0}
        for kind, spec in chosen:
            lake = work / "lake"
            say(f"{kind}: building {spec.describe()}")
            row = {"spec": spec.describe()} | run_child("--child", "build", "--data", str(data_path), "--lake",
                                                       str(lake), "--spec", json.dumps(spec.__dict__))
            version = lake / "_index" / "synthetic" / kind / row.pop("version")
            row["disk_gib"] = round(folder_bytes(version) / 2**30, 2)
            say(f"{kind}: built in {row['build_s']} s; opening and querying")
            opened = run_child("--child", "open", "--lake", str(lake), "--kind", kind, "--queries", str(queries_path))
            found = np.asarray(opened.pop("found"))
            row |= opened | {"recall": round(float(np.mean([len(np.intersect1d(f, t)) / K
                                                             for f, t in zip(found, truth)])), 4)}
            say(f"{kind}: {row}")
            result["kinds"][kind] = row
            shutil.rmtree(version.parent)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return result


def report(result: dict) -> str:
    lines = [f"{result['n']:,} x {result['dim']} vectors, {result['machine']}",
             f"data generated in {result['generate_s']} s (float16 file)", "",
             "| index | build | build RssAnon / VmHWM | open RssAnon / VmRSS | disk | query p50 / p95 | recall@100 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for kind, r in result["kinds"].items():
        lines.append(f"| {kind}: {r['spec']} | {r['build_s']} s | {r['build_rss_anon_gib']} / {r['build_vmhwm_gib']}"
                     f" GiB | {r['open_rss_anon_gib']} / {r['open_vmrss_gib']} GiB | {r['disk_gib']} GiB | "
                     f"{r['p50_ms']} / {r['p95_ms']} ms | {r['recall']} |")
    e = result["exact"]
    lines.append(f"| exact (chunked, float16 file) | - | - | - | - | {e['per_query_ms']} ms a query in a batch of "
                 f"{QUERIES} | 1.0 |")
    lines += [f"skipped: {s}" for s in result["skipped"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default="/tmp", help="where the data and the indexes are written (then deleted)")
    parser.add_argument("--budget-gib", type=float, default=8.0, help="skip kinds whose build holds more")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=["build", "open"], help=argparse.SUPPRESS)
    for hidden in ("--data", "--lake", "--spec", "--kind", "--queries"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_build(args) if args.child == "build" else child_open(args)))
        return
    result = measure(args)
    print(json.dumps(result, indent=1) if args.json else report(result))


if __name__ == "__main__":
    main()

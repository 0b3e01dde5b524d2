"""Benchmark: the review UI's two interactive steps, a grid of 100 thumbnails and
a drill step of a narrowing session, on a lake of 100,000 images, each against
what a user would otherwise write, in the same run.

The lake is synthetic and written directly with the project's own writer
(``mining.core.tables``), so its layout is the real one (Delta tables), without
running the demo (which renders and embeds every image: far too slow at this size):

- ``images``, ``embeddings``, ``thumbnails``: one commit per part of ``--part``
  images (10 parts of 10,000), as the embed job commits them;
- ``predictions``: one per image (label, confidence, scores, a ``customer_flag``
  extra column, model v1 or v2), timestamps spread over 30 days, one commit per
  day as a daily ingest writes them (``date=YYYY-MM-DD`` partitions);
- embeddings: 512-d, L2-normalised float32, a seeded Gaussian mixture of 50
  centres (clusters exist, so narrowing has something to find);
- thumbnails: a distinct 128x96 JPEG per image (quality 85, like the embed job;
  a textured base picture, one of 500, with a per-image random patch, so no two
  rows share bytes and Parquet cannot dictionary-encode them away);
- originals (256x192 JPEG files) are written only for the ``--originals`` images
  of lowest confidence (the grid's first pages: all the naive loop reads); the
  other rows' ``uri`` name files that do not exist.

The lake is kept in ``--lake`` and reused when complete (a marker written last).
The index is then synced with ``mining.search.index_sync.index_lake`` (flat, exact, at 100k).

Measured (median of ``--repeats`` runs after one warm-up; min and max too):

1. grid: a read-only ``LakeDB`` opened (a cursor on the process's shared
   database; in a fresh process, its views made), ``mining.search.similar.browse``
   (100 ids, lowest confidence first), and for those ids
   ``mining.core.media.thumbnails`` + ``mining.core.media.image_facts`` (what
   ``ui.widgets.image_grid`` reads), against the naive loop: each original
   opened with PIL, ``thumbnail((128, 128))``, encoded as JPEG (uris looked up
   beforehand, untimed);
2. drill: ``mining.search.sessions.start`` (pool of 1,000 nearest a seed, 8 clusters), then
   ``mining.search.sessions.pick`` of clusters 0 and 1 (re-cluster, write the step to the
   lake, report through ``sessions.show``), ``sessions.show`` alone,
   ``mining.search.clustering.cluster_pool`` alone and ``project_2d`` of the pool (the
   Narrow page's map), and the Narrow page's re-render after a pick as the
   library calls it (sessions list, show, the pool map, 8 cluster mosaics
   in one thumbnail read), against scikit-learn ``KMeans(8, n_init=1,
   max_iter=20)`` on the same vectors (clustering only);
3. with ``--apptest``: the Review page run headless by Streamlit's AppTest on a
   narrowing session's images (100 per page), first and second (cached) run.

The Streamlit caches (``st.cache_data``) are not in play in 1 and 2: these are
the uncached reads, what a first view costs.

The machine is described in the output (CPU, cores, RAM, library versions) with
the load average at start and end: on 2 cores, anything else running shows.

    python tests/benchmarks/bench_ui.py [--lake DIR] [--images 100000] [--repeats 5] [--threads N] [--apptest] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import duckdb  # noqa: E402
import faiss  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import sklearn  # noqa: E402
import threadpoolctl  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from PIL import __version__ as pillow_version  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

from mining.core import media, tables  # noqa: E402
from mining.core.config import IndexConfig, MiningConfig  # noqa: E402
from mining.core.lake import Lake  # noqa: E402
from mining.core.schema import EMBEDDINGS, IMAGE_FILES, IMAGES, PREDICTIONS, THUMBNAILS, UTC_TS  # noqa: E402
from mining.core.sql import LakeDB  # noqa: E402
from mining.search import sessions as narrow  # noqa: E402
from mining.search.backends import get_backend  # noqa: E402
from mining.search.clustering import cluster_pool, project_2d  # noqa: E402
from mining.search.index_sync import index_lake  # noqa: E402
from mining.search.similar import browse  # noqa: E402
from tests.benchmarks.machine import describe  # noqa: E402

JOB = "bench"
MARKER = "bench_ui.json"  # written last: the lake is complete
BUILDING = "bench_ui.building"  # written first: a folder holding it may be removed and rebuilt
LAKE_VERSION = 2  # bump when the generated lake changes (2: Delta tables)
CENTRES = 50
EMBEDDING_WIDTH = 512  # a ResNet's
DAYS = 30
FIRST_DAY = datetime(2026, 1, 1, tzinfo=UTC)
LABELS = ("car", "truck", "person", "bicycle", "dog", "plane")
BASES = 500  # distinct base pictures behind the thumbnails and originals
THUMB = (128, 96)
ORIGINAL = (256, 192)
ORDER = "lowest confidence first"
BACKBONE, WEIGHTS = "resnet18", "random-seed0"
STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


# -- the synthetic lake ---------------------------------------------------------
def image_ids(n: int, seed: int) -> np.ndarray:
    """Content-like ids: 20 hex digits of a SHA-256, as the schema's image ids are."""
    return np.array([hashlib.sha256(f"bench-ui/{seed}/{i}".encode()).hexdigest()[:20] for i in range(n)])


def base_pictures(seed: int, size: tuple[int, int]) -> list[np.ndarray]:
    """BASES textured scenes (sky, ground, a few shapes, sensor noise), uint8 (h, w, 3)."""
    rng = np.random.default_rng([seed, 1, *size])
    w, h = size
    out = []
    for _ in range(BASES):
        sky, ground = (tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(2))
        picture = Image.new("RGB", size, sky)
        draw = ImageDraw.Draw(picture)
        draw.rectangle((0, int(h * rng.uniform(0.4, 0.7)), w, h), fill=ground)
        for _ in range(int(rng.integers(3, 8))):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            dx, dy = int(rng.integers(w // 20, w // 3)), int(rng.integers(h // 20, h // 3))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + dx, y + dy), fill=colour)
        noisy = np.asarray(picture, np.int16) + rng.integers(-14, 15, (h, w, 3), dtype=np.int16)
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return out


def distinct_jpeg(bases: list[np.ndarray], rng: np.random.Generator, quality: int) -> bytes:
    """A base picture made unique by a random patch of about 1/16 of its side, as JPEG."""
    picture = bases[int(rng.integers(len(bases)))].copy()
    h, w, _ = picture.shape
    ph, pw = max(4, h // 12), max(4, w // 12)
    y, x = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    picture[y:y + ph, x:x + pw] = rng.integers(0, 256, (ph, pw, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(picture).save(out, "JPEG", quality=quality)
    return out.getvalue()


def mixture(n: int, start: int, seed: int) -> np.ndarray:
    """Rows ``start..start+n`` of the embedding mixture: float32 (n, 512), unit rows."""
    centres = np.random.default_rng([seed, 2]).standard_normal((CENTRES, EMBEDDING_WIDTH)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = (np.arange(CENTRES) + 1.0) ** -0.5
    rng = np.random.default_rng([seed, 3, start])
    labels = rng.choice(CENTRES, n, p=weights / weights.sum())
    spread = rng.uniform(0.7, 1.0, n).astype(np.float32)[:, None]  # noise norm, about
    x = centres[labels] + rng.standard_normal((n, EMBEDDING_WIDTH), dtype=np.float32) * spread / np.sqrt(
        EMBEDDING_WIDTH
    )
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def lake_complete(root: Path, params: dict) -> bool:
    try:
        return json.loads((root / MARKER).read_text()).get("params") == params
    except (OSError, ValueError):
        return False


def prepare_folder(root: Path, params: dict) -> bool:
    """True when the lake at ``root`` is complete for ``params`` (reuse it); else
    make ``root`` an empty folder, removing only what this benchmark wrote."""
    if lake_complete(root, params):
        return True
    if root.exists() and any(root.iterdir()):
        if not ((root / BUILDING).exists() or (root / MARKER).exists()):
            sys.exit(f"bench_ui: {root} is not empty and not a lake this benchmark built; give another --lake")
        say(f"removing the incomplete or outdated benchmark lake in {root}")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / BUILDING).write_text(json.dumps(params))
    return False


def build_lake(root: Path, params: dict) -> dict:
    """Write the synthetic lake (see the module docstring); returns what was written."""
    n, part, seed, originals = params["images"], params["part"], params["seed"], params["originals"]
    lake = Lake(str(root))
    started = time.perf_counter()
    now = datetime.now(UTC)
    ids = image_ids(n, seed)
    rng = np.random.default_rng([seed, 4])
    confidence = rng.beta(6.0, 1.5, n).astype(np.float32)
    # The originals the grid's first pages need (lowest confidence first, ties by id).
    with_original = np.zeros(n, bool)
    with_original[np.lexsort((ids, confidence))[:originals]] = True
    originals_dir = root / "sources" / "originals"
    uris = np.array([str(originals_dir / f"{i // 1000:03d}" / f"{ids[i]}.jpg") for i in range(n)])

    say(f"drawing {BASES} base pictures per size")
    thumb_bases, original_bases = base_pictures(seed, THUMB), base_pictures(seed, ORIGINAL)
    thumbnail_bytes = original_bytes = 0
    for p, first in enumerate(range(0, n, part)):
        rows = slice(first, min(first + part, n))
        m = rows.stop - rows.start
        prng = np.random.default_rng([seed, 5, p])
        thumbs = [distinct_jpeg(thumb_bases, prng, 85) for _ in range(m)]
        thumbnail_bytes += sum(map(len, thumbs))
        sizes = np.full(m, 14_000, np.int64)  # about what a 256x192 JPEG weighs, for rows without a file
        for j in np.flatnonzero(with_original[rows]):
            data = distinct_jpeg(original_bases, prng, 90)
            path = Path(uris[rows.start + j])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            sizes[j] = len(data)
            original_bytes += len(data)
        vectors = mixture(m, first, seed)
        info = tables.commit_info(JOB, part=p)
        tables.append(lake, IMAGES, pa.table({
            "image_id": pa.array(ids[rows], pa.string()),
            "uri": pa.array(uris[rows], pa.string()),
            "width": pa.array(np.full(m, ORIGINAL[0], np.int32)),
            "height": pa.array(np.full(m, ORIGINAL[1], np.int32)),
            "bytes": pa.array(sizes),
            "sha256": pa.array([hashlib.sha256(i.encode()).hexdigest() for i in ids[rows]], pa.string()),
            "format": pa.array(["JPEG"] * m, pa.string()),
            "mode": pa.array(["RGB"] * m, pa.string()),
            "source": pa.array([str(originals_dir)] * m, pa.string()),
            "ingested_at": pa.array([now] * m, UTC_TS),
        }, schema=IMAGES.schema), info)
        tables.append(lake, IMAGE_FILES, pa.table({
            "uri": pa.array(uris[rows], pa.string()), "image_id": pa.array(ids[rows], pa.string()),
            "source": pa.array([str(originals_dir)] * m, pa.string()), "ingested_at": pa.array([now] * m, UTC_TS),
        }, schema=IMAGE_FILES.schema), info)
        tables.append(lake, EMBEDDINGS, pa.table({
            "image_id": pa.array(ids[rows], pa.string()),
            "backbone": pa.array([BACKBONE] * m, pa.string()),
            "weights": pa.array([WEIGHTS] * m, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()),
                                                   EMBEDDING_WIDTH).cast(pa.list_(pa.float32())),
            "computed_at": pa.array([now] * m, UTC_TS),
        }, schema=EMBEDDINGS.schema), info)
        tables.append(lake, THUMBNAILS, pa.table({
            "image_id": pa.array(ids[rows], pa.string()),
            "jpeg": pa.array(thumbs, pa.binary()),
            "width": pa.array(np.full(m, THUMB[0], np.int32)),
            "height": pa.array(np.full(m, THUMB[1], np.int32)),
            "computed_at": pa.array([now] * m, UTC_TS),
        }, schema=THUMBNAILS.schema), info)
        say(f"  part {p}: {rows.stop:,} / {n:,} images (images, embeddings, thumbnails)")

    # Predictions: one per image, a shard per day, as a daily ingest writes them.
    rng = np.random.default_rng([seed, 6])
    seconds = rng.integers(0, DAYS * 86400, n)
    ts = np.array([FIRST_DAY + timedelta(seconds=int(s)) for s in seconds], dtype=object)
    version = np.where(rng.random(n) < 0.5, "v1", "v2")
    label = np.array(LABELS)[rng.integers(0, len(LABELS), n)]
    prediction_ids = [
        hashlib.sha256(f"{i}|{v}|{t.isoformat()}".encode()).hexdigest()[:24] for i, v, t in zip(ids, version, ts)
    ]
    scores = [[(lab, float(c))] + [(o, float((1 - c) / (len(LABELS) - 1))) for o in LABELS if o != lab]
              for lab, c in zip(label, confidence)]
    predictions = pa.table({
        "prediction_id": pa.array(prediction_ids, pa.string()),
        "image_id": pa.array(ids, pa.string()),
        "image_uri": pa.array(uris, pa.string()),
        "model_version": pa.array(version, pa.string()),
        "ts": pa.array(list(ts), UTC_TS),
        "label": pa.array(label, pa.string()),
        "confidence": pa.array(confidence, pa.float32()),
        "scores": pa.array(scores, pa.map_(pa.string(), pa.float32())),
        "source": pa.array(["bench-predictions.jsonl"] * n, pa.string()),
        "source_row": pa.array(np.arange(n, dtype=np.int64)),
        "ingested_at": pa.array([now] * n, UTC_TS),
        "date": pa.array([t.date() for t in ts], pa.date32()),
        "customer_flag": pa.array(rng.random(n) < 0.01),
    })
    day = seconds // 86400
    for d in range(DAYS):
        rows = predictions.filter(pa.array(day == d)).sort_by("ts")
        tables.append(lake, PREDICTIONS, rows, tables.commit_info(JOB, day=d))
    say(f"  predictions: {n:,} rows in {DAYS} daily partitions")
    built = {"build_s": round(time.perf_counter() - started, 1), "thumbnail_mb": round(thumbnail_bytes / 2**20, 1),
             "originals_written": int(with_original.sum()), "original_mb": round(original_bytes / 2**20, 1)}
    (root / MARKER).write_text(json.dumps({"params": params, **built}, indent=1))
    (root / BUILDING).unlink()
    return built


def lake_sizes(root: Path) -> dict:
    """Files and MB per table folder (old versions' files included, as on disk)."""
    out = {}
    for table in ("images", "predictions", "embeddings", "thumbnails", "narrow_steps", "narrow_members"):
        files = list((root / table).rglob("*.parquet")) if (root / table).exists() else []
        out[table] = {"files": len(files), "mb": round(sum(f.stat().st_size for f in files) / 2**20, 1)}
    return out


def forget_sessions(root: Path) -> None:
    """Remove the narrowing sessions earlier runs wrote, so each run starts alike."""
    for folder in ("narrow_steps", "narrow_members"):
        if (root / folder).exists():
            shutil.rmtree(root / folder)


# -- timing ----------------------------------------------------------------------
def timed(fn, repeats: int, warmup: int = 1) -> tuple[dict, object]:
    """Median, min and max seconds of ``repeats`` calls after ``warmup`` untimed ones;
    and the last call's result."""
    result = None
    for _ in range(warmup):
        result = fn()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return stats(seconds), result


def stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"median_ms": round(float(np.median(ms)), 1), "min_ms": round(float(ms.min()), 1),
            "max_ms": round(float(ms.max()), 1), "runs": len(ms)}


# -- 1. the grid -------------------------------------------------------------------
def naive_thumbnails(uris: list[str]) -> list[bytes]:
    """What a user writes first: open each original, shrink it, encode it."""
    out = []
    for uri in uris:
        with Image.open(uri) as picture:
            picture = picture.convert("RGB")
            picture.thumbnail((128, 128))
            buffer = io.BytesIO()
            picture.save(buffer, "JPEG", quality=85)
            out.append(buffer.getvalue())
    return out


def bench_grid(lake: Lake, index, size: int, repeats: int) -> dict:
    say(f"grid: LakeDB open, browse, thumbnails + image_facts for {size} ids; naive PIL loop")
    open_stats, _ = timed(lambda: LakeDB(lake).close(), repeats)

    def rebuilt():  # the first open after this process wrote to the lake
        lake.mark_changed()
        LakeDB(lake).close()

    rebuilt_stats, _ = timed(rebuilt, repeats)
    with LakeDB(lake) as db:
        browse_stats, ids = timed(lambda: browse(db, index, order=ORDER, limit=size), repeats)
        thumbs_stats, thumbs = timed(lambda: media.thumbnails(db, ids), repeats)
        facts_stats, facts = timed(lambda: media.image_facts(db, ids), repeats)
        both_stats, _ = timed(lambda: (media.thumbnails(db, ids), media.image_facts(db, ids)), repeats)
        found = db.query("SELECT image_id, uri FROM images WHERE image_id IN (SELECT unnest($ids))", {"ids": ids})
        uris = dict(zip(found.column("image_id").to_pylist(), found.column("uri").to_pylist()))
    assert len(ids) == size and len(thumbs) == size and facts.num_rows == size, (len(ids), len(thumbs), facts.num_rows)
    paths = [str(uris[i]) for i in ids]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        sys.exit(f"bench_ui: {len(missing)} originals of the grid are missing (e.g. {missing[0]}); "
                 "rebuild with a larger --originals")

    def fresh():  # a page render right after a write: views rebuilt, then the grid's reads
        lake.mark_changed()
        with LakeDB(lake) as db:
            return media.thumbnails(db, ids), media.image_facts(db, ids)

    fresh_stats, _ = timed(fresh, repeats)
    naive_stats, naive = timed(lambda: naive_thumbnails(paths), repeats)
    assert len(naive) == size
    return {
        "images_in_grid": size,
        "lakedb_open": open_stats,
        "lakedb_open_after_write": rebuilt_stats,
        "browse": browse_stats,
        "thumbnails": thumbs_stats,
        "image_facts": facts_stats,
        "grid": both_stats,
        "grid_fresh_connection": fresh_stats,
        "naive_pil": naive_stats,
        "thumbnail_kb_mean": round(float(np.mean([len(b) for b in thumbs.values()])) / 1024, 2),
        "grid_over_naive": round(both_stats["median_ms"] / naive_stats["median_ms"], 2),
        "grid_fresh_over_naive": round(fresh_stats["median_ms"] / naive_stats["median_ms"], 2),
        "seed": ids[0],
    }


# -- 2. the drill ---------------------------------------------------------------------
def page_render(lake: Lake, index, session: str) -> dict[str, float]:
    """What the Narrow page reads to draw a step, as ui/views/narrow.py and ui/data.py
    call the library (Streamlit caches left out): the sessions, the step, the pool
    map, the cluster mosaics from one thumbnail read (the first read after the pick's write
    rebuilds the views). Returns seconds per part."""
    seconds = {}
    db = LakeDB(lake)  # the page's cursor
    started = time.perf_counter()
    narrow.list_sessions(db)
    seconds["sessions"] = time.perf_counter() - started
    started = time.perf_counter()
    report = narrow.show(db, session)
    seconds["show"] = time.perf_counter() - started
    started = time.perf_counter()
    members = narrow.members_of(db, session, report.step)
    narrow.session_embedding_set(db, session)
    positions = index.positions(members.column("image_id").to_numpy(zero_copy_only=False))
    seconds["pool_members"] = time.perf_counter() - started
    started = time.perf_counter()
    project_2d(index.vectors[positions])
    seconds["project_2d"] = time.perf_counter() - started
    started = time.perf_counter()
    thumbs = media.thumbnails(
        db, [i for cluster in report.clusters for i in cluster.nearest]
    )  # one read, as ui/data.mosaics
    for cluster in report.clusters:
        media.to_jpeg(media.mosaic([thumbs[i] for i in cluster.nearest if i in thumbs]))
    seconds["mosaics"] = time.perf_counter() - started
    db.close()
    return seconds


def bench_drill(lake: Lake, index, seed_id: str, pool: int, clusters: int, repeats: int) -> dict:
    say(f"drill: start (pool {pool}, {clusters} clusters), pick [0, 1], show, page render; sklearn KMeans")
    backend = get_backend("cpu")
    config = MiningConfig(user="bench", pool=pool, clusters=clusters)
    position = int(index.positions([seed_id])[0])
    run = f"{datetime.now(UTC):%H%M%S}-{os.getpid()}"
    start_s, pick_s, show_s, render_s, ui_s, parts = [], [], [], [], [], []
    picked_pool = []
    last = None
    db = LakeDB(lake)  # the UI's per-session cursor
    for r in range(repeats + 1):  # the first is the warm-up
        session = f"bench-{run}-{r}"
        started = time.perf_counter()
        narrow.start(db, index, backend, config, seeds=[seed_id], seed_vectors=index.vectors[[position]],
                     pool=pool, clusters=clusters, session=session)
        t_start = time.perf_counter() - started
        started = time.perf_counter()
        # What the UI's _pick does first: which index the session was started on.
        narrow.session_embedding_set(db, session)
        t_lookup = time.perf_counter() - started
        started = time.perf_counter()
        report = narrow.pick(db, index, backend, config, session, [0, 1])
        t_pick = time.perf_counter() - started
        started = time.perf_counter()
        narrow.show(db, session)
        t_show = time.perf_counter() - started
        started = time.perf_counter()
        part = page_render(lake, index, session)
        t_render = time.perf_counter() - started
        if r:
            start_s.append(t_start)
            pick_s.append(t_pick)
            show_s.append(t_show)
            render_s.append(t_render)
            ui_s.append(t_lookup + t_pick + t_render)
            picked_pool.append(report.pool_size)
            parts.append(part)
        last = (session, report)
    session, report = last

    # The vectors the last pick clustered (the members of clusters 0 and 1 of step 0),
    # and the start's pool, for the clustering-only comparisons.
    step0 = narrow.members_of(db, session, 0)
    chosen = step0.filter(pc.is_in(step0.column("cluster"), pa.array([0, 1], pa.int32())))
    pick_positions = index.positions(chosen.column("image_id").to_numpy(zero_copy_only=False))
    pick_similarity = chosen.column("similarity").to_numpy()
    pool_positions = index.positions(step0.column("image_id").to_numpy(zero_copy_only=False))
    ours_stats, _ = timed(lambda: cluster_pool(index, pick_positions, pick_similarity, clusters, backend,
                                               niter=config.niter, seed=config.seed), repeats)
    x_pick = np.ascontiguousarray(index.vectors[pick_positions])
    x_pool = np.ascontiguousarray(index.vectors[pool_positions])
    sk_pick, _ = timed(lambda: KMeans(n_clusters=clusters, n_init=1, max_iter=20, random_state=0).fit(x_pick), repeats)
    sk_pool, _ = timed(lambda: KMeans(n_clusters=clusters, n_init=1, max_iter=20, random_state=0).fit(x_pool), repeats)
    ours_pool, _ = timed(lambda: backend.kmeans(x_pool, clusters, niter=config.niter, seed=config.seed), repeats)
    out = {
        "pool": pool, "clusters": clusters, "pick_pool_median": int(np.median(picked_pool)),
        "start": stats(start_s), "pick": stats(pick_s), "show": stats(show_s), "page_render": stats(render_s),
        "ui_drill_total": stats(ui_s), "page_render_parts": {k: stats([p[k] for p in parts]) for k in parts[0]},
        "cluster_pool_pick": ours_stats, "sklearn_pick": sk_pick,
        "kmeans_start_pool": ours_pool, "sklearn_start_pool": sk_pool,
        "pick_over_sklearn": round(stats(pick_s)["median_ms"] / sk_pick["median_ms"], 2),
        "cluster_pool_over_sklearn": round(ours_stats["median_ms"] / sk_pick["median_ms"], 2),
        "ours_over_sklearn_start_pool": round(ours_pool["median_ms"] / sk_pool["median_ms"], 2),
    }
    out["project_2d_pool"], _ = timed(lambda: project_2d(index.vectors[pool_positions]), repeats)
    out["session"] = session
    return out


# -- 3. the Review page in Streamlit ------------------------------------------------------
def bench_apptest(root: Path, session: str, timeout: float) -> dict:
    """The Review page, headless, on ``session``'s images (AppTest; a rerun of a page
    script as a browser's interaction causes, without the browser and websocket)."""
    say("apptest: the Review page on a narrowing session (first run, then a cached rerun)")
    os.environ["EDGEMINE_LAKE"] = str(root)
    os.environ.setdefault("EDGEMINE_USER", "bench")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "ui" / "app.py"), default_timeout=timeout)
    started = time.perf_counter()
    at.run()
    app_s = time.perf_counter() - started
    at.switch_page("views/review.py")
    at.session_state["review_kind"] = "Narrowing session"
    at.session_state["review_session"] = session
    at.session_state["review_name"] = f"bench-{session}"
    at.session_state["reviewer"] = "bench"  # the sidebar's reviewer (ui.widgets.reviewer)
    started = time.perf_counter()
    at.run()
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    at.run()
    second_s = time.perf_counter() - started
    errors = [e.value for e in at.exception] + [e.value for e in at.error]
    return {
        "app_first_run_s": round(app_s, 2),
        "review_first_s": round(first_s, 2),
        "review_rerun_s": round(second_s, 2),
        "images_shown": len(at.get("image")),
        "errors": errors[:3],
    }


# -- report ------------------------------------------------------------------------------
def machine() -> str:
    return describe({"duckdb": duckdb.__version__, "pyarrow": pa.__version__, "faiss": faiss.__version__,
                     "scikit-learn": sklearn.__version__, "Pillow": pillow_version, "numpy": np.__version__})


def row(name: str, s: dict | None, note: str = "") -> str:
    if s is None:
        return f"| {name} | – | – | – | {note or 'not measured'} |"
    return f"| {name} | {s['median_ms']} | {s['min_ms']} | {s['max_ms']} | {note} |"


def markdown(report: dict) -> str:
    g, d = report["grid"], report["drill"]
    lake = report["lake"]
    lines = [
        f"Machine: {report['machine']}",
        (
            f"Threads (faiss, BLAS): {report['threads']}. "
            f"Load average at start {report['load_start']}, at end {report['load_end']}. "
            f"Lake: {report['images']:,} images "
            f"({'reused' if lake['reused'] else 'built in ' + str(lake['build_s']) + ' s'}); "
            f"index {report['index']['kind']} "
            f"({report['index']['action']}, {report['index']['seconds']} s; "
            f"synced again in {report['index']['open_s']} s)."
        ),
        "Table files / MB: " + ", ".join(f"{t} {v['files']} / {v['mb']}" for t, v in lake["tables"].items()),
        "",
        f"Grid of {g['images_in_grid']} thumbnails (median of {g['grid']['runs']}):",
        "",
        "| step | median ms | min ms | max ms | note |",
        "|---|---:|---:|---:|---|",
        row("LakeDB open (read-only)", g["lakedb_open"], "a cursor on the shared database"),
        row("LakeDB open after a write", g["lakedb_open_after_write"], "the shared database's views rebuilt"),
        row(f"browse, {ORDER}", g["browse"], "GROUP BY over images x predictions"),
        row("thumbnails (100 ids)", g["thumbnails"], f"{g['thumbnail_kb_mean']} KB each"),
        row("image_facts (100 ids)", g["image_facts"]),
        row("**grid: thumbnails + image_facts**", g["grid"], "held connection"),
        row("grid right after a write", g["grid_fresh_connection"], "views rebuilt + both reads"),
        row(
            "naive: PIL open, thumbnail, JPEG x100",
            g["naive_pil"],
            f"baseline; grid / naive = {g['grid_over_naive']} ({g['grid_fresh_over_naive']} right after a write)",
        ),
        "",
        f"Drill step (pool {d['pool']:,}, {d['clusters']} clusters; a pick of clusters 0+1 re-clusters "
        f"{d['pick_pool_median']} images; median of {d['pick']['runs']}):",
        "",
        "| step | median ms | min ms | max ms | note |",
        "|---|---:|---:|---:|---|",
        row("narrow.start (take pool + cluster + write)", d["start"]),
        row(
            "**narrow.pick [0, 1]** (read, cluster, write, show)",
            d["pick"],
            f"pick / sklearn clustering = {d['pick_over_sklearn']}",
        ),
        row("narrow.show", d["show"]),
        row("Narrow page re-render (library calls)", d["page_render"], "sessions, show, map, 8 mosaics:"),
        *[row(f"&nbsp;&nbsp;{k}", v) for k, v in d["page_render_parts"].items()],
        row("**UI drill total** (lookup + pick + re-render)", d["ui_drill_total"]),
        row(f"cluster_pool on the pick's {d['pick_pool_median']} vectors", d["cluster_pool_pick"], "clustering alone"),
        row(
            "sklearn KMeans(8, n_init=1, max_iter=20), same vectors",
            d["sklearn_pick"],
            f"baseline; cluster_pool / sklearn = {d['cluster_pool_over_sklearn']}",
        ),
        row(f"backend.kmeans on the start's {d['pool']:,} pool", d["kmeans_start_pool"]),
        row(
            "sklearn KMeans, same pool",
            d["sklearn_start_pool"],
            f"ours / sklearn = {d['ours_over_sklearn_start_pool']}",
        ),
        row(f"project_2d of the {d['pool']:,} pool", d["project_2d_pool"], "the pool map"),
    ]
    if report.get("apptest"):
        a = report["apptest"]
        lines += [
            "",
            (
                f"AppTest, Review page: app first run {a.get('app_first_run_s')} s, Review page first run "
                f"{a.get('review_first_s')} s, rerun {a.get('review_rerun_s')} s, images shown {a.get('images_shown')}"
                + (f"; errors: {a['errors']}" if a.get("errors") else "")
            ),
        ]
    lines += ["", f"({report['seconds']} s in all)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", help="lake folder, built if missing or incomplete, else reused "
                        "(default: edgemine-bench-ui-<images> in the temp folder)")
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--part", type=int, default=10_000, help="images per written part (shard)")
    parser.add_argument(
        "--originals", type=int, default=1000, help="original JPEG files written (lowest confidence first)"
    )
    parser.add_argument("--grid", type=int, default=100, help="thumbnails per grid")
    parser.add_argument("--pool", type=int, default=1000, help="narrowing pool")
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each step (median), after one warm-up")
    parser.add_argument(
        "--keep-sessions",
        action="store_true",
        help="keep the narrowing sessions earlier runs wrote (by default removed: each run starts alike)",
    )
    parser.add_argument(
        "--apptest", action="store_true", help="also run the Review page headless with Streamlit's AppTest"
    )
    parser.add_argument("--threads", type=int, help="threads for faiss, BLAS and OpenMP (default: the library's own, "
                        "one per core); DuckDB keeps its default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10,000 images and 3 repeats, for a smoke run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats = min(args.images, 10_000), min(args.repeats, 3)
    if args.originals < args.grid:
        parser.error("--originals must be at least --grid: the naive loop reads the grid's originals")

    root = Path(args.lake or Path(tempfile.gettempdir()) / f"edgemine-bench-ui-{args.images}").resolve()
    params = {
        "images": args.images,
        "part": args.part,
        "originals": args.originals,
        "seed": args.seed,
        "version": LAKE_VERSION,
    }
    report = {"machine": machine(), "load_start": [round(v, 1) for v in os.getloadavg()], "images": args.images,
              "repeats": args.repeats, "threads": args.threads or f"default ({os.cpu_count()})"}
    limits = contextlib.ExitStack()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
        limits.enter_context(threadpoolctl.threadpool_limits(args.threads))
    if prepare_folder(root, params):
        say(f"reusing the complete lake in {root}")
        report["lake"] = {"path": str(root), "reused": True, **json.loads((root / MARKER).read_text())}
    else:
        say(f"building a lake of {args.images:,} images in {root}")
        report["lake"] = {"path": str(root), "reused": False, **build_lake(root, params)}
        say(f"lake built in {report['lake']['build_s']} s")
    if not args.keep_sessions:
        forget_sessions(root)
    report["lake"].pop("params", None)
    report["lake"]["tables"] = lake_sizes(root)
    lake = Lake(str(root))

    say("syncing the index (index_lake)")
    with LakeDB(lake) as db:
        index, summary = index_lake(db, IndexConfig(), seed=0)
        started = time.perf_counter()
        index_lake(db, IndexConfig(), seed=0)  # what the UI's first load costs once the index is saved
    report["index"] = {"action": summary.action, "kind": summary.kind, "vectors": summary.vectors,
                       "seconds": round(summary.seconds, 2), "open_s": round(time.perf_counter() - started, 2)}
    say(f"  index {summary.action}: {summary.kind}, {summary.vectors:,} vectors, {summary.seconds:.1f} s")

    with limits:
        report["grid"] = bench_grid(lake, index, args.grid, args.repeats)
        report["drill"] = bench_drill(lake, index, report["grid"].pop("seed"), args.pool, args.clusters, args.repeats)
    session = report["drill"].pop("session")
    report["lake"]["tables"] |= {k: v for k, v in lake_sizes(root).items() if k.startswith("narrow")}
    if args.apptest:
        try:
            report["apptest"] = bench_apptest(root, session, timeout=120)
        except Exception as e:  # the UI is under construction: say so, keep the rest
            report["apptest"] = {"errors": [f"{type(e).__name__}: {e}"]}
    report["load_end"] = [round(v, 1) for v in os.getloadavg()]
    report["seconds"] = round(time.perf_counter() - STARTED)
    print(json.dumps(report, indent=1) if args.json else markdown(report))


if __name__ == "__main__":
    main()

"""edgemine's library: the lake, SQL over it, and mining it for edge cases.

The functions below are what a notebook user calls; the CLI (jobs/) and the UI
(ui/) call the same ones, or the modules behind them::

    import mining

    db = mining.open_lake("./lake")                 # read-only DuckDB with a view per table
    low = db.query("SELECT * FROM predictions WHERE confidence < 0.5")    # an Arrow table
    hits = mining.find_similar(db, [flagged_image_id], k=20)
    step = mining.start_narrowing(db, [flagged_image_id], pool=500, clusters=8, name="glare")
    step = mining.pick_clusters(db, "glare", [0, 2])
    mining.decide(db, "glare", [h.image_id for h in hits[:5]], "accept", reviewer="ana")
    mining.save_review(db, "glare")                 # the accepted images, as the named set "glare"

Every function takes the LakeDB first (it reads through that connection and
writes to its lake) and, where it needs settings, a ``config`` (default: the
one ``open_lake`` read: configs/default.toml's values, $EDGEMINE_CONFIG, the
environment). Errors the user can fix raise subclasses of
``mining.core.errors.EdgemineError`` whose message says what to do.

Modules, one concept each: ``lake`` (storage), ``schema`` (tables), ``sql``
(views), ``index``/``index_store``/``index_sync`` (the vector index),
``search``/``feedback`` (similar images, the reviewer loop), ``clustering``/``sessions``
(narrowing), ``sets``, ``decisions``, ``sources`` (the images a source spec names),
``statistics``, ``media``, ``export``/``label_studio``
(batches for labelling), ``labels`` (labels back), ``formats`` (a package: one module per export
format), ``queues`` and the ``samplers`` package (review queues, one module per sampler family),
``coreset`` (diverse picks), ``label_errors``, ``duplicates``, ``models`` (trained model
versions), ``slices``/``metrics``/``detection`` (metrics per slice and model version,
regression alarms), ``drift``, ``cards`` (model cards). Tables and columns:
docs/LAKE.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mining.core.config import Config, load_config
from mining.core.errors import EdgemineError
from mining.core.lake import Lake
from mining.core.sql import LakeDB

if TYPE_CHECKING:
    import pyarrow as pa

    from mining.core.schema import TABLES  # noqa: F401 - given by __getattr__
    from mining.labelling.export import ExportSummary
    from mining.labelling.labels import LabelsSummary
    from mining.review.queues import QueueSummary
    from mining.search.duplicates import DuplicatesSummary
    from mining.search.index import VectorIndex
    from mining.search.index_sync import IndexSummary
    from mining.search.sessions import StepReport
    from mining.search.similar import FileEmbedder, Hit, ObjectHit

__all__ = [
    "TABLES", "Config", "EdgemineError", "Lake", "LakeDB", "load_config", "open_lake", "open_index", "sync_index",
    "find_similar", "export_objects", "start_narrowing", "pick_clusters", "go_back", "show_step", "list_sessions",
    "decide", "save_review", "save_set", "export_batch", "import_labels",
    "make_queue", "show_queue", "list_queues", "find_duplicates", "diverse_picks",
    "list_models", "read_model",
    "add_slice", "list_slices", "compute_metrics", "check_regressions", "detect_drift", "write_card",
    "resolve_images", "source_names", "mark_page",
]


def __getattr__(name: str):
    """``mining.TABLES``, imported on first use: the schemas import pyarrow, which a command
    that reads no table (`edgemine sql "SELECT 1"`) does without."""
    if name == "TABLES":
        from mining.core.schema import TABLES

        return TABLES
    raise AttributeError(f"module 'mining' has no attribute {name!r}")


def open_lake(uri: str | None = None, *, config: Config | None = None) -> LakeDB:
    """A read-only connection to the lake: one DuckDB view per table, writes refused.

    Args:
        uri: a folder or ``s3://bucket/prefix``; default: ``config.lake``
            ($EDGEMINE_LAKE, the config file's ``lake``, else ``./lake``).
        config: the settings (S3 endpoint and credentials, ...); default: ``load_config()``.

    Returns:
        a LakeDB; ``db.query(sql)`` returns an Arrow table, ``db.lake`` is the Lake.

    Raises:
        ConfigError: the config file is missing or wrong.

    Example:
        >>> db = open_lake(lake_uri)
        >>> db.query("SELECT count(*) AS n FROM images").column("n")[0].as_py() > 0
        True
    """
    config = config or load_config(lake=uri)
    return LakeDB(Lake(uri or config.lake, config.s3), config=config)


def open_index(db: LakeDB, *, backbone: str | None = None, weights: str | None = None,
               config: Config | None = None, objects: bool = False) -> VectorIndex:
    """The vector index of one embedding set, brought up to date with the lake first.

    Hold it for many searches: each function below that takes ``index=`` otherwise
    opens it again.

    Args:
        db: from ``open_lake``.
        backbone, weights: the embedding set (``resnet18``, ``imagenet1k_v1``); default: the lake's only one.
        objects: the index of the object embeddings (one vector per detection box, ``edgemine embed
            --objects``; its ids are detection ids) instead of the images'.

    Raises:
        SearchError: no embeddings yet (run ``edgemine embed``, ``--objects`` for objects), or several sets.

    Example:
        >>> index = open_index(open_lake(lake_uri))
        >>> len(index) > 0 and index.vectors.shape[1]
        512
    """
    from mining.search.index_sync import open_index as sync_and_open

    return sync_and_open(db, _config(db, config).index, backbone=backbone, weights=weights, objects=objects)


def sync_index(db: LakeDB, *, backbone: str | None = None, weights: str | None = None, rebuild: bool = False,
               config: Config | None = None, objects: bool = False) -> IndexSummary:
    """Build or extend the vector index to cover every embedding (`edgemine index`; ``objects``:
    the object embeddings' index).

    Returns:
        what was done: ``action`` (built, rebuilt, extended, up to date), ``vectors``, ``kind``.
    """
    from mining.search.index_sync import index_lake

    config = _config(db, config)
    return index_lake(db, config.index, backbone=backbone, weights=weights, rebuild=rebuild, seed=config.mining.seed,
                      objects=objects)[1]


def find_similar(db: LakeDB, seeds: Sequence[str], *, negatives: Sequence[str] = (), k: int | None = None,
                 where: str | None = None, save: str | None = None, index: VectorIndex | None = None,
                 embed_files: FileEmbedder | None = None, config: Config | None = None,
                 objects: bool | None = None) -> list[Hit] | list[ObjectHit]:
    """The images most like ``seeds`` and unlike ``negatives`` (`edgemine similar`); or the
    detection boxes, given detection ids.

    Args:
        seeds: image ids of the lake (or image files, with ``embed_files``); or detection ids
            (``detections.detection_id``): the search then runs over the object index.
        negatives: image ids (or files) the results should not look like; a
            classifier then ranks every image, with the production model's doubt
            (its confidence, margin and entropy) as a prior weighted by how well it
            told these marks apart (docs/MINING.md, the reviewer loop).
        k: how many results (default ``[mining] k``, 20).
        where: a SQL predicate over ``images i LEFT JOIN predictions p``, e.g. ``"p.confidence < 0.6"``.
        save: also save the results as this named set.
        embed_files: ``embed.files.file_embedder(config)``, to embed file seeds with the index's model.
        objects: search the object index (default: when ``index`` is one, or the seeds name detections);
            ``where`` is then over ``detections d JOIN images i``.

    Returns:
        Hits (rank, image_id, score: cosine similarity, or with negatives a sum of weighted z-scores), best first;
        never a seed or a negative. Over objects, ObjectHits (rank, detection_id, image_id, box, score).

    Raises:
        SearchError: an unknown image id, a slice that matches nothing.
        QueryError: ``where`` is not valid SQL.

    Example:
        >>> hits = find_similar(open_lake(lake_uri), [seed], k=5)
        >>> [h.rank for h in hits], seed in [h.image_id for h in hits]
        ([1, 2, 3, 4, 5], False)
    """
    from mining.search.similar import find_similar as search
    from mining.search.similar import names_detections

    config = _config(db, config)
    if index is None:
        objects = names_detections(db, seeds) if objects is None else objects
        index = open_index(db, config=config, objects=objects)
    return search(db, index, config, seeds, negatives=negatives, k=k, where=where, save=save, embed_files=embed_files)


def start_narrowing(db: LakeDB, seeds: Sequence[str], *, negatives: Sequence[str] = (), where: str | None = None,
                    pool: int | None = None, clusters: int | None = None, name: str | None = None,
                    index: VectorIndex | None = None, embed_files: FileEmbedder | None = None,
                    config: Config | None = None, objects: bool | None = None) -> StepReport:
    """Start a narrowing session: the ``pool`` images nearest the seeds, clustered (`edgemine narrow start`);
    or the ``pool`` detection boxes nearest seed boxes (detection ids), on the object index.

    Args:
        seeds, negatives, where, embed_files, objects: as for ``find_similar`` (detection ids as
            seeds narrow boxes: the session's pools, clusters and ``nearest`` are then detection ids).
        pool: images taken near the seeds (default ``[mining] pool``, 1000).
        clusters: k-means clusters (default ``[mining] clusters``, 8).
        name: the session's name (default: the date and a random suffix).

    Returns:
        the first step: its clusters (size, distance to the seeds, label mix, images nearest the centre).

    Raises:
        SessionError: the name is taken. SearchError, QueryError: as for ``find_similar``.

    Example:
        >>> step = start_narrowing(open_lake(lake_uri), [seed], pool=60, clusters=3, name="doctest-start")
        >>> step.step, step.pool_size, sum(c.size for c in step.clusters)
        (0, 60, 60)
    """
    from mining.search.backends import get_backend
    from mining.search.sessions import start_query
    from mining.search.similar import names_detections

    config = _config(db, config)
    if index is None:
        objects = names_detections(db, seeds) if objects is None else objects
        index = open_index(db, config=config, objects=objects)
    return start_query(db, index, get_backend(config.index.device), config, seeds, negatives=negatives, where=where,
                       pool=pool, clusters=clusters, session=name, embed_files=embed_files)


def pick_clusters(db: LakeDB, session: str, clusters: Sequence[int], *, k: int | None = None,
                  index: VectorIndex | None = None, config: Config | None = None) -> StepReport:
    """Re-cluster inside some clusters of the session's current step (`edgemine narrow pick`).

    Args:
        clusters: cluster numbers of the current step.
        k: clusters to make (default: as many as the step had, at most one per 10 images).

    Raises:
        SessionError: an unknown session or cluster, or a single image left.

    Example:
        >>> db = open_lake(lake_uri)
        >>> _ = start_narrowing(db, [seed], pool=60, clusters=3, name="doctest-pick")
        >>> pick_clusters(db, "doctest-pick", [0, 1]).path
        [0, 1]
    """
    from mining.search.backends import get_backend
    from mining.search.sessions import pick, session_embedding_set, session_objects

    config = _config(db, config)
    if index is None:
        backbone, weights = session_embedding_set(db, session)
        index = open_index(db, backbone=backbone, weights=weights, config=config,
                           objects=session_objects(db, session))
    return pick(db, index, get_backend(config.index.device), config.mining, session, clusters, clusters=k)


def go_back(db: LakeDB, session: str, *, config: Config | None = None) -> StepReport:
    """Make the parent of the current step current again (`edgemine narrow back`); recorded.

    Example:
        >>> db = open_lake(lake_uri)
        >>> _ = start_narrowing(db, [seed], pool=60, clusters=3, name="doctest-back")
        >>> pick_clusters(db, "doctest-back", [0]).path
        [0, 1]
        >>> go_back(db, "doctest-back").path
        [0]
    """
    from mining.search.sessions import back

    return back(db, session, _config(db, config).mining.user)


def show_step(db: LakeDB, session: str, step: int | None = None) -> StepReport:
    """A step's clusters (default: the current step) (`edgemine narrow show`)."""
    from mining.search.sessions import show

    return show(db, session, step)


def list_sessions(db: LakeDB) -> pa.Table:
    """One row per narrowing session: who, when, steps, seeds (`edgemine narrow list`)."""
    from mining.search.sessions import list_sessions as sessions

    return sessions(db)


def decide(db: LakeDB, review: str, image_ids: Sequence[str], decision: str, *, reviewer: str | None = None,
           source: str | None = None, config: Config | None = None) -> int:
    """Accept or reject images in a review (`edgemine review accept|reject`); append-only, the latest wins.

    Args:
        review: the review's name; its accepted images become the set of that name (``save_review``).
        decision: ``accept`` or ``reject``.
        reviewer: who decides (default ``[mining] user``, $EDGEMINE_USER, the login name).
        source: where the images were found, e.g. ``narrow:glare/1``.

    Returns:
        how many images were decided on.

    Raises:
        ReviewError: another decision, no reviewer, an image id not in the lake (nothing recorded).

    Example:
        >>> decide(open_lake(lake_uri), "doctest-review", [seed], "accept", reviewer="ana")
        1
    """
    from mining.review.decisions import decide as record

    return record(db, review, image_ids, decision, reviewer=reviewer or _config(db, config).mining.user, source=source)


def mark_page(db: LakeDB, review: str, shown: Sequence[str], selected: Sequence[str], *, reviewer: str | None = None,
              source: str | None = None, config: Config | None = None) -> tuple[int, int]:
    """Mark a page of the reviewer loop in one commit: the ``selected`` images are the edge case
    (accepted in ``review``), the rest of ``shown`` are not (rejected); the next search ranks by them.

    Returns:
        (accepted, rejected).

    Raises:
        ReviewError: no review name or reviewer, no images, an image id not in the lake (nothing recorded).

    Example:
        >>> db = open_lake(lake_uri)
        >>> page = db.query("SELECT image_id FROM images ORDER BY image_id LIMIT 4").column("image_id").to_pylist()
        >>> mark_page(db, "doctest-page", page, page[:1], reviewer="ana")
        (1, 3)
    """
    from mining.review.decisions import mark_page as record

    return record(db, review, shown, selected, reviewer=reviewer or _config(db, config).mining.user, source=source)


def save_review(db: LakeDB, review: str, *, name: str | None = None, config: Config | None = None) -> int:
    """Publish a review's accepted images as a named set (default: the review's name), for export.

    Example:
        >>> db = open_lake(lake_uri)
        >>> decide(db, "doctest-saved", [seed], "accept", reviewer="ana")
        1
        >>> save_review(db, "doctest-saved")
        1
    """
    from mining.review.decisions import save_review as publish

    return publish(db, review, user=_config(db, config).mining.user, name=name)


def save_set(db: LakeDB, name: str, image_ids: Sequence[str], *, scores: Sequence[float] | None = None,
             source: str = "api", config: Config | None = None) -> int:
    """Save images as a named set (the ``sets`` table); saving a name again replaces the set.

    Raises:
        SetError: no name, or no images.

    Example:
        >>> save_set(open_lake(lake_uri), "doctest-set", [seed])
        1
    """
    from mining.core.sets import save_set as write

    return write(db, name, image_ids, source=source, user=_config(db, config).mining.user, scores=scores)


def resolve_images(db: LakeDB, source: str, *, clusters: Sequence[int] = ()) -> list[str]:
    """The image ids a source names, in its order (what `edgemine export SOURCE` and the Review page take).

    Args:
        source: ``set:NAME`` (by rank), ``review:NAME`` (accepted, earliest first), ``session:NAME[/STEP]``
            (a narrowing step's pool, most similar first; ``clusters``: only those), ``queue:NAME[/VERSION]``
            (by rank) or ``sql:QUERY`` (a read-only query returning ``image_id``).

    Raises:
        SourceError: another form, a set or review naming no images, a query without ``image_id``.
        SessionError, QueueError, QueryError: no such session or queue, SQL that DuckDB refuses.

    Example:
        >>> db = open_lake(lake_uri)
        >>> _ = save_set(db, "doctest-source", [seed])
        >>> resolve_images(db, "set:doctest-source") == [seed]
        True
        >>> len(resolve_images(db, "sql:SELECT image_id FROM images LIMIT 3"))
        3
    """
    from mining.review.sources import resolve

    return resolve(db, source, clusters=clusters).ids


def source_names(db: LakeDB, kind: str) -> list[str]:
    """The names a source of ``kind`` can take: ``set``, ``review`` (those with accepted images),
    ``session`` or ``queue`` (newest first).

    Example:
        >>> db = open_lake(lake_uri)
        >>> _ = save_set(db, "doctest-names", [seed])
        >>> "doctest-names" in source_names(db, "set")
        True
    """
    from mining.review.sources import names

    return names(db, kind)


def export_batch(db: LakeDB, source: str, *, fmt: str, to: str, batch: str | None = None, task_size: int | None = None,
                 predictions: bool = True, copy_images: bool = False, resend: bool = False, project: str | None = None,
                 drop_duplicates: bool = False, preannotate: str | None = None,
                 config: Config | None = None) -> ExportSummary:
    """Send images for labelling as one batch (`edgemine export`, docs/EXPORT.md); exactly once.

    Args:
        source: ``set:NAME``, ``review:NAME`` (accepted images), ``session:NAME`` (current step) or ``sql:QUERY``.
        fmt: ``label-studio``, ``coco``, ``cvat``, ``yolo``, ``prodigy`` or ``manifest``.
        to: a folder or ``s3://`` URI (the batch goes in ``to/<batch>/``), or a Label Studio URL with ``project``.
        batch: the batch's folder name (default: its id); task_size: images per task file.
        predictions: the newest prediction as pre-annotations; copy_images: copy rather than refer.
        resend: send again images already sent to ``to``.
        drop_duplicates: one image per near-duplicate group (``find_duplicates`` first).
        preannotate: ``predictions`` (the default), ``model:VERSION``, ``superpixels`` (coco, label-studio) or
            ``none``; ``model:imagenet`` needs the classifier: ``mining.labelling.export.export_images(...,
            classify=embed.imagenet.ImageNetClassifier())``.

    Returns:
        an ExportSummary: ``status`` (exported, unchanged, nothing-new), ``exported``, ``skipped``,
        ``duplicates_dropped``, ``folder``.

    Raises:
        ExportError: an unknown source or format, no images, a folder holding another batch, S3 or Label Studio
            credentials missing (nothing committed).

    Example:
        >>> import tempfile
        >>> db = open_lake(lake_uri)
        >>> out = tempfile.mkdtemp()
        >>> summary = export_batch(db, "sql:SELECT image_id FROM images ORDER BY image_id LIMIT 3", fmt="coco", to=out)
        >>> summary.status, summary.exported
        ('exported', 3)
        >>> export_batch(db, "sql:SELECT image_id FROM images ORDER BY image_id LIMIT 3", fmt="coco", to=out).status
        'unchanged'
    """
    from mining.labelling.export import export_images, resolve_source

    return export_images(db, resolve_source(db, source), fmt=fmt, target=to, config=_config(db, config), name=batch,
                         source=source, task_size=task_size, predictions=predictions, copy_images=copy_images,
                         resend=resend, project=project, drop_duplicates=drop_duplicates, preannotate=preannotate)


def export_objects(db: LakeDB, detection_ids: Sequence[str], *, fmt: str, to: str, batch: str | None = None,
                   task_size: int | None = None, copy_images: bool = False, resend: bool = False,
                   project: str | None = None, config: Config | None = None) -> ExportSummary:
    """Send chosen boxes for labelling (`edgemine export --detections`): each of their frames once,
    with the chosen boxes, and only those, as pre-annotations (e.g. the object hits of ``find_similar``).

    Args:
        detection_ids: the boxes (``detections.detection_id``); the frames go in the order of their first box.
        fmt, to, batch, task_size, copy_images, resend, project: as for ``export_batch``.

    Raises:
        ExportError: a detection id the lake lacks, and what ``export_batch`` raises (nothing committed).
    """
    from mining.labelling.export import export_images, object_images

    images = object_images(db, detection_ids)
    return export_images(db, images, fmt=fmt, target=to, config=_config(db, config), name=batch,
                         source="detections:" + ",".join(list(dict.fromkeys(detection_ids))[:20]), task_size=task_size,
                         copy_images=copy_images, resend=resend, project=project, detections=list(detection_ids))


def import_labels(db: LakeDB, source: str, *, fmt: str, batch: str | None = None, annotator: str | None = None,
                  project: str | None = None, allow_new_classes: bool = False,
                  config: Config | None = None) -> LabelsSummary:
    """Import annotators' labels into the ``labels`` table (`edgemine labels import`); the same file twice adds nothing.

    Args:
        source: a Label Studio JSON export, COCO JSON or CVAT XML file, a YOLO folder (local or ``s3://``),
            or a Label Studio URL with ``project``.
        fmt: ``label-studio``, ``coco``, ``cvat`` or ``yolo``.
        annotator: who labelled (default: the file's own user).

    Returns:
        a LabelsSummary: ``imported``, ``already``, ``errors`` (bad annotations, each a row of ``errors``).

    Raises:
        LabelError: an unknown format, or a file that is not that format (nothing written).

    Example:
        >>> import tempfile
        >>> db = open_lake(lake_uri)
        >>> first_five = "sql:SELECT image_id FROM images ORDER BY image_id LIMIT 5"
        >>> done = export_batch(db, first_five, fmt="coco", to=tempfile.mkdtemp())
        >>> result = import_labels(db, done.folder + "/annotations.json", fmt="coco", annotator="doctest")
        >>> result.errors, result.already
        (0, 0)
    """
    from mining.labelling.labels import import_labels as read

    return read(db, source, fmt=fmt, config=_config(db, config), batch=batch, annotator=annotator, project=project,
                allow_new_classes=allow_new_classes)

def make_queue(db: LakeDB, sampler: str, name: str, *, where: str | None = None, model_version: str | None = None,
               limit: int | None = None, diverse: bool = False, include_reviewed: bool = False,
               drop_duplicates: bool = False, index: VectorIndex | Callable[[], VectorIndex] | None = None,
               config: Config | None = None, **options) -> QueueSummary:
    """Make a review queue: a sampler's picks, as a new version of queue ``name`` (`edgemine queue SAMPLER`).

    Args:
        sampler: ``random-time``, ``every-nth``, ``least-confidence``, ``margin``, ``entropy``,
            ``feedback``, ``label-errors``, ``novelty`` or ``diversity`` (docs/QUEUES.md).
        name: the queue's name; made again, it becomes a new version (the old ones stay).
        where: SQL over ``images i JOIN predictions p``; model_version: only that model's predictions.
        limit: the queue's size (default ``[queues] limit`` for ranked samplers; random-time and
            every-nth keep all their picks).
        diverse: a diverse subset (k-center greedy) of the sampler's best ``[queues] diverse_pool`` x limit.
        include_reviewed: keep images already reviewed or exported (left out by default).
        drop_duplicates: one image per near-duplicate group (``find_duplicates`` first).
        index: the vector index, or a function that opens it (called only by samplers that need it;
            default: ``open_index``).
        options: the sampler's own, e.g. ``per="1d", k=3, by="camera"`` (random-time),
            ``every=50``, ``pool="mean"``, ``boxes=True``, ``fallback=True``, ``min_severity=3``,
            ``labels="review", review="glare"``, ``neighbours=5``, ``queue="other"``, ``seed=1``.

    Returns:
        QueueSummary: ``version``, ``images``, ``candidates``, ``excluded`` (already reviewed), ``notes``.

    Raises:
        QueueError: an unknown sampler or option (the message lists the allowed ones), an
            empty slice, missing per-class scores (margin, entropy: pass ``fallback=True``),
            no feedback, labels or embeddings (the message says what to run).

    Example:
        >>> db = open_lake(lake_uri)
        >>> made = make_queue(db, "entropy", "doctest-entropy", limit=10)
        >>> made.images, made.version
        (10, 1)
        >>> make_queue(db, "entropy", "doctest-entropy", limit=5).version   # the same name: a new version
        2
        >>> days = db.query("SELECT count(DISTINCT date) AS n FROM predictions").column("n")[0].as_py()
        >>> make_queue(db, "random-time", "doctest-random", per="1d", k=1).images == days   # one a day
        True
    """
    from mining.review.queues import make_queue as make

    config = _config(db, config)
    return make(db, sampler, name, where=where, model_version=model_version, limit=limit, diverse=diverse,
                include_reviewed=include_reviewed, drop_duplicates=drop_duplicates, options=options,
                user=config.mining.user, config=config, index=index or (lambda: open_index(db, config=config)))


def show_queue(db: LakeDB, name: str, *, version: int | None = None) -> pa.Table:
    """A queue's images in order (the latest version unless ``version``): rank, image_id,
    prediction_id, score, reason, and the current review decision (`edgemine queue show`).

    Raises:
        QueueError: no such queue or version (the message lists the queues).

    Example:
        >>> db = open_lake(lake_uri)
        >>> _ = make_queue(db, "least-confidence", "doctest-show", limit=3)
        >>> show_queue(db, "doctest-show").column("rank").to_pylist()
        [1, 2, 3]
    """
    from mining.review.queues import queue_rows

    return queue_rows(db, name, version)


def list_queues(db: LakeDB) -> pa.Table:
    """One row per queue, its latest version: sampler, images, how many are reviewed (`edgemine queue list`).

    Example:
        >>> db = open_lake(lake_uri)
        >>> _ = make_queue(db, "margin", "doctest-list", limit=4)
        >>> [r["images"] for r in list_queues(db).to_pylist() if r["queue"] == "doctest-list"]
        [4]
    """
    from mining.review.queues import list_queues as listed

    return listed(db)


def find_duplicates(db: LakeDB, *, threshold: float | None = None, index: VectorIndex | None = None,
                    progress: Callable[[int], None] | None = None, config: Config | None = None) -> DuplicatesSummary:
    """Group near-identical images (cosine similarity to the group's first >= ``threshold``,
    default ``[queues] duplicate_threshold``, 0.98) into the ``duplicates`` table, through the
    index's kNN search (`edgemine duplicates`). ``progress``: called with the number of images
    searched after each block.

    Example:
        >>> found = find_duplicates(open_lake(lake_uri), threshold=1.0)
        >>> found.images > 0 and found.groups >= 0
        True
    """
    from mining.search.duplicates import find_duplicates as find

    config = _config(db, config)
    index = index or open_index(db, config=config)
    return find(db, index, threshold=config.queues.duplicate_threshold if threshold is None else threshold,
                k=config.queues.duplicate_k, user=config.mining.user, progress=progress)


def diverse_picks(vectors, k: int, *, centers=None, first: int | None = None, device: str = "cpu"):
    """``k`` rows of float32 (n, d) ``vectors`` that cover them: k-center greedy (a coreset),
    each pick the row farthest from every earlier pick and from ``centers`` (m, d).

    Returns:
        CoresetPicks: ``order`` int64 (k,) rows in the order picked, ``distances`` float32 (k,).

    Example:
        >>> import numpy as np
        >>> points = np.array([[0, 0], [0, 1], [10, 0], [0, 0.1]], np.float32)
        >>> diverse_picks(points, 3).order.tolist()
        [0, 2, 1]
    """
    from mining.search.coreset import k_center_greedy

    return k_center_greedy(vectors, k, centers=centers, first=first, device=device)


# -- models (issue 17: edgemine train / score; docs/TRAINING.md) --------------------------------
def list_models(db: LakeDB) -> pa.Table:
    """The model versions trained into the lake (`edgemine models`), newest first: backbone,
    base, classes, image counts, epochs, validation accuracy, who and when.

    Example:
        >>> list_models(open_lake(lake_uri)).column_names[:3]
        ['model_version', 'backbone', 'base']
    """
    from mining.evaluation.models import list_models as models

    return models(db)


def read_model(db: LakeDB, version: str) -> dict:
    """A model version's record (its model.json): classes, config, the data it saw (counts per
    class, label batches, validation ids), curves per epoch, hardware, timings, and ``path``.

    Raises:
        TrainingError: the lake has no such version (the message lists those it has).

    Example:
        >>> read_model(open_lake(lake_uri), "no-such-version")
        Traceback (most recent call last):
        mining.core.errors.TrainingError: the lake has no model 'no-such-version'; models: ...
    """
    from mining.evaluation.models import read_model as read

    return read(db, version)


# -- issue 16: slices, metrics per slice and model version, regressions, drift, model cards ------
def add_slice(db: LakeDB, name: str, sql: str, *, config: Config | None = None) -> int:
    """Save a named slice: a SQL predicate over ``p`` (the newest prediction per image and model
    version, with its metadata columns), ``i`` (the image) and ``t`` (its truth: ``true_label``,
    ``box_area``, ``batches``) (`edgemine slice add`, docs/METRICS.md). Returns its rows.

    Raises:
        SliceError: invalid SQL (the message names the slice and its SQL), a name with ``=`` or ``:``.

    Example:
        >>> add_slice(open_lake(lake_uri), "doctest-night", "hour(p.ts) >= 20") >= 0
        True
    """
    from mining.evaluation.slices import add_slice as add

    return add(db, name, sql, user=_config(db, config).mining.user)


def list_slices(db: LakeDB, *, config: Config | None = None) -> pa.Table:
    """Every slice: ``all``, automatic ones (per metadata value, object size, label batch), the
    config's ``[slices]``, saved ones, sets and queues: name, kind, sql (`edgemine slice list`).

    Example:
        >>> names = list_slices(open_lake(lake_uri)).column("name").to_pylist()
        >>> names[0], "camera=cam-01" in names
        ('all', True)
    """
    from mining.evaluation.slices import all_slices, slice_table

    config = _config(db, config)
    return slice_table(all_slices(db, config.slices, max_values=config.metrics.auto_max_values))


def compute_metrics(db: LakeDB, versions: Sequence[str] | None = None, slices: Sequence[str] | None = None, *,
                    record: bool = True, config: Config | None = None) -> pa.Table:
    """Metrics of each model version (default: all) on each slice (default: all) against the labels:
    accuracy, precision/recall/F1 per class and macro, confusion counts, ECE; rows of the
    ``metrics`` table (model_version, slice, metric, label, value, n, computed_at), appended
    to it unless ``record=False``. Undefined values are None with their ``n``, never NaN.

    Raises:
        SliceError: no labels or no predictions (it says what to import), an unknown version or slice.

    Example:
        >>> import tempfile
        >>> db = open_lake(lake_uri)
        >>> sent = export_batch(db, "sql:SELECT image_id FROM images ORDER BY image_id DESC LIMIT 30", fmt="coco",
        ...                     to=tempfile.mkdtemp())
        >>> _ = import_labels(db, sent.folder + "/annotations.json", fmt="coco", annotator="doctest-metrics")
        >>> rows = compute_metrics(db, slices=["all"], record=False)
        >>> {"accuracy", "f1", "ece", "confusion"} <= set(rows.column("metric").to_pylist())
        True
        >>> "map" in rows.column("metric").to_pylist()   # the demo's COCO labels have boxes: detection mAP too
        True
    """
    from mining.evaluation.metrics import run_metrics

    return run_metrics(db, _config(db, config), versions=versions, slices=slices, record=record, regressions=False)[0]


def check_regressions(db: LakeDB, version: str | None = None, *, baseline: str | None = None,
                      slices: Sequence[str] | None = None, record: bool = True, config: Config | None = None):
    """Regression alarms of ``version`` (default: the newest) against ``baseline`` (default: the
    version whose predictions came into the lake before it) on every slice: accuracy and recall
    per class dropping more than ``[metrics] margin`` with a bootstrap interval of the change below 0.

    Returns:
        RegressionReport: ``model_version``, ``baseline`` (None for the first version), ``checked``,
        ``alarms`` (dicts: slice, metric, label, value, baseline_value, drop, ci_low, ci_high, n), also
        appended to the ``alarms`` table unless ``record=False``.

    Example:
        >>> import tempfile
        >>> db = open_lake(lake_uri)
        >>> sent = export_batch(db, "sql:SELECT image_id FROM images ORDER BY image_id DESC LIMIT 30", fmt="coco",
        ...                     to=tempfile.mkdtemp())
        >>> _ = import_labels(db, sent.folder + "/annotations.json", fmt="coco", annotator="doctest-metrics")
        >>> report = check_regressions(db, "v2", record=False)
        >>> report.model_version, report.baseline
        ('v2', 'v1')
    """
    from mining.evaluation.metrics import check_regressions as check
    from mining.evaluation.slices import all_slices, find_slices

    config = _config(db, config)
    chosen = find_slices(all_slices(db, config.slices, max_values=config.metrics.auto_max_values), list(slices or []))
    return check(db, chosen, version, baseline, config=config.metrics, user=config.mining.user, record=record)


def detect_drift(db: LakeDB, *, window: str | None = None, reference: str | None = None, embeddings: bool = True,
                 record: bool = True, config: Config | None = None) -> pa.Table:
    """Drift of each time window against a reference (`edgemine drift`, docs/METRICS.md): embeddings
    (classifier two-sample test), predicted labels and metadata columns (Jensen-Shannon distance,
    chi-square, new values), confidence (KS); rows of the ``drift`` table with a ``flagged`` column.

    Args:
        window: ``1h``, ``6h``, ``1d``, ``1w`` (default ``[drift] window``).
        reference: ``DATE..DATE`` (default: the first ``[drift] reference_windows`` windows).

    Example:
        >>> rows = detect_drift(open_lake(lake_uri), window="1d", record=False)   # the first week is the reference
        >>> sorted(set(rows.column("feature").to_pylist()))[:3]
        ['column:camera', 'column:customer_flag', 'column:region']
    """
    from mining.evaluation.drift import run_drift

    return run_drift(db, _config(db, config), window=window, reference=reference, embeddings=embeddings,
                     record=record)


def write_card(db: LakeDB, version: str, path: str | None = None, *, config: Config | None = None) -> str:
    """Write a model version's model card (Mitchell et al. 2019's sections: details, training data,
    evaluation per slice beside the previous version, known regressions, drift at release) to the
    lake (``_cards/<version>.md``) and to ``path`` (``.md`` or ``.html``) if given; returns the Markdown.

    Example:
        >>> card = write_card(open_lake(lake_uri), "v2")
        >>> card.splitlines()[0], "## Known regressions" in card
        ('# Model card: v2', True)
    """
    from mining.evaluation.cards import write_card as write

    return write(db, version, _config(db, config), path)


def _config(db: LakeDB, config: Config | None) -> Config:
    return config or db.config or load_config(lake=db.lake.uri)

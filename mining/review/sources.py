"""Image sources: the images a source spec names, in one defined order (review, export).

A spec is a kind and a value:

- ``set:NAME``: a named set, by rank;
- ``review:NAME``: a review's accepted images, earliest accepted first;
- ``session:NAME`` or ``session:NAME/STEP``: a narrowing step's pool (default: the session's
  current step), most similar to the seeds first; ``clusters`` keeps only those clusters;
- ``queue:NAME`` or ``queue:NAME/VERSION``: a review queue (default: its latest version), by rank;
- ``sql:QUERY``: a read-only query returning an ``image_id`` column, in the query's order.

``where_spec`` turns a ``--where`` slice into its ``sql:`` spec. Ties are broken by image id
and an image comes once, so a spec names the same list each time while the lake is unchanged.
A trailing ``/N`` is a step or version only when the whole value is not itself a session or
queue name. ``names`` lists the names of a kind (what the UI's pickers offer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mining.core.errors import SourceError
from mining.core.sql import LakeDB

KINDS = ("set", "review", "session", "queue", "sql")
FORMS = {"set": "set:NAME", "review": "review:NAME", "session": "session:NAME", "queue": "queue:NAME",
         "sql": "sql:QUERY"}


@dataclass(frozen=True)
class Images:
    """The images of a source, in its order. ``origin``: where they were found, as review
    decisions record it (``set:glare``, ``review:glare``, ``narrow:glare/2#0,3``, ``queue:low/4``,
    ``sql``). ``scores`` and ``reasons``: a queue's, per image (empty for other kinds)."""

    ids: list[str]
    origin: str
    scores: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


def resolve(db: LakeDB, spec: str, *, kinds: Sequence[str] = KINDS, clusters: Sequence[int] = ()) -> Images:
    """The images ``spec`` names (module docstring), among the source ``kinds`` allowed.

    Raises:
        SourceError: another form or kind, a set or review naming no images, a query without
            ``image_id``, clusters for a source that is not a session or not in its step.
        SessionError, QueueError: no such session or step, queue or version.
        QueryError: SQL that DuckDB refuses (a write, a syntax error)."""
    kind, _, value = spec.partition(":")
    if kind not in kinds or not value:
        forms = [FORMS[k] for k in kinds]
        raise SourceError(f"source {spec!r}: give {', '.join(forms[:-1])} or {forms[-1]} (or --where SQL)")
    if clusters and kind != "session":
        raise SourceError(f"source {spec!r}: only a narrowing session's images are chosen by cluster")
    if kind == "set":
        return _set(db, value)
    if kind == "review":
        return _review(db, value)
    if kind == "session":
        return _session(db, value, list(clusters))
    if kind == "queue":
        return _queue(db, value)
    return _sql(db, value)


def where_spec(where: str) -> str:
    """The ``sql:`` spec of a --where predicate over images i LEFT JOIN predictions p."""
    return ("sql:SELECT DISTINCT i.image_id FROM images i LEFT JOIN predictions p USING (image_id) "
            f"WHERE ({where}) ORDER BY 1")


def names(db: LakeDB, kind: str) -> list[str]:
    """The names a source of ``kind`` can take: sets and reviews with accepted images by name,
    sessions by their last action and queues by their latest version, newest first."""
    if kind == "set":
        return db.query("SELECT DISTINCT name FROM sets ORDER BY name").column("name").to_pylist()
    if kind == "review":
        return db.query("SELECT DISTINCT review FROM reviews WHERE decision = 'accept' ORDER BY review"
                        ).column("review").to_pylist()
    if kind == "session":
        from mining.search.sessions import list_sessions

        return list_sessions(db).column("session").to_pylist()
    if kind == "queue":
        from mining.review.queues import list_queues

        return list_queues(db).column("queue").to_pylist()
    raise SourceError(f"{kind!r} sources have no names; kinds with names: {', '.join(k for k in KINDS if k != 'sql')}")


def _set(db: LakeDB, name: str) -> Images:
    ids = db.query("SELECT image_id FROM sets WHERE name = $n ORDER BY rank, image_id", {"n": name})
    if not ids.num_rows:
        raise SourceError(f"no set named {name!r} (or it is empty); "
                          "list them: edgemine sql \"SELECT DISTINCT name FROM sets\"")
    return Images(ids.column("image_id").to_pylist(), f"set:{name}")


def _review(db: LakeDB, name: str) -> Images:
    ids = db.query("SELECT image_id FROM reviews WHERE review = $r AND decision = 'accept' "
                   "ORDER BY decided_at, image_id", {"r": name})
    if not ids.num_rows:
        raise SourceError(f"review {name!r} has no accepted images; see edgemine review list")
    return Images(ids.column("image_id").to_pylist(), f"review:{name}")


def _session(db: LakeDB, value: str, clusters: list[int]) -> Images:
    from mining.search.sessions import members_of, show

    name, step = _name_and_number(db, value, "narrow_steps", "session")
    report = show(db, name, step)
    unknown = sorted(set(clusters) - {c.cluster for c in report.clusters})
    if unknown:
        raise SourceError(f"session {name!r} step {report.step} has no cluster(s) {unknown}; "
                          f"clusters: {[c.cluster for c in report.clusters]}")
    members = members_of(db, name, report.step).sort_by([("similarity", "descending"), ("image_id", "ascending")])
    ids = [m["image_id"] for m in members.select(["image_id", "cluster"]).to_pylist()
           if not clusters or m["cluster"] in clusters]
    ids = list(dict.fromkeys(ids))  # a session over boxes: an image once, at its best box
    origin = f"narrow:{name}/{report.step}" + (f"#{','.join(map(str, clusters))}" if clusters else "")
    return Images(ids, origin)


def _queue(db: LakeDB, value: str) -> Images:
    from mining.review.queues import queue_rows

    name, version = _name_and_number(db, value, "queues", "queue")
    rows = queue_rows(db, name, version).sort_by([("rank", "ascending"), ("image_id", "ascending")])
    scores, reasons = {}, {}
    for r in rows.select(["image_id", "score", "reason"]).to_pylist():
        if r["score"] is not None and r["score"] == r["score"]:  # NaN: no score to show
            scores.setdefault(r["image_id"], r["score"])
        if r["reason"] is not None:
            reasons.setdefault(r["image_id"], r["reason"])
    ids = list(dict.fromkeys(rows.column("image_id").to_pylist()))
    return Images(ids, f"queue:{name}/{rows.column('version')[0].as_py()}", scores, reasons)


def _sql(db: LakeDB, query: str) -> Images:
    result = db.query(query)
    if "image_id" not in result.column_names:
        raise SourceError(f"the query must return an image_id column; it returned {', '.join(result.column_names)}")
    return Images(list(dict.fromkeys(result.column("image_id").to_pylist())), "sql")


def _name_and_number(db: LakeDB, value: str, table: str, column: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME/N`` as (name, N or None); a value that is itself a name keeps its ``/N``."""
    head, slash, tail = value.rpartition("/")
    if not (slash and head and tail.isdigit()):
        return value, None
    taken = db.query(f"SELECT count(*) AS n FROM {table} WHERE {column} = $v", {"v": value}).column("n")[0].as_py()
    return (value, None) if taken else (head, int(tail))

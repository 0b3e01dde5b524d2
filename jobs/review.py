"""Reviewers' decisions, saved in the lake (`edgemine review ...`, the UI's Review page).

A review is a name (say ``glare``). Each decision (accept or reject some images)
is appended as its own file with the reviewer and the time, never rewritten, so
two reviewers saving at once lose nothing; the ``reviews`` view keeps the latest
decision per review and image. ``save`` publishes a review's accepted images as
the named set of the same name, which export takes as input.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

import pyarrow as pa

from jobs.sets import save_set
from mining.index import SearchError
from mining.lake import Lake
from mining.schema import REVIEWS, UTC_TS
from mining.sql import LakeDB

JOB = "review"
DECISIONS = ("accept", "reject")


def decide(lake: Lake, review: str, image_ids: list[str], decision: str, *, reviewer: str,
           source: str | None = None) -> int:
    """Record ``decision`` for ``image_ids`` in ``review``; returns how many."""
    if decision not in DECISIONS:
        raise SearchError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if not review:
        raise SearchError("a review needs a name (its accepted images become the set of that name)")
    if not reviewer:
        raise SearchError("a decision needs a reviewer: set [mining] user, $EDGEMINE_USER, or the UI's reviewer field")
    image_ids = list(dict.fromkeys(image_ids))
    if not image_ids:
        raise SearchError("no images to decide on")
    _check_known(lake, image_ids)
    now = datetime.now(UTC)
    n = len(image_ids)
    rows = pa.table({
        "review": pa.array([review] * n, pa.string()),
        "image_id": pa.array(image_ids, pa.string()),
        "decision": pa.array([decision] * n, pa.string()),
        "reviewer": pa.array([reviewer] * n, pa.string()),
        "source": pa.array([source] * n, pa.string()),
        "decided_at": pa.array([now] * n, UTC_TS),
    }, schema=REVIEWS.schema)
    # A random part in the shard name: two reviewers in the same microsecond still write two files.
    shard = f"{hashlib.sha1(review.encode()).hexdigest()[:12]}-{now:%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}"
    writer = lake.shard_writer(JOB, shard)
    writer.write(REVIEWS, rows)
    writer.commit({"review": review, "decision": decision, "images": n, "reviewer": reviewer})
    return n


def decisions(lake: Lake, review: str, image_ids: list[str] | None = None) -> dict[str, str]:
    """The current decision per image of ``review`` (only ``image_ids`` when given)."""
    sql = "SELECT image_id, decision FROM reviews WHERE review = $review"
    params: dict = {"review": review}
    if image_ids is not None:
        sql += " AND image_id IN (SELECT unnest($ids))"
        params["ids"] = list(image_ids)
    with LakeDB(lake) as db:
        rows = db.query(sql, params)
    return dict(zip(rows.column("image_id").to_pylist(), rows.column("decision").to_pylist()))


def list_reviews(lake: Lake) -> pa.Table:
    """One row per review: accepted and rejected images, reviewers, last decision."""
    with LakeDB(lake) as db:
        return db.query(
            "SELECT review, count(*) FILTER (decision = 'accept') AS accepted, "
            "count(*) FILTER (decision = 'reject') AS rejected, string_agg(DISTINCT reviewer, ', ') AS reviewers, "
            "max(decided_at) AS last_decision FROM reviews GROUP BY review ORDER BY last_decision DESC"
        )


def save_review(lake: Lake, review: str, *, user: str, name: str | None = None) -> int:
    """Publish the accepted images of ``review`` as the named set ``name`` (default:
    the review's name), earliest accepted first; returns the set's size."""
    with LakeDB(lake) as db:
        accepted = db.query(
            "SELECT image_id FROM reviews WHERE review = $review AND decision = 'accept' ORDER BY decided_at, image_id",
            {"review": review},
        ).column("image_id").to_pylist()
    if not accepted:
        raise SearchError(f"review {review!r} has no accepted images yet; nothing saved")
    return save_set(lake, name or review, accepted, source=f"review:{review}", user=user)


def _check_known(lake: Lake, image_ids: list[str]) -> None:
    with LakeDB(lake) as db:
        known = set(db.query("SELECT image_id FROM images WHERE image_id IN (SELECT unnest($ids))",
                             {"ids": image_ids}).column("image_id").to_pylist())
    unknown = [i for i in image_ids if i not in known]
    if unknown:
        raise SearchError(f"{len(unknown)} image id(s) not in the lake, e.g. {unknown[0]}; nothing recorded")

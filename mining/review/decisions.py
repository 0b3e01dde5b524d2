"""Reviewers' decisions, saved in the lake (`edgemine review ...`, the UI's Review page).

A review is a name (say ``glare``). Each decision (accept or reject some images)
is appended with the reviewer and the time, never rewritten: blind appends, so
many reviewers saving at once lose nothing. The ``reviews`` view keeps the latest
decision per review and image; ``raw.reviews`` has every one. ``save`` publishes a review's accepted images as
the named set of the same name, which export takes as input. ``mark_page`` records a page of the
reviewer loop (Find similar: the selected accepted, the rest rejected) in one commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa

from mining.core import tables
from mining.core.errors import ReviewError
from mining.core.schema import REVIEWS, make_rows
from mining.core.sets import save_set
from mining.core.sql import LakeDB

JOB = "review"
DECISIONS = ("accept", "reject")


def decide(db: LakeDB, review: str, image_ids: Sequence[str], decision: str, *, reviewer: str,
           source: str | None = None) -> int:
    """Record ``decision`` (accept or reject) for ``image_ids`` in ``review``, as
    ``reviewer``; ``source`` says where the images were found. Returns how many.

    Raises ReviewError (nothing recorded) for another decision, no review name, no
    reviewer, no images, or an image id the lake does not have."""
    if decision not in DECISIONS:
        raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    image_ids = list(dict.fromkeys(image_ids))
    _record(db, review, {decision: image_ids}, reviewer=reviewer, source=source, decision=decision)
    return len(image_ids)


def mark_page(db: LakeDB, review: str, shown: Sequence[str], selected: Sequence[str], *, reviewer: str,
              source: str | None = None) -> tuple[int, int]:
    """Record a page of marks in ``review`` in one commit: the ``selected`` images accepted
    (the edge case), the rest of ``shown`` rejected. Returns (accepted, rejected).

    Raises ReviewError (nothing recorded) as ``decide`` does."""
    accepted = list(dict.fromkeys(selected))
    rejected = [i for i in dict.fromkeys(shown) if i not in set(accepted)]
    _record(db, review, {"accept": accepted, "reject": rejected}, reviewer=reviewer, source=source,
            accepted=len(accepted), rejected=len(rejected))
    return len(accepted), len(rejected)


def _record(db: LakeDB, review: str, marks: dict[str, list[str]], *, reviewer: str, source: str | None,
            **detail: object) -> None:
    """Append one row per image of ``marks`` (decision -> image ids) in one transaction."""
    if not review:
        raise ReviewError("a review needs a name (its accepted images become the set of that name)")
    if not reviewer:
        raise ReviewError("a decision needs a reviewer: set [mining] user, $EDGEMINE_USER, or the UI's reviewer field")
    image_ids = [i for ids in marks.values() for i in ids]
    if not image_ids:
        raise ReviewError("no images to decide on: select some first")
    _check_known(db, image_ids)
    n = len(image_ids)
    decided = [decision for decision, ids in marks.items() for _ in ids]
    rows = make_rows(REVIEWS, n, review=review, image_id=image_ids, decision=decided, reviewer=reviewer, source=source,
                     decided_at=datetime.now(UTC))
    tables.append(db.lake, REVIEWS, rows, tables.commit_info(JOB, reviewer, review=review, images=n, **detail))


def decisions(db: LakeDB, review: str, image_ids: Sequence[str] | None = None) -> dict[str, str]:
    """The current decision per image of ``review`` (only ``image_ids`` when given)."""
    sql = "SELECT image_id, decision FROM reviews WHERE review = $review"
    params: dict = {"review": review}
    if image_ids is not None:
        sql += " AND image_id IN (SELECT unnest($ids))"
        params["ids"] = list(image_ids)
    rows = db.query(sql, params)
    return dict(zip(rows.column("image_id").to_pylist(), rows.column("decision").to_pylist()))


def list_reviews(db: LakeDB) -> pa.Table:
    """One row per review: accepted and rejected images, reviewers, last decision."""
    return db.query(
        "SELECT review, count(*) FILTER (decision = 'accept') AS accepted, "
        "count(*) FILTER (decision = 'reject') AS rejected, string_agg(DISTINCT reviewer, ', ') AS reviewers, "
        "max(decided_at) AS last_decision FROM reviews GROUP BY review ORDER BY last_decision DESC"
    )


def save_review(db: LakeDB, review: str, *, user: str, name: str | None = None) -> int:
    """Publish the accepted images of ``review`` as the named set ``name`` (default:
    the review's name), earliest accepted first; returns the set's size."""
    accepted = db.query(
        "SELECT image_id FROM reviews WHERE review = $review AND decision = 'accept' ORDER BY decided_at, image_id",
        {"review": review},
    ).column("image_id").to_pylist()
    if not accepted:
        raise ReviewError(f"review {review!r} has no accepted images yet; nothing saved")
    return save_set(db, name or review, accepted, source=f"review:{review}", user=user)


def _check_known(db: LakeDB, image_ids: list[str]) -> None:
    known = set(db.query("SELECT image_id FROM images WHERE image_id IN (SELECT unnest($ids))",
                         {"ids": image_ids}).column("image_id").to_pylist())
    unknown = [i for i in image_ids if i not in known]
    if unknown:
        raise ReviewError(f"{len(unknown)} image id(s) not in the lake, e.g. {unknown[0]}; nothing recorded")

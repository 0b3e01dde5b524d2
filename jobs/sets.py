"""Named sets of images (`sets`): what a search, a narrowing session or a review
hands on to review and export."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pyarrow as pa

from mining.index import SearchError
from mining.lake import Lake
from mining.schema import SETS, UTC_TS

JOB = "sets"


def save_set(lake: Lake, name: str, image_ids: list[str], *, source: str, user: str,
             scores: list[float] | None = None) -> int:
    """Write a named set (replacing an earlier one of the same name in the view)."""
    if not name:
        raise SearchError("a set needs a name")
    if not image_ids:
        raise SearchError(f"set {name!r} would be empty; nothing saved")
    now = datetime.now(UTC)
    rows = pa.table({
        "name": pa.array([name] * len(image_ids), pa.string()),
        "image_id": pa.array(image_ids, pa.string()),
        "rank": pa.array(range(1, len(image_ids) + 1), pa.int32()),
        "score": pa.array(scores if scores is not None else [None] * len(image_ids), pa.float32()),
        "source": pa.array([source] * len(image_ids), pa.string()),
        "created_by": pa.array([user] * len(image_ids), pa.string()),
        "created_at": pa.array([now] * len(image_ids), UTC_TS),
    }, schema=SETS.schema)
    shard = f"set-{hashlib.sha1(name.encode()).hexdigest()[:12]}-{now.strftime('%Y%m%dT%H%M%S%f')}"
    writer = lake.shard_writer(JOB, shard)
    writer.write(SETS, rows)
    writer.commit({"set": name})
    return len(image_ids)

"""Named sets of images (``sets``): what a search, a narrowing session or a review
hands on to review and export."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from mining.core import tables
from mining.core.errors import SetError
from mining.core.schema import SETS, make_rows
from mining.core.sql import LakeDB, quote_literal

JOB = "sets"


def save_set(db: LakeDB, name: str, image_ids: Sequence[str], *, source: str, user: str,
             scores: Sequence[float] | None = None) -> int:
    """Write the named set ``name``, ranked in the order given, replacing an earlier set
    of that name in one transaction (the earlier one stays in the table's history:
    `edgemine sql --as-of`); returns its size.

    Raises SetError for a set without a name or without images."""
    if not name:
        raise SetError("a set needs a name")
    if not len(image_ids):
        raise SetError(f"set {name!r} would be empty; nothing saved")
    now = datetime.now(UTC)
    n = len(image_ids)
    rows = make_rows(SETS, n, name=name, image_id=list(image_ids), rank=list(range(1, n + 1)),
                     score=None if scores is None else list(scores), source=source, created_by=user, created_at=now)
    tables.replace(
        db.lake, SETS, rows, f"name = {quote_literal(name)}", tables.commit_info(JOB, user, set=name, source=source)
    )
    return n

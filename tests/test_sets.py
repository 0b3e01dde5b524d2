"""Named sets (mining.core.sets): saved, replaced, refused when they make no sense."""

from __future__ import annotations

import pytest

from mining.core import tables
from mining.core.errors import SetError
from mining.core.sets import save_set
from mining.core.sql import LakeDB
from tests.helpers import image_ids, local_only, rows


def test_a_set_saved_again_replaces_the_old_one_and_history_keeps_it(lake):
    with LakeDB(lake) as db:
        save_set(db, "s", image_ids(3), source="test", user="a")
        first = tables.version(lake, "sets")
        save_set(db, "s", image_ids(2, start=10), source="test", user="b", scores=[0.9, 0.8])
        save_set(db, "other", image_ids(1), source="test", user="a")
    got = rows(lake, "SELECT name, image_id, rank, score, created_by FROM sets ORDER BY name, rank")
    assert [(r["name"], r["image_id"], r["rank"], r["created_by"]) for r in got] == [
        ("other", image_ids(1)[0], 1, "a"),
        ("s", image_ids(1, start=10)[0], 1, "b"),
        ("s", image_ids(1, start=11)[0], 2, "b"),
    ]
    assert [r["score"] for r in got] == [None, pytest.approx(0.9), pytest.approx(0.8)]
    with LakeDB(lake, as_of={"sets": first}) as then:  # the first version is in the table's history
        assert then.query("SELECT image_id FROM sets WHERE name = 's' ORDER BY rank").column(
            0
        ).to_pylist() == image_ids(3)
    assert [c["detail"]["set"] for c in tables.history(lake, "sets")] == ["other", "s", "s"]


@local_only
def test_a_set_needs_a_name_and_images(lake):
    with LakeDB(lake) as db:
        with pytest.raises(SetError, match="needs a name"):
            save_set(db, "", image_ids(1), source="t", user="a")
        with pytest.raises(SetError, match="would be empty"):
            save_set(db, "empty", [], source="t", user="a")
    assert tables.version(lake, "sets") is None  # nothing written

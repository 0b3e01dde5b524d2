"""The library's public API (mining/__init__.py) works as its docstrings show: their
examples (each on its own, since doctest runs them in name order) run here on a
copy of the session's demo lake (they label images and save sets: other tests read
the shared one)."""

from __future__ import annotations

import doctest
import shutil

import mining
from mining.core.lake import Lake
from tests.helpers import rows


def test_the_documented_examples_run(demo_lake, monkeypatch, tmp_path):
    demo_lake = Lake(str(shutil.copytree(demo_lake.root, tmp_path / "lake")))
    monkeypatch.setenv("EDGEMINE_USER", "doctest")
    monkeypatch.delenv("EDGEMINE_CONFIG", raising=False)
    seed = rows(demo_lake, "SELECT image_id FROM demo_truth WHERE is_edge_case ORDER BY image_id LIMIT 1")[0][
        "image_id"
    ]
    result = doctest.testmod(mining, extraglobs={"lake_uri": demo_lake.uri, "seed": seed}, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0
    # What the examples wrote is in the lake, as the docstrings say.
    assert rows(demo_lake, "SELECT image_id, created_by FROM sets WHERE name = 'doctest-saved'") == [
        {"image_id": seed, "created_by": "doctest"}]
    assert [r["action"] for r in rows(demo_lake, "SELECT action FROM narrow_steps WHERE session = 'doctest-back' "
                                                 "ORDER BY step")] == ["start", "pick", "back"]


def test_all_names_each_public_function_once():
    public = {name for name, value in vars(mining).items() if callable(value) and not name.startswith("_")
              and getattr(value, "__module__", None) == "mining"}
    assert len(mining.__all__) == len(set(mining.__all__)) and public <= set(mining.__all__)


def test_every_public_name_is_documented():
    undocumented = [name for name in mining.__all__ if not (getattr(mining, name).__doc__ or "").strip()]
    assert undocumented == []

"""Review decisions (mining.review.decisions): append-only, the latest wins, concurrent
reviewers lose nothing, bad input records nothing, a marked page is one commit; and
the `edgemine review` CLI."""

from __future__ import annotations

import json
import threading

import pytest

from jobs.cli import main
from mining.core import tables
from mining.core.errors import ReviewError
from mining.core.lake import Lake
from mining.core.schema import IMAGES, REVIEWS, make_rows
from mining.core.sql import LakeDB
from mining.review.decisions import decide, mark_page, save_review
from tests.helpers import image_ids, rows


def test_two_reviewers_deciding_at_once_lose_nothing(demo_lake):
    ids = [r["image_id"] for r in rows(demo_lake, "SELECT image_id FROM images ORDER BY image_id DESC LIMIT 40")]
    errors = []

    def decide_some(n: int) -> None:
        try:
            with LakeDB(demo_lake) as db:
                decide(db, "race", ids[n * 4:(n + 1) * 4], "accept" if n % 2 else "reject", reviewer=f"r{n}")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=decide_some, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    decided = rows(demo_lake, "SELECT image_id, reviewer FROM reviews WHERE review = 'race'")
    assert sorted(r["image_id"] for r in decided) == sorted(ids)
    assert {r["reviewer"] for r in decided} == {f"r{n}" for n in range(10)}


def test_review_refuses_bad_input_and_writes_nothing(demo_lake):
    one = rows(demo_lake, "SELECT image_id FROM images LIMIT 1")[0]["image_id"]
    before = rows(demo_lake, "SELECT count(*) n FROM raw.reviews")[0]["n"]
    with LakeDB(demo_lake) as db:
        with pytest.raises(ReviewError, match="accept, reject"):
            decide(db, "r", [one], "maybe", reviewer="a")
        with pytest.raises(ReviewError, match="not in the lake"):
            decide(db, "r", [one, "0" * 20], "accept", reviewer="a")
        with pytest.raises(ReviewError, match="reviewer"):
            decide(db, "r", [one], "accept", reviewer="")
        with pytest.raises(ReviewError, match="needs a name"):
            decide(db, "", [one], "accept", reviewer="a")
        with pytest.raises(ReviewError, match="no images"):
            decide(db, "r", [], "accept", reviewer="a")
        with pytest.raises(ReviewError, match="no accepted images"):
            save_review(db, "never-reviewed", user="a")
    assert rows(demo_lake, "SELECT count(*) n FROM raw.reviews")[0]["n"] == before


def test_review_cli_accepts_rejects_lists_and_saves(demo_lake, monkeypatch, capsys):
    monkeypatch.setenv("EDGEMINE_USER", "carol")
    ids = [r["image_id"] for r in rows(demo_lake, "SELECT image_id FROM images ORDER BY image_id LIMIT 3")]
    assert main(["review", "accept", "cli", *ids, "--lake", demo_lake.uri, "--quiet"]) == 0
    assert main(["review", "reject", "cli", ids[0], "--lake", demo_lake.uri, "--quiet"]) == 0
    capsys.readouterr()  # what accept and reject printed
    assert main(["review", "list", "--lake", demo_lake.uri, "--json"]) == 0
    listed = {r["review"]: r for r in json.loads(capsys.readouterr().out)}
    assert (listed["cli"]["accepted"], listed["cli"]["rejected"], listed["cli"]["reviewers"]) == (2, 1, "carol")
    assert main(["review", "save", "cli", "--as", "cli-set", "--lake", demo_lake.uri, "--json"]) == 0
    assert '"images": 2' in capsys.readouterr().out
    assert sorted(r["image_id"] for r in rows(demo_lake, "SELECT image_id FROM sets WHERE name = 'cli-set'")) == sorted(
        ids[1:]
    )
    assert main(["review", "accept", "cli", "nothex", "--lake", demo_lake.uri]) == 2
    assert "not in the lake" in capsys.readouterr().err


def test_a_marked_page_is_one_commit_with_the_rows_two_decisions_wrote(tmp_path):
    """The reviewer loop's page (selected: the edge case, the rest: not) as one Delta commit,
    holding the rows that deciding the selected and then the rest wrote before."""
    lake = Lake(str(tmp_path / "lake"))
    ids = image_ids(6)
    tables.append(lake, IMAGES, make_rows(IMAGES, len(ids), image_id=ids, uri=[f"mem://{i}.jpg" for i in ids]),
                  tables.commit_info("test"))
    page, selected = ids[:5], [ids[3], ids[1]]
    with LakeDB(lake) as db:
        decide(db, "before", selected, "accept", reviewer="ana", source="find-similar")
        decide(db, "before", [i for i in page if i not in selected], "reject", reviewer="ana", source="find-similar")
        commits = len(tables.history(lake, REVIEWS))
        assert mark_page(db, "page", page + [ids[1]], selected, reviewer="ana", source="find-similar") == (2, 3)
        assert len(tables.history(lake, REVIEWS)) == commits + 1
        assert mark_page(db, "all-of-it", page, page, reviewer="ana") == (5, 0)  # every image the edge case
        refused = ((dict(review=""), "needs a name"), (dict(reviewer=""), "reviewer"),
                   (dict(shown=[], selected=[]), "no images"), (dict(selected=["f" * 20]), "not in the lake"))
        for bad, message in refused:
            args = {"review": "bad", "shown": page, "selected": selected, "reviewer": "ana"} | bad
            with pytest.raises(ReviewError, match=message):
                mark_page(db, args.pop("review"), args.pop("shown"), args.pop("selected"), **args)
    assert len(tables.history(lake, REVIEWS)) == commits + 2  # the refused marks wrote nothing

    def saved(review: str) -> list[tuple]:
        return sorted((r["image_id"], r["decision"], r["reviewer"], r["source"]) for r in
                      rows(lake, "SELECT * FROM raw.reviews WHERE review = $r", {"r": review}))

    assert saved("page") == saved("before") and len(saved("page")) == 5

"""`edgemine loop` on a tiny labelled lake (tests/train_helpers.py): train, score, metrics
against the version before, card; `--from latest`; a rerun finishes without training
again; a regression against a better earlier version exits 3 with the card written."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from jobs.cli import EXIT_REGRESSION, main
from jobs.loop import FIRST_BASE, resolve_base, run_loop
from jobs.train import TrainRequest
from mining.core import tables
from mining.core.config import Config, EmbedConfig
from mining.core.lake import Lake
from mining.core.schema import PREDICTIONS, make_rows
from tests.helpers import rows
from tests.train_helpers import FAST, labelled_lake

pytestmark = pytest.mark.model  # every test here runs a model (or uses one a fixture trained)

IMAGES = 36  # min_n is 30: slice `all` is checked for regressions
CONFIG = Config(embed=EmbedConfig(device="cpu", workers=1, batch_size=8, part_size=12))


def loop(lake: Lake, version: str, base: str = "latest", **kw):
    request = TrainRequest(version=version, base=base, workers=1, user="tester")
    return run_loop(lake, CONFIG, request, FAST, show_progress=False, **kw)


@pytest.fixture(scope="module")
def looped(tmp_path_factory) -> tuple[Lake, object, object]:
    """v1 from random weights, then v2 from the latest (v1)."""
    lake = Lake(str(tmp_path_factory.mktemp("loop") / "lake"))
    labelled_lake(lake, IMAGES)
    first = loop(lake, "v1", base="random")
    second = loop(lake, "v2")
    return lake, first, second


def test_loop_trains_scores_compares_and_writes_the_card(looped):
    lake, first, second = looped
    assert first.trained and first.base == "random" and first.baseline is None and not first.alarms
    assert first.score["embedded"] == IMAGES and first.errors == 0
    assert second.base == "v1" and second.baseline == "v1"  # --from latest: the newest model; compared with it
    assert second.score["embedded"] == IMAGES
    assert second.comparisons > 0  # `all` and classes with 30+ labelled images were checked
    scored = rows(
        lake,
        "SELECT model_version, count(*) n, count(DISTINCT image_id) images FROM predictions GROUP BY ALL ORDER BY 1",
    )
    assert scored == [
        {"model_version": "v1", "n": IMAGES, "images": IMAGES},
        {"model_version": "v2", "n": IMAGES, "images": IMAGES},
    ]
    metrics = rows(
        lake, "SELECT DISTINCT model_version FROM metrics WHERE slice = 'all' AND metric = 'accuracy' ORDER BY 1"
    )
    assert [m["model_version"] for m in metrics] == ["v1", "v2"]
    card = lake.fs.cat_file(lake.path("_cards", "v2.md")).decode()
    assert "v2" in card and "previous version: v1" in card
    assert (
        "Trained by `edgemine train`" in card and "resnet18 from model:v1, fine-tuning all layers" in card
    )  # the record
    assert second.card.endswith("_cards/v2.md")


def test_rerun_finishes_without_training_again(looped, tmp_path):
    lake, _, _ = looped
    again = loop(lake, "v2")
    assert not again.trained and again.score["embedded"] == 0 and again.score["already_embedded"] == IMAGES
    assert rows(lake, "SELECT count(*) n FROM models WHERE model_version = 'v2'") == [{"n": 1}]
    assert rows(lake, "SELECT count(*) n FROM predictions WHERE model_version = 'v2'") == [{"n": IMAGES}]


def test_from_latest_in_a_lake_without_models_starts_from_imagenet(tmp_path):
    assert resolve_base(Lake(str(tmp_path / "empty")), "latest", "v1") == FIRST_BASE
    assert resolve_base(Lake(str(tmp_path / "empty")), "random", "v1") == "random"


def test_a_regression_exits_3_after_writing_the_card(looped, tmp_path, capsys):
    """A perfect earlier version (its predictions are the labels) and a new one that learnt nothing
    (random weights, a learning rate of 1e-9): a regression on `all`."""
    import shutil

    shutil.copytree(looped[0].root, tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    truth = rows(lake, "SELECT image_id, label FROM labels ORDER BY image_id")
    when = datetime(2026, 11, 2, tzinfo=UTC)
    n = len(truth)
    perfect = make_rows(PREDICTIONS, n, prediction_id=[f"perfect-{r['image_id']}" for r in truth],
                        image_id=[r["image_id"] for r in truth], model_version="v0-perfect", ts=when,
                        label=[r["label"] for r in truth], confidence=0.99, ingested_at=when, date=when.date())
    tables.append(lake, PREDICTIONS, perfect, tables.commit_info("test"))
    code = main(
        [
            "loop",
            "--name",
            "v3",
            "--from",
            "random",
            "--baseline",
            "v0-perfect",
            "--epochs",
            "1",
            "--lr",
            "1e-9",
            "--image-size",
            "32",
            "--batch-size",
            "16",
            "--workers",
            "1",
            "--device",
            "cpu",
            "--seed",
            "1",
            "--lake",
            lake.root,
            "--json",
            "--quiet",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == EXIT_REGRESSION, {k: out[k] for k in ('baseline', 'comparisons', 'alarms', 'metrics', 'score')}
    assert out["baseline"] == "v0-perfect" and out["alarms"]
    assert {"slice": "all", "metric": "accuracy"}.items() <= next(
        a for a in out["alarms"] if a["slice"] == "all"
    ).items()
    card = lake.fs.cat_file(lake.path("_cards", "v3.md")).decode()
    known = card[card.index("## Known regressions"):]
    assert "accuracy" in known and "v0-perfect" in card
    assert (
        rows(lake, "SELECT count(*) n FROM alarms WHERE model_version = 'v3' AND baseline = 'v0-perfect'")[0]["n"] >= 1
    )


def test_a_slice_that_reads_outside_the_lake_is_refused_before_training(tmp_path):
    """The loop's metrics once ran on a writable connection without the sandbox: a slice could
    read any file the process can. Now the config's slices are checked, sandboxed, before any work."""
    from dataclasses import replace

    from mining.core.errors import SliceError

    outside = tmp_path / "outside.csv"
    outside.write_text("image_id\nsecret\n")
    lake = Lake(str(tmp_path / "lake"))
    labelled_lake(lake, 4)
    config = replace(CONFIG, slices={"leak": f"p.image_id IN (SELECT image_id FROM read_csv('{outside}'))"})
    with pytest.raises(SliceError, match="slice 'leak'.*table functions are refused"):
        run_loop(lake, config, TrainRequest(version="v1", base="random", workers=1), FAST, show_progress=False)
    assert not tables.exists(lake, "models") and not lake.fs.exists(lake.model_dir("v1"))


def test_a_saved_slice_that_reads_outside_the_lake_is_refused_by_the_loops_metrics(looped, tmp_path):
    import shutil

    from mining.core.errors import QueryError
    from mining.core.schema import SLICES

    shutil.copytree(looped[0].root, tmp_path / "lake")
    lake = Lake(str(tmp_path / "lake"))
    outside = tmp_path / "outside.csv"
    outside.write_text("image_id\nsecret\n")
    when = datetime(2026, 11, 2, tzinfo=UTC)
    hostile = make_rows(SLICES, 1, name="leak", sql=f"p.image_id IN (SELECT image_id FROM read_csv('{outside}'))",
                        created_by="someone", created_at=when)  # written past `edgemine slices add`'s check
    tables.append(lake, SLICES, hostile, tables.commit_info("test"))
    with pytest.raises(QueryError, match="table functions are refused"):
        loop(lake, "v2")  # already trained: straight to scoring (nothing left) and metrics

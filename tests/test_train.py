"""`edgemine train` and `edgemine score` on a tiny labelled lake (tests/train_helpers.py):
what a version stores, determinism, the split, the label reduction, bad input that
writes nothing, scoring exactly once (after a kill too), a killed training run."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch
import torchvision

from embed.finetune import TrainSettings, build_network
from jobs.embed_images import Shard
from jobs.ingest_images import ingest_images
from jobs.score import prediction_id, score_lake
from jobs.train import TrainRequest, train_model
from mining.core import tables
from mining.core.config import Config, EmbedConfig
from mining.core.errors import ConfigError, TrainingError, WeightsError
from mining.core.lake import Lake, open_url
from mining.core.sql import LakeDB
from mining.evaluation import cards
from mining.evaluation.models import list_models, model_row, read_model, training_labels, validation_mask
from tests.helpers import put, rows, source_uri
from tests.test_kill_and_rerun import kill_when, start
from tests.train_helpers import CLASSES, FAST, add_labels, coloured_jpeg, labelled_lake

pytestmark = pytest.mark.model  # every test here runs a model (or uses one a fixture trained)

IMAGES, READABLE = 33, 30  # the fixture's labelled images, and those whose files are still there
SCORE = EmbedConfig(device="cpu", workers=1, batch_size=8, part_size=12)


def request(version: str, **kw) -> TrainRequest:
    return TrainRequest(**({"version": version, "base": "random", "workers": 1, "user": "tester"} | kw))


def train(lake: Lake, version: str, settings: TrainSettings = FAST, **kw):
    return train_model(lake, request(version, **kw), settings, show_progress=False)


def state_dict(lake: Lake, version: str) -> dict[str, torch.Tensor]:
    data = lake.fs.cat_file(f"{lake.model_dir(version)}/model.pt")
    return torch.load(io.BytesIO(data), weights_only=True)["state_dict"]


def nothing_written(lake: Lake) -> bool:
    return not tables.exists(lake, "models") and not lake.fs.exists(lake.path("_models"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Lake:
    """33 labelled images, 3 of whose files are then deleted, and model v1 trained on them."""
    lake = Lake(str(tmp_path_factory.mktemp("train") / "lake"))
    images = labelled_lake(lake, IMAGES)
    fs, _ = open_url(images[0]["uri"], lake.s3)
    for row in images[:3]:
        fs.rm(row["uri"])
    train(lake, "v1")
    return lake


def copy_of(lake: Lake, tmp_path) -> Lake:
    shutil.copytree(lake.root, tmp_path / "lake")
    return Lake(str(tmp_path / "lake"))


def test_a_version_is_its_files_and_its_models_row(trained):
    [row] = rows(trained, "SELECT * FROM models")
    assert row["model_version"] == "v1" and row["classes"] == list(CLASSES) and row["created_by"] == "tester"
    assert row["train_images"] + row["val_images"] == READABLE and row["epochs"] == 2
    with LakeDB(trained) as db:
        record = read_model(db, "v1")
        assert list_models(db).column("model_version").to_pylist() == ["v1"]
    assert record["base"] == "random" and record["backbone"] == "resnet18" and record["image_size"] == 32
    assert set(record["curves"]) >= {"train_loss", "val_loss", "val_accuracy", "lr"} and record["curves"]["epoch"] == [
        1,
        2,
    ]
    data = record["data"]
    assert data["unreadable"] == 3 and data["label_batches"] == {"b1": IMAGES}
    assert sum(data["train_per_class"].values()) == data["train_images"] and set(data["train_per_class"]) == set(
        CLASSES
    )
    assert record["hardware"]["device"] == "cpu" and record["timings"]["seconds"] > 0
    assert (
        record["config"]["epochs"] == 2
        and record["config"]["seed"] == 0
        and record["checkpoint_sha256"] == row["checkpoint_sha256"]
    )
    # The deleted files are errors of the run, which went on without them.
    assert (
        len(rows(trained, "SELECT * FROM errors WHERE job = 'train' AND source = 'v1' AND reason LIKE 'missing%'")) == 3
    )
    assert not trained.fs.exists(trained.model_staging_dir("v1"))  # epoch checkpoints go once published
    assert set(state_dict(trained, "v1")["fc.weight"].shape) == {3, 512}


def test_the_same_seed_gives_the_same_weights_and_curves(trained, tmp_path):
    lake = copy_of(trained, tmp_path)
    train(lake, "again")
    with LakeDB(lake) as db:
        first, second = read_model(db, "v1"), read_model(db, "again")
    assert first["curves"]["train_loss"] == second["curves"]["train_loss"]
    assert first["data"]["val_image_ids"] == second["data"]["val_image_ids"]
    a, b = state_dict(lake, "v1"), state_dict(lake, "again")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A version trained from it keeps its head (same classes) and says where it came from.
    assert train(lake, "child", replace(FAST, epochs=1), base="again").base == "model:again"


def test_the_validation_split_is_stable_as_the_lake_grows():
    ids = [f"{i:020x}" for i in range(4000)]
    before = validation_mask(ids[:1000], 0.1)
    after = validation_mask(ids, 0.1)
    assert (before == after[:1000]).all()  # no image changes side when others are added
    assert 0.08 < after.mean() < 0.12
    labels = np.arange(4000) % 3  # about the fraction in every class
    assert all(0.07 < after[labels == c].mean() < 0.13 for c in range(3))
    with pytest.raises(TrainingError, match="between 0 and 1"):
        validation_mask(ids, 1.5)


def test_an_image_labelled_again_keeps_its_latest_import(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    images = labelled_lake(lake, 6)
    later = datetime(2026, 11, 5, tzinfo=UTC)
    add_labels(lake, images[:2], batch="fix", label="red", at=later)  # a correction imported later
    add_labels(lake, images[2:3], batch="old", label="red", at=later - timedelta(days=30))  # an older import
    with LakeDB(lake) as db:
        got = {r["image_id"]: (r["label"], r["batch"]) for r in training_labels(db).to_pylist()}
        only = training_labels(db, "batch = 'fix'").num_rows
    assert len(got) == 6 and only == 2
    assert got[images[0]["image_id"]] == ("red", "fix") and got[images[1]["image_id"]] == ("red", "fix")
    assert got[images[2]["image_id"]] == (images[2]["label"], "b1")
    # --val NAME: a named set's images are the validation images.
    from jobs.train import _split
    from mining.core.sets import save_set

    with LakeDB(lake) as db:
        save_set(db, "holdout", [images[1]["image_id"]], source="test", user="tester")
    with LakeDB(lake) as db:
        labels = training_labels(db).to_pylist()
        chosen = _split(db, labels, request("x", val_name="holdout"))
        assert [row["image_id"] for row, v in zip(labels, chosen) if v] == [images[1]["image_id"]]
        with pytest.raises(TrainingError, match="neither a named set nor a queue"):
            _split(db, labels, request("x", val_name="nope"))


@pytest.mark.parametrize("case", ["no labels", "one class", "unknown base", "other architecture", "taken name"])
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, case):
    lake = Lake(str(tmp_path / "lake"))
    images = labelled_lake(lake, 6, labelled=0 if case == "no labels" else None)
    kw, settings, error, message = {}, FAST, TrainingError, ""
    if case == "no labels":
        message = "no image-level labels"
    elif case == "one class":
        kw, message = {"labels_where": "label = 'red'"}, "one class only"
    elif case == "unknown base":
        kw, message = {"base": "v0"}, "neither imagenet nor random"
    elif case == "other architecture":
        path = tmp_path / "resnet34.pt"
        torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
        kw, error, message = {"base": str(path)}, WeightsError, "does not fit"
    else:
        kw, message = {"base": "v1"}, "already has a model"
    if case == "taken name":
        add_labels(lake, images, batch="b2")
        train(lake, "v1", replace(FAST, epochs=1), val_fraction=0.5)
        before = rows(lake, "SELECT count(*) n FROM models")
        with pytest.raises(error, match=message):
            train(lake, "v1")
        assert rows(lake, "SELECT count(*) n FROM models") == before
        return
    with pytest.raises(error, match=message):
        train(lake, "v1", settings, **kw)
    assert nothing_written(lake)


def test_score_writes_one_prediction_and_embedding_per_image_once(trained, tmp_path):
    lake = copy_of(trained, tmp_path)
    shard = score_lake(lake, "v1", SCORE, shard=Shard(0, 2), show_progress=False)
    subset = score_lake(lake, "v1", SCORE, where="uri LIKE '%img-000%'", show_progress=False)
    rest = score_lake(lake, "v1", SCORE, show_progress=False)
    again = score_lake(lake, "v1", SCORE, show_progress=False)
    assert shard.embedded + subset.embedded + rest.embedded == READABLE and rest.errors == 0  # 3 files are gone
    assert shard.errors + subset.errors + rest.errors == 3 and again.to_embed == 0
    predictions = rows(lake, "SELECT * FROM predictions")
    assert len(predictions) == len({p["image_id"] for p in predictions}) == READABLE
    for p in predictions:
        scores = dict(p["scores"])
        assert set(scores) == set(CLASSES) and abs(sum(scores.values()) - 1) < 1e-4
        assert p["label"] == max(scores, key=scores.get) and p["confidence"] == pytest.approx(max(scores.values()))
        assert p["prediction_id"] == prediction_id(p["image_id"], "v1") and p["model_version"] == "v1"
    [emb] = rows(
        lake, "SELECT backbone, weights, count(*) n, count(DISTINCT image_id) ids FROM embeddings GROUP BY ALL"
    )
    assert emb == {"backbone": "resnet18", "weights": "model:v1", "n": READABLE, "ids": READABLE}
    # The model learnt the colours: most predictions are the true class.
    truth = {r["image_id"]: r["label"] for r in rows(lake, "SELECT image_id, label FROM labels")}
    assert np.mean([truth[p["image_id"]] == p["label"] for p in predictions]) > 0.5
    with pytest.raises(TrainingError, match="no model 'v9'"):
        score_lake(lake, "v9", SCORE, show_progress=False)


@pytest.mark.slow
def test_a_killed_score_reruns_to_every_image_scored_once(trained, tmp_path):
    lake = copy_of(trained, tmp_path)
    config = tmp_path / "edgemine.toml"
    config.write_text(f'lake = "{lake.uri}"\n[embed]\npart_size = 6\nbatch_size = 3\nworkers = 1\ndevice = "cpu"\n')
    process = start(["score", "--model", "v1"], config, None)
    kill_when(process, lambda: tables.version(lake, "predictions") is not None)
    first = rows(lake, "SELECT count(*) n FROM predictions")[0]["n"]
    assert 0 < first < READABLE
    rerun = start(["score", "--model", "v1", "--json"], config, None)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 1, err  # 1: the three missing files are errors
    assert json.loads(out)["already_embedded"] == first
    assert rows(lake, "SELECT count(*) n, count(DISTINCT image_id) ids FROM predictions") == [
        {"n": READABLE, "ids": READABLE}
    ]
    assert rows(lake, "SELECT count(*) n, count(DISTINCT image_id) ids FROM embeddings") == [
        {"n": READABLE, "ids": READABLE}
    ]


@pytest.mark.slow
def test_a_killed_training_leaves_no_model_and_resumes(trained, tmp_path):
    lake = copy_of(trained, tmp_path)
    config = tmp_path / "edgemine.toml"
    config.write_text(f'lake = "{lake.uri}"\n')
    args = ["train", "--name", "v2", "--from", "random", "--epochs", "2", "--image-size", "32", "--batch-size", "16",
            "--patience", "5", "--device", "cpu", "--workers", "1"]
    process = start(args, config, None)
    kill_when(process, lambda: lake.fs.exists(f"{lake.model_staging_dir('v2')}/last.pt"), timeout=300)
    assert rows(lake, "SELECT model_version FROM models") == [{"model_version": "v1"}]  # v2 is not visible
    assert not lake.fs.exists(f"{lake.model_dir('v2')}/model.json")
    rerun = start([*args, "--resume", "--json"], config, None)
    out, err = rerun.communicate(timeout=300)
    summary = json.loads(out)
    assert summary["resumed_from_epoch"] >= 1 and summary["epochs"] == 2, err
    with LakeDB(lake) as db:
        assert read_model(db, "v2")["curves"]["epoch"] == [1, 2]
    assert not lake.fs.exists(lake.model_staging_dir("v2"))


def test_pseudo_labels_add_a_models_confident_predictions_on_unlabelled_images(trained, tmp_path):
    lake = copy_of(trained, tmp_path)
    source = source_uri(lake, "images")
    for i in range(100, 109):
        put(lake, f"{source}/new-{i}.jpg", coloured_jpeg(i))
    ingest_images(lake, source, show_progress=False)
    score_lake(lake, "v1", SCORE, where="uri LIKE '%new-%'", show_progress=False)
    with pytest.raises(TrainingError, match="not a model version"):
        train(lake, "p", pseudo_from="v0")
    train(lake, "p", replace(FAST, epochs=1), pseudo_from="v1", min_confidence=0.0)
    with LakeDB(lake) as db:
        data = read_model(db, "p")["data"]
    new_ids = [r["image_id"] for r in rows(lake, "SELECT image_id FROM images WHERE uri LIKE '%new-%'")]
    outside_val = int((~validation_mask(new_ids, 0.1)).sum())
    assert data["pseudo_labels"]["images"] == outside_val and data["label_batches"]["pseudo:v1"] == outside_val
    assert not set(new_ids) & set(data["val_image_ids"])  # validation is on human labels only


def test_a_batch_weight_scales_its_images_loss_and_is_recorded(trained, tmp_path):
    from jobs.cli import UsageError
    from jobs.cli.model_commands import _batch_weights

    lake = copy_of(trained, tmp_path)
    images = rows(lake, "SELECT image_id, uri FROM images ORDER BY uri")[:9]
    for i, row in enumerate(images):
        row["label"] = CLASSES[i % 3]  # the same labels again, now as batch b2 (the newest import wins)
    add_labels(lake, images, batch="b2", at=datetime(2026, 11, 2, tzinfo=UTC))
    one_epoch = replace(FAST, epochs=1)
    for version, weights in (("plain", {}), ("ones", {"b2": 1.0}), ("heavy", {"b2": 4.0})):
        train(lake, version, one_epoch, batch_weights=weights)
    plain, ones, heavy = (state_dict(lake, v) for v in ("plain", "ones", "heavy"))
    assert all(torch.equal(plain[k], ones[k]) for k in plain)  # weight 1 is no weight
    assert not all(torch.equal(plain[k], heavy[k]) for k in plain)
    with LakeDB(lake) as db:
        record = read_model(db, "heavy")
    assert record["config"]["batch_weights"] == {"b2": 4.0} and record["data"]["label_batches"]["b2"] == 9
    for weights, message in (({"b3": 2.0}, "no label to train on is in batch 'b3'"), ({"b2": 0.0}, "above 0")):
        with pytest.raises(TrainingError, match=message):
            train(lake, "bad", one_epoch, batch_weights=weights)
    assert not rows(lake, "SELECT * FROM models WHERE model_version = 'bad'")
    assert _batch_weights(["glare=3", "a=b=0.5"]) == {"glare": 3.0, "a=b": 0.5}
    for text in ("glare", "glare=x", "=2"):
        with pytest.raises(UsageError, match="BATCH=WEIGHT"):
            _batch_weights([text])


@pytest.mark.parametrize("finetune, trained_prefixes", [("head", ("fc.",)), ("last", ("fc.", "layer4."))])
def test_finetune_trains_only_its_part_and_the_card_says_which(trained, tmp_path, finetune, trained_prefixes):
    lake = copy_of(trained, tmp_path)
    train(lake, finetune, replace(FAST, epochs=1, finetune=finetune))
    before = build_network("resnet18", "random", len(CLASSES), seed=FAST.seed).state_dict()
    after = state_dict(lake, finetune)
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    # What was trained moved (weights, and batch-norm statistics in layer4); the rest is the same to the bit,
    # running means and variances included (a frozen batch norm stays in eval mode).
    assert changed and all(key.startswith(trained_prefixes) for key in changed), sorted(changed)[:5]
    assert {key.split(".")[0] + "." for key in changed} == set(trained_prefixes)
    with LakeDB(lake) as db:
        record, row = read_model(db, finetune), model_row(db, finetune)
    assert record["finetune"] == finetune and record["config"]["finetune"] == finetune
    facts = {"first": None, "last": None, "predictions": 0, "images": 0, "ingested": None}
    details = cards.model_details(finetune, None, facts, row, Config()).paragraphs[3]
    assert f"resnet18 from random, fine-tuning {cards.FINETUNED[finetune]}, classes" in details
    with pytest.raises(ConfigError, match="unknown --finetune 'most'; allowed: head, last, all"):
        replace(FAST, finetune="most").check()


def test_the_commands_print_one_line_for_bad_input_and_list_models(trained, capsys):
    from jobs.cli import main

    assert main(["train", "--name", "v9", "--from", "v0", "--lake", trained.uri, "--quiet"]) == 2
    assert main(["score", "--model", "v0", "--lake", trained.uri, "--quiet"]) == 2
    assert main(["train", "--name", "bad name", "--lake", trained.uri, "--quiet"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert (
        len(errors) == 3
        and "nor a model version" in errors[0]
        and "no model 'v0'" in errors[1]
        and "not a valid name" in errors[2]
    )
    assert main(["models", "--lake", trained.uri, "--json", "--quiet"]) == 0
    assert [row["model_version"] for row in json.loads(capsys.readouterr().out)] == ["v1"]

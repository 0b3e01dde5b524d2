"""The embed job end to end, on a local folder and on S3: what it writes, bad
images, only-new runs, shards, overwrite, and a part a kill cut between its commits."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from embed import reader
from jobs.embed_images import JOB, Shard, embed_lake
from jobs.ingest_images import ingest_images
from mining.core import tables
from mining.core.config import EmbedConfig
from mining.core.errors import ConfigError
from mining.core.lake import Lake, open_url
from mining.core.schema import EMBEDDINGS
from mining.core.sql import LakeDB
from tests.helpers import jpeg_bytes, local_only, put, put_images, source_uri
from tests.test_embed_preprocess import corrupt_jpeg, truncated_jpeg

pytestmark = pytest.mark.model  # every test here runs a model (or uses one a fixture trained)

# Small parts and batches, so a few dozen images make several of each; one
# worker process so the loader path (fork, own S3 client) is the real one.
CONFIG = EmbedConfig(weights="random", seed=0, batch_size=8, part_size=20, workers=1, max_pixels=2_000_000)
TOLERANCE = 1e-5


def query(lake: Lake, sql: str) -> list[dict]:
    with LakeDB(lake) as db:
        return db.query(sql).to_pylist()


def vectors(lake: Lake) -> dict[str, np.ndarray]:
    with LakeDB(lake) as db:
        table = db.query("SELECT image_id, embedding FROM embeddings")
    return {
        i: np.asarray(e, dtype=np.float32)
        for i, e in zip(table.column("image_id").to_pylist(), table.column("embedding").to_pylist())
    }


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def ingested(lake: Lake, n: int, start: int = 0) -> str:
    source = source_uri(lake, "images")
    put_images(lake, source, n, start=start)
    ingest_images(lake, source, show_progress=False)
    return source


def test_embeddings_thumbnails_and_errors(lake):
    source = ingested(lake, 30)
    # Bad images that pass ingest (their headers are fine) and fail when decoded or read.
    put(lake, f"{source}/bad/truncated.jpg", truncated_jpeg())
    put(lake, f"{source}/bad/corrupt.jpg", corrupt_jpeg())
    put(lake, f"{source}/bad/huge.png", png((2000, 1500)))  # 3 MP over the 2 MP limit
    put(lake, f"{source}/bad/deleted.jpg", jpeg_bytes(900))
    put(lake, f"{source}/bad/replaced.jpg", jpeg_bytes(901))
    ingest_images(lake, source, show_progress=False)
    fs, _ = open_url(source, lake.s3)
    fs.rm(f"{source}/bad/deleted.jpg".removeprefix("s3://"))
    put(lake, f"{source}/bad/replaced.jpg", jpeg_bytes(902))

    summary = embed_lake(lake, CONFIG, show_progress=False)
    assert (summary.images_in_shard, summary.to_embed, summary.embedded, summary.errors) == (35, 35, 30, 5)
    assert summary.weights == "random-seed0" and summary.parts == 2

    [schema] = query(lake, "SELECT any_value(typeof(embedding)) t, min(len(embedding)) width, count(*) n, "
                           "count(DISTINCT image_id) ids, min(list_inner_product(embedding, embedding)) lo, "
                           "max(list_inner_product(embedding, embedding)) hi FROM embeddings")
    assert schema["t"] == "FLOAT[]" and schema["width"] == 512 and schema["n"] == schema["ids"] == 30
    assert 1 - 1e-5 < schema["lo"] <= schema["hi"] < 1 + 1e-5
    # Cosine similarity works in SQL: each vector is its own nearest neighbour.
    nearest = query(
        lake,
        "SELECT a.image_id, arg_max(b.image_id, list_cosine_similarity(a.embedding, b.embedding)) best "
        "FROM embeddings a, embeddings b GROUP BY a.image_id",
    )
    assert all(row["image_id"] == row["best"] for row in nearest)

    thumbnails = query(
        lake,
        "SELECT t.image_id, t.jpeg, t.width, t.height, i.width iw, i.height ih "
        "FROM thumbnails t JOIN images i USING (image_id)",
    )
    assert len(thumbnails) == 30
    for row in thumbnails:
        image = Image.open(io.BytesIO(row["jpeg"]))
        assert image.format == "JPEG" and image.size == (row["width"], row["height"])
        assert max(image.size) == min(128, max(row["iw"], row["ih"]))

    errors = {
        row["uri"].rsplit("/", 1)[1]: row
        for row in query(lake, f"SELECT uri, reason, source, raw FROM errors WHERE job = '{JOB}'")
    }
    assert {name: row["reason"].split(":")[0] for name, row in errors.items()} == {
        "truncated.jpg": "truncated",
        "corrupt.jpg": "corrupt",
        "huge.png": "decompression bomb",
        "deleted.jpg": "missing",
        "replaced.jpg": "changed since ingest",
    }
    assert {row["source"] for row in errors.values()} == {"resnet18/random-seed0"}

    # Rerun: nothing new, failures not retried unless asked.
    again = embed_lake(lake, CONFIG, show_progress=False)
    assert (again.already_embedded, again.failed_before, again.to_embed, again.parts) == (30, 5, 0, 0)
    put(lake, f"{source}/bad/deleted.jpg", jpeg_bytes(900))  # the file comes back
    retried = embed_lake(lake, CONFIG, retry_errors=True, show_progress=False)
    assert (retried.to_embed, retried.embedded, retried.errors) == (5, 1, 4)
    assert query(lake, "SELECT count(*) n FROM embeddings") == [{"n": 31}]


@local_only
def test_only_new_images_are_embedded_and_their_vectors_do_not_depend_on_the_run(lake, tmp_path):
    source = ingested(lake, 25)
    first = embed_lake(lake, CONFIG, show_progress=False)
    assert first.embedded == 25
    ingested(lake, 10, start=25)
    second = embed_lake(lake, replace(CONFIG, batch_size=5), show_progress=False)
    assert (second.already_embedded, second.to_embed, second.embedded) == (25, 10, 10)
    assert query(lake, "SELECT count(*) n, count(DISTINCT image_id) ids FROM embeddings") == [{"n": 35, "ids": 35}]
    assert query(lake, "SELECT count(*) n FROM thumbnails") == [{"n": 35}]

    # The same images in one go, in another lake, another batch size: same vectors.
    other = Lake(str(tmp_path / "other"))
    put_images(other, str(tmp_path / "other-images"), 35)
    ingest_images(other, str(tmp_path / "other-images"), show_progress=False)
    embed_lake(other, replace(CONFIG, batch_size=16, part_size=100, workers=0), show_progress=False)
    here, there = vectors(lake), vectors(other)
    assert here.keys() == there.keys()
    for image_id, vector in here.items():
        np.testing.assert_allclose(vector, there[image_id], atol=TOLERANCE)
    assert source


@local_only
def test_shards_split_the_images_without_overlap_and_match_one_run(lake, tmp_path):
    ingested(lake, 40)
    counts = [embed_lake(lake, CONFIG, shard=Shard(i, 3), show_progress=False).embedded for i in range(3)]
    assert sum(counts) == 40 and all(counts)
    assert query(lake, "SELECT count(*) n, count(DISTINCT image_id) ids FROM embeddings") == [{"n": 40, "ids": 40}]
    # Rerunning a finished shard does nothing.
    assert embed_lake(lake, CONFIG, shard=Shard(1, 3), show_progress=False).to_embed == 0

    whole = Lake(str(tmp_path / "whole"))
    put_images(whole, str(tmp_path / "whole-images"), 40)
    ingest_images(whole, str(tmp_path / "whole-images"), show_progress=False)
    embed_lake(whole, replace(CONFIG, workers=0), show_progress=False)
    sharded, single = vectors(lake), vectors(whole)
    assert sharded.keys() == single.keys()
    assert max(np.abs(sharded[k] - single[k]).max() for k in single) < TOLERANCE


def test_shard_spec_is_validated():
    assert Shard.parse("2/8") == Shard(2, 8)
    for bad in ["8/8", "-1/2", "1", "a/b", "0/0"]:
        with pytest.raises(ConfigError, match="I/N"):
            Shard.parse(bad)


@local_only
def test_overwrite_replaces_rather_than_adds(lake):
    ingested(lake, 12)
    embed_lake(lake, CONFIG, show_progress=False)
    before = query(lake, "SELECT max(computed_at) t FROM embeddings")[0]["t"]
    redo = embed_lake(lake, CONFIG, overwrite=True, show_progress=False)
    assert (redo.to_embed, redo.embedded, redo.thumbnails) == (12, 12, 12)
    # Merged on their key: the earlier rows are replaced, not added to.
    assert query(lake, "SELECT count(*) n FROM embeddings") == [{"n": 12}]
    assert query(lake, "SELECT count(*) n FROM thumbnails") == [{"n": 12}]
    assert query(lake, "SELECT min(computed_at) t FROM embeddings")[0]["t"] > before


@local_only
def test_other_weights_are_embedded_beside_and_thumbnails_are_not_repeated(lake):
    ingested(lake, 10)
    embed_lake(lake, CONFIG, show_progress=False)
    second = embed_lake(lake, replace(CONFIG, seed=1), show_progress=False)
    assert (second.weights, second.embedded, second.thumbnails) == ("random-seed1", 10, 0)
    rows = query(lake, "SELECT weights, count(*) n FROM embeddings GROUP BY weights ORDER BY weights")
    assert rows == [{"weights": "random-seed0", "n": 10}, {"weights": "random-seed1", "n": 10}]
    assert query(lake, "SELECT count(*) n FROM thumbnails") == [{"n": 10}]


@local_only
def test_decoding_on_the_device_gives_the_same_embeddings(lake, tmp_path):
    """The GPU decode path (batched torchvision decode_jpeg), run on the CPU here."""
    ingested(lake, 12)
    summary = embed_lake(lake, replace(CONFIG, decode="device"), show_progress=False)
    assert (summary.decode, summary.embedded) == ("device", 12)
    other = Lake(str(tmp_path / "other"))
    put_images(other, str(tmp_path / "imgs"), 12)
    ingest_images(other, str(tmp_path / "imgs"), show_progress=False)
    embed_lake(other, replace(CONFIG, decode="workers"), show_progress=False)
    on_device, in_workers = vectors(lake), vectors(other)
    assert on_device.keys() == in_workers.keys()
    assert min(float(on_device[k] @ in_workers[k]) for k in on_device) > 0.999
    assert query(lake, "SELECT count(*) n FROM thumbnails") == [{"n": 12}]


def test_a_part_killed_between_its_commits_is_redone_and_nothing_doubles(lake, monkeypatch):
    ingested(lake, 30)
    # The second part dies after its thumbnails' commit, before its embeddings'.
    real_append, calls = tables.append, []

    def append_then_die(lake_, table, rows, info):
        calls.append(table.name)
        if table is EMBEDDINGS and calls.count("embeddings") == 2:
            raise KeyboardInterrupt("killed between commits")
        return real_append(lake_, table, rows, info)

    monkeypatch.setattr(tables, "append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        embed_lake(lake, CONFIG, show_progress=False)
    monkeypatch.undo()
    assert query(lake, "SELECT count(*) n FROM embeddings") == [{"n": 20}]
    assert query(lake, "SELECT count(*) n FROM thumbnails") == [{"n": 30}]  # the second part's are in already

    rerun = embed_lake(lake, CONFIG, show_progress=False)
    assert (rerun.to_embed, rerun.embedded, rerun.thumbnails) == (10, 10, 0)
    assert query(lake, "SELECT count(*) n, count(DISTINCT image_id) ids FROM embeddings") == [{"n": 30, "ids": 30}]
    assert query(lake, "SELECT count(*) n, count(DISTINCT image_id) ids FROM thumbnails") == [{"n": 30, "ids": 30}]


@local_only
def test_unknown_decode_mode_lists_the_allowed_ones(lake):
    with pytest.raises(ConfigError, match="auto, workers, device"):
        embed_lake(lake, replace(CONFIG, decode="gpu"), show_progress=False)


@local_only
def test_embedding_column_is_a_list_of_the_backbones_width(lake):
    ingested(lake, 3)
    embed_lake(lake, CONFIG, show_progress=False)
    found = query(lake, "SELECT DISTINCT typeof(embedding) t, len(embedding) n FROM embeddings")
    assert found == [{"t": "FLOAT[]", "n": 512}]
    stored = tables.open_table(lake, EMBEDDINGS).schema().to_arrow()
    assert pa.types.is_list(pa.schema(stored).field("embedding").type)  # Delta keeps a list, and so does the view


@local_only
def test_an_unexpected_decoder_failure_on_one_image_does_not_end_the_run(lake, monkeypatch):
    ingested(lake, 6)
    real_decode, calls = reader.decode, []

    def decode_with_a_bug(data, options):
        calls.append(1)
        if len(calls) == 3:
            raise IndexError("a plugin bug on one odd file")
        return real_decode(data, options)

    monkeypatch.setattr(reader, "decode", decode_with_a_bug)
    summary = embed_lake(lake, replace(CONFIG, workers=0), show_progress=False)
    assert (summary.embedded, summary.errors) == (5, 1)
    assert summary.error_samples[0]["reason"] == "undecodable: IndexError: a plugin bug on one odd file"

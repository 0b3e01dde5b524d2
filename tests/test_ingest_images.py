from __future__ import annotations

import hashlib

from jobs.embed_images import embed_lake
from jobs.ingest_images import ingest_images
from mining.core.config import EmbedConfig
from mining.core.sql import LakeDB
from tests.helpers import jpeg_bytes, local_only, png_bytes, put, put_images, source_uri


def rows(lake, sql):
    with LakeDB(lake) as db:
        return db.query(sql).to_pylist()


def test_registers_images_with_size_and_content_id(lake, small_ingest):
    folder = source_uri(lake, "cams")
    uris = put_images(lake, folder, 45)
    put(lake, f"{folder}/sub/extra.png", png_bytes(1))
    put(lake, f"{folder}/notes.txt", "not an image, and not picked by default")

    summary = ingest_images(lake, folder, small_ingest, show_progress=False)

    assert summary.found == 46 and summary.registered == 46 and summary.errors == 0
    assert summary.shards == 2  # 46 new images, 40 per shard
    got = {r["uri"]: r for r in rows(lake, "SELECT * FROM images")}
    assert set(got) == set(uris) | {f"{folder}/sub/extra.png"}
    files = rows(lake, "SELECT uri, image_id FROM image_files")
    assert {f["uri"]: f["image_id"] for f in files} == {uri: r["image_id"] for uri, r in got.items()}
    first = got[uris[0]]
    assert (first["width"], first["height"], first["format"]) == (64, 48, "JPEG")
    assert first["sha256"] == hashlib.sha256(jpeg_bytes(0)).hexdigest()
    assert first["image_id"] == first["sha256"][:20]
    assert got[f"{folder}/sub/extra.png"]["width"] == 40


@local_only
def test_same_bytes_at_two_uris_is_one_image(lake, small_ingest):
    folder = source_uri(lake, "dupes")
    put(lake, f"{folder}/a.jpg", jpeg_bytes(7))
    put(lake, f"{folder}/copy/a-again.jpg", jpeg_bytes(7))
    ingest_images(lake, folder, small_ingest, show_progress=False)
    assert rows(lake, "SELECT count(*) n, count(DISTINCT image_id) ids FROM image_files")[0] == {"n": 2, "ids": 1}
    assert rows(lake, "SELECT count(*) n, count(DISTINCT image_id) ids FROM images")[0] == {"n": 1, "ids": 1}
    # Found again in a third place, later: still one image, now three files.
    put(lake, f"{folder}/later/a-third.jpg", jpeg_bytes(7))
    assert ingest_images(lake, folder, small_ingest, show_progress=False).registered == 1
    assert rows(lake, "SELECT (SELECT count(*) FROM images) i, (SELECT count(*) FROM image_files) f")[0] == {
        "i": 1,
        "f": 3,
    }


def test_bad_files_become_errors_and_the_rest_goes_on(lake, small_ingest):
    folder = source_uri(lake, "mixed")
    put_images(lake, folder, 5)
    put(lake, f"{folder}/empty.jpg", b"")
    put(lake, f"{folder}/text.jpg", "hello, I am text")
    put(lake, f"{folder}/cut.png", png_bytes(3)[:20])

    summary = ingest_images(lake, folder, small_ingest, show_progress=False)

    assert summary.registered == 5 and summary.errors == 3
    reasons = {r["uri"].rsplit("/", 1)[1]: r["reason"] for r in rows(lake, "SELECT uri, reason FROM errors")}
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["text.jpg"].startswith("not an image")
    assert "cut.png" in reasons
    assert rows(lake, "SELECT DISTINCT job FROM errors") == [{"job": "ingest-images"}]


def test_rerun_registers_only_what_is_new(lake, small_ingest):
    folder = source_uri(lake, "growing")
    put_images(lake, folder, 10)
    put(lake, f"{folder}/bad.jpg", b"junk")
    ingest_images(lake, folder, small_ingest, show_progress=False)

    again = ingest_images(lake, folder, small_ingest, show_progress=False)
    assert (again.registered, again.errors, again.already_known) == (0, 0, 11)

    put_images(lake, folder, 3, start=100)
    more = ingest_images(lake, folder, small_ingest, show_progress=False)
    assert (more.registered, more.already_known) == (3, 11)
    assert rows(lake, "SELECT count(*) n FROM images")[0]["n"] == 13
    assert rows(lake, "SELECT count(*) n FROM errors")[0]["n"] == 1

    retried = ingest_images(lake, folder, small_ingest, retry_errors=True, show_progress=False)
    assert (retried.registered, retried.errors) == (0, 1)


@local_only
def test_glob_filter(lake, small_ingest):
    folder = source_uri(lake, "globbed")
    put_images(lake, f"{folder}/day", 3)
    put_images(lake, f"{folder}/night", 2, start=10)
    summary = ingest_images(lake, folder, small_ingest, pattern="night/*.jpg", show_progress=False)
    assert summary.registered == 2
    assert all("/night/" in r["uri"] for r in rows(lake, "SELECT uri FROM images"))


def test_file_names_with_glob_characters_are_read_literally(lake, small_ingest):
    """``frame[1].jpg`` is a file, not a pattern: reading it must not expand it."""
    folder = source_uri(lake, "odd")
    put(lake, f"{folder}/frame[1].jpg", jpeg_bytes(1))
    put(lake, f"{folder}/frame*2.jpg", jpeg_bytes(2))
    summary = ingest_images(lake, folder, small_ingest, show_progress=False)
    assert (summary.registered, summary.errors) == (2, 0)
    embedded = embed_lake(lake, EmbedConfig(weights="random", workers=0), show_progress=False)
    assert (embedded.embedded, embedded.errors) == (2, 0)


@local_only
def test_symlinks_leading_outside_the_source_are_not_followed(lake, small_ingest, tmp_path):
    """A source folder is what is in it: a link to a file (or under a linked folder) elsewhere
    becomes an error row, not an image read from wherever it points; links inside are fine."""
    import os

    folder = source_uri(lake, "linked")
    put_images(lake, folder, 2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "private.jpg").write_bytes(jpeg_bytes(50))
    os.symlink(elsewhere / "private.jpg", f"{folder}/looks-local.jpg")
    os.symlink(f"{folder}/{sorted(os.listdir(folder))[0]}", f"{folder}/inside-link.jpg")

    summary = ingest_images(lake, folder, small_ingest, show_progress=False)

    assert summary.registered == 3 and summary.errors == 1
    (error,) = rows(lake, "SELECT uri, reason FROM errors")
    assert error["uri"] == f"{folder}/looks-local.jpg"
    assert error["reason"].startswith(f"a symlink leading outside the source (to {elsewhere / 'private.jpg'})")
    private_id = hashlib.sha256(jpeg_bytes(50)).hexdigest()[:20]
    assert rows(lake, f"SELECT count(*) n FROM images WHERE image_id = '{private_id}'") == [{"n": 0}]

"""A job process killed (SIGKILL, no cleanup) mid-run, then rerun, ends with every
row exactly once: nothing missing, nothing duplicated, not even in raw storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.ingest_images import ingest_images
from mining.core import tables
from mining.core.lake import Lake
from mining.core.sql import LakeDB
from tests.helpers import jsonl, prediction, put, put_images, source_uri

EDGEMINE = Path(sys.executable).parent / "edgemine"
pytestmark = [pytest.mark.slow, pytest.mark.processes]


def count(lake: Lake, sql: str) -> int:
    with LakeDB(lake) as db:
        return db.query(sql).column(0)[0].as_py()


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL the job as soon as ``ready()`` says it is part-way through."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"job ended (rc {process.returncode}) before it could be killed mid-run:\n{err[-2000:]}")
        if ready():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail("job never reached the point to kill it")


def start(args: list[str], config: Path, env: dict | None) -> subprocess.Popen:
    return subprocess.Popen(
        [str(EDGEMINE), *args, "--config", str(config), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=None if env is None else os.environ | env, start_new_session=True,
    )


def markers(lake: Lake, job: str, status: str = "done") -> int:
    """Input files of ``job`` whose marker has this status (done, or started and not finished)."""
    folder = lake.path("_jobs", job)
    if not lake.fs.exists(folder):
        return 0
    shards = [p.rsplit("/", 1)[1].removesuffix(".json") for p in lake.fs.ls(folder, detail=False)]
    return sum((lake.read_marker(job, shard) or {}).get("status") == status for shard in shards)


def version(lake: Lake, table: str) -> int:
    """The table's Delta version: how many commits it had, less one (-1: none)."""
    found = tables.version(lake, table)
    return -1 if found is None else found


@pytest.fixture
def lake_env(lake, request):
    """Environment for the job subprocess: S3 credentials and endpoint when the lake is on S3."""
    return request.getfixturevalue("s3_env") if lake.protocol == "s3" else None


def test_killed_predictions_ingest_reruns_to_exactly_once(lake, lake_env, small_ingest, tmp_path):
    folder = source_uri(lake, "images")
    uris = put_images(lake, folder, 10)
    ingest_images(lake, folder, small_ingest, show_progress=False)
    # Four files of four batches (one commit each): two files done, one cut part-way, one not begun.
    files, per_file, chunk_rows = 4, 1000, 250
    for k in range(files):
        rows = [prediction(uris[i % 10], i, ts=f"2026-10-{1 + i % 3:02d}T00:00:{i % 60:02d}Z",
                           model_version=f"m{k}-{i}") for i in range(per_file)]
        put(lake, source_uri(lake, f"in/p-{k}.jsonl"), jsonl(rows))
    config = tmp_path / "job.toml"
    config.write_text(f'lake = "{lake.uri}"\n[ingest]\nchunk_rows = {chunk_rows}\n')
    inputs = [source_uri(lake, "in/p-*.jsonl")]

    job = start(["ingest", "predictions", *inputs], config, lake_env)
    # Killed in the middle of a file: two files done (4 batches each, one commit per batch),
    # the third started and some of its batches committed.
    batches = per_file // chunk_rows
    kill_when(job, lambda: markers(lake, "ingest-predictions") == 2 and version(lake, "predictions") >= 2 * batches)

    done_before = markers(lake, "ingest-predictions")
    assert 2 <= done_before < files and markers(lake, "ingest-predictions", "started") == 1
    assert 2 * per_file < count(lake, "SELECT count(*) FROM predictions") < 3 * per_file  # part of the third is in
    rerun = subprocess.run(
        [str(EDGEMINE), "ingest", "predictions", *inputs, "--config", str(config), "--quiet", "--json"],
        capture_output=True,
        text=True,
        env=None if lake_env is None else os.environ | lake_env,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f'"skipped": {done_before}' in rerun.stdout

    total = files * per_file
    assert count(lake, "SELECT count(*) FROM predictions") == total
    assert count(lake, "SELECT count(DISTINCT prediction_id) FROM predictions") == total
    assert markers(lake, "ingest-predictions") == files


def test_killed_images_ingest_reruns_to_exactly_once(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    folder = str(tmp_path / "images")
    put_images(lake, folder, 400)
    put(lake, f"{folder}/bad.jpg", b"broken")
    config = tmp_path / "job.toml"
    config.write_text(f'lake = "{lake.uri}"\n[ingest]\nimage_shard = 20\nimage_batch = 5\n')

    job = start(["ingest", "images", folder], config, None)
    kill_when(job, lambda: version(lake, "image_files") >= 2)  # three shards of 20 registered
    assert count(lake, "SELECT count(*) FROM image_files") < 400

    rerun = subprocess.run([str(EDGEMINE), "ingest", "images", folder, "--config", str(config), "--quiet"],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert count(lake, "SELECT count(*) FROM image_files") == 400
    assert count(lake, "SELECT count(DISTINCT uri) FROM image_files") == 400
    assert (
        count(lake, "SELECT count(*) FROM images") == count(lake, "SELECT count(DISTINCT image_id) FROM images") == 400
    )
    assert count(lake, "SELECT count(*) FROM errors") == 1


def test_killed_embed_reruns_to_exactly_once(lake, lake_env, tmp_path):
    images, part_size = 30, 6  # five parts of two batches
    folder = source_uri(lake, "images")
    put_images(lake, folder, images)
    ingest_images(lake, folder, show_progress=False)
    config = tmp_path / "job.toml"
    config.write_text(f'lake = "{lake.uri}"\n[embed]\nweights = "random"\npart_size = {part_size}\nbatch_size = 3\n'
                      'workers = 1\n')

    job = start(["embed"], config, lake_env)
    kill_when(job, lambda: version(lake, "embeddings") >= 1)  # two parts in
    assert 2 * part_size <= count(lake, "SELECT count(*) FROM embeddings") < images

    rerun = subprocess.run(
        [str(EDGEMINE), "embed", "--config", str(config), "--quiet", "--json"],
        capture_output=True,
        text=True,
        env=None if lake_env is None else os.environ | lake_env,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["already_embedded"] + summary["embedded"] == images and summary["embedded"] > 0
    for table in ("embeddings", "thumbnails"):
        assert count(lake, f"SELECT count(*) FROM {table}") == images
        assert count(lake, f"SELECT count(DISTINCT image_id) FROM {table}") == images


def test_killed_export_reruns_to_every_image_exported_once(lake, lake_env, tmp_path):
    from jobs.ingest_predictions import ingest_predictions

    images = 40
    folder = source_uri(lake, "images")
    uris = put_images(lake, folder, images)
    ingest_images(lake, folder, show_progress=False)
    put(
        lake,
        source_uri(lake, "p.jsonl"),
        jsonl(
            [
                prediction(u, i, detections=[{"box": [1, 1, 20, 20], "label": "car", "score": 0.8}])
                for i, u in enumerate(uris)
            ]
        ),
    )
    ingest_predictions(lake, [source_uri(lake, "p.jsonl")], show_progress=False)
    config = tmp_path / "job.toml"
    config.write_text(f'lake = "{lake.uri}"\n')
    target = source_uri(lake, "out")
    args = ["export", "sql:SELECT image_id FROM images", "--format", "yolo", "--to", target, "--batch", "killed",
            "--task-size", "2"]

    job = start(args, config, lake_env)  # YOLO copies each image: 20 tasks of 2 images and 2 label files
    kill_when(job, lambda: lake.fs.exists(f"{lake.fs._strip_protocol(target)}/killed/task-0003/data.yaml"))
    assert count(lake, "SELECT count(*) FROM exports") == 0  # killed before its commit: the batch does not exist

    env = None if lake_env is None else os.environ | lake_env
    rerun = subprocess.run([str(EDGEMINE), *args, "--config", str(config), "--quiet", "--json"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["exported"] == images
    assert count(lake, "SELECT count(*) FROM exports") == images
    assert count(lake, "SELECT count(DISTINCT image_id) FROM exports") == images
    again = subprocess.run([str(EDGEMINE), *args, "--config", str(config), "--quiet", "--json"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert json.loads(again.stdout)["status"] == "unchanged"
    assert count(lake, "SELECT count(*) FROM exports") == images
    labels = lake.fs.glob(f"{lake.fs._strip_protocol(target)}/killed/task-*/labels/*.txt")
    assert len(labels) == images and len({p.rsplit("/", 1)[1] for p in labels}) == images  # each image in one task


def group_alive(pgid: int) -> bool:
    """Whether any process of the job's process group (its decoding workers too) is still there."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize(("sig", "code", "says"), [(signal.SIGTERM, 143, "stopped (SIGTERM)"),
                                                   (signal.SIGINT, 130, "interrupted")])
@pytest.mark.parametrize("job", ["ingest-images", "embed"])
def test_a_stopped_job_exits_cleanly_and_its_rerun_finishes_exactly_once(tmp_path, job, sig, code, says):
    """SIGTERM (a scheduler, to the job's process) or Ctrl-C (SIGINT, to the terminal's process
    group): one line, the exit code the shell expects, no traceback, no process left behind; the
    rerun finishes with every row once."""
    lake = Lake(str(tmp_path / "lake"))
    folder = str(tmp_path / "images")
    put_images(lake, folder, 120 if job == "ingest-images" else 30)
    config = tmp_path / "job.toml"
    config.write_text(f'lake = "{lake.uri}"\n[ingest]\nimage_shard = 10\nimage_batch = 5\n'
                      '[embed]\nweights = "random"\npart_size = 6\nbatch_size = 3\nworkers = 1\n')
    if job == "ingest-images":
        args, table, ready = ["ingest", "images", folder], "images", lambda: version(lake, "image_files") >= 1
    else:
        ingest_images(lake, folder, show_progress=False)
        args, table, ready = ["embed"], "embeddings", lambda: version(lake, "embeddings") >= 0

    process = start(args, config, None)
    deadline = time.monotonic() + 120
    while not ready():
        assert process.poll() is None and time.monotonic() < deadline, "the job ended before it could be stopped"
        time.sleep(0.01)
    if sig == signal.SIGINT:
        os.killpg(process.pid, sig)
    else:
        os.kill(process.pid, sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert f"edgemine: {says}; rerun the same command" in err and "Traceback" not in err
    for _ in range(100):  # its workers go with it
        if not group_alive(process.pid):
            break
        time.sleep(0.1)
    assert not group_alive(process.pid)

    rerun = subprocess.run([str(EDGEMINE), *args, "--config", str(config), "--quiet"],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    expected = 120 if job == "ingest-images" else 30
    assert count(lake, f"SELECT count(*) FROM {table}") == expected
    assert count(lake, f"SELECT count(DISTINCT image_id) FROM {table}") == expected

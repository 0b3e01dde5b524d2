"""`--runner ray` on a real local Ray cluster (a head and a worker node, one CPU each,
started by `ray start` here and stopped at the end): the same tables as the local runner
for embed and score, exactly once with a model actor killed mid-run and with the driver
killed and rerun, and one line saying what to set when the address does not answer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embed.reader import Item
from jobs import ray_runner
from jobs.embed_images import embed_lake
from jobs.ingest_images import ingest_images
from jobs.runners import Runner
from jobs.score import score_lake
from jobs.train import TrainRequest, train_model
from mining.core import tables
from mining.core.config import EmbedConfig
from mining.core.errors import DeviceError
from mining.core.lake import Lake
from tests.helpers import jpeg_bytes, put, put_images, rows, source_uri
from tests.test_embed_preprocess import truncated_jpeg
from tests.test_kill_and_rerun import kill_when, start
from tests.train_helpers import FAST, labelled_lake

# tests/conftest.py marks every test of the ray_cluster fixture `ray` (and `model`, `processes` from their code).

# Small parts and batches so a few dozen images make several of each.
EMBED = EmbedConfig(weights="random", seed=0, batch_size=4, part_size=8, workers=1, device="cpu")
SCORE = EmbedConfig(device="cpu", workers=1, batch_size=4, part_size=6)
TOLERANCE = 1e-5
RAY = Path(sys.executable).parent / "ray"
# No usage reports; no token authentication (Ray 2.60's default keeps its token in ~/.ray, which
# every Ray on the machine shares): the cluster listens on loopback only.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sessions_processes(sessions: set[int]) -> list[int]:
    """Pids of the live processes in these sessions (what each `ray start` started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) in sessions and fields[0] != "Z":
                found.append(int(entry.name))
    return found


class LocalCluster:
    """`ray start --block` for a head and one worker node, each in a session of its own, so
    that everything they start can be found and stopped (never `ray stop`: it would stop
    every Ray on the machine)."""

    def __init__(self, temp_dir: str):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        env = os.environ | RAY_ENV
        common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                  f"--dashboard-agent-listen-port={free_port()}"]
        head = [str(RAY), "start", "--head", f"--port={self.port}", "--include-dashboard=false",
                f"--dashboard-port={free_port()}", f"--temp-dir={temp_dir}", *common]
        self.nodes = [subprocess.Popen(head, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)]
        self._wait(lambda: self._answers(), "the head node")
        worker = [str(RAY), "start", f"--address={self.address}", *common]
        self.nodes.append(subprocess.Popen(worker, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def _wait(self, ready, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline or any(node.poll() is not None for node in self.nodes):
                self.stop()
                pytest.fail(f"{what} of the test's Ray cluster did not start")
            time.sleep(0.2)

    def wait_for_both_nodes(self) -> None:
        import ray

        self._wait(lambda: sum(node["Alive"] for node in ray.nodes()) == 2, "the worker node")

    def processes(self, name: str) -> list[int]:
        """Pids of this cluster's processes whose command line holds ``name``."""
        found = []
        for pid in sessions_processes({node.pid for node in self.nodes}):
            try:
                if name in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    found.append(pid)
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """SIGTERM to each `ray start --block` (it stops what it started), then SIGKILL, by pid, to
        whatever of their sessions is left; returns when none is."""
        for node in reversed(self.nodes):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        sessions = {node.pid for node in self.nodes}
        deadline = time.monotonic() + 5
        while sessions_processes(sessions) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in sessions_processes(sessions):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for node in self.nodes:
            node.wait(timeout=30)
        deadline = time.monotonic() + 10
        while sessions_processes(sessions) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_cluster():
    """A two-node Ray cluster on loopback, this process connected to it as a driver."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test]' (it brings ray[data])")
    saved = {name: os.environ.get(name) for name in RAY_ENV}
    os.environ.update(RAY_ENV)
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    cluster = LocalCluster(temp_dir)
    try:
        Runner("ray", cluster.address).connect()
        cluster.wait_for_both_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert not sessions_processes({node.pid for node in cluster.nodes}), "Ray processes left running"


def copy_of(lake: Lake, path: Path) -> Lake:
    shutil.copytree(lake.root, path)
    return Lake(str(path))


def image_lake(path: Path, n: int, *, bad: bool = False) -> Lake:
    lake = Lake(str(path / "lake"))
    source = source_uri(lake, "images")
    put_images(lake, source, n)
    if bad:
        put(lake, f"{source}/bad/truncated.jpg", truncated_jpeg())
        put(lake, f"{source}/bad/deleted.jpg", jpeg_bytes(900))
    ingest_images(lake, source, show_progress=False)
    if bad:
        os.remove(f"{path}/images/bad/deleted.jpg")
    return lake


def vectors(lake: Lake, table: str = "embeddings") -> dict[str, np.ndarray]:
    return {r["image_id"]: np.asarray(r["embedding"], np.float32)
            for r in rows(lake, f"SELECT image_id, embedding FROM {table}")}


def assert_same_vectors(a: Lake, b: Lake) -> None:
    left, right = vectors(a), vectors(b)
    assert left.keys() == right.keys() and left
    assert max(float(np.abs(left[k] - right[k]).max()) for k in left) < TOLERANCE


def assert_same_rows(a: Lake, b: Lake, sql: str) -> None:
    assert rows(a, sql) == rows(b, sql)


def exactly_once(lake: Lake, images: int) -> None:
    """Every image of the lake has one embedding and one thumbnail: nothing doubled or missing."""
    for table in ("embeddings", "thumbnails"):
        assert rows(lake, f"SELECT count(*) n, count(DISTINCT image_id) ids FROM {table}") == [
            {"n": images, "ids": images}], table
    assert rows(lake, "SELECT count(*) n FROM images WHERE image_id NOT IN (SELECT image_id FROM embeddings)") == [
        {"n": 0}]


@pytest.mark.slow
def test_a_ray_embed_writes_what_the_local_runner_writes(ray_cluster, tmp_path):
    lake = image_lake(tmp_path / "a", 14, bad=True)
    on_ray = copy_of(lake, tmp_path / "b" / "lake")
    local = embed_lake(lake, EMBED, show_progress=False)
    remote = embed_lake(on_ray, EMBED, show_progress=False, runner=Runner("ray", ray_cluster.address))
    assert (local.embedded, local.errors) == (14, 2)
    for field in ("embedded", "errors", "thumbnails", "parts", "to_embed", "weights"):
        assert getattr(remote, field) == getattr(local, field), field
    assert remote.runner == "ray" and local.runner == "local"
    assert_same_vectors(lake, on_ray)
    assert_same_rows(lake, on_ray, "SELECT image_id, backbone, weights FROM embeddings ORDER BY image_id")
    assert_same_rows(lake, on_ray, "SELECT image_id, jpeg, width, height FROM thumbnails ORDER BY image_id")
    assert_same_rows(lake, on_ray, "SELECT job, source, uri, reason, raw FROM errors ORDER BY uri")
    for table in ("embeddings", "thumbnails", "errors"):  # one commit per part, as locally
        assert tables.version(on_ray, table) == tables.version(lake, table), table


@pytest.mark.slow
def test_a_ray_ingest_registers_what_the_local_ingest_registers(ray_cluster, tmp_path):
    from mining.core.config import IngestConfig

    lakes = [Lake(str(tmp_path / name / "lake")) for name in ("local", "ray")]
    source = source_uri(lakes[0], "images")
    put_images(lakes[0], source, 11)
    put(lakes[0], f"{source}/same-bytes-again.jpg", jpeg_bytes(3))  # one image, two files
    put(lakes[0], f"{source}/bad/truncated.jpg", truncated_jpeg()[:40])
    put(lakes[0], f"{source}/bad/empty.jpg", b"")
    config = IngestConfig(image_shard=6, image_batch=4)  # several shards and batches
    local = ingest_images(lakes[0], source, config, show_progress=False)
    remote = ingest_images(lakes[1], source, config, show_progress=False, runner=Runner("ray", ray_cluster.address))
    assert (local.found, local.registered, local.errors) == (14, 12, 2)
    assert (local.runner, remote.runner) == ("local", "ray")
    assert (remote.found, remote.registered, remote.errors, remote.shards) == (
        local.found, local.registered, local.errors, local.shards)
    assert_same_rows(*lakes, "SELECT * EXCLUDE (ingested_at) FROM images ORDER BY image_id")
    assert_same_rows(*lakes, "SELECT uri, image_id, source FROM image_files ORDER BY uri")
    assert_same_rows(*lakes, "SELECT job, source, uri, reason FROM errors ORDER BY uri")
    again = ingest_images(lakes[1], source, config, show_progress=False, runner=Runner("ray", ray_cluster.address))
    assert (again.already_known, again.registered) == (14, 0)


@pytest.mark.slow
def test_a_ray_score_writes_what_the_local_runner_writes(ray_cluster, tmp_path):
    lake = Lake(str(tmp_path / "a" / "lake"))
    labelled_lake(lake, 15)
    train_model(lake, TrainRequest(version="v1", base="random", workers=1, user="tester"), FAST, show_progress=False)
    on_ray = copy_of(lake, tmp_path / "b" / "lake")
    local = score_lake(lake, "v1", SCORE, show_progress=False)
    remote = score_lake(on_ray, "v1", SCORE, show_progress=False, runner=Runner("ray", ray_cluster.address))
    assert local.embedded == remote.embedded == 15 and local.parts == remote.parts == 3
    assert_same_vectors(lake, on_ray)
    sql = "SELECT prediction_id, image_id, image_uri, model_version, label, source FROM predictions ORDER BY 1"
    assert_same_rows(lake, on_ray, sql)
    scores = "SELECT prediction_id, confidence, map_values(scores) s FROM predictions ORDER BY 1"
    for a, b in zip(rows(lake, scores), rows(on_ray, scores), strict=True):
        assert a["prediction_id"] == b["prediction_id"]
        assert np.allclose(a["s"], b["s"], atol=TOLERANCE) and abs(a["confidence"] - b["confidence"]) < TOLERANCE


@pytest.mark.slow
def test_a_model_actor_killed_mid_run_still_gives_every_image_once(ray_cluster, tmp_path):
    lake = image_lake(tmp_path, 32)
    killed: list[int] = []
    at_version: list[int] = []

    def kill_an_actor_after_the_first_commit() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            committed = tables.version(lake, "embeddings")
            if committed is not None:
                for pid in ray_cluster.processes("MapBatches(ModelActor)"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    at_version.append(committed)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_an_actor_after_the_first_commit)
    killer.start()
    summary = embed_lake(lake, EMBED, show_progress=False, runner=Runner("ray", ray_cluster.address))
    killer.join()
    assert killed, "no model actor was found to kill"
    assert summary.embedded == 32 and summary.errors == 0 and summary.parts == 4
    exactly_once(lake, 32)
    # Parts were still committed after the kill: it happened mid-run, and cost no part twice.
    assert at_version[0] < tables.version(lake, "embeddings") == 3


@pytest.mark.slow
def test_a_driver_killed_after_its_first_commit_reruns_to_every_image_once(ray_cluster, tmp_path):
    lake = image_lake(tmp_path, 12)
    config = tmp_path / "edgemine.toml"
    config.write_text(f'lake = "{lake.uri}"\n[embed]\nweights = "random"\npart_size = 4\nbatch_size = 4\n'
                      'workers = 1\ndevice = "cpu"\n')
    env = RAY_ENV
    args = ["embed", "--runner", "ray", "--address", ray_cluster.address]
    job = start(args, config, env)
    kill_when(job, lambda: tables.version(lake, "embeddings") is not None)
    first = rows(lake, "SELECT count(*) n FROM embeddings")[0]["n"]
    assert 0 < first < 12
    rerun = start([*args, "--json"], config, env)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    summary = json.loads(out)
    assert summary["runner"] == "ray" and summary["already_embedded"] == first
    assert summary["already_embedded"] + summary["embedded"] == 12
    exactly_once(lake, 12)


def test_cuda_on_a_cluster_without_gpus_is_refused_before_any_work(ray_cluster, tmp_path):
    lake = image_lake(tmp_path, 2)
    with pytest.raises(DeviceError, match="the Ray cluster has no GPU"):
        embed_lake(lake, replace(EMBED, device="cuda"), show_progress=False, runner=Runner("ray", ray_cluster.address))
    assert not tables.exists(lake, "embeddings")


@pytest.mark.parametrize("how", ["--address", "--address ray://", "RAY_ADDRESS"])
def test_an_address_that_does_not_answer_says_what_to_set(tmp_path, how):
    lake = image_lake(tmp_path, 1)
    address = f"{'ray://' if 'ray://' in how else ''}127.0.0.1:{free_port()}"  # nothing listens there
    flags = ["--address", address] if how.startswith("--address") else []
    env = os.environ | RAY_ENV | ({"RAY_ADDRESS": address} if how == "RAY_ADDRESS" else {})
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).parent / "edgemine"), "embed", "--lake", lake.uri, "--weights",
                             "random", "--runner", "ray", *flags, "--quiet"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert time.monotonic() - started < 60
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("edgemine: error: no Ray cluster answers at " + address)
    assert "--address" in line and "RAY_ADDRESS" in line
    assert rows(lake, "SELECT count(*) n FROM images") == [{"n": 1}] and not tables.exists(lake, "embeddings")


def test_without_ray_installed_the_runner_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from jobs.cli import main; "
            f"sys.exit(main(['embed', '--lake', {str(tmp_path / 'lake')!r}, '--runner', 'ray', '--quiet']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "--runner ray needs Ray Data" in line and "pip install 'edgemine[ray]'" in line


def test_address_without_the_ray_runner_is_a_usage_error(tmp_path, capsys):
    from jobs.cli import main

    assert main(["embed", "--lake", str(tmp_path / "lake"), "--address", "auto", "--quiet"]) == 2
    assert "--address names a Ray cluster: add --runner ray" in capsys.readouterr().err


def result_rows(part: str, items: list[Item], ok: list[bool], width: int = 4) -> dict[str, np.ndarray]:
    """Rows as the model stage returns them: a vector per image it embedded, a reason for the others."""
    n = len(items)
    return {
        "part": np.full(n, part, dtype=object),
        "image_id": np.asarray([i.image_id for i in items], dtype=object),
        "uri": np.asarray([i.uri for i in items], dtype=object),
        "ok": np.asarray(ok),
        "vector": np.arange(n * width, dtype=np.float32).reshape(n, width),
        "reason": np.asarray(["" if good else "corrupt: test" for good in ok], dtype=object),
        "thumbnail": np.asarray([b"jpeg" if good else b"" for good in ok], dtype=object),
        "thumbnail_width": np.full(n, 8, np.int32),
        "thumbnail_height": np.full(n, 6, np.int32),
    }


def test_a_part_is_published_once_whole_even_when_a_batch_comes_back_twice():
    items = [Item(f"id{i}", f"file:///images/{i}.jpg") for i in range(6)]
    parts = ray_runner.PartGatherer({"p1": 5, "p2": 1}, width=4)
    first = result_rows("p1", items[:3], [True, False, True])
    assert parts.add(first) == (3, [])  # p1 is not whole yet
    assert parts.add(first) == (0, [])  # the same batch again (a retried task): nothing new
    new, [p1] = parts.add(result_rows("p1", items[3:5], [True, True]))
    assert new == 2 and p1.name == "p1" and p1.ids == ["id0", "id2", "id3", "id4"]
    assert [e["uri"] for e in p1.errors] == ["file:///images/1.jpg"] and len(p1.thumbnails) == 4
    assert np.concatenate(p1.vectors).shape == (4, 4)
    assert parts.add(result_rows("p1", items[3:5], [True, True])) == (0, [])  # a late copy of a published part
    with pytest.raises(RuntimeError, match="without returning every image of parts {'p2': 1}"):
        parts.check_all_published()
    with pytest.raises(RuntimeError, match="part 'p3', which the plan does not have"):
        parts.add(result_rows("p3", [items[5]], [True]))
    new, [p2] = parts.add(result_rows("p2", [items[5]], [True]))
    assert (new, p2.ids) == (1, ["id5"])
    parts.check_all_published()

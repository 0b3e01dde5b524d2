"""Shared fixtures: a real S3 server (moto) on a loopback port, lakes on both a
local folder and S3 so the same test runs against each, and one demo lake (real
images, embeddings, index and hidden truth) for the whole session.

Tiers: every test carries the markers of what it needs (pyproject.toml lists them;
``s3`` is added here to each test that reaches the S3 server), so ``make test-fast``
leaves the costly kinds out and ``make test`` runs them all, on both cores (xdist).
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import s3fs
from filelock import FileLock

from mining.core.config import Config, DemoConfig, EmbedConfig, IngestConfig, S3Config
from mining.core.lake import Lake
from tests.moto_server import start as start_moto

S3_KEY, S3_SECRET = "testing-key", "testing-secret"
REPO = Path(__file__).resolve().parents[1]


# A test whose own code calls one of these starts a process of its own.
STARTS_PROCESSES = re.compile(r"\b(run_cli|subprocess\.|Popen|multiprocessing|ProcessPoolExecutor|os\.fork)\b")
# A test whose own code calls one of these runs a torch model (embedding, training, scoring).
RUNS_A_MODEL = re.compile(r"\b(load_backbone|load_classifier|run_demo|embed_lake|train_model|score_lake|run_loop)\b")
# The demo lakes are embedded by a model (once per run): a test that uses one is model work too.
MODEL_FIXTURES = {"demo_lake", "demo_lake_with_round"}
# A test on the real local Ray cluster (tests/test_ray_runner.py) starts a cluster of processes.
RAY_FIXTURES = {"ray_cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers read from what a test uses: ``s3`` for every test that reaches the S3 server
    (an S3 fixture, or the ``s3`` leg of the ``lake`` fixture, which asks for the server only
    when it runs); ``processes`` for every test whose code starts one; ``model`` for every test
    whose code runs a model or that uses a demo lake (embedded by one); ``ray`` (and ``processes``)
    for every test on the local Ray cluster the ``ray_cluster`` fixture starts. The other markers
    are set by hand where a module or test is of that kind."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_s3_leg = callspec is not None and callspec.params.get("lake") == "s3"
        if on_s3_leg or "s3_endpoint" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.s3)
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function is not None else ""
        if STARTS_PROCESSES.search(source):
            item.add_marker(pytest.mark.processes)
        if RUNS_A_MODEL.search(source) or MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.processes)
    # The Ray cluster's module first: its minutes run beside the rest on one xdist worker
    # (--dist loadscope hands out modules in this order), not alone at the end.
    items.sort(key=lambda item: item.get_closest_marker("ray") is None)


def _untracked() -> set[str]:
    """Files in the checkout that git neither tracks nor ignores (a test's stray output)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line[3:] for line in out.splitlines() if line.startswith("?? ")}


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_UNTRACKED] = _untracked()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Tests write under tmp_path, never into the checkout: a file that appeared there
    during the run fails the run (checked once, by the controlling process)."""
    if hasattr(session.config, "workerinput"):
        return
    stray = sorted(_untracked() - session.config.stash.get(_UNTRACKED, set()))
    if stray:
        session.config.get_terminal_writer().line(
            f"FAILED: tests wrote into the checkout (write under tmp_path instead): {stray[:10]}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_UNTRACKED = pytest.StashKey[set]()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """moto's S3 server, a real HTTP endpoint in a process of its own, for the whole session,
    started by tests/moto_server.py, which makes conditional PUTs atomic as S3's are (moto's
    are not: concurrent Delta commits could both win the same log version)."""
    server, endpoint = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield endpoint
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def s3_config(s3_endpoint: str) -> S3Config:
    return S3Config(endpoint_url=s3_endpoint, region="us-east-1", key=S3_KEY, secret=S3_SECRET)


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> dict[str, str]:
    """The environment a user would set for the CLI; applied with monkeypatch and returned
    for subprocesses."""
    env = {
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def new_bucket(s3_config: S3Config) -> str:
    fs = s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, client_kwargs={"endpoint_url": s3_config.endpoint_url})
    name = f"lake-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return name


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    """An empty lake, once on a local folder and once on S3 (``@local_only`` for tests
    whose subject does not depend on the storage: every S3 request costs moto ~20 ms)."""
    if request.param == "local":
        return Lake(str(tmp_path / "lake"))
    s3_config = request.getfixturevalue("s3_config")
    bucket = request.getfixturevalue("new_bucket")
    return Lake(f"s3://{bucket}/lake", s3_config)


@pytest.fixture
def small_ingest() -> IngestConfig:
    """Small chunks, so a few hundred rows already make several files and batches."""
    return IngestConfig(chunk_rows=50, image_batch=16, image_shard=40)


def config_for(lake: Lake, **ingest) -> Config:
    return replace(Config(lake=lake.uri, s3=lake.s3), ingest=replace(IngestConfig(), **ingest))


@pytest.fixture(scope="module")
def demo_lake(demo_lake_built: Path, tmp_path_factory) -> Lake:
    """The demo lake: 600 synthetic scenes (18 sun-glare edge cases), their predictions,
    embeddings (seeded random weights) and index, without the demo's labelling round (no
    labels, queues, metrics or drift: it costs seconds, and tests here start from a lake
    nobody labelled; ``demo_lake_with_round`` has it). Each test module gets a copy of its
    own, so what one module writes (reviews, queues, sets) never changes what another sees,
    whatever worker or order xdist gives them; tests within a module use names of their own."""
    return Lake(str(shutil.copytree(demo_lake_built, tmp_path_factory.mktemp("demo") / "lake")))


@pytest.fixture(scope="session")
def demo_lake_built(tmp_path_factory) -> Path:
    """The demo lake's folder, built once per run: the first xdist worker to ask builds it
    under a lock, the others wait for it; nobody writes to it (``demo_lake`` copies it)."""
    from jobs.demo import run_demo

    under_xdist = "PYTEST_XDIST_WORKER" in os.environ  # the workers' temp folders share a parent
    shared = tmp_path_factory.getbasetemp().parent if under_xdist else tmp_path_factory.getbasetemp()
    built = shared / "demo-built" / "lake"
    with FileLock(str(shared / "demo-built.lock")):
        if not (built.parent / "done").exists():
            shutil.rmtree(built.parent, ignore_errors=True)
            summary = run_demo(demo_lake_config(str(built), with_round=False), show_progress=False)
            assert summary.index.vectors == DEMO_IMAGES  # the demo builds the index
            (built.parent / "done").touch()
    return built


@pytest.fixture
def demo_lake_with_round(demo_lake: Lake, tmp_path: Path) -> Lake:
    """A copy of the demo lake with the demo's labelling round done: labels from the truth,
    its review queues, metrics and drift (the demo run again with the round on: the rest is
    there already, so only the round runs)."""
    from jobs.demo import run_demo

    lake = Lake(str(shutil.copytree(demo_lake.root, tmp_path / "lake")))
    summary = run_demo(demo_lake_config(lake.uri, with_round=True), show_progress=False)
    assert summary.round.labels > 0 and not summary.generated
    return lake


def demo_lake_config(uri: str, *, with_round: bool) -> Config:
    """The settings the session's demo lake is built with."""
    return Config(lake=uri, demo=replace(DemoConfig(), images=DEMO_IMAGES, seed=5, round=with_round),
                  embed=replace(EmbedConfig(), workers=1))


DEMO_IMAGES = 600

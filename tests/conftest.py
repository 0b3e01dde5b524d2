"""Shared fixtures: a real S3 server (moto) on a loopback port, lakes on both a
local folder and S3 so the same test runs against each, and one demo lake (real
images, embeddings, index and hidden truth) for the whole session."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import s3fs

from mining.config import Config, DemoConfig, EmbedConfig, IngestConfig, S3Config
from mining.lake import Lake
from tests.moto_server import start as start_moto

S3_KEY, S3_SECRET = "testing-key", "testing-secret"


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


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory) -> Lake:
    """The demo lake, built once: 600 synthetic scenes (18 sun-glare edge cases), their
    predictions, embeddings (seeded random weights) and index. Tests that write to it
    (sessions, reviews, sets) use names of their own."""
    from jobs.demo import run_demo

    lake = Lake(str(tmp_path_factory.mktemp("demo") / "lake"))
    config = Config(lake=lake.uri, demo=replace(DemoConfig(), images=DEMO_IMAGES, seed=5),
                    embed=replace(EmbedConfig(), workers=1))
    summary = run_demo(config, show_progress=False)
    assert summary.index.vectors == DEMO_IMAGES  # the demo builds the index
    return lake


DEMO_IMAGES = 600

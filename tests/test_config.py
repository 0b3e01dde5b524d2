from __future__ import annotations

from pathlib import Path

import pytest

from mining.core.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_default_toml_documents_the_defaults():
    # configs/default.toml is the reference a user copies: it must say what the code does.
    assert load_config(REPO / "configs" / "default.toml", env={}) == load_config(None, env={})


def test_lake_precedence_flag_env_file_default(tmp_path):
    config_file = tmp_path / "c.toml"
    config_file.write_text('lake = "s3://from-file/lake"\n[demo]\nimages = 50\n')
    assert load_config(None, env={}).lake == "./lake"
    assert load_config(config_file, env={}).lake == "s3://from-file/lake"
    assert load_config(config_file, env={"EDGEMINE_LAKE": "/env/lake"}).lake == "/env/lake"
    assert load_config(config_file, env={"EDGEMINE_LAKE": "/env/lake"}, lake="/flag/lake").lake == "/flag/lake"
    assert load_config(None, env={"EDGEMINE_CONFIG": str(config_file)}).demo.images == 50


def test_s3_settings_from_standard_aws_variables(tmp_path):
    env = {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    s3 = load_config(None, env=env).s3
    assert (s3.key, s3.secret, s3.endpoint_url, s3.region) == ("k", "s", "http://127.0.0.1:9", "eu-west-1")
    config_file = tmp_path / "c.toml"
    config_file.write_text('[s3]\nendpoint_url = "http://minio:9000"\n')
    assert load_config(config_file, env=env).s3.endpoint_url == "http://minio:9000"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[ingest]\nchunk_rows = 'many'\n", "chunk_rows must be int"),
        ("[ingest]\nchunk_rows = true\n", "chunk_rows must be int"),
        ("[demo]\nimagez = 3\n", "unknown option(s) ['imagez']; allowed: ['edge_case_rate', 'height', 'images'"),
        ("[nope]\n", "unknown option(s) ['nope']"),
        ("demo = 3\n", "[demo] must be a table"),
        ("lake = \n", "not valid TOML"),
    ],
)
def test_bad_config_says_what_is_wrong(tmp_path, text, message):
    config_file = tmp_path / "bad.toml"
    config_file.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(config_file, env={})
    assert message in str(error.value)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        Config().lake = "elsewhere"  # type: ignore[misc]

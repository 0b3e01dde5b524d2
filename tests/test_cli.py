from __future__ import annotations

import argparse
import csv
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.cli import build_parser, main
from mining.core.lake import Lake
from tests.helpers import jsonl, prediction, put, put_images

EDGEMINE = Path(sys.executable).parent / "edgemine"
COMMANDS = [["demo"], ["ingest", "images"], ["ingest", "predictions"], ["embed"], ["sql"], ["tables"], ["history"],
            ["compact"], ["migrate"], ["train"], ["score"], ["models"]]


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(EDGEMINE), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    """A small local lake made through the CLI itself."""
    from mining.core.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    uris = put_images(lake, str(tmp_path / "src"), 12)
    put(lake, str(tmp_path / "src" / "broken.jpg"), b"nope")
    put(
        lake,
        str(tmp_path / "in.jsonl"),
        jsonl([prediction(u, i) for i, u in enumerate(uris)] + [prediction(uris[0], 0, confidence=7)]),
    )
    assert main(["ingest", "images", str(tmp_path / "src"), "--lake", lake.uri, "--quiet"]) == 0
    assert main(["ingest", "predictions", str(tmp_path / "in.jsonl"), "--lake", lake.uri, "--quiet"]) == 0
    return tmp_path / "lake"


def test_entry_point_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "ingest", "embed", "sql", "tables", "history", "compact", "migrate"):
        assert command in result.stdout


def test_help_lists_the_commands_in_their_order():
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(subparsers.choices) == [
        "demo", "ingest", "embed", "sql", "tables", "history", "compact", "migrate", "index", "similar", "narrow",
        "review", "export", "labels", "queue", "duplicates", "train", "score", "loop", "models", "slice", "metrics",
        "drift", "card", "ui", "user"]


@pytest.mark.parametrize("args", [[], ["narrow"], ["queue"]], ids=lambda a: " ".join(a) or "nothing")
def test_no_command_or_a_group_without_its_action_prints_the_help(args, capsys):
    assert main(args) == 2
    assert capsys.readouterr().out.startswith("usage: edgemine")


def test_python_m_jobs_cli_is_the_command():
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "tables", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: edgemine tables")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_the_common_flags(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--lake", "--config", "--json"):
        assert flag in text


def test_ingest_summaries_as_json(tmp_path, capsys):
    from mining.core.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    uris = put_images(lake, str(tmp_path / "src"), 5)
    assert main(["ingest", "images", str(tmp_path / "src"), "--lake", lake.uri, "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["registered"] == 5 and report["errors"] == 0

    put(lake, str(tmp_path / "p.jsonl"), jsonl([prediction(u, i) for i, u in enumerate(uris)] + ["{oops"]))
    assert main(["ingest", "predictions", str(tmp_path / "p.jsonl"), "--lake", lake.uri, "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"]["predictions"] == 5 and report["errors"] == 1 and report["failed"] == 0


def test_sql_json_is_one_object_per_row(lake_dir, capsys):
    assert (
        main(
            [
                "sql",
                "SELECT label, count(*) AS n FROM predictions GROUP BY ALL ORDER BY label",
                "--lake",
                str(lake_dir),
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == [{"label": "car", "n": 6}, {"label": "person", "n": 6}]


def test_sql_csv_and_table_output(lake_dir, capsys):
    assert (
        main(["sql", "SELECT uri, reason FROM errors ORDER BY reason", "--lake", str(lake_dir), "--format", "csv"]) == 0
    )
    got = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["reason"][:12] for r in got] == ["confidence 7", "not an image"]
    assert main(["sql", "SELECT image_id, width FROM images ORDER BY image_id LIMIT 3", "--lake", str(lake_dir)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split() == ["image_id", "|", "width"] and "(3 rows)" in text


def test_sql_output_parquet_and_refusals(lake_dir, tmp_path, capsys):
    out = tmp_path / "slice.parquet"
    assert (
        main(["sql", "SELECT * FROM predictions WHERE confidence < 0.6", "--lake", str(lake_dir), "--output", str(out)])
        == 0
    )
    table = pq.read_table(out)
    assert table.num_rows > 0 and max(table.column("confidence").to_pylist()) < 0.6

    assert (
        main(["sql", "SELECT 1", "--lake", str(lake_dir), "--output", str(lake_dir / "predictions" / "x.parquet")]) == 2
    )
    assert "inside the lake" in capsys.readouterr().err
    # Through a symlink: once written as the table's next log entry, and the table broke for good.
    log = lake_dir / "predictions" / "_delta_log"
    (tmp_path / "link").symlink_to(log)
    sneaky = tmp_path / "link" / f"{len(list(log.glob('*.json'))):020d}.json"
    assert main(["sql", "SELECT 1", "--lake", str(lake_dir), "--output", str(sneaky)]) == 2
    assert "inside the lake" in capsys.readouterr().err
    (tmp_path / "file-link.parquet").symlink_to(lake_dir / "predictions" / "y.parquet")
    assert main(["sql", "SELECT 1", "--lake", str(lake_dir), "--output", str(tmp_path / "file-link.parquet")]) == 2
    assert "inside the lake" in capsys.readouterr().err
    assert main(["sql", "SELECT count(*) FROM predictions", "--lake", str(lake_dir)]) == 0  # still readable
    capsys.readouterr()
    assert main(["sql", "DELETE FROM predictions", "--lake", str(lake_dir)]) == 2
    assert "read-only" in capsys.readouterr().err
    assert main(["sql", "SELEC oops", "--lake", str(lake_dir)]) == 2
    assert "syntax error" in capsys.readouterr().err.lower()


def test_sql_views_and_stdin(lake_dir):
    views = run("sql", "--views", "--lake", str(lake_dir))
    assert views.returncode == 0 and "CREATE OR REPLACE VIEW predictions AS" in views.stdout
    result = subprocess.run(
        [str(EDGEMINE), "sql", "-", "--lake", str(lake_dir), "--json"],
        input="SELECT count(*) AS n FROM images",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(result.stdout) == [{"n": 12}]


def test_lake_from_environment_then_config(lake_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEMINE_LAKE", str(lake_dir))
    assert main(["tables", "--json"]) == 0
    counts = {r["table"]: r["rows"] for r in json.loads(capsys.readouterr().out)}
    assert counts["images"] == 12 and counts["predictions"] == 12 and counts["errors"] == 2

    monkeypatch.delenv("EDGEMINE_LAKE")
    config = tmp_path / "c.toml"
    config.write_text(f'lake = "{lake_dir}"\n')
    assert main(["sql", "SELECT count(*) AS n FROM images", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 12}]


def test_errors_are_one_line_with_what_to_do(tmp_path, capsys):
    assert main(["sql", "SELECT 1", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[ingest]\nchunk_rowz = 5\n")
    assert main(["tables", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "chunk_rowz" in err and "chunk_rows" in err
    assert (
        main(["ingest", "predictions", str(tmp_path / "none.jsonl"), "--lake", str(tmp_path / "lake"), "--quiet"]) == 2
    )
    assert "file not found" in capsys.readouterr().err


def test_s3_problems_are_one_line_that_says_what_to_set(s3_endpoint, monkeypatch, tmp_path, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    assert main(["tables", "--lake", "s3://some-bucket/lake"]) == 2
    assert "no S3 credentials found: set AWS_ACCESS_KEY_ID" in capsys.readouterr().err

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    few_tries = tmp_path / "few-tries.toml"  # each S3 client's backoff between 10 tries would take a minute
    few_tries.write_text("[s3]\nmax_attempts = 2\nconnect_timeout_s = 1\n")
    assert main(["tables", "--lake", "s3://some-bucket/lake", "--config", str(few_tries)]) == 2
    assert "cannot reach S3" in capsys.readouterr().err


def test_embed_prints_a_summary_and_json(lake_dir: Path, capsys):
    assert main(["embed", "--lake", str(lake_dir), "--weights", "random", "--workers", "1", "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["embedded"], summary["errors"], summary["weights"], summary["shard"]) == (
        12,
        0,
        "random-seed0",
        "0/1",
    )
    assert main(["embed", "--lake", str(lake_dir), "--weights", "random", "--shard", "1/2", "--quiet"]) == 0
    assert "0 embedded" in capsys.readouterr().out  # shard 1/2 was done as part of 0/1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--shard", "2/2"], "shard must be I/N"),
        (["--weights", "no-such-checkpoint.pth"], "neither one of ['imagenet', 'random'] nor an existing checkpoint"),
        (["--weights", "random", "--device", "tpu"], "allowed: auto, cpu, cuda"),
        (["--weights", "random", "--batch-size", "-1"], "--batch-size and --workers must be at least 0"),
    ],
)
def test_embed_usage_errors_say_what_to_do(lake_dir: Path, flags, message, capsys):
    assert main(["embed", "--lake", str(lake_dir), "--quiet", *flags]) == 2
    assert message in capsys.readouterr().err


def test_embed_on_a_lake_without_images_says_what_to_do_first(tmp_path: Path, capsys):
    assert main(["embed", "--lake", str(tmp_path / "empty"), "--weights", "random", "--quiet", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["images_in_shard"] == 0
    assert "edgemine ingest images" in captured.err


def test_history_lists_each_commit_with_its_job(lake_dir, capsys):
    assert main(["history", "predictions", "--lake", str(lake_dir), "--json"]) == 0
    commits = json.loads(capsys.readouterr().out)
    assert [c["version"] for c in commits] == list(range(len(commits) - 1, -1, -1))
    assert {c["job"] for c in commits} == {"ingest-predictions"} and commits[-1]["rows_added"] > 0
    assert main(["history", "predictions", "--limit", "1", "--lake", str(lake_dir)]) == 0
    assert "ingest-predictions" in capsys.readouterr().out
    assert main(["history", "nope", "--lake", str(lake_dir)]) == 2
    assert "unknown table 'nope'; tables: images" in capsys.readouterr().err


def test_sql_as_of_reads_the_tables_as_they_were(lake_dir, tmp_path, capsys):
    more = put_images(Lake(str(lake_dir)), str(tmp_path / "later"), 3, start=50)
    assert main(["ingest", "images", str(tmp_path / "later"), "--lake", str(lake_dir), "--quiet"]) == 0
    capsys.readouterr()
    query = "SELECT count(*) AS n FROM images"
    assert main(["sql", query, "--lake", str(lake_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 15}]
    for as_of in ("0", "images@0"):
        assert main(["sql", query, "--as-of", as_of, "--lake", str(lake_dir), "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == [{"n": 12}]
    assert main(["sql", query, "--as-of", "2001-01-01T00:00:00Z", "--lake", str(lake_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 0}]  # before the table existed
    assert main(["sql", "SELECT * FROM images, predictions", "--as-of", "0", "--lake", str(lake_dir)]) == 2
    assert "TABLE@VERSION for each" in capsys.readouterr().err
    assert main(["sql", query, "--as-of", "images@99", "--lake", str(lake_dir)]) == 2
    assert "images" in capsys.readouterr().err and more


def test_compact_reports_files_and_times_before_and_after(lake_dir, capsys):
    for k in range(3):  # three more commits: more small files
        put(Lake(str(lake_dir)), str(lake_dir.parent / f"more-{k}.jsonl"), jsonl([prediction("x.jpg", k)]))
        main(["ingest", "predictions", str(lake_dir.parent / f"more-{k}.jsonl"), "--lake", str(lake_dir), "--quiet"])
    capsys.readouterr()
    before = json.loads(run("sql", "SELECT count(*) n FROM predictions", "--lake", str(lake_dir), "--json").stdout)
    assert main(["compact", "predictions", "errors", "--vacuum-hours", "0", "--lake", str(lake_dir), "--json"]) == 0
    report = {t["table"]: t for t in json.loads(capsys.readouterr().out)["tables"]}
    assert set(report) == {"predictions", "errors"}
    assert report["errors"]["files_before"] > report["errors"]["files_after"] == 1 and report["errors"]["vacuumed"] > 0
    assert report["predictions"]["files_after"] <= 3  # one per day
    assert (
        json.loads(run("sql", "SELECT count(*) n FROM predictions", "--lake", str(lake_dir), "--json").stdout) == before
    )
    assert main(["compact", "predictions", "errors", "--z-order", "label", "--lake", str(lake_dir)]) == 2
    assert "--z-order clusters one table: name it" in capsys.readouterr().err


def test_a_bug_is_one_line_with_the_traceback_kept_in_a_file(lake_dir, capsys, monkeypatch):
    """No traceback reaches a user: an unexpected error (a bug) prints one line naming a file
    that holds the traceback, and exits 1; --verbose raises it as it is."""
    import mining.core.statistics

    def broken(db):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(mining.core.statistics, "table_rows", broken)
    assert main(["tables", "--lake", str(lake_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (ZeroDivisionError: a bug)" in err and "Traceback" not in err
    saved = Path(err.split("traceback is in ")[1].split(";")[0])
    try:
        assert "Traceback" in saved.read_text() and "ZeroDivisionError: a bug" in saved.read_text()
    finally:
        saved.unlink()
    with pytest.raises(ZeroDivisionError):
        main(["tables", "--lake", str(lake_dir), "--verbose"])


@pytest.mark.parametrize("query, as_of, says", [
    ("SELECT 1\x00", None, "NUL character"),
    ("SELECT count(*) FROM images", "images@99999999999999999999", "expected TABLE@VERSION"),
    ("SELECT count(*) FROM images", "99999999999999999999", "give a time"),
    ("SELECT count(*) FROM images", "images@\u00b2", "expected TABLE@VERSION"),
    ("SELECT count(*) FROM images", "images@5000", "has no version 5000"),
])
def test_hostile_sql_and_as_of_values_are_one_line(lake_dir, capsys, query, as_of, says):
    assert main(["sql", query, "--lake", str(lake_dir), *(["--as-of", as_of] if as_of else [])]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and err.count("\n") == 1


def test_suggested_commands_quote_names_so_they_run_as_printed(lake_dir, capsys):
    """A set named with a quote, a space and shell syntax: the command printed after saving it
    is pasted back (split as a shell does) and selects exactly that set."""
    import shlex

    from jobs.cli.search_commands import _saved_text
    from mining.core.lake import Lake
    from mining.core.sets import save_set
    from mining.core.sql import LakeDB

    name = "it's $(touch pwned) `x`"
    with LakeDB(Lake(str(lake_dir))) as db:
        ids = db.query("SELECT image_id FROM images ORDER BY image_id LIMIT 3").column("image_id").to_pylist()
        save_set(db, name, ids, source="test", user="t")
    _saved_text({"images": 3, "set": name})
    printed = capsys.readouterr().out.split(": ", 1)[1].strip()
    argv = shlex.split(printed)
    assert argv[0] == "edgemine"
    assert main([*argv[1:], "--lake", str(lake_dir), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert sorted(r["image_id"] for r in got) == sorted(ids) and {r["name"] for r in got} == {name}

"""Query limits (`[query]` in the config; mining/core/query_limits.py): every query path (the
console, `--where`, slices, queues, metrics, `loop`, the UI's SQL page) runs under a time limit,
a memory and spill cap and, where a result is shown, a row cap; Ctrl-C stops a running query;
a killed run's spill folder is removed by the next run; one long query leaves the others answering."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from mining.core.config import Config, QueryConfig, load_config
from mining.core.errors import ConfigError, QueryLimitError, SliceError
from mining.core.lake import Lake
from mining.core.query_limits import SPILL_PREFIX
from mining.core.sql import LakeDB
from tests.helpers import EDGEMINE

# A predicate that runs for hours: a trillion-row cross join (range is a table function queries may call).
ENDLESS = "(SELECT count(*) FROM range(1000000) a, range(1000000) b) > 0"
ENDLESS_QUERY = "SELECT count(*) FROM range(1000000) a, range(1000000) b"


def limited(**query) -> Config:
    return Config(query=replace(QueryConfig(), **query))


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "edgemine.toml"
    path.write_text(text)
    return str(path)


def gib(setting: str) -> float:
    """DuckDB's "5.8 GiB" / "300.0 MiB" as GiB."""
    number, unit = setting.split()
    return float(number) / {"KiB": 2**20, "MiB": 2**10, "GiB": 1}[unit]


# -- The limits are the database's settings --------------------------------------------------
def test_the_configs_memory_and_spill_limits_are_set_and_locked(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    config = limited(memory_limit="300MiB", max_temp_directory_size="2GiB")
    settings = ("SELECT current_setting('memory_limit') m, current_setting('max_temp_directory_size') t, "
                "current_setting('temp_directory') d")
    for db in (LakeDB(lake, config=config), LakeDB(lake, config=config, read_only=False)):  # the UI's, a job's
        found = db.query(settings).to_pylist()[0]
        assert (found["m"], found["t"]) == ("300.0 MiB", "2.0 GiB")
        assert Path(found["d"]).parent.name.startswith(SPILL_PREFIX)  # this process's spill folder
        assert Path(found["d"]).parent.parent == Path(tempfile.gettempdir())
    with pytest.raises(duckdb.Error, match="configuration has been locked"):  # a query cannot raise its own limits
        LakeDB(lake, config=config).con.execute("SET memory_limit = '100GB'")


def test_by_default_duckdb_may_take_a_quarter_of_the_machines_memory_not_80_percent(tmp_path):
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    found = LakeDB(Lake(str(tmp_path / "lake"))).query("SELECT current_setting('memory_limit') m").to_pylist()[0]
    assert 0.2 * machine < gib(found["m"]) <= 0.25 * machine


def test_limits_in_a_config_file_are_read_and_checked(tmp_path):
    good = write_config(tmp_path, '[query]\ntimeout_s = 2.5\nmemory_limit = "10%"\nmax_rows = 7\n')
    assert load_config(good, env={}).query == QueryConfig(timeout_s=2.5, memory_limit="10%", max_rows=7)
    for bad, name in [('memory_limit = "lots"', "memory_limit"), ('max_temp_directory_size = "5 parsecs"',
                                                                 "max_temp_directory_size"),
                      ("timeout_s = -1", "timeout_s"), ("max_rows = 0", "max_rows")]:
        with pytest.raises(ConfigError, match=name):
            load_config(write_config(tmp_path, f"[query]\n{bad}\n"), env={})


def test_a_query_over_the_memory_and_spill_limits_says_which_limits_stopped_it(tmp_path):
    db = LakeDB(Lake(str(tmp_path / "lake")), config=limited(memory_limit="50MB", max_temp_directory_size="1MB"))
    with pytest.raises(QueryLimitError, match="memory_limit and max_temp_directory_size"):
        db.query("SELECT count(*) FROM (SELECT DISTINCT range::VARCHAR || repeat('x', 50) FROM range(3000000))")
    assert db.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]


# -- The time limit and the row cap --------------------------------------------------------
@pytest.mark.parametrize("way", ["query", "head", "batches"])
def test_a_query_past_the_time_limit_is_stopped_and_the_connection_still_works(tmp_path, way):
    db = LakeDB(Lake(str(tmp_path / "lake")), config=limited(timeout_s=1))
    run = {"query": db.query, "head": db.head, "batches": lambda sql: db.batches(sql, lambda r: r.read_all())}[way]
    started = time.monotonic()
    with pytest.raises(QueryLimitError, match=r"time limit of 1 s.*\[query\] timeout_s"):
        # Streamed: the work happens while the rows are fetched, not in execute().
        run("SELECT a.range FROM range(1000000) a, range(1000000) b WHERE a.range + b.range < 0")
    assert time.monotonic() - started < 6
    assert db.query("SELECT 42 AS answer").to_pylist() == [{"answer": 42}]


def test_head_fetches_only_the_rows_it_shows(tmp_path):
    db = LakeDB(Lake(str(tmp_path / "lake")), config=limited(max_rows=50, timeout_s=20))
    started = time.monotonic()
    head = db.head("SELECT range AS n FROM range(10000000000)")  # ten billion rows: never made, let alone held
    assert head.cut and head.table.column("n").to_pylist() == list(range(50))
    assert time.monotonic() - started < 5
    assert db.head("SELECT range AS n FROM range(50)").cut is False
    small = db.head("SELECT range AS n FROM range(12)", 5)
    assert small.cut and small.table.num_rows == 5


def test_edgemine_sql_prints_at_most_max_rows_and_output_writes_every_row(tmp_path, capsys):
    lake = str(tmp_path / "lake")
    config = write_config(tmp_path, "[query]\nmax_rows = 10\n")
    base = ["--lake", lake, "--config", config, "--quiet"]
    assert main(["sql", "SELECT range AS n FROM range(25)", "--format", "csv", *base]) == 0
    out, err = capsys.readouterr()
    assert out.split() == ['"n"', *map(str, range(10))] and "cut at 10 rows" in err
    assert main(["sql", "SELECT range AS n FROM range(25)", *base]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[2:-1] == list(map(str, range(10)))
    assert lines[-1].startswith("(the first 10 rows; the result has more")
    assert main(["sql", "SELECT range AS n FROM range(25)", "--format", "csv", "--max-rows", "30", *base]) == 0
    assert len(capsys.readouterr().out.split()) == 26  # --max-rows raises the cap for one command
    assert main(["sql", "SELECT range AS n FROM range(25)", "--output", str(tmp_path / "all.parquet"), *base]) == 0
    assert pq.read_table(tmp_path / "all.parquet").column("n").to_pylist() == list(range(25))


# -- Every query path ------------------------------------------------------------------------
@pytest.fixture
def labelled(tmp_path) -> Lake:
    from tests.test_metrics import build_two_versions

    return build_two_versions(tmp_path / "lake")["lake"]


def test_the_console_where_filters_slices_queues_and_metrics_stop_at_the_time_limit(labelled, tmp_path, capsys):
    config = write_config(tmp_path, f'[query]\ntimeout_s = 1\n[slices]\nendless = "{ENDLESS}"\n')
    base = ["--lake", labelled.uri, "--config", config, "--quiet"]
    commands = {
        "console": ["sql", ENDLESS_QUERY],
        "queue --where": ["queue", "least-confidence", "--name", "q", "--where", ENDLESS],
        "export --where": ["export", "--where", ENDLESS, "--format", "coco", "--to", str(tmp_path / "out")],
        "slice add": ["slice", "add", "endless2", ENDLESS],
        "metrics": ["metrics", "--slice", "endless"],
    }
    for path, args in commands.items():
        started = time.monotonic()
        assert main([*args, *base]) == 2, path
        err = capsys.readouterr().err
        assert "time limit of 1 s" in err and "timeout_s" in err and len(err.strip().splitlines()) == 1, (path, err)
        assert time.monotonic() - started < 15, path
    assert not (tmp_path / "out").exists()


def test_the_loop_checks_its_slices_under_the_configs_time_limit(labelled):
    from jobs.loop import run_loop
    from jobs.train import TrainRequest
    from mining.core import tables
    from tests.train_helpers import FAST

    config = replace(limited(timeout_s=1), slices={"endless": ENDLESS})
    started = time.monotonic()
    with pytest.raises(SliceError, match="slice 'endless'.*time limit of 1 s"):
        run_loop(labelled, config, TrainRequest(version="v9", base="random", workers=1), FAST, show_progress=False)
    assert time.monotonic() - started < 15 and not tables.exists(labelled, "models")


# -- Ctrl-C, kills and spill folders -------------------------------------------------------
def start_sql(query: str, tmp: Path, lake: Path) -> subprocess.Popen:
    """`edgemine sql QUERY` in its own process with its own temporary folder; SIGINT as in a
    terminal (a test runner's worker may ignore it, and a child would inherit that)."""
    return subprocess.Popen([str(EDGEMINE), "sql", query, "--lake", str(lake)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def spill_folders(tmp: Path) -> set[Path]:
    return set(tmp.glob(SPILL_PREFIX + "*"))


def wait_for_spill_folder(tmp: Path, known: set[Path] = frozenset()) -> Path:
    """The process's spill folder, once its database is made (its query starts right after)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = spill_folders(tmp) - set(known)
        if new:
            time.sleep(1)  # the query is running
            return new.pop()
        time.sleep(0.05)
    raise AssertionError("no spill folder appeared")


def test_ctrl_c_stops_a_running_query_at_once(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = start_sql(ENDLESS_QUERY, tmp, tmp_path / "lake")
    folder = wait_for_spill_folder(tmp)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert time.monotonic() - sent < 5
    assert process.returncode == 130 and err == "edgemine: interrupted; the query was stopped\n" and out == ""
    assert not folder.exists()  # removed at exit


def test_a_killed_runs_spill_folder_is_removed_by_the_next_run_and_a_live_ones_is_kept(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    killed = start_sql(ENDLESS_QUERY, tmp, tmp_path / "lake")
    killed_folder = wait_for_spill_folder(tmp)
    killed.kill()
    killed.communicate()
    assert killed_folder.exists()  # nobody removed it: the process was killed
    live = start_sql(ENDLESS_QUERY, tmp, tmp_path / "lake")
    try:
        live_folder = wait_for_spill_folder(tmp, {killed_folder})
        after = subprocess.run([str(EDGEMINE), "sql", "SELECT 1 AS one", "--lake", str(tmp_path / "lake"), "--json"],
                               capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp)}, timeout=120)
        assert after.returncode == 0, after.stderr
        assert spill_folders(tmp) == {live_folder}  # the killed run's is gone, the next run's own removed at exit
    finally:
        live.kill()
        live.communicate()


# -- One long query does not hold up the others (the UI's sessions) --------------------------
def test_one_sessions_long_query_leaves_another_sessions_queries_answering(tmp_path):
    lake, config = Lake(str(tmp_path / "lake")), limited(timeout_s=4)
    # Two sessions' cursors on the one database of the lake, as the UI's sessions hold them.
    long_running, quick = LakeDB(lake, config=config), LakeDB(lake, config=config)
    outcome = {}

    def run_long() -> None:
        try:
            long_running.head(ENDLESS_QUERY)
        except QueryLimitError as e:
            outcome["stopped"] = str(e)

    thread = threading.Thread(target=run_long)
    thread.start()
    time.sleep(0.5)
    answered = []
    for n in range(5):
        started = time.monotonic()
        assert quick.head(f"SELECT {n} + count(*) AS n FROM range(100000)").table.to_pylist() == [{"n": n + 100000}]
        answered.append(time.monotonic() - started)
    still_running = thread.is_alive()
    thread.join(30)
    assert still_running and max(answered) < 1.5, answered
    assert "time limit of 4 s" in outcome["stopped"]


def test_the_sql_page_shows_at_most_max_rows_and_stops_at_the_time_limit(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_ui import APP, open_page

    monkeypatch.setenv("EDGEMINE_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("EDGEMINE_CONFIG", write_config(tmp_path, "[query]\ntimeout_s = 1\nmax_rows = 40\n"))
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    open_page(app, "sql")
    app.text_area(key="sql").input("SELECT range AS n FROM range(10000000000)")
    app.button(key="sql_run").click().run()
    assert not app.error and len(app.dataframe[0].value) == 40
    assert any("the result has more, cut at [query] max_rows" in c.value for c in app.caption)
    app.text_area(key="sql").input(ENDLESS_QUERY)
    started = time.monotonic()
    app.button(key="sql_run").click().run()
    assert time.monotonic() - started < 15
    assert len(app.error) == 1 and "time limit of 1 s" in app.error[0].value and not app.dataframe

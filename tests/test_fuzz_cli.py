"""Hostile command lines, generated: every `edgemine` command and action, run in-process with
seeded random positional values and a random handful of its flags, each given a hostile value
(empty, negative, huge, NaN, SQL injection, a path out of the lake or to its root, a URL scheme,
shell syntax, non-ASCII, a long string) against a small real lake, from a scratch working folder.

Each case must end as the CLI's contract says (0, 1: done with refused inputs, 2: one line
saying what is wrong; argparse's usage errors are 2 too) and never as an internal error or an
exception escaping main(); afterwards every table still reads. Left out: `ui` (a server),
`demo`, `train` and `loop` (minutes of training per case; their flags are checked by
tests/test_cli.py). The counts are printed (-s shows them) for the closing notes."""

from __future__ import annotations

import argparse
import io
import random

import pytest

from jobs.cli import build_parser, main
from mining.core.lake import Lake
from mining.core.schema import TABLES
from mining.core.sql import LakeDB
from tests.helpers import jsonl, main_in_process, prediction, put_images

SEED = 0
PER_COMMAND = 6  # cases per command: seeded, so a failure reproduces exactly
LEFT_OUT = {"ui", "demo", "train", "loop"}
HOSTILE = ["", "-1", "0", "99999999999999999999", "1e309", "nan", "x'; DROP TABLE images; --", "\u00e9", "a" * 3000,
           "../../../etc", "/", "s3://", "memory://x", "http://127.0.0.1:9", "{}", "[]", "SELECT 1", "1/0", "@", "..",
           "-", "\t", "$(id)", "images", "v7", "car", "2026-13-45", "--json", "set:nope", "sql:SELECT 1/0"]
PASSWORD = "not-a-flag-value"  # `user add` and `user hash` read one from stdin


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command words, its parser) for every command and action of the CLI."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*prefix, name))
            return
    yield prefix, parser


def hostile_argv(r: random.Random, words: tuple[str, ...], parser: argparse.ArgumentParser, lake: Lake,
                 known: list[str]) -> list[str]:
    values = HOSTILE + known
    argv = list(words)
    for a in parser._actions:
        if not a.option_strings and a.dest != "help":  # positionals
            argv += [r.choice(list(a.choices) if a.choices else values) for _ in range(1 if a.nargs is None else 2)]
    flags = [a for a in parser._actions if a.option_strings and a.dest not in ("help", "lake", "config", "verbose")]
    for a in r.sample(flags, min(len(flags), r.randint(0, 3))):
        argv.append(a.option_strings[-1])
        if a.nargs != 0:
            argv.append(r.choice(list(a.choices) if a.choices and r.random() < 0.5 else values))
    return [*argv, "--lake", lake.uri, "--quiet"]


def run(argv: list[str], monkeypatch) -> tuple[object, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, _, err = main_in_process(argv)
    return code, err


@pytest.mark.slow
def test_no_command_line_makes_an_internal_error_or_breaks_the_lake(tmp_path, monkeypatch):
    # Relative paths in the cases land here, never in the checkout; three folders deep, so that
    # `..` and `../../../etc` stay inside tmp_path (its parent holds every other test's folders:
    # ingesting them all as predictions took minutes, depending on what ran before).
    working = tmp_path / "a" / "b" / "c"
    working.mkdir(parents=True)
    monkeypatch.chdir(working)
    monkeypatch.setenv("EDGEMINE_USER", "fuzz")
    for name in ("EDGEMINE_CONFIG", "EDGEMINE_LAKE", "EDGEMINE_ACCOUNTS", "EDGEMINE_ACCOUNTS_FILE"):
        monkeypatch.delenv(name, raising=False)
    lake = Lake(str(tmp_path / "lake"))
    uris = put_images(lake, str(tmp_path / "src"), 6)
    (tmp_path / "p.jsonl").write_text(jsonl([prediction(u, i) for i, u in enumerate(uris)]))
    assert main(["ingest", "images", str(tmp_path / "src"), "--lake", lake.uri, "--quiet"]) == 0
    assert main(["ingest", "predictions", str(tmp_path / "p.jsonl"), "--lake", lake.uri, "--quiet"]) == 0
    with LakeDB(lake) as db:
        known = [db.query("SELECT image_id FROM images LIMIT 1").column(0)[0].as_py(), uris[0]]

    r = random.Random(SEED)
    cases, bugs, tried = 0, [], set()
    for words, parser in commands(build_parser()):
        if not words or words[0] in LEFT_OUT:
            continue
        tried.add(" ".join(words))
        for _ in range(PER_COMMAND):
            argv = hostile_argv(r, words, parser, lake, known)
            code, err = run(argv, monkeypatch)
            cases += 1
            if code not in (0, 1, 2) or "internal error" in err or "Traceback" in err:
                bugs.append((argv, code, err.strip().splitlines()[-1:] if err.strip() else ""))
    print(f"\nCLI fuzz: {cases} cases over {len(tried)} commands, {len(bugs)} internal errors")
    assert not bugs, bugs
    assert len(tried) >= 40 and cases == len(tried) * PER_COMMAND
    with LakeDB(lake) as db:  # every table still reads
        counts = {name: db.query(f'SELECT count(*) FROM "{name}"').column(0)[0].as_py() for name in TABLES}
    assert counts["images"] == 6 and counts["predictions"] >= 6

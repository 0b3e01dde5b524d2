"""The docs a newcomer reads first must say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mining.core.schema import TABLES

REPO = Path(__file__).resolve().parents[1]


def doc_columns(table: str) -> list[str]:
    text = (REPO / "docs" / "LAKE.md").read_text()
    section = text.split(f"### {table}\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^\| (\w+) \|", section, flags=re.M)[1:]  # skip the header row


@pytest.mark.parametrize("name", sorted(TABLES))
def test_lake_doc_lists_each_tables_columns(name):
    table = TABLES[name]
    assert doc_columns(name) == table.schema.names


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: setup", makefile, flags=re.M) and re.search(r"^test: setup", makefile, flags=re.M)
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci.splitlines()[-1]

"""The examples call the CLI as it is: each command line in them parses with edgemine's own parser.

Airflow itself is not installed here (hundreds of packages with pins of their own), so
the DAG's command lines are checked instead of the DAG being loaded by Airflow.
"""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest

from jobs.cli import build_parser

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_dag_module():
    spec = importlib.util.spec_from_file_location(
        "edgemine_airflow_example", EXAMPLES / "airflow_dag.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DAG = load_dag_module()
COMMANDS = DAG.HOURLY + DAG.DAILY


@pytest.mark.parametrize(
    "task_id,command", COMMANDS, ids=[task for task, _ in COMMANDS]
)
def test_airflow_dag_commands_parse(task_id, command):
    argv = shlex.split(command)
    assert argv[0] == "edgemine", f"{task_id}: not an edgemine command: {command}"
    args = build_parser().parse_args(
        argv[1:]
    )  # argparse exits (SystemExit) on an unknown command or flag
    assert callable(args.run), (
        f"{task_id}: '{command}' names a command group, not a command"
    )
    assert args.json and args.lake, (
        f"{task_id}: a scheduled task should pass --lake and --json"
    )


def test_airflow_dag_chains_every_task_once():
    task_ids = [task for task, _ in COMMANDS]
    assert len(task_ids) == len(set(task_ids))
    assert {"retrain_loop", "drift", "embed", "index"} <= set(task_ids)


def test_a_misspelt_command_would_fail_the_check():
    with pytest.raises(SystemExit):
        build_parser().parse_args(shlex.split("embed --lake x --jsn"))

"""An Apache Airflow DAG that runs edgemine on a schedule, calling its CLI.

Hourly: bring new images, predictions and customer feedback into the lake, embed
what is new, keep the index current, and refresh the review queues reviewers
work from. Daily: the retrain loop (`edgemine loop`: train on the labels so far,
score the lake, compare every slice with the previous version and stop on a
regression, write the model card) and drift over the last days.

Copy this file into Airflow's `dags/` folder and set the Airflow Variables
`edgemine_lake` (a folder or s3://bucket/prefix), `edgemine_inbox` (where new
images land), `edgemine_predictions` and `edgemine_feedback` (globs of new
prediction and feedback files).
Every task is a plain `edgemine` command, so a cron table or any other
scheduler runs the same lines. Every edgemine job is incremental and safe to
rerun: a retried task finishes the work without duplicates.

The command lines are plain lists below (`HOURLY`, `DAILY`) so that
`tests/test_examples.py` can check each one against edgemine's own parser
without installing Airflow.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

# Quoted for bash: Airflow renders the templates, then bash splits the line.
LAKE = "'{{ var.value.edgemine_lake }}'"
INBOX = "'{{ var.value.edgemine_inbox }}'"
PREDICTIONS = "'{{ var.value.edgemine_predictions }}'"  # a glob, expanded by edgemine (local or s3://), not by bash
FEEDBACK = "'{{ var.value.edgemine_feedback }}'"
VERSION = "v{{ds_nodash}}"  # no spaces inside: one word for bash

# (task id, command): each runs after the one before it.
HOURLY = [
    ("ingest_images", f"edgemine ingest images {INBOX} --lake {LAKE} --json"),
    (
        "ingest_predictions",
        f"edgemine ingest predictions {PREDICTIONS} --lake {LAKE} --json",
    ),
    ("ingest_feedback", f"edgemine ingest feedback {FEEDBACK} --lake {LAKE} --json"),
    ("embed", f"edgemine embed --lake {LAKE} --json"),
    ("index", f"edgemine index --lake {LAKE} --json"),
    (
        "queue_low_confidence",
        f"edgemine queue least-confidence --name low-confidence --limit 200 --lake {LAKE} --json",
    ),
    (
        "queue_feedback",
        f"edgemine queue feedback --name customer-feedback --lake {LAKE} --json",
    ),
]

DAILY = [
    # train on every label so far, continue from the newest model, score, compare, card:
    # exits non-zero on a regression, so the tasks after it (a rollout) do not run.
    (
        "retrain_loop",
        f"edgemine loop --name {VERSION} --from latest --lake {LAKE} --json",
    ),
    ("drift", f"edgemine drift --window 1d --lake {LAKE} --json"),
]


def _chain(dag, steps):
    # Airflow 3 (and 2.x with apache-airflow-providers-standard); plain 2.x: airflow.operators.bash
    from airflow.providers.standard.operators.bash import BashOperator

    tasks = [
        BashOperator(task_id=task_id, bash_command=command, dag=dag)
        for task_id, command in steps
    ]
    for before, after in itertools.pairwise(tasks):
        before >> after
    return tasks


def _dags():
    from airflow import DAG

    defaults = {"retries": 2, "retry_delay": timedelta(minutes=5)}
    start = datetime(2026, 11, 1)
    hourly = DAG(
        "edgemine_hourly",
        schedule="@hourly",
        start_date=start,
        catchup=False,
        max_active_runs=1,
        default_args=defaults,
    )
    daily = DAG(
        "edgemine_daily",
        schedule="@daily",
        start_date=start,
        catchup=False,
        max_active_runs=1,
        default_args=defaults,
    )
    _chain(hourly, HOURLY)
    _chain(daily, DAILY)
    return hourly, daily


if __name__ != "__main__":
    try:  # Airflow imports this file to find its DAGs; anything else (the tests, a reader) just gets the commands
        edgemine_hourly, edgemine_daily = _dags()
    except ModuleNotFoundError:
        pass

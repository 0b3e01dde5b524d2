"""`edgemine labels import FILE --format FORMAT`: labels from annotators into the lake.

The work is mining.labelling.labels's (parsers, image lookup, checks, the exactly-once
write); this job opens the lake and returns the LabelsSummary.
"""

from __future__ import annotations

from jobs.progress import Progress
from mining.core.config import Config
from mining.core.lake import Lake
from mining.core.sql import LakeDB
from mining.labelling.labels import LabelsSummary, import_labels


def run_import(
    config: Config,
    source: str,
    *,
    fmt: str,
    batch: str | None = None,
    annotator: str | None = None,
    project: str | None = None,
    allow_new_classes: bool = False,
    show_progress: bool = True,
) -> LabelsSummary:
    with LakeDB(Lake.from_config(config), config=config) as db:
        progress = Progress(f"import {fmt} labels", unit="annotations", enabled=show_progress)
        summary = import_labels(db, source, fmt=fmt, config=config, batch=batch, annotator=annotator, project=project,
                                allow_new_classes=allow_new_classes, progress=progress.update)
        progress.close()
    return summary

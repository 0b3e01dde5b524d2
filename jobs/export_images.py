"""`edgemine export SOURCE --format FORMAT --to URI`: a batch of images leaves for labelling.

The work is mining.labelling.export's (sources, writers, the exactly-once batch); this job
opens the lake, resolves the source, shows progress on stderr and returns the
ExportSummary. Killed at any point and rerun, every image is exported once: the
``exports`` rows are the batch's last commit. ``--preannotate model:imagenet`` loads the
open ImageNet classifier here (embed.imagenet: torch is imported only then).
"""

from __future__ import annotations

from jobs.progress import Progress
from mining.core.config import Config
from mining.core.errors import ExportError
from mining.core.lake import Lake
from mining.core.sql import LakeDB
from mining.labelling.export import ExportSummary, export_images, resolve_source, where_source, writer_for
from mining.labelling.preannotate import IMAGENET, ImageClassifier, check_format, parse_preannotate


def run_export(config: Config, source: str | None, *, fmt: str, target: str, where: str | None = None,
               name: str | None = None, task_size: int | None = None, predictions: bool = True,
               copy_images: bool = False, resend: bool = False, project: str | None = None,
               drop_duplicates: bool = False, preannotate: str | None = None,
               show_progress: bool = True) -> ExportSummary:
    """Export SOURCE (set:NAME, review:NAME, session:NAME, sql:QUERY) or the ``where`` slice,
    with the pre-annotations ``preannotate`` names (mining.labelling.preannotate; default: predictions)."""
    if bool(source) == bool(where):
        raise ExportError("give one source: set:NAME, review:NAME, session:NAME, sql:QUERY, or --where SQL")
    # An unknown format, or one that cannot carry the pre-annotation, is said before the source is read.
    pre = parse_preannotate(preannotate, predictions=predictions)
    check_format(pre, writer_for(fmt))
    classify: ImageClassifier | None = None
    if pre.kind == IMAGENET:
        from embed.imagenet import ImageNetClassifier

        classify = ImageNetClassifier(device=config.embed.device, max_pixels=config.embed.max_pixels)
    source = source or where_source(where or "")
    with LakeDB(Lake.from_config(config), config=config) as db:
        ids = resolve_source(db, source)
        progress = Progress(f"export {fmt}", total=len(ids), unit="images", enabled=show_progress)
        summary = export_images(db, ids, fmt=fmt, target=target, config=config, name=name, source=source,
                                task_size=task_size, predictions=predictions, copy_images=copy_images, resend=resend,
                                project=project, drop_duplicates=drop_duplicates, preannotate=preannotate,
                                classify=classify, progress=progress.update)
        progress.close()
    return summary

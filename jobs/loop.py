"""`edgemine loop`: the retrain loop as one command, for a scheduler (docs/TRAINING.md).

1. **train** the new version on the lake's labels (jobs.train), from ``--from``:
   ``latest`` is the newest model of the lake (imagenet when there is none yet);
2. **score** the lake's images with it: predictions and embeddings (jobs.score);
3. **metrics** of the new version and the one before it on every slice, and the
   regression check between them (mining.evaluation.metrics): the forgetting check;
4. **card**: the new version's model card, stored in the lake (mining.evaluation.cards).

Every step is safe to rerun, so a scheduler's retry of a failed or killed loop
finishes the work: a version already published is not trained again (an
interrupted training resumes from its last epoch checkpoint), scoring does only
the images left, metrics and the card are written again. A regression ends the
loop with exit code 3 after the card is written (the card lists it), so the
scheduler stops the rollout.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

from embed.finetune import TrainSettings
from jobs.score import score_lake
from jobs.train import TrainRequest, train_model
from mining.core.config import Config
from mining.core.lake import Lake
from mining.core.sql import LakeDB
from mining.core.summary import Summary
from mining.evaluation.cards import card_path, write_card
from mining.evaluation.metrics import previous_version, run_metrics
from mining.evaluation.models import list_models, version_exists
from mining.evaluation.slices import check_config_slices

log = logging.getLogger(__name__)

JOB = "loop"
LATEST = "latest"
FIRST_BASE = "imagenet"  # what `--from latest` starts from in a lake with no model yet


@dataclass
class LoopSummary(Summary):
    job: str = JOB
    model_version: str = ""
    base: str = ""  # what training started from (``latest`` resolved)
    trained: bool = False  # False: the version was published by an earlier run of the loop
    train: dict = field(default_factory=dict)
    score: dict = field(default_factory=dict)
    baseline: str | None = None  # the version compared with
    metrics: int = 0  # rows written to the metrics table
    comparisons: int = 0  # (slice, metric, class) pairs checked for a regression
    alarms: list[dict] = field(default_factory=list)
    card: str = ""

    @property
    def regressed(self) -> bool:
        return bool(self.alarms)


def resolve_base(lake: Lake, base: str, version: str, config: Config | None = None) -> str:
    """``latest`` -> the newest model version of the lake other than ``version`` (else FIRST_BASE);
    read under ``config``'s query limits."""
    if base != LATEST:
        return base
    # Not the shared connection: its models table may be minutes old.
    with LakeDB(lake, config=config, private=True) as db:
        versions = [v for v in list_models(db).column("model_version").to_pylist() if v != version]
    if not versions:
        log.info("--from latest: the lake has no model yet; starting from %s", FIRST_BASE)
    return versions[0] if versions else FIRST_BASE


def run_loop(lake: Lake, config: Config, request: TrainRequest, settings: TrainSettings, *,
             backbone_given: bool = True, baseline: str | None = None, show_progress: bool = True) -> LoopSummary:
    """Train, score, compare and card ``request.version`` (see the module doc); a rerun finishes a loop that stopped."""
    started = time.monotonic()
    version = request.version
    summary = LoopSummary(model_version=version)
    with LakeDB(lake, config=config, private=True) as db:  # the slices, checked before any work
        check_config_slices(db, config)
    if version_exists(lake, version):
        log.info("loop: %s is already trained; scoring what is left, then metrics and card", version)
        summary.base = "(trained before)"
    else:
        summary.base = resolve_base(lake, request.base, version, config)
        # An earlier loop killed mid-training left its epoch checkpoint: continue from it.
        resume = lake.fs.exists(f"{lake.model_staging_dir(version)}/last.pt")
        trained = train_model(lake, replace(request, base=summary.base, resume=resume), settings,
                              backbone_given=backbone_given, show_progress=show_progress)
        summary.trained, summary.train = True, trained.to_dict()
        summary.errors += trained.errors
    scored = score_lake(lake, version, config.embed, show_progress=show_progress)
    summary.score = scored.to_dict()
    summary.errors += scored.errors
    # Sandboxed connections, as `edgemine metrics` uses: a slice's SQL (the config's, or the
    # lake's slices table) reads the lake's views and nothing else.
    with LakeDB(lake, config=config, private=True) as db:
        summary.baseline = baseline or previous_version(db, version)
        versions = [v for v in (summary.baseline, version) if v]
        rows, report = run_metrics(db, config, versions=versions, baseline=summary.baseline)
        summary.metrics = rows.num_rows
        summary.comparisons, summary.alarms = report.checked, report.alarms
    with LakeDB(lake, config=config, private=True) as db:  # a new one sees the metrics and alarms just made
        write_card(db, version, config)
        summary.card = lake.url(card_path(db, version))
    summary.seconds = time.monotonic() - started
    return summary

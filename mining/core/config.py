"""Configuration: one typed object, built once from defaults, a TOML file, the
environment and command-line flags (in rising order of precedence), then passed down.

Every option, with its default, is written out in configs/default.toml.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mining.core.errors import ConfigError

DEFAULT_LAKE = "./lake"


@dataclass(frozen=True)
class S3Config:
    """Object-storage access. Credentials come from the standard AWS variables
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) unless set here."""

    endpoint_url: str | None = None  # S3-compatible stores (MinIO, moto, R2...); env AWS_ENDPOINT_URL
    region: str | None = None  # env AWS_REGION / AWS_DEFAULT_REGION
    key: str | None = None
    secret: str | None = None
    session_token: str | None = None
    # Transient errors (503 SlowDown, 500, a reset connection, a timeout) are retried with
    # exponential backoff and jitter by both S3 clients: s3fs (botocore) and delta-rs (object_store).
    retry_mode: str = "standard"  # botocore's: standard, or adaptive (also slows its own request rate)
    max_attempts: int = 10  # tries of one request, the first included
    connect_timeout_s: float = 10.0  # to open a connection
    read_timeout_s: float = 60.0  # botocore: waiting for an answer; delta-rs: one whole request


@dataclass(frozen=True)
class IngestConfig:
    chunk_rows: int = 200_000  # input rows per batch (one commit per table): bounds memory whatever the file size
    compact_after_files: int = 64  # a day's partition the ingest touched is compacted once it has more files; 0: never
    image_batch: int = 256  # images fetched concurrently per request batch
    image_shard: int = 10_000  # images per output file of the images table


@dataclass(frozen=True)
class EmbedConfig:
    backbone: str = "resnet18"  # a name of embed.backbones: resnet18, resnet34, efficientnet-lite0
    # "imagenet" (the backbone's ImageNet weights: torchvision's from torch's cache for the
    # ResNets, the weights package's for efficientnet-lite0), a checkpoint file path, or
    # "random" (seeded; for tests, similarity is weak).
    weights: str = "imagenet"
    seed: int = 0  # for weights = "random"
    device: str = "auto"  # auto (CUDA when there is one), cpu, cuda, cuda:N
    decode: str = "auto"  # where JPEGs are decoded: auto, workers (CPU processes), device (the model's device)
    batch_size: int = 0  # images per model call; 0: 32 on CPU (cache-friendly), 256 on CUDA
    workers: int = 0  # image decoding processes; 0: one per CPU core
    part_size: int = 10_000  # images per published part: what a killed run redoes at most
    max_pixels: int = 100_000_000  # larger images are refused as decompression bombs
    thumbnail_size: int = 128  # long side of the thumbnails, in pixels
    thumbnail_quality: int = 85


@dataclass(frozen=True)
class ObjectsConfig:
    """`edgemine embed --objects`: how detection boxes become crops (docs/EMBED.md "Objects")."""

    padding: float = 0.15  # context around a box, a fraction of its size on each side (0: the box alone)
    max_per_image: int = 20  # crops per image at most, the highest-scoring boxes first
    min_side: float = 1.0  # boxes narrower or shorter than this many pixels (after clipping) are refused


@dataclass(frozen=True)
class IndexConfig:
    kind: str = "auto"  # auto, flat (exact), ivf, ivfpq
    # The thresholds of kind = "auto" (mining.search.index.auto_kind; docs/SCALE.md, BENCHMARKS.md):
    flat_max: int = 200_000  # exact (flat) up to this many vectors, IVF-flat above
    ivfpq_min: int = 2_000_000  # IVF-PQ from this many vectors (pq_m bytes a vector, not 4 x width)
    nlist: int = 0  # IVF lists; 0: about sqrt(n), a power of two
    nprobe: int = 0  # IVF lists searched per query; 0: chosen with nlist (see docs/MINING.md)
    pq_m: int = 64  # ivfpq: bytes per vector; the width (512, 1280) must be a multiple of it
    device: str = "auto"  # where kNN and k-means run: auto, cpu, cuda, cuda:N


@dataclass(frozen=True)
class MiningConfig:
    k: int = 20  # results of `similar`
    pool: int = 1000  # images taken near the seeds by `narrow start`
    clusters: int = 8  # k-means clusters per narrowing step
    niter: int = 20  # k-means iterations
    seed: int = 0
    user: str = ""  # who is recorded in sessions and sets; "": $EDGEMINE_USER, else the login name


@dataclass(frozen=True)
class DemoConfig:
    images: int = 2_000
    seed: int = 0
    width: int = 256
    height: int = 192
    edge_case_rate: float = 0.03
    workers: int = 0  # 0: one per CPU core
    # The weights the demo embeds with (the backbone is [embed]'s): seeded random by default,
    # fast for tests; configs/demo.toml (make demo) chooses efficientnet-lite0 with "imagenet",
    # real similarity offline.
    weights: str = "random"
    # Which edge case the lake hides (jobs.demo_data.EDGE_KINDS): glare, unseen_class,
    # new_camera, snow or small_occluded; the benchmark builds one lake per kind.
    kind: str = "glare"
    # After the lake is built, one simulated labelling round from the hidden truth (a
    # quarter of the images and half of the edge cases labelled), two review queues,
    # metrics and drift, so every page of the UI has something to show (`--no-round`: off).
    round: bool = True


@dataclass(frozen=True)
class CompactConfig:
    vacuum_hours: int = 168  # `edgemine compact` deletes files unused this long (time travel before that is lost)


@dataclass(frozen=True)
class UIConfig:
    port: int = 8501
    page_size: int = 100  # thumbnails per page on the Review page
    # Prediction columns shown under each thumbnail beside label and confidence (a true
    # boolean as the column's name, anything else as name: value), e.g. ("customer_flag",).
    caption_columns: tuple[str, ...] = ()
    # What the UI may act on: allow-lists, never free text (docs/SECURITY.md). The Export page
    # writes only under these folders or s3:// prefixes ...
    export_targets: tuple[str, ...] = ("./exports",)
    # ... and sends the Label Studio token only to these servers (http(s)://HOST[:PORT]).
    label_studio_hosts: tuple[str, ...] = ()
    # Host names the server answers beyond localhost and its own address (a DNS name behind a proxy):
    # a WebSocket from any other Host or Origin is refused.
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthConfig:
    """Who may use the UI (docs/SECURITY.md). Local accounts, a trusted proxy's header or
    OIDC (Streamlit's st.login); none of them and the UI serves only localhost."""

    # Local accounts: a JSON file `edgemine user add` writes (hashed passwords). "": $EDGEMINE_ACCOUNTS_FILE.
    # $EDGEMINE_ACCOUNTS may also hold accounts inline: "name:role:hash" entries, one per line.
    accounts: str = ""
    # The identity a reverse proxy in front of the UI sets (e.g. "X-Forwarded-Email"); trust it only
    # when nothing but the proxy can reach the UI.
    proxy_header: str = ""
    # Log in through an identity provider (Streamlit's st.login; its [auth] in .streamlit/secrets.toml).
    oidc: bool = False
    # Roles of proxy and OIDC identities (local accounts carry their own): identity -> role.
    roles: dict = field(default_factory=dict)
    default_role: str = "viewer"  # a proxy or OIDC identity missing from roles; "": refused


@dataclass(frozen=True)
class ExportConfig:
    task_size: int = 0  # images per task file of an export batch; 0: one task
    url_expiry_s: int = 604_800  # presigned URLs for s3:// images stay valid this long (7 days, S3's most)
    # Label Studio (`edgemine export --to http://HOST --project NAME`): the token, else $EDGEMINE_LABEL_STUDIO_TOKEN
    label_studio_token: str = ""
    # LOCAL_FILES_DOCUMENT_ROOT of the Label Studio server: local images under it are sent as
    # /data/local-files/?d=<path below it>; "": local images are sent as their path.
    local_files_root: str = ""


@dataclass(frozen=True)
class PreannotateConfig:
    """`edgemine export --preannotate superpixels`: SLIC superpixels as regions (docs/EXPORT.md "Pre-annotations")."""

    segments: int = 200  # superpixels asked per image (SLIC's n_segments; it finds about as many)
    compactness: float = 20.0  # SLIC's space against colour: higher, squarer regions; lower, closer to colour edges
    sigma: float = 0.5  # Gaussian smoothing (pixels) before SLIC: noise splits regions less; 0: none

    def __post_init__(self) -> None:
        if self.segments < 1 or self.compactness <= 0 or self.sigma < 0:
            raise ConfigError("[preannotate] segments must be at least 1, compactness above 0 and sigma at least 0, "
                              f"got {self.segments}, {self.compactness}, {self.sigma}")


@dataclass(frozen=True)
class QueuesConfig:
    limit: int = 100  # images per queue of the ranked samplers (least-confidence, margin, entropy, feedback, ...)
    per: str = "1h"  # random-time: the window (30m, 1h, 1d, 1w)
    k: int = 5  # random-time: predictions per window
    every: int = 100  # every-nth: N
    neighbours: int = 10  # label-errors (knn): labelled neighbours that vote
    diverse_pool: int = (
        10  # --diverse: the diverse queue is chosen among this many times its size of the sampler's best
    )
    duplicate_threshold: float = 0.98  # `edgemine duplicates`: least cosine similarity to a group's first image
    duplicate_k: int = (
        16  # `edgemine duplicates`: neighbours asked for first (doubled while all are above the threshold)
    )


@dataclass(frozen=True)
class MetricsConfig:
    margin: float = 0.02  # a regression: a metric this much (absolute) below the baseline version's ...
    confidence: float = 0.95  # ... and the bootstrap interval of the difference at this level entirely below 0
    bootstrap: int = 1000  # paired bootstrap resamples (scipy.stats.bootstrap)
    min_n: int = 30  # slices (and classes) with fewer labelled images are not checked for regressions
    ece_bins: int = 15  # equal-width confidence bins of the ECE (Guo et al. 2017)
    auto_max_values: int = (
        50  # automatic slices per metadata column value only for columns with at most this many values
    )
    seed: int = 0


@dataclass(frozen=True)
class DriftConfig:
    window: str = "1d"  # 1h, 6h, 1d, 1w
    reference_windows: int = 7  # the reference, unless given: the first this many windows
    sample: int = 1000  # embeddings per window (and reference) for the classifier two-sample test
    alpha: float = 0.05  # false-alarm rate per check over all windows (Bonferroni: alpha / windows per test)
    auc_threshold: float = 0.55  # embeddings: ROC AUC of the domain classifier above this (Evidently's default)
    distance_threshold: float = 0.1  # labels, metadata: Jensen-Shannon distance; confidence: KS statistic (Evidently's)
    new_value_share: float = 0.01  # a metadata value unseen in the reference holding this share of a window is flagged
    seed: int = 0


@dataclass(frozen=True)
class QueryConfig:
    """What one query may cost: every DuckDB connection of edgemine (the SQL console, the UI,
    `--where` filters, slices, queues, metrics, `loop`) runs under these (docs/LAKE.md, Query limits)."""

    timeout_s: float = 300.0  # a read-only statement running longer is interrupted; 0: no limit
    memory_limit: str = "25%"  # DuckDB's memory_limit: a size ("4GiB", "500MB") or a share of the machine's memory
    max_temp_directory_size: str = "20GiB"  # what a query may spill to disk when over memory_limit
    max_rows: int = 10_000  # rows `edgemine sql` prints and the UI's SQL page holds; more are cut, and it says so

    def __post_init__(self) -> None:
        for name in ("memory_limit", "max_temp_directory_size"):
            if not _SIZE.fullmatch(getattr(self, name)):
                raise ConfigError(f"[query] {name} must be a size like \"4GiB\" or \"500MB\" (KB, MB, GB, TB, "
                                  f"KiB, MiB, GiB, TiB) or a share like \"25%\", got {getattr(self, name)!r}")
        if self.timeout_s < 0 or self.max_rows < 1:
            raise ConfigError("[query] timeout_s must be at least 0 (0: no limit) and max_rows at least 1")


_SIZE = re.compile(r"\s*\d+(\.\d+)?\s*(%|[KMGT]i?B)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Config:
    lake: str = DEFAULT_LAKE
    s3: S3Config = field(default_factory=S3Config)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    compact: CompactConfig = field(default_factory=CompactConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    preannotate: PreannotateConfig = field(default_factory=PreannotateConfig)
    queues: QueuesConfig = field(default_factory=QueuesConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    slices: dict = field(default_factory=dict)  # name -> SQL predicate (docs/METRICS.md)


def load_config(
    path: str | os.PathLike | None = None,
    *,
    env: Mapping[str, str] | None = None,
    lake: str | None = None,
) -> Config:
    """Build the Config.

    Precedence for the lake: ``lake`` argument (the --lake flag), EDGEMINE_LAKE,
    the file's ``lake``, then ./lake. ``path`` defaults to EDGEMINE_CONFIG if set.
    """
    env = os.environ if env is None else env
    path = path or env.get("EDGEMINE_CONFIG")
    data: dict[str, Any] = {}
    if path:
        data = _read_toml(Path(path))
    config = _from_dict(Config, data, where=str(path or "defaults"))

    _check_s3(config.s3, str(path or "defaults"))
    s3 = dataclasses.replace(
        config.s3,
        endpoint_url=config.s3.endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        region=config.s3.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        key=config.s3.key or env.get("AWS_ACCESS_KEY_ID"),
        secret=config.s3.secret or env.get("AWS_SECRET_ACCESS_KEY"),
        session_token=config.s3.session_token or env.get("AWS_SESSION_TOKEN"),
    )
    chosen_lake = lake or env.get("EDGEMINE_LAKE") or config.lake
    user = config.mining.user or env.get("EDGEMINE_USER") or _login_name()
    mining = dataclasses.replace(config.mining, user=user)
    export = dataclasses.replace(
        config.export, label_studio_token=config.export.label_studio_token or env.get("EDGEMINE_LABEL_STUDIO_TOKEN", "")
    )
    auth = dataclasses.replace(config.auth, accounts=config.auth.accounts or env.get("EDGEMINE_ACCOUNTS_FILE", ""))
    return dataclasses.replace(config, lake=chosen_lake, s3=s3, mining=mining, export=export, auth=auth)


def _check_s3(s3: S3Config, where: str) -> None:
    if s3.retry_mode not in ("standard", "adaptive"):
        raise ConfigError(f"{where} [s3]: retry_mode must be standard or adaptive, got {s3.retry_mode!r}")
    if s3.max_attempts < 1:
        raise ConfigError(f"{where} [s3]: max_attempts must be at least 1 (the first try), got {s3.max_attempts}")
    if min(s3.connect_timeout_s, s3.read_timeout_s) <= 0:
        raise ConfigError(f"{where} [s3]: connect_timeout_s and read_timeout_s must be positive seconds")


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "unknown"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass an existing file to --config") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def _from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a dict, refusing unknown keys and wrong types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown}; allowed: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: [{name}] must be a table")
            kwargs[name] = _from_dict(type(default), value, f"{where} [{name}]")
            continue
        expected = type(default) if default is not None else str
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is tuple:  # TOML arrays of strings
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: {name} must be a list of strings, got {value!r}")
            value = tuple(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: {name} must be {expected.__name__}, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)

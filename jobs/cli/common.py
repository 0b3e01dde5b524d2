"""What every command shares: its errors and exit codes, opening the lake, printing a result,
and the flags that several topics take (the embedding set to search, the embed settings)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Mapping
from typing import Any

from jobs.output import write_json, write_rows
from mining.core.config import Config, EmbedConfig
from mining.core.errors import EdgemineError
from mining.core.lake import Lake
from mining.core.sql import LakeDB

EXIT_REGRESSION = 3  # `metrics --fail-on-regression`, `loop`: a regression alarm was raised (a rollout should stop)


class UsageError(EdgemineError):
    """Wrong flags from the user: printed as one line, exit code 2."""


def open_db(config: Config, *, as_of: Mapping[str, int] | None = None) -> LakeDB:
    """The lake of ``--lake``/``--config`` (already in ``config``), read-only, with the command's
    settings as the library's defaults; ``as_of``: table versions to read (``sql --as-of``)."""
    return LakeDB(Lake.from_config(config), config=config, as_of=as_of)


def print_result(args: argparse.Namespace, result: Any, text: Callable[[Any], None] | None = None, *,
                 max_rows: int = 100) -> None:
    """A command's result on stdout: JSON with ``--json`` (a table as one object per row, a
    summary as its ``to_dict()``); else ``text(result)``, or the table in the command's
    ``--format`` (a readable table when it has none), at most ``max_rows`` rows shown."""
    if args.json:
        write_json(_as_json(result), sys.stdout)
    elif text is not None:
        text(result)
    else:
        write_rows(result, getattr(args, "format", "table"), sys.stdout, max_rows=max_rows)


def _as_json(result: Any) -> Any:
    pa = sys.modules.get("pyarrow")  # an Arrow table exists only once pyarrow is imported: not imported here
    if pa is not None and isinstance(result, pa.Table):
        return result.to_pylist()
    return result.to_dict() if hasattr(result, "to_dict") else result


def add_index_choice(parser: argparse.ArgumentParser) -> None:
    """The flags that choose the embedding set to search and where kNN runs (see ``index_config``)."""
    parser.add_argument(
        "--weights", help="embedding set to use, by its weights tag (e.g. imagenet1k_v1); default: the lake's only one"
    )
    parser.add_argument("--backbone", help="backbone of the embedding set (default: the lake's only one)")
    parser.add_argument(
        "--device", help="where kNN and k-means run: auto, cpu, cuda, cuda:N (default: config index.device)"
    )


def index_config(args: argparse.Namespace, config: Config) -> Config:
    """The config with the command's index flags (``--device``, and ``--kind``, ``--nprobe`` where given)."""
    changes = {"device": args.device, "kind": getattr(args, "kind", None), "nprobe": getattr(args, "nprobe", None)}
    index = dataclasses.replace(config.index, **{k: v for k, v in changes.items() if v is not None})
    return dataclasses.replace(config, index=index)


def embed_config(config: Config, **flags) -> EmbedConfig:
    """The config's [embed] with the flags given on the command line (None: not given); `embed` and `score`."""
    embed = dataclasses.replace(config.embed, **{k: v for k, v in flags.items() if v is not None})
    if embed.batch_size < 0 or embed.workers < 0:
        raise UsageError("--batch-size and --workers must be at least 0 (0: automatic)")
    return embed


def add_runner(parser: argparse.ArgumentParser) -> None:
    """`--runner` and `--address`: where `ingest images`, `embed` and `score` run their pipeline (docs/EMBED.md)."""
    parser.add_argument("--runner", choices=["local", "ray"], default="local",
                        help="local: this machine's processes (default); ray: Ray Data on a Ray cluster (pip install "
                             "'edgemine[ray]')")
    parser.add_argument("--address", metavar="auto|HOST:PORT|ray://HOST:PORT",
                        help="with --runner ray: the cluster (default: $RAY_ADDRESS, else a Ray started on this "
                             "machine for the run)")


def runner_of(args: argparse.Namespace):
    """The ``jobs.runners.Runner`` of the command's `--runner` and `--address`, connected to its
    cluster: a cluster that cannot be reached is said before any model is loaded."""
    from jobs.runners import Runner

    if args.address is not None and args.runner != "ray":
        raise UsageError("--address names a Ray cluster: add --runner ray")
    runner = Runner(args.runner, args.address)
    runner.connect()
    return runner

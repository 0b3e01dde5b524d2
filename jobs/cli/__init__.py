"""The `edgemine` command. Subcommand names and flags are a public contract.

Each subcommand parses its flags, builds the Config once, calls one library
function (the facade, ``mining/__init__.py``, where it has one) with paths and
plain values, and prints the result (``--json`` for machines). Progress goes to
stderr, results to stdout. Modules are imported by the command that needs them:
`edgemine sql` starts without torch, faiss or boto.

The commands live by topic, each module holding its commands' flags (``add_*``)
and what they run (``cmd_*``): ``lake_commands`` (demo, sql, tables, history,
compact, migrate, index, ui), ``ingest_commands`` (ingest, embed),
``search_commands`` (similar, narrow, duplicates), ``review_commands`` (review,
queue), ``labelling_commands`` (export, labels), ``model_commands`` (train, score,
loop, models), ``evaluation_commands`` (slice, metrics, drift, card), ``user_commands``
(user); ``common`` opens the lake and prints results for all of them.

Exit codes: 0 done; 1 done, but some inputs failed (see the summary);
2 nothing done: bad usage, configuration or input (one line on stderr says what to do);
3 a regression alarm (`metrics --fail-on-regression`, `loop`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from jobs.cli import (
    evaluation_commands,
    ingest_commands,
    labelling_commands,
    lake_commands,
    model_commands,
    review_commands,
    search_commands,
    user_commands,
)
from jobs.cli.common import EXIT_REGRESSION, UsageError
from mining.core.config import Config, load_config
from mining.core.errors import EdgemineError

INTERRUPTED = "rerun the same command to finish (what was committed is kept)"
__all__ = ["EXIT_REGRESSION", "UsageError", "build_parser", "main", "user_message"]


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # Only the command typed is built (its flags, its errors), the others' flags cost 0.1 s of start-up;
    # no command, a flag first or an unknown name: the whole command line, which lists them.
    parser = build_parser(samplers="queue" in words, only=words[0] if words and words[0] in COMMANDS else None)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        allowed = getattr(args, "allowed_flags", None)
        if allowed is None:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        print(f"edgemine: error: unrecognized option(s) {' '.join(unknown)}; {allowed}", file=sys.stderr)
        return 2
    if not hasattr(args, "run"):  # no command, or a group (narrow, queue...) without its action
        build_parser(samplers="queue" in words).print_help()  # every command listed
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)  # which SIMD build loaded: noise to a user
    restore = _stop_on_sigterm()
    try:
        config = load_config(args.config, lake=args.lake)
        return args.run(args, config)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated)
        how = "stopped (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"edgemine: {how}; {getattr(args, 'interrupted', INTERRUPTED)}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except Exception as e:  # noqa: BLE001 - every error the user can fix is one line; anything else is a bug
        message = user_message(e)
        if message is None:
            if args.verbose:
                raise
            print(f"edgemine: internal error ({one_line(e)}): a bug in edgemine. The traceback is in "
                  f"{save_traceback(e)}; please report it with that file (--verbose prints it)", file=sys.stderr)
            return 1
        print(f"edgemine: error: {message}", file=sys.stderr)
        return 2
    finally:
        restore()


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the command: unwound like Ctrl-C (temporary files removed, worker
    processes stopped, nothing half-committed), then exit 143."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def _stop_on_sigterm() -> Callable[[], None]:
    """A scheduler's stop (SIGTERM) unwinds the command as Ctrl-C does; returns what puts the
    previous handler back (main() may run inside another program, a test)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _terminated)
    return lambda: signal.signal(signal.SIGTERM, previous)


def one_line(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def save_traceback(error: BaseException) -> str:
    """Write ``error``'s traceback to a new file in the temporary folder; returns its path."""
    import tempfile
    import traceback

    handle, path = tempfile.mkstemp(prefix="edgemine-error-", suffix=".txt")
    with os.fdopen(handle, "w") as f:
        f.write(f"edgemine {' '.join(sys.argv[1:])}\n\n")
        f.write("".join(traceback.format_exception(error)))
    return path


def user_message(error: BaseException) -> str | None:
    """The one line to print for an error the user can fix, or None for a bug."""
    if isinstance(error, EdgemineError | OSError):  # OSError: a file, a disk, a host that cannot be reached
        return str(error) or type(error).__name__
    if "botocore" in sys.modules:  # S3 was used: its errors say what to set
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        if isinstance(error, NoCredentialsError):
            return ("no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                    "(or [s3] key and secret in the config file)")
        if isinstance(error, EndpointConnectionError):
            return (f"cannot reach S3: {error}. Check AWS_ENDPOINT_URL or [s3] endpoint_url in the config, "
                    "and that the server is up")
        if isinstance(error, BotoCoreError | ClientError):
            return f"S3 refused the request: {error}"
    return None


# Each command, in the order `edgemine --help` lists them, and the topic module's function that adds it.
COMMANDS: dict[str, Callable[..., argparse.ArgumentParser | None]] = {
    "demo": lake_commands.add_demo,
    "ingest": ingest_commands.add_ingest,
    "embed": ingest_commands.add_embed,
    "sql": lake_commands.add_sql,
    "tables": lake_commands.add_tables,
    "history": lake_commands.add_history,
    "compact": lake_commands.add_compact,
    "migrate": lake_commands.add_migrate,
    "index": lake_commands.add_index,
    "similar": search_commands.add_similar,
    "narrow": search_commands.add_narrow,
    "review": review_commands.add_review,
    "export": labelling_commands.add_export,
    "labels": labelling_commands.add_labels,
    "queue": review_commands.add_queue,  # also given ``samplers``
    "duplicates": search_commands.add_duplicates,
    "train": model_commands.add_train,
    "score": model_commands.add_score,
    "loop": model_commands.add_loop,
    "models": model_commands.add_models,
    "slice": evaluation_commands.add_slice,
    "metrics": evaluation_commands.add_metrics,
    "drift": evaluation_commands.add_drift,
    "card": evaluation_commands.add_card,
    "ui": lake_commands.add_ui,
    "user": user_commands.add_user,
}


def build_parser(samplers: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line. ``samplers``: build `queue`'s subcommands (one per sampler), which
    imports the samplers; `main` asks for them only when the command line says queue. ``only``:
    build that command alone (`main` does, for the command typed: a faster start)."""
    parser = argparse.ArgumentParser(prog="edgemine", description="Find the edge cases in a lake of model predictions.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--lake", help="lake URI: a folder or s3://bucket/prefix (default: $EDGEMINE_LAKE, the config's lake, ./lake)"
    )
    common.add_argument(
        "--config", help="TOML config file (default: $EDGEMINE_CONFIG; options in configs/default.toml)"
    )
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    def add(parent, name: str, run: Callable[[argparse.Namespace, Config], int], help: str) -> argparse.ArgumentParser:
        """A command (or an action of a command group) that runs ``run``, with the common flags."""
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        return p

    for name, add_command in COMMANDS.items():
        if only is not None and name != only:
            continue
        if name == "queue":
            add_command(commands, add, samplers)
        else:
            add_command(commands, add)
    return parser

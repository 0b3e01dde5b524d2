"""What one query may cost: the ``[query]`` limits on DuckDB (mining.core.config.QueryConfig).

- Memory and spill: ``database_settings`` are set on every DuckDB database edgemine opens
  (mining.core.sql.connect), before a sandboxed one locks its configuration: ``memory_limit``
  (a share of the machine's memory, or a size) and ``max_temp_directory_size``.
- Time and Ctrl-C: ``run`` does a statement's work (execute and fetch) on a worker thread
  and waits for it. Past the time limit, or when Ctrl-C (KeyboardInterrupt) reaches the
  waiting thread, it interrupts the cursor (DuckDB's ``interrupt``): DuckDB stops the
  statement within moments, where the Python package's own check of signals did not
  (the main thread sits in DuckDB's C++ code, where Python's handler never runs).
- Spill folders: each process spills into its own folder ``edgemine-duckdb-*`` in the
  temporary folder, one subfolder per database, and removes it at exit. The folder holds
  a locked file while its process lives; a run that finds one whose lock is free (its
  process was killed) removes it. Folders without that file (older edgemine versions) are
  left alone.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from mining.core.config import QueryConfig
from mining.core.errors import QueryLimitError

log = logging.getLogger(__name__)

T = TypeVar("T")
SPILL_PREFIX = "edgemine-duckdb-"
_LOCK_FILE = ".owner.lock"
_STOP_WAIT_S = 0.05  # how often an interrupt is sent again until the statement has stopped


def database_settings(limits: QueryConfig, spill: str) -> dict[str, str]:
    """DuckDB settings for a database under ``limits``, spilling into ``spill``."""
    return {
        "memory_limit": memory_setting(limits.memory_limit),
        "max_temp_directory_size": limits.max_temp_directory_size.strip(),
        "temp_directory": spill,
    }


def scratch_connection(limits: QueryConfig | None = None) -> duckdb.DuckDBPyConnection:
    """A plain in-memory DuckDB (no lake, no views) under ``limits`` (the defaults without):
    for a job's own work on its input."""
    return duckdb.connect(config=database_settings(limits or QueryConfig(), spill_folder()))


def memory_setting(text: str) -> str:
    """A DuckDB size for ``text``: a share ("25%") of the machine's memory, else as given."""
    share = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", text)
    if share is None:
        return text.strip()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(1, int(total * float(share.group(1)) / 100 / 2**20))}MiB"


def run(con: duckdb.DuckDBPyConnection, work: Callable[[], T], timeout_s: float) -> T:
    """``work()`` (which runs statements on ``con``), stopped past ``timeout_s`` seconds (0: never)
    with a QueryLimitError, or by Ctrl-C with KeyboardInterrupt once DuckDB has stopped."""
    outcome: dict[str, object] = {}
    done = threading.Event()  # waited on, not Thread.join: a join that Ctrl-C interrupts marks a live thread done

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, which raises it
            outcome["error"] = e
        finally:
            done.set()

    threading.Thread(target=target, name="edgemine-query", daemon=True).start()
    try:
        finished = done.wait(timeout_s or None)
    except KeyboardInterrupt:
        _stop(con, done)
        raise
    if not finished:
        _stop(con, done)
        raise QueryLimitError(
            f"the query ran past the time limit of {timeout_s:g} s and was stopped; narrow it (a WHERE, a LIMIT, "
            "fewer joins), or raise [query] timeout_s in the config (0: no limit)"
        )
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _stop(con: duckdb.DuckDBPyConnection, done: threading.Event) -> None:
    """Interrupt until the work is done: an interrupt sent between two of its statements is lost."""
    while True:
        con.interrupt()
        if done.wait(_STOP_WAIT_S):
            return


class _SpillRoot:
    """This process's spill folder, made on first use, locked while the process lives."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.fd: int | None = None
        self.lock = threading.Lock()

    def folder(self) -> str:
        """A new subfolder for one database."""
        with self.lock:
            if self.path is None:
                remove_abandoned()
                path = Path(tempfile.mkdtemp(prefix=SPILL_PREFIX))
                fd = os.open(path / _LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.path, self.fd = path, fd
            return tempfile.mkdtemp(prefix="db-", dir=self.path)

    def remove(self) -> None:
        with self.lock:
            if self.path is not None:
                shutil.rmtree(self.path, ignore_errors=True)
                self.forget()

    def forget(self) -> None:
        """After a fork, in the child: the folder and its lock are the parent's."""
        if self.fd is not None:
            os.close(self.fd)  # the parent's lock stays: it holds the same lock through its own descriptor
        self.path, self.fd = None, None


_ROOT = _SpillRoot()
atexit.register(_ROOT.remove)


def spill_folder() -> str:
    """A new spill folder for one database, inside this process's."""
    return _ROOT.folder()


def _forget_after_fork() -> None:
    _ROOT.lock = threading.Lock()  # another thread may have held it at the fork
    _ROOT.forget()


os.register_at_fork(after_in_child=_forget_after_fork)


def remove_abandoned(parent: str | None = None) -> list[str]:
    """Remove the spill folders whose process is gone (their lock is free); returns them."""
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(SPILL_PREFIX + "*"):
        try:
            if path.is_dir() and not path.is_symlink() and _abandoned(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(str(path))
        except OSError as e:  # another user's folder, or one removed meanwhile
            log.debug("spill folder %s left: %s", path, e)
    if removed:
        log.debug("removed %d spill folder(s) of killed runs: %s", len(removed), ", ".join(removed))
    return removed


def _abandoned(path: Path) -> bool:
    lock = path / _LOCK_FILE
    if not lock.exists():
        return False  # an older edgemine's, or one being made: no way to tell whether its process lives
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its process lives
    finally:
        os.close(fd)
    return True

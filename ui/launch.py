"""`edgemine ui`: run the Streamlit app on a lake.

The app reads its configuration like every command (mining.core.config.load_config),
so the lake and config file travel as $EDGEMINE_LAKE and $EDGEMINE_CONFIG.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from mining.core.config import Config

log = logging.getLogger(__name__)
APP = Path(__file__).with_name("app.py")


def ui_command(port: int, address: str) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port), "--server.address", address,
            "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def ui_environment(config: Config, config_path: str | None) -> dict[str, str]:
    env = {**os.environ, "EDGEMINE_LAKE": config.lake}
    if config_path:
        env["EDGEMINE_CONFIG"] = str(Path(config_path).resolve())
    return env


STOP_GRACE_S = 10  # how long the server has to stop on SIGTERM before it is killed


class _Stopped(Exception):
    """SIGTERM, SIGHUP or SIGINT reached `edgemine ui`."""


def run_ui(config: Config, config_path: str | None, *, port: int, address: str) -> int:
    """Serve the UI until interrupted; returns Streamlit's exit code (0 when stopped).

    Streamlit runs as a child process. Ctrl-C, SIGTERM and SIGHUP sent to `edgemine ui` stop
    it too (a service manager stops the one process it started): otherwise the server would
    go on serving, its port taken, after its parent is gone."""
    host = "localhost" if address in ("0.0.0.0", "::") else address
    log.info("edgemine UI on lake %s: open http://%s:%d (Ctrl-C stops it)", config.lake, host, port)
    server = subprocess.Popen(ui_command(port, address), env=ui_environment(config, config_path))
    restore = _stop_signals_raise()
    try:
        return server.wait()
    except (KeyboardInterrupt, _Stopped):
        stop_server(server)
        return 0
    finally:
        restore()


def stop_server(server: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM (Streamlit closes its sessions and port), then SIGKILL after ``grace_s``."""
    server.terminate()
    try:
        server.wait(grace_s)
    except subprocess.TimeoutExpired:
        log.warning("the UI server did not stop within %s s of SIGTERM: killed", grace_s)
        server.kill()
        server.wait()


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signal.Signals(signum).name)


def _stop_signals_raise() -> Callable[[], None]:
    """From here on SIGTERM, SIGHUP and SIGINT raise _Stopped (in the main thread, where Python runs
    signal handlers); returns what puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    # SIGINT too: a process started in the background inherits SIGINT ignored, and Python then
    # never raises KeyboardInterrupt; a server asked to stop should stop however it was started.
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore

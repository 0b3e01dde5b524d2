"""`edgemine ui`: run the Streamlit app on a lake.

The app reads its configuration like every command (mining.core.config.load_config),
so the lake and config file travel as $EDGEMINE_LAKE and $EDGEMINE_CONFIG.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from mining.core import accounts
from mining.core.config import Config
from mining.core.errors import ConfigError

log = logging.getLogger(__name__)
APP = Path(__file__).with_name("app.py")


def ui_command(port: int, address: str, hosts: list[str] | None = None) -> list[str]:
    """Streamlit's command line: CORS and XSRF protection on (a WebSocket from a foreign Origin
    is refused), the toolbar without Streamlit's developer tools (Deploy, Rerun, Clear cache)
    and, given ``hosts``, only those Host names answered (DNS rebinding)."""
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
               "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.enableCORS", "true", "--server.enableXsrfProtection", "true",
               "--client.toolbarMode", "viewer"]
    for host in hosts or ():
        command += ["--server.allowedHosts", host]
    return command


def allowed_hosts(config: Config, address: str) -> list[str]:
    """The Host names the server answers: localhost, the address it listens on (for 0.0.0.0:
    this machine's names and addresses) and the config's [ui] allowed_hosts."""
    hosts = ["localhost", "127.0.0.1", "::1"]
    if address in ("0.0.0.0", "::"):
        hosts += _machine_names()
    else:
        hosts.append(address)
    return list(dict.fromkeys([*hosts, *config.ui.allowed_hosts]))


def _machine_names() -> list[str]:
    name = socket.gethostname()
    try:
        addresses = socket.gethostbyname_ex(name)[2]
    except OSError:  # a name the resolver does not know: reach it by the names given in [ui] allowed_hosts
        addresses = []
    return [name, socket.getfqdn(name), *addresses]


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: reachable from wherever it resolves
        return False


def check_exposure(config: Config, address: str, *, insecure_no_login: bool) -> None:
    """Refuse to serve beyond this machine with nobody logging in (docs/SECURITY.md)."""
    if is_loopback(address) or insecure_no_login or accounts.login_mode(config.auth) != "local":
        return
    raise ConfigError(
        f"edgemine ui on {address} without a login would let anyone who reaches it act on the lake; configure one "
        f"(`edgemine user add NAME --role admin --accounts FILE`, then [auth] accounts = FILE in the config; or "
        f"[auth] proxy_header / oidc: docs/SECURITY.md), listen on localhost, or pass --insecure-no-login to "
        f"accept the risk")


def ui_environment(config: Config, config_path: str | None) -> dict[str, str]:
    env = {**os.environ, "EDGEMINE_LAKE": config.lake}
    if config_path:
        env["EDGEMINE_CONFIG"] = str(Path(config_path).resolve())
    return env


STOP_GRACE_S = 10  # how long the server has to stop on SIGTERM before it is killed


class _Stopped(Exception):
    """SIGTERM, SIGHUP or SIGINT reached `edgemine ui`."""


def run_ui(config: Config, config_path: str | None, *, port: int, address: str,
           insecure_no_login: bool = False) -> int:
    """Serve the UI until interrupted; returns Streamlit's exit code (0 when stopped).

    Streamlit runs as a child process. Ctrl-C, SIGTERM and SIGHUP sent to `edgemine ui` stop
    it too (a service manager stops the one process it started): otherwise the server would
    go on serving, its port taken, after its parent is gone."""
    check_exposure(config, address, insecure_no_login=insecure_no_login)
    host = "localhost" if address in ("0.0.0.0", "::") else address
    log.info("edgemine UI on lake %s: open http://%s:%d (Ctrl-C stops it)", config.lake, host, port)
    server = subprocess.Popen(ui_command(port, address, allowed_hosts(config, address)),
                              env=ui_environment(config, config_path))
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

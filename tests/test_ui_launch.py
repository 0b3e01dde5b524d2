"""`edgemine ui` as a process: a signal to it (what a service manager or `kill` sends) stops
the Streamlit server it started, and the port is free again."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.read().decode().strip() == "ok"
    except OSError:
        return False


@contextlib.contextmanager
def serving(tmp_path, *flags: str):
    """`edgemine ui` on an empty lake until the block ends; yields its port."""
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:  # a session of its own: the signal goes to the edgemine process only
        ui = subprocess.Popen([sys.executable, "-m", "jobs.cli", "ui", "--lake", str(tmp_path / "lake"),
                               "--port", str(port), *flags], stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not healthy(port):
            assert ui.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no health answer in 120 s:\n{log.read_text()}"
            time.sleep(0.3)
        yield ui, port, log
    finally:
        try:
            os.killpg(ui.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_websocket_from_a_foreign_origin_or_host_is_refused(tmp_path):
    """What a page on another site (cross-site WebSocket) or a DNS-rebound name would open."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with serving(tmp_path) as (_, port, _log):
        def opens(host: str, origin: str) -> bool:
            """A WebSocket to the server sent as if to ``host`` (its Host header), from ``origin``."""
            try:
                with connect(f"ws://{host}/_stcore/stream", sock=socket.create_connection(("127.0.0.1", port)),
                             origin=origin, open_timeout=20):
                    return True
            except InvalidStatus as e:
                assert e.response.status_code in (400, 403), e.response.status_code
                return False

        assert opens(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")
        assert opens(f"localhost:{port}", f"http://localhost:{port}")
        assert not opens(f"127.0.0.1:{port}", "http://evil.example")
        assert not opens(f"evil.example:{port}", f"http://evil.example:{port}")  # DNS rebinding


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_edgemine_ui_stops_its_server_and_frees_the_port(sig, tmp_path):
    with serving(tmp_path) as (ui, port, log):
        os.kill(ui.pid, sig)
        assert ui.wait(timeout=60) == 0, log.read_text()  # stop_server gives Streamlit 10 s, then kills
        assert not healthy(port)
        with socket.socket() as s:  # nothing listens on the port any more (a new server may take it)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is not a listener
            s.bind(("127.0.0.1", port))
            s.listen()
        assert "Traceback" not in log.read_text()

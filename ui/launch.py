"""`edgemine ui`: run the Streamlit app on a lake.

The app reads its configuration like every command (mining.core.config.load_config),
so the lake and config file travel as $EDGEMINE_LAKE and $EDGEMINE_CONFIG.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
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


def run_ui(config: Config, config_path: str | None, *, port: int, address: str) -> int:
    """Serve the UI until interrupted; returns Streamlit's exit code."""
    host = "localhost" if address in ("0.0.0.0", "::") else address
    log.info("edgemine UI on lake %s: open http://%s:%d (Ctrl-C stops it)", config.lake, host, port)
    try:
        return subprocess.call(ui_command(port, address), env=ui_environment(config, config_path))
    except KeyboardInterrupt:
        return 0

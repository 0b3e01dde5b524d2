"""The machine line every benchmark report starts with (BENCHMARKS.md quotes it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe(versions: dict[str, str], gpu: str | None = None) -> str:
    """'2 cores (CPU model), 24 GiB RAM, Python 3.11.7; duckdb 1.5.5, ...[, GPU name]'.

    ``versions``: package name -> version of what the benchmark measures;
    ``gpu``: the device name when it ran on one."""
    cpu, memory = platform.processor() or platform.machine(), "? GiB"
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (OSError, ValueError):
        pass
    text = f"{os.cpu_count()} cores ({cpu}), {memory} RAM, Python {platform.python_version()}"
    if versions:
        text += "; " + ", ".join(f"{name} {version}" for name, version in versions.items())
    return text + (f", GPU {gpu}" if gpu else "")

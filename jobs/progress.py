"""Progress for long work: done/total, rate and ETA on stderr, at most every
``interval`` seconds, so a job's stdout stays clean for --json."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self,
        what: str,
        total: int | None = None,
        unit: str = "items",
        *,
        stream: TextIO | None = None,
        interval: float = 2.0,
        enabled: bool = True,
    ):
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream or sys.stderr
        self.interval, self.enabled = interval, enabled
        self.done = 0
        self.started = time.monotonic()
        self._last_report = self.started

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last_report >= self.interval:
            self._last_report = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        text = f"{self.what}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f} {self.unit}/s"
        if self.total and rate > 0:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        return text

    def close(self) -> None:
        if self.enabled and self.done:
            elapsed = time.monotonic() - self.started
            self.stream.write(
                f"{self.what}: {self.done:,} {self.unit} in {_duration(elapsed)} ({self.rate():,.0f}/s)\n"
            )
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"

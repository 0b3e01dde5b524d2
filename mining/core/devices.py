"""Where work runs: the one device policy, below both ``embed`` (the model) and
``mining.search.backends`` (kNN and k-means).

- ``cpu``: the CPU.
- ``cuda`` / ``cuda:N``: that GPU; an error (never a quiet switch to the CPU) when
  torch sees none.
- ``auto``: the first GPU when torch sees one, else the CPU, said in the log.

A machine without the CUDA driver library answers ``auto`` without importing
torch (a second of start-up that a search by image id does not need).
"""

from __future__ import annotations

import ctypes
import logging
import sys

from mining.core.errors import DeviceError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(spec: str = "auto") -> str:
    """The device ``spec`` names, as torch spells it: ``cpu``, ``cuda`` or ``cuda:N``.

    Raises DeviceError for an unknown spec or a GPU that is not there."""
    if spec == "auto":
        device = "cuda" if cuda_device_count() else "cpu"
        log.info("device: %s (auto)", device)
        return device
    if spec == "cpu":
        return "cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.removeprefix("cuda").removeprefix(":")
        if index and not index.isdigit():
            raise DeviceError(f"unknown device {spec!r}; allowed: {', '.join(DEVICES)}")
        count = cuda_device_count()
        if not count:
            raise DeviceError(f"device {spec!r} was asked for but torch sees no CUDA GPU; use --device cpu or auto")
        if index and int(index) >= count:
            raise DeviceError(f"device {spec!r}: only {count} CUDA device(s) here")
        return spec
    raise DeviceError(f"unknown device {spec!r}; allowed: {', '.join(DEVICES)}")


def cuda_device_count() -> int:
    """GPUs torch can use; 0 without importing torch where no CUDA driver is installed."""
    if "torch" not in sys.modules and not _has_cuda_driver():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _has_cuda_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True

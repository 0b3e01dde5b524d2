"""The one device policy (mining.core.devices), below the model and the kNN backends."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mining.core import devices
from mining.core.devices import resolve_device
from mining.core.errors import DeviceError


def test_cpu_and_auto_without_a_gpu(monkeypatch):
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 0)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError, match="no CUDA GPU; use --device cpu or auto"):
        resolve_device("cuda")


def test_gpus_by_number(monkeypatch):
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 2)
    assert (resolve_device("auto"), resolve_device("cuda"), resolve_device("cuda:1")) == ("cuda", "cuda", "cuda:1")
    with pytest.raises(DeviceError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["tpu", "gpu", "CPU", "", "cuda:x"])
def test_unknown_devices_list_the_allowed_ones(spec):
    with pytest.raises(DeviceError, match="allowed: auto, cpu, cuda, cuda:N"):
        resolve_device(spec)


def test_the_real_machine_agrees_with_torch():
    import torch

    expected = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert devices.cuda_device_count() == expected
    assert resolve_device("auto") == ("cuda" if expected else "cpu")


@pytest.mark.skipif(devices._has_cuda_driver(), reason="this machine has a CUDA driver: auto must ask torch")
def test_auto_without_a_cuda_driver_does_not_import_torch():
    code = (
        "import sys; from mining.core.devices import resolve_device; "
        "print(resolve_device('auto'), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == ["cpu", "False"]

"""The one resolver of a device choice (``--device`` of every command that runs a model, and the
``device`` of the Python API): ``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda``,
``cuda:N`` and ``mps`` (Apple GPUs, when this torch build has the backend).

Checked before any work, so that a run asked for ``cuda`` on a machine without one fails at once with
the fix, not after the data were loaded.
"""
from __future__ import annotations

import re

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N | mps"
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


class DeviceError(ValueError):
    """A device choice that is not a device name, or names hardware this machine does not have."""


def check_device_name(choice: str) -> str:
    """``choice`` normalised (lower case, no spaces) when it has the form of a device, without looking at
    the hardware (for jobs that run elsewhere, e.g. on Slurm nodes); a DeviceError otherwise."""
    name = str(choice).strip().lower()
    if name in ("auto", "cpu", "cuda", "mps") or _CUDA_INDEX.match(name):
        return name
    raise DeviceError(f"--device {choice!r}: expected {DEVICE_CHOICES} (auto: CUDA when present, else the CPU)")


def resolve_device(choice: str = "auto") -> str:
    """The torch device string to run on: ``auto`` becomes ``cuda`` or ``cpu``; an explicit choice is
    checked against this machine (CUDA present, the index in range, MPS available)."""
    name = check_device_name(choice)
    if name == "cpu":
        return "cpu"  # no torch import needed to run on the CPU
    import torch

    cuda = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if cuda else "cpu"
    if name.startswith("cuda"):
        if not cuda:
            raise DeviceError(f"--device {choice}: torch sees no CUDA device on this machine (torch {torch.__version__}, "
                              f"CUDA build {torch.version.cuda or 'none'}); use --device cpu or --device auto")
        match = _CUDA_INDEX.match(name)
        count = torch.cuda.device_count()
        if match and int(match.group(1)) >= count:
            raise DeviceError(f"--device {choice}: this machine has {count} CUDA device(s), numbered 0 to {count - 1}; "
                              f"pick one of those, or --device cuda for the first")
        return name
    # mps
    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_available():
        raise DeviceError(f"--device mps: this torch build (torch {torch.__version__}) has no usable MPS backend "
                          "(Apple GPUs only); use --device cpu or --device auto")
    return "mps"

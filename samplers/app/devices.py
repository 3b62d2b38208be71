"""Which device and precision to run on: the one place the lab picks them."""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

import psutil
import torch

from .tuning import cpu_bf16_is_faster

Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["no", "fp16", "bf16"]  # what "auto" resolves to (resolve_mixed_precision)
DEVICES: tuple[Device, ...] = get_args(Device)
PRECISIONS: tuple[str, ...] = ("auto", *get_args(Precision))


class DeviceUnavailable(ValueError):
    """A device name that is not a device, or an accelerator this machine does not have."""


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """ "auto" (or None): CUDA, else MPS, else the CPU; any other name as given. DeviceUnavailable
    when the name is not a device or the named accelerator is not available here."""
    name = "auto" if name is None else str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceUnavailable(
            f"device {name!r} is not a device name; use one of {', '.join(DEVICES)}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {name!r}: no CUDA device is available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(f"device {name!r}: no MPS device is available here")
    return device


def check_memory(nbytes: int, what: str) -> None:
    """ValueError, before anything of that size is allocated, when `what` needs `nbytes` (an
    estimate) of memory and more than that is not free now."""
    free = psutil.virtual_memory().available
    if nbytes > free:
        raise ValueError(
            f"{what} needs about {_size(nbytes)} of memory; {_size(free)} is free here"
        )


def _size(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


AUTO_PRECISION_HELP = (
    "bf16 on CUDA where supported, else fp16; bf16 on a CPU where it beats fp32 "
    "(AMX, or AMD's AVX-512 bf16); else fp32"
)


def resolve_mixed_precision(requested: str, device: torch.device) -> str:
    """`requested`, with "auto" resolved to the fastest precision `device` runs natively.

    CUDA: bf16 where supported, else fp16. CPU: bf16 where it beats fp32 (cpu_bf16_is_faster),
    else "no" (fp32). Other devices: "no".
    """
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_bf16_is_faster():
        return "bf16"
    return "no"


def autocast(device: torch.device, precision: str):
    """torch.autocast for a resolved precision ("no": a no-op context)."""
    if precision == "no":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)

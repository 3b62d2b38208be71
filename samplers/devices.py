"""Which device and precision to run on: the one place the lab picks them."""
from __future__ import annotations

import contextlib

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "no", "fp16", "bf16")


class DeviceUnavailable(ValueError):
    """A device name that is not a device, or an accelerator this machine does not have."""


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """"auto" (or None): CUDA, else MPS, else the CPU; any other name as given. DeviceUnavailable
    when the name is not a device or the named accelerator is not available here."""
    name = "auto" if name is None else str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceUnavailable(f"device {name!r} is not a device name; use one of "
                                f"{', '.join(DEVICES)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {name!r}: no CUDA device is available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(f"device {name!r}: no MPS device is available here")
    return device


def cpu_vendor() -> str:
    """The CPU's vendor string ("GenuineIntel", "AuthenticAMD", ...; "" where unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_bf16_is_faster() -> bool:
    """Whether bf16 convolutions beat fp32 on this CPU (`make bench` measured both kinds).

    AMX tiles (Intel Sapphire Rapids and later): yes. AVX-512 bf16 without AMX: on AMD Zen 4 yes
    (bf16 GEMM 2.0x fp32, whose AVX-512 runs at half width), on Intel no (an Emerald Rapids Xeon
    whose hypervisor hides AMX: bf16 GEMM 0.59x fp32, training step 0.65x). No native bf16
    kernels (AVX2 only): no, bf16 takes a scalar path far slower than fp32.
    """
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    if torch.cpu._is_amx_tile_supported():
        return True
    return torch.cpu._is_avx512_bf16_supported() and cpu_vendor() == "AuthenticAMD"


AUTO_PRECISION_HELP = ("bf16 on CUDA where supported, else fp16; bf16 on a CPU where it beats fp32 "
                       "(AMX, or AMD's AVX-512 bf16); else fp32")


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


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve blocks of up to 32 MiB (its cap) from its heap and keep up to
    1 GiB of freed memory for reuse, instead of mapping fresh pages for every large tensor and
    handing them back on free; returns whether it applied (glibc only).

    PyTorch's CPU tensors come straight from malloc, so by default each op's activations of
    tens of MB cost page faults that zero them again: 40% of a sampling run went to the kernel
    (docs/performance.md). Call once at a program's start (the CLIs and the dashboard do); it is
    a process-wide setting and leaves the process's peak memory mapped.
    """
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))

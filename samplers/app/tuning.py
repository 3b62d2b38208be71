"""Platform tweaks, each with what it buys (docs/performance.md has the measurements).

- `cpu_bf16_is_faster`: whether `--mixed-precision auto` trains and samples in bf16 on this CPU
  (yes with AMX or on a Zen 4; no on an Intel CPU without AMX, whose bf16 is slower than fp32).
- `keep_freed_memory`: glibc keeps freed activations for reuse instead of returning and zeroing
  pages (40% of a CPU sampling run was page faults before it). Called once by each program.
"""

from __future__ import annotations

import torch


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

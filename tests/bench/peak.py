"""The machine's matmul peak and a step's FLOP count."""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .timing import Timing, interleaved


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs on fast kernels here: CUDA with bf16 support, or a CPU whose oneDNN has
    bf16 kernels (avx512_bf16 / AMX). Elsewhere PyTorch falls back to `_slow_conv2d_forward` and a
    scalar bf16 GEMM, tens of times slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def matmul_peak(device: torch.device, n: int = 1024, repeats: int = 5) -> dict[str, Timing | float]:
    """Median GFLOP/s of an n x n matmul in fp32 and bf16 (interleaved), as {"fp32": .., "bf16": ..}.

    bf16 uses a smaller matrix when it has no native kernels (it would take minutes otherwise);
    GFLOP/s stays comparable.
    """
    sizes = {torch.float32: n, torch.bfloat16: n if native_bf16(device) else max(n // 4, 64)}
    mats = {dt: torch.randn(s, s, device=device).to(dt) for dt, s in sizes.items()}

    def work(dt: torch.dtype) -> Callable[[], None]:
        def run() -> None:
            (mats[dt] @ mats[dt]).sum().item()  # .item() syncs a GPU
        return run

    t = interleaved({str(dt): work(dt) for dt in mats}, repeats=repeats)
    return {name: 2 * sizes[dt] ** 3 / t[str(dt)].median / 1e9
            for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (matmul/conv counted by torch.utils.flop_counter) of one call of `fn`."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


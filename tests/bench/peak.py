"""The machine's GEMM peak and a step's FLOP count."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .timing import interleaved


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs on fast kernels here: CUDA with bf16 support, or a CPU whose oneDNN has
    bf16 kernels (avx512_bf16 / AMX). Elsewhere PyTorch falls back to `_slow_conv2d_forward` and a
    scalar bf16 GEMM, tens of times slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


GEMM_PATHS = ("matmul", "1x1 conv")


def gemm_peak(device: torch.device, n: int = 1024, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Median GFLOP/s of an n x n x n GEMM in fp32 and bf16 (interleaved), taken two ways:
    `torch.matmul`, and a 1x1 convolution over n pixels, the library path the UNet's convolutions
    take (oneDNN on a CPU, where fp32 `matmul` may go through another BLAS; cuDNN on CUDA).
    Returns {"matmul": {"fp32": .., "bf16": ..}, "1x1 conv": {...}}.

    bf16 uses a smaller size when it has no native kernels (it would take minutes otherwise);
    GFLOP/s stays comparable.
    """
    sizes = {torch.float32: n, torch.bfloat16: n if native_bf16(device) else max(n // 4, 64)}
    mats = {dt: torch.randn(s, s, device=device).to(dt) for dt, s in sizes.items()}
    # the same GEMM as a convolution: n pixels (1 x n) of n channels through n 1x1 filters
    images = {
        dt: m.T.reshape(1, len(m), 1, len(m)).contiguous(memory_format=torch.channels_last)
        for dt, m in mats.items()
    }
    filters = {
        dt: m[:, :, None, None].contiguous(memory_format=torch.channels_last)
        for dt, m in mats.items()
    }
    calls = {
        "matmul": lambda dt: mats[dt] @ mats[dt],
        "1x1 conv": lambda dt: torch.nn.functional.conv2d(images[dt], filters[dt]),
    }

    def work(path: str, dt: torch.dtype) -> Callable[[], None]:
        def run() -> None:
            calls[path](dt).sum().item()  # .item() syncs a GPU

        return run

    dtypes = (("fp32", torch.float32), ("bf16", torch.bfloat16))
    t = interleaved(
        {f"{path} {name}": work(path, dt) for path in GEMM_PATHS for name, dt in dtypes},
        repeats=repeats,
    )
    return {
        path: {name: 2 * sizes[dt] ** 3 / t[f"{path} {name}"].median / 1e9 for name, dt in dtypes}
        for path in GEMM_PATHS
    }


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (matmul/conv counted by torch.utils.flop_counter) of one call of `fn`."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()

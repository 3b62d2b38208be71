"""The fast-path settings the benchmark compares, applied to a model and around a call."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from training.models import fold_batchnorm


@dataclass(frozen=True)
class FastPath:
    """One combination of speed settings; the default is plain fp32 eager."""

    channels_last: bool = False
    compile: bool = False
    bf16: bool = False  # autocast to bfloat16
    threads: int | None = None  # torch.set_num_threads during the call (None: leave as is)
    inference_mode: bool = False  # sampling only: torch.inference_mode instead of no_grad
    fused_adam: bool = False  # training only: Adam(fused=True), one kernel for all parameters
    fold_bn: bool = False  # sampling only: BatchNorm folded into the convolutions
    cuda_graph: bool = False  # CUDA, bare training step only: the step replayed as one graph

    @property
    def label(self) -> str:
        parts = [
            name
            for name, on in (
                ("channels_last", self.channels_last),
                ("compile", self.compile),
                ("bf16", self.bf16),
                ("inference_mode", self.inference_mode),
                ("fused Adam", self.fused_adam),
                ("folded BN", self.fold_bn),
                ("CUDA graph", self.cuda_graph),
            )
            if on
        ]
        if self.threads is not None:
            parts.append(f"{self.threads} thread{'s' if self.threads > 1 else ''}")
        return " + ".join(parts) or "fp32 eager"


def prepare(model: nn.Module, fp: FastPath, *, dynamic: bool = False) -> nn.Module:
    """The model with BatchNorm folded (an eval copy), moved to channels_last and/or wrapped in
    torch.compile (same parameters otherwise)."""
    if fp.fold_bn:
        model = fold_batchnorm(model)
    if fp.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if fp.compile:
        model = torch.compile(model, dynamic=dynamic)
    return model


def as_input(x: torch.Tensor, fp: FastPath) -> torch.Tensor:
    """An input batch in the memory format the settings use."""
    return x.contiguous(memory_format=torch.channels_last) if fp.channels_last else x


@contextlib.contextmanager
def applied(fp: FastPath, device: torch.device, *, grad: bool = True) -> Iterator[None]:
    """Thread count, autocast and (for `grad=False`) no_grad / inference_mode around a call."""
    before = torch.get_num_threads()
    if fp.threads is not None:
        torch.set_num_threads(fp.threads)
    try:
        with contextlib.ExitStack() as stack:
            if not grad:
                stack.enter_context(
                    torch.inference_mode() if fp.inference_mode else torch.no_grad()
                )
            if fp.bf16:  # a captured graph must not reuse autocast's cached weight casts
                stack.enter_context(
                    torch.autocast(
                        device.type, dtype=torch.bfloat16, cache_enabled=not fp.cuda_graph
                    )
                )
            yield
    finally:
        torch.set_num_threads(before)

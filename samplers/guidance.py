"""Classifier-free guidance as one batched model call, and splitting noise from variance values."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# model(x, t, cond) -> noise (B, C, H, W), noise + variance (B, 2C, H, W) or velocity
ConditionalModel = Callable[[Tensor, "int | Tensor", "Tensor | None"], Tensor]


def expand_batch(c: Tensor | None, batch: int) -> Tensor | None:
    """Conditioning with batch 1 or `batch` -> batch `batch` (None stays None)."""
    if c is None or c.shape[0] == batch:
        return c
    if c.shape[0] != 1:
        raise ValueError(f"conditioning has batch {c.shape[0]}; expected 1 or {batch}")
    return c.expand(batch, *c.shape[1:])


def guided_output(
    model: ConditionalModel,
    x: Tensor,
    t: int | Tensor,
    cond: Tensor | None = None,
    uncond: Tensor | None = None,
    guidance_scale: float = 1.0,
) -> Tensor:
    """Model output at x (B, C, H, W), guided: (B, C, H, W) noise or (B, 2C, H, W) noise + variance.

    With `uncond` and guidance_scale != 1, conditional and unconditional run as ONE call on
    cat([x, x]), cat([cond, uncond]) (t duplicated if a (B,) tensor); the noise channels become
    u + s (c - u) and the variance channels stay conditional (as diffusers' IF pipeline does).
    """
    b, c = x.shape[:2]
    cond = expand_batch(cond, b)
    if uncond is None or guidance_scale == 1.0:
        out = model(x, t, cond)
    else:
        if cond is None:
            raise ValueError("classifier-free guidance needs `cond` as well as `uncond`")
        uncond = expand_batch(uncond, b)
        assert uncond is not None
        tt = torch.cat([t, t]) if isinstance(t, Tensor) and t.ndim > 0 else t
        out_c, out_u = model(torch.cat([x, x]), tt, torch.cat([cond, uncond])).chunk(2)
        eps = out_u[:, :c] + guidance_scale * (out_c[:, :c] - out_u[:, :c])
        out = torch.cat([eps, out_c[:, c:]], dim=1)
    return check_output(out, x, (c, 2 * c))


def check_output(out: Tensor, x: Tensor, channels: Sequence[int]) -> Tensor:
    """`out` itself when it is (B, C', H, W) for x (B, C, H, W) and C' in `channels`, else
    ValueError naming both shapes."""
    if out.shape[0] != x.shape[0] or out.shape[1] not in channels or out.shape[2:] != x.shape[2:]:
        want = " or ".join(map(str, channels))
        raise ValueError(
            f"model returned shape {tuple(out.shape)} for input {tuple(x.shape)}; "
            f"expected ({x.shape[0]}, {want}, {', '.join(map(str, x.shape[2:]))})"
        )
    return out


def split_output(out: Tensor, channels: int) -> tuple[Tensor, Tensor | None]:
    """(B, C|2C, H, W) model output -> (noise, variance values or None)."""
    return (out, None) if out.shape[1] == channels else (out[:, :channels], out[:, channels:])

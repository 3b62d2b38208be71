"""The DeepFloyd IF path on a tiny offline pipeline: batched vs unbatched CFG, T5 vs cache.

The UNet and T5 encoder are tiny random models with IF stage 1's interfaces (a 6-channel output:
noise + learned-range variance; T5 encoder states as cross-attention context), so the figures show
the sampler-side costs (batching, overhead), not IF's real speed.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import samplers

from .report import Row
from .timing import interleaved

SECTION = "DeepFloyd path, tiny offline IF (s; ratio vs unbatched / vs T5)"
GUIDANCE = 7.0


@dataclass(frozen=True)
class IFSizes:
    image: int = 32        # IF stage 1 is 64
    batch: int = 4
    steps: int = 3         # sampler steps per timed unit
    repeats: int = 5
    warmup: int = 1
    tokens: int = 77


class TinyIF(nn.Module):
    """`model(x, t, cond)` over a tiny diffusers UNet2DConditionModel with out_channels=6."""

    def __init__(self, image: int):
        super().__init__()
        from diffusers import UNet2DConditionModel

        torch.manual_seed(0)
        self.unet = UNet2DConditionModel(
            sample_size=image, in_channels=3, out_channels=6, layers_per_block=1,
            block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
            attention_head_dim=8, norm_num_groups=8).eval()

    def forward(self, x: Tensor, t: int | Tensor, cond: Tensor) -> Tensor:
        return self.unet(x, t, encoder_hidden_states=cond).sample


def tiny_t5():
    """A tiny random T5 encoder (d_model 32) in eval mode."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=1000, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    return T5EncoderModel(cfg).eval()


def _cache_class():
    """The lab's prompt-embedding cache, when samplers.backends.deepfloyd provides one."""
    try:
        module = importlib.import_module("samplers.backends.deepfloyd")
    except ImportError:
        return None
    return getattr(module, "EmbeddingCache", None)


@torch.no_grad()
def unbatched_cfg(model: nn.Module, x: Tensor, timesteps, ab: Tensor, cond: Tensor, uncond: Tensor) -> Tensor:
    """Two model calls a step (conditional, unconditional), noise guided, variance conditional."""
    for t, t_prev in zip(timesteps[:-1], timesteps[1:]):
        out_c, out_u = model(x, t, cond), model(x, t, uncond)
        eps = out_u[:, :3] + GUIDANCE * (out_c[:, :3] - out_u[:, :3])
        x = samplers.ddpm_step(x, eps, t, t_prev, ab, out_c[:, 3:])
    return x


def deepfloyd_rows(sizes: IFSizes) -> list[Row]:
    """Per-step time batched vs unbatched CFG; T5 encoding vs a cache hit (when the cache exists)."""
    model, ab = TinyIF(sizes.image), samplers.linear_alphas_cumprod(1000, 1e-4, 0.02)
    ts = samplers.strided_timesteps()[: sizes.steps + 1]
    x = torch.randn(sizes.batch, 3, sizes.image, sizes.image)
    t5 = tiny_t5()
    ids = torch.randint(0, 1000, (1, sizes.tokens))
    with torch.no_grad():
        cond = t5(input_ids=ids).last_hidden_state.expand(sizes.batch, -1, -1)
    uncond = torch.zeros_like(cond)

    def batched() -> None:
        samplers.iterative_denoise(model, x, ts, ab, cond=cond, uncond=uncond, guidance_scale=GUIDANCE)

    def unbatched() -> None:
        unbatched_cfg(model, x, ts, ab, cond, uncond)

    @torch.no_grad()
    def encode() -> None:
        t5(input_ids=ids)

    works = {"unbatched": unbatched, "batched": batched, "t5": encode}
    t = interleaved(works, repeats=sizes.repeats, warmup=sizes.warmup)
    per = {k: t[k].median / sizes.steps for k in ("unbatched", "batched")}
    shape = f"batch {sizes.batch}, {sizes.image}x{sizes.image}"
    rows = [Row(SECTION, f"IF step, unbatched CFG (2 calls), {shape}", per["unbatched"], "s/step", 1.0),
            Row(SECTION, f"IF step, batched CFG (iterative_denoise), {shape}", per["batched"], "s/step",
                per["unbatched"] / per["batched"]),
            Row(SECTION, "prompt: tiny T5 encoding", t["t5"].median, "s", 1.0)]
    if _cache_class() is None:
        rows.append(Row(SECTION, "prompt: embedding-cache hit", None, "s", None,
                        "skipped: samplers.backends.deepfloyd has no EmbeddingCache yet"))
    return rows

"""The course's MNIST UNet family (docs/course.md 3.2-3.4) and one improved UNet.

Both models share one signature: ``model(x, t=None, c=None)`` with
  x: (B, 1, 28, 28) image (any value range the objective uses),
  t: (B,), (B, 1) or scalar float in [0, 1] (DDPM passes (i + 1) / T),
  c: (B, num_classes) float one-hot; an all-zero row is the null class (None = all null).
and return a (B, 1, 28, 28) tensor (denoised image, noise or velocity, per objective).

Under autocast (bf16 / fp16) the time and class embeddings run in full precision: bf16's 8-bit
mantissa cannot tell neighbouring DDPM timesteps apart above t = 0.5 (its spacing there is 1/256,
a step is 1/300), and the embeddings cost nothing next to the convolutions.

Conditioning modes:
  "none"      unconditional (single-step denoiser, pure-noise model);
  "time-add"  u0 += t1, u1 += t2   (course DDPM, time-only);
  "time-mul"  u0 *= t1, u1 *= t2   (course flow matching, time-only);
  "class"     u0 = c1*u0 + t1, u1 = c2*u1 + t2   (both class-conditioned versions).
"""

from __future__ import annotations

import copy
import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Conditioning = Literal["none", "time-add", "time-mul", "class"]
Arch = Literal["course", "improved"]
CONDITIONINGS: tuple[Conditioning, ...] = get_args(Conditioning)
ARCHS: tuple[Arch, ...] = get_args(Arch)
# a student's time FCBlocks take [t, s - t, (w - 1) / 6]: two columns after t (training.distill)
STUDENT_TIME_EXTRA = 2


# ---------------------------------------------------------------- course ops (docs/course.md 3.2)
def _is_nhwc(t: Tensor) -> bool:
    """Whether a 4-D tensor is laid out channels_last (dense (B, H, W, C)) and not also NCHW."""
    return (
        t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    )


class GELU(nn.GELU):
    """nn.GELU that runs a channels_last (B, C, H, W) map as its dense (B, H, W, C) view.

    PyTorch hands only contiguous CPU tensors to oneDNN's GELU; a channels_last map otherwise takes
    ATen's own kernel, half as fast in bf16 (docs/performance.md). Same function either way.
    """

    def forward(self, x: Tensor) -> Tensor:
        if _is_nhwc(x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


class PointExpand(nn.ConvTranspose2d):
    """ConvTranspose2d(cin, cout, k, stride k) on a 1x1 map, computed as one matrix product.

    (B, cin, 1, 1) -> (B, cout, k, k): each output pixel is a linear map of the input vector, so
    the layer is a Linear(cin, k * k * cout) over the same weight and bias. oneDNN's transposed
    convolution of this shape takes about ten times as long forward and backward (its weight
    gradient most; docs/performance.md). Other input sizes run as the transposed convolution.
    """

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__(cin, cout, k, k, 0)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (1, 1):
            return super().forward(x)
        (k, _), cout = self.kernel_size, self.out_channels
        w = self.weight  # (cin, cout, k, k)
        if _is_nhwc(w):
            y = F.linear(
                x.flatten(1), w.permute(0, 2, 3, 1).flatten(1).t(), self.bias.repeat(k * k)
            )
            return y.view(-1, k, k, cout).permute(0, 3, 1, 2)  # channels_last, like the weight
        y = F.linear(x.flatten(1), w.flatten(1).t(), self.bias.repeat_interleave(k * k))
        return y.view(-1, cout, k, k)


def _conv_bn_gelu(conv: nn.Module, channels: int, norm: bool = True) -> nn.Sequential:
    """conv + BatchNorm + GELU; `norm` False: an Identity in BatchNorm's place (the layout of a
    model whose BatchNorm is folded into its convolutions, fold_batchnorm)."""
    return nn.Sequential(conv, nn.BatchNorm2d(channels) if norm else nn.Identity(), GELU())


def Conv(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """Conv2d(k3, s1, p1) + BN + GELU; keeps H x W."""
    return _conv_bn_gelu(nn.Conv2d(cin, cout, 3, 1, 1), cout, norm)


def DownConv(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """Conv2d(k3, s2, p1) + BN + GELU; H -> H/2."""
    return _conv_bn_gelu(nn.Conv2d(cin, cout, 3, 2, 1), cout, norm)


def UpConv(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """ConvTranspose2d(k4, s2, p1) + BN + GELU; H -> 2H."""
    return _conv_bn_gelu(nn.ConvTranspose2d(cin, cout, 4, 2, 1), cout, norm)


def Flatten() -> nn.Sequential:
    """AvgPool2d(7) + GELU; 7x7 -> 1x1."""
    return nn.Sequential(nn.AvgPool2d(7), GELU())


def Unflatten(channels: int, norm: bool = True) -> nn.Sequential:
    """ConvTranspose2d(D, D, k7, s7, p0) + BN + GELU; 1x1 -> 7x7."""
    return _conv_bn_gelu(PointExpand(channels, channels, 7), channels, norm)


def ConvBlock(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """Conv(cin, cout) -> Conv(cout, cout)."""
    return nn.Sequential(Conv(cin, cout, norm), Conv(cout, cout, norm))


def DownBlock(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """DownConv(cin, cout) -> ConvBlock(cout, cout)."""
    return nn.Sequential(DownConv(cin, cout, norm), ConvBlock(cout, cout, norm))


def UpBlock(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """UpConv(cin, cout) -> ConvBlock(cout, cout)."""
    return nn.Sequential(UpConv(cin, cout, norm), ConvBlock(cout, cout, norm))


def FCBlock(fin: int, fout: int) -> nn.Sequential:
    """Linear(fin, fout) + GELU -> Linear(fout, fout)."""
    return nn.Sequential(nn.Linear(fin, fout), nn.GELU(), nn.Linear(fout, fout))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of `model` (in eval mode) with every Conv -> BatchNorm pair of the
    course ops folded into one convolution (torch's fuse_conv_bn_eval): the same function up to
    float rounding, one pass over the activations fewer a block."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for seq in folded.modules():
        if (
            isinstance(seq, nn.Sequential)
            and len(seq) >= 2
            and isinstance(seq[0], (nn.Conv2d, nn.ConvTranspose2d))
            and isinstance(seq[1], nn.BatchNorm2d)
        ):
            seq[0] = fuse_conv_bn_eval(
                seq[0], seq[1], transpose=isinstance(seq[0], nn.ConvTranspose2d)
            )
            seq[1] = nn.Identity()
    return folded


# ----------------------------------------------------------------------------- shared helpers
def _check_conditioning(conditioning: str) -> None:
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"unknown conditioning {conditioning!r}; expected one of {CONDITIONINGS}")


def _time_column(t: Tensor | float | None, x: Tensor) -> Tensor:
    """t as a (B, 1) float column on x's device; a scalar is broadcast over the batch."""
    if t is None:
        raise ValueError("this model is time-conditioned: pass t, a (B,) float in [0, 1]")
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    if t.numel() == 1:
        return t.reshape(1, 1).expand(x.shape[0], 1)
    if t.numel() != x.shape[0]:
        raise ValueError(f"t has {t.numel()} values for a batch of {x.shape[0]}")
    return t.reshape(-1, 1)


def _class_rows(c: Tensor | None, x: Tensor, num_classes: int) -> Tensor:
    """c as (B, num_classes) float on x's device; None means the null class (zeros)."""
    if c is None:
        return x.new_zeros(x.shape[0], num_classes)
    if c.shape != (x.shape[0], num_classes):
        raise ValueError(
            f"c must be one-hot of shape ({x.shape[0]}, {num_classes}), got {tuple(c.shape)}"
        )
    return c.to(device=x.device, dtype=x.dtype)


def _with_extra(column: Tensor, extra: Tensor | None, width: int, x: Tensor) -> Tensor:
    """[column, extra] (B, k + width) in x's dtype: the extra inputs of a widened FCBlock (None:
    zeros, under which a widened block computes what the narrow one did)."""
    if width == 0:
        if extra is not None:
            raise ValueError("this model takes no extra conditioning inputs")
        return column
    if extra is None:
        return torch.cat([column, column.new_zeros(column.shape[0], width)], 1)
    if extra.shape != (x.shape[0], width):
        raise ValueError(f"extra inputs must be ({x.shape[0]}, {width}), got {tuple(extra.shape)}")
    return torch.cat([column, extra.to(device=x.device, dtype=x.dtype)], 1)


def widen_fcblock(block: nn.Sequential, extra: int) -> nn.Sequential:
    """A copy of FCBlock `block` taking `extra` more inputs: the old columns of its first Linear
    copied, the new ones zero, so it computes what `block` did on the old inputs."""
    first = block[0]
    wide = FCBlock(first.in_features + extra, first.out_features).to(first.weight.device)
    with torch.no_grad():
        wide[0].weight.zero_()
        wide[0].weight[:, : first.in_features] = first.weight
        wide[0].bias.copy_(first.bias)
        wide[2].load_state_dict(block[2].state_dict())
    return wide


def _as_map(v: Tensor) -> Tensor:
    return v[:, :, None, None]


def _full_precision(x: Tensor):
    """A context in which autocast is off on x's device: ops run in their inputs' dtype."""
    return torch.autocast(x.device.type, enabled=False)


# --------------------------------------------------------------- course UNet (docs/course.md 3.3)
class UNet(nn.Module):
    """The course UNet: 28 -> 14 -> 7 -> 1 -> 7 -> 14 -> 28 with skips (docs/course.md 3.3).

    Parameter counts (docs/course.md 3.3): D=64: 1,975,361 / 1,996,417 / 2,019,201 and D=128:
    7,891,073 / 7,974,145 / 8,060,673 for unconditional / time-conditioned / class-conditioned.

    A distilled student (training.distill) is this UNet with more conditioning inputs: its time
    FCBlocks take `time_extra` columns after t, its class FCBlocks `class_extra` after c
    (`forward`'s extra_t (B, time_extra), extra_c (B, class_extra); None: zeros), and `norm`
    False gives it the layout of a BatchNorm-folded model (fold_batchnorm).
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        conditioning: Conditioning = "none",
        num_classes: int = 10,
        *,
        time_extra: int = 0,
        class_extra: int = 0,
        norm: bool = True,
    ):
        super().__init__()
        _check_conditioning(conditioning)
        if (time_extra or class_extra) and conditioning != "class":
            raise ValueError("extra conditioning inputs need a class-conditioned UNet")
        d = hidden
        self.conditioning, self.num_classes = conditioning, num_classes
        self.time_extra, self.class_extra = time_extra, class_extra
        self.e0 = ConvBlock(in_channels, d, norm)
        self.e1 = DownBlock(d, d, norm)
        self.e2 = DownBlock(d, 2 * d, norm)
        self.flatten = Flatten()
        self.unflatten = Unflatten(2 * d, norm)
        self.u1 = UpBlock(4 * d, d, norm)
        self.u2 = UpBlock(2 * d, d, norm)
        self.head = ConvBlock(2 * d, d, norm)
        self.out = nn.Conv2d(d, in_channels, 3, 1, 1)
        if conditioning != "none":
            self.fc1_t, self.fc2_t = FCBlock(1 + time_extra, 2 * d), FCBlock(1 + time_extra, d)
        if conditioning == "class":
            k = num_classes + class_extra
            self.fc1_c, self.fc2_c = FCBlock(k, 2 * d), FCBlock(k, d)

    def forward(
        self,
        x: Tensor,
        t: Tensor | float | None = None,
        c: Tensor | None = None,
        extra_t: Tensor | None = None,
        extra_c: Tensor | None = None,
    ) -> Tensor:
        e0 = self.e0(x)
        e1 = self.e1(e0)
        e2 = self.e2(e1)
        u0 = self.unflatten(self.flatten(e2))
        if self.conditioning != "none":
            with _full_precision(x):
                tc = _with_extra(_time_column(t, x), extra_t, self.time_extra, x)
                cc = None
                if self.conditioning == "class":
                    rows = _class_rows(c, x, self.num_classes)
                    cc = _with_extra(rows, extra_c, self.class_extra, x)
            u0 = self._modulate(u0, x, tc, cc, self.fc1_t, getattr(self, "fc1_c", None))
        u1 = self.u1(torch.cat([e2, u0], dim=1))
        if self.conditioning != "none":
            u1 = self._modulate(u1, x, tc, cc, self.fc2_t, getattr(self, "fc2_c", None))
        u2 = self.u2(torch.cat([e1, u1], dim=1))
        return self.out(self.head(torch.cat([e0, u2], dim=1)))

    def _modulate(
        self, h: Tensor, x: Tensor, t: Tensor, c, fc_t: nn.Module, fc_c: nn.Module | None
    ) -> Tensor:
        """h modulated by the embeddings of the time inputs t (B, 1 + time_extra) and the class
        inputs c (B, K + class_extra) or None, computed in x's dtype; returned in h's dtype."""
        with _full_precision(x):
            tv = _as_map(fc_t(t))
            if self.conditioning == "time-add":
                out = h + tv
            elif self.conditioning == "time-mul":
                out = h * tv
            else:
                out = _as_map(fc_c(c)) * h + tv
        return out.to(h.dtype)

    def widened(self, time_extra: int, class_extra: int) -> UNet:
        """A copy with `time_extra` / `class_extra` more inputs to its time / class FCBlocks, the
        new columns zero (widen_fcblock): at extra inputs zero or not, at initialisation it
        computes what this UNet does."""
        if self.conditioning != "class":
            raise ValueError("only a class-conditioned UNet is widened (a distillation teacher)")
        wide = copy.deepcopy(self)
        for name, extra in (("fc1_t", time_extra), ("fc2_t", time_extra)) + (
            ("fc1_c", class_extra),
            ("fc2_c", class_extra),
        ):
            setattr(wide, name, widen_fcblock(getattr(self, name), extra))
        wide.time_extra += time_extra
        wide.class_extra += class_extra
        return wide


# ----------------------------------------------------------------------------- improved UNet
def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """(B, 1) t in [0, 1] -> (B, dim) sin/cos features (t scaled by 1000 like DDPM's step index)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=t.dtype) / half
    )
    args = 1000.0 * t * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


GROUPS = 8  # GroupNorm groups of the improved UNet


def check_width(hidden: int) -> None:
    """ValueError unless the improved UNet can take width `hidden` (a multiple of GROUPS)."""
    if hidden % GROUPS:
        raise ValueError(
            f"the improved UNet (--arch improved) needs a width (--hidden) divisible "
            f"by {GROUPS} (GroupNorm({GROUPS})), got {hidden}"
        )


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv x2 with a residual path; the embedding sets a per-channel FiLM.

    The embedding's effect follows the conditioning: "time-add" shifts, "time-mul" scales by
    (1 + s), "class" does both (scale from the class+time embedding, shift likewise).
    """

    def __init__(self, cin: int, cout: int, emb_dim: int | None, mode: str):
        super().__init__()
        self.mode = mode
        self.norm1, self.conv1 = nn.GroupNorm(GROUPS, cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = nn.GroupNorm(GROUPS, cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        n_film = {"none": 0, "time-add": 1, "time-mul": 1, "class": 2}[mode]
        self.film = nn.Linear(emb_dim, n_film * cout) if n_film else None

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None:
            f = _as_map(self.film(emb))
            if self.mode == "time-add":
                h = h + f
            elif self.mode == "time-mul":
                h = h * (1 + f)
            else:
                scale, shift = f.chunk(2, dim=1)
                h = h * (1 + scale) + shift
        return self.skip(x) + self.conv2(nn.functional.silu(h))


class Attention(nn.Module):
    """Single-block multi-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(GROUPS, channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        b, ch, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, ch, h, w)


class ImprovedUNet(nn.Module):
    """A stronger UNet for the same tasks (the course's bells & whistles).

    Residual blocks with GroupNorm and SiLU, a sinusoidal time embedding through an MLP, a class
    embedding (a bias-free Linear on the one-hot, so the zero row stays the null class), FiLM
    conditioning in every block, and self-attention at 7x7. Levels: D@28, 2D@14, 2D@7.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        conditioning: Conditioning = "none",
        num_classes: int = 10,
    ):
        super().__init__()
        _check_conditioning(conditioning)
        check_width(hidden)
        d, mode = hidden, conditioning
        self.conditioning, self.num_classes, self.hidden = conditioning, num_classes, hidden
        emb = 4 * d if mode != "none" else None
        if emb is not None:
            self.time_mlp = nn.Sequential(nn.Linear(d, emb), nn.SiLU(), nn.Linear(emb, emb))
        if mode == "class":
            self.class_emb = nn.Linear(num_classes, emb, bias=False)
        chans = (d, 2 * d, 2 * d)
        self.stem = nn.Conv2d(in_channels, d, 3, 1, 1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cin = d
        for i, ch in enumerate(chans):
            self.down.append(ResBlock(cin, ch, emb, mode))
            self.downsample.append(
                nn.Conv2d(ch, ch, 3, 2, 1) if i < len(chans) - 1 else nn.Identity()
            )
            cin = ch
        self.mid1, self.mid_attn, self.mid2 = (
            ResBlock(cin, cin, emb, mode),
            Attention(cin),
            ResBlock(cin, cin, emb, mode),
        )
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chans))):
            self.up.append(ResBlock(cin + ch, ch, emb, mode))
            self.upsample.append(nn.ConvTranspose2d(ch, ch, 4, 2, 1) if i > 0 else nn.Identity())
            cin = ch
        self.attn7 = Attention(2 * d)
        self.out = nn.Sequential(
            nn.GroupNorm(GROUPS, d), nn.SiLU(), nn.Conv2d(d, in_channels, 3, 1, 1)
        )

    def _embedding(self, x: Tensor, t, c) -> Tensor | None:
        if self.conditioning == "none":
            return None
        with _full_precision(x):
            e = self.time_mlp(sinusoidal_embedding(_time_column(t, x), self.hidden))
            if self.conditioning == "class":
                e = e + self.class_emb(_class_rows(c, x, self.num_classes))
            return nn.functional.silu(e)

    def forward(
        self, x: Tensor, t: Tensor | float | None = None, c: Tensor | None = None
    ) -> Tensor:
        emb = self._embedding(x, t, c)
        h = self.stem(x)
        skips = []
        for block, down in zip(self.down, self.downsample, strict=False):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, (block, up) in enumerate(zip(self.up, self.upsample, strict=False)):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i == 0:
                h = self.attn7(h)
            h = up(h)
        return self.out(h)


def build_model(
    arch: str = "course",
    *,
    in_channels: int = 1,
    hidden: int = 64,
    conditioning: Conditioning = "none",
    num_classes: int = 10,
    student: bool = False,
) -> nn.Module:
    """Build ``UNet`` ("course") or ``ImprovedUNet`` ("improved") with the given options;
    `student`: the course UNet of a distilled student (training.distill: STUDENT_TIME_EXTRA time
    and num_classes class inputs more, no BatchNorm)."""
    classes = {"course": UNet, "improved": ImprovedUNet}
    if arch not in classes:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    if student:
        if arch != "course":
            raise ValueError("a distilled student is a course UNet (arch course)")
        return UNet(
            in_channels,
            hidden,
            conditioning,
            num_classes,
            time_extra=STUDENT_TIME_EXTRA,
            class_extra=num_classes,
            norm=False,
        )
    return classes[arch](
        in_channels=in_channels, hidden=hidden, conditioning=conditioning, num_classes=num_classes
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

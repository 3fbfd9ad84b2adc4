r"""A compact UNet ε-network with a sinusoidal time embedding (Ho et al. 2020, App. B; small).

Sketch: x (B, C, S, S) → 3×3 conv → for each level ℓ: ``num_res_blocks`` residual blocks at
``base_channels · channel_mults[ℓ]`` channels, then a stride-2 conv (not after the last level);
a middle of ResBlock–self-attention–ResBlock; the mirror path upsamples (nearest + 3×3 conv) and
concatenates the skip activations; GroupNorm–SiLU–3×3 conv to C output channels (ε̂).
Every residual block receives the time embedding e(t) = MLP(sinusoid(t)) as a per-channel bias.
The time input is the *integer* timestep t (same index as ᾱ_t in ``schedules``), as a (B,) tensor.

Deviations from the DDPM UNet (and why): far fewer channels and one block per level (CPU training
on one thread); dropout off by default; self-attention only at the lowest resolution (cheap);
the last conv is zero-initialised so the untrained network predicts ε̂ = 0.

Notation: ``t`` → t, ``temb`` → e(t), output → ε̂_θ(x_t, t).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`UNet` (stored verbatim in the model card)."""

    in_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = True
    groups: int = 8
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        if self.in_channels < 1 or self.base_channels < 1 or not self.channel_mults:
            raise ValueError("unet: in_channels, base_channels and channel_mults must be positive")
        if any((self.base_channels * m) % self.groups for m in self.channel_mults):
            raise ValueError(f"unet: every width base_channels·mult must be divisible by "
                             f"groups={self.groups}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        return d

    @staticmethod
    def from_dict(d: dict) -> UNetConfig:
        return UNetConfig(**{**d, "channel_mults": tuple(d["channel_mults"])})


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoid [sin(t ω_k), cos(t ω_k)], ω_k = 10000^(−k/(dim/2)); t (B,) → (B, dim) float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + W e(t);  out = skip(x) + conv(dropout(SiLU(GN(h))))."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the H·W positions, residual: x + proj(softmax(qkᵀ/√c) v)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """ε̂_θ(x_t, t): x (B, C, S, S) with S divisible by 2^(levels−1), t (B,) integers → (B, C, S, S)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        ch = cfg.base_channels
        self.temb_dim = 4 * ch
        self.temb_mlp = nn.Sequential(nn.Linear(ch, self.temb_dim), nn.SiLU(),
                                      nn.Linear(self.temb_dim, self.temb_dim))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        widths = [ch * m for m in cfg.channel_mults]
        block = lambda a, b: ResBlock(a, b, self.temb_dim, cfg.groups, cfg.dropout)  # noqa: E731
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, c = [ch], ch
        for level, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                self.down.append(block(c, w))
                c = w
                skips.append(c)
            last = level == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
            if not last:
                skips.append(c)
        self.mid1, self.mid2 = block(c, c), block(c, c)
        self.mid_attn = Attention(c, cfg.groups) if cfg.attention else nn.Identity()
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(block(c + skips.pop(), w))
                c = w
            self.upsample.append(nn.Identity() if level == 0 else nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(cfg.groups, c)
        self.conv_out = nn.Conv2d(c, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        cfg = self.config
        temb = self.temb_mlp(timestep_embedding(t, cfg.base_channels).to(x.dtype))
        h = self.conv_in(x)
        hs = [h]
        blocks = iter(self.down)
        for level, down in enumerate(self.downsample):
            for _ in range(cfg.num_res_blocks):
                h = next(blocks)(h, temb)
                hs.append(h)
            if level < len(self.downsample) - 1:
                h = down(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        blocks = iter(self.up)
        for i, up in enumerate(self.upsample):
            for _ in range(cfg.num_res_blocks + 1):
                h = next(blocks)(torch.cat([h, hs.pop()], dim=1), temb)
            if i < len(self.upsample) - 1:
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def init_weights(net: nn.Module, generator: torch.Generator | None,
                 keep: tuple[str, ...] = ("conv_out",)) -> nn.Module:
    """Re-draw every conv/linear weight with PyTorch's default law from ``generator`` (no global RNG):
    W ~ kaiming_uniform(a = √5), b ~ U(±1/√fan_in); GroupNorm stays (1, 0); the modules named in ``keep``
    (the zero-initialised output layer) stay as they are."""
    with torch.no_grad():
        for name, module in net.named_modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)) or name in keep:
                continue
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return net

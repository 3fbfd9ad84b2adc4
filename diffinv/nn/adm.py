r"""The guided-diffusion (ADM) UNet, rebuilt so that upstream state dicts load key for key.

Architecture of Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs on Image Synthesis", §3),
with the learned variance of Nichol & Dhariwal 2021 ("Improved Denoising Diffusion Probabilistic
Models").  Shapes: x (B, C, H, W), t (B,) → out (B, C_out, H, W), C_out = 2C with ``learn_sigma``
(ε̂ = out[:, :C], variance interpolation v = out[:, C:]).  The network is fully convolutional, so a
256-pixel configuration also runs on 64×64 inputs (any H, W divisible by 2^(levels − 1)).

* Time embedding: with d = num_channels, half = d/2, frequencies ω_k = exp(−ln(10⁴)·k/half),
  e(t) = [cos(t ω), sin(t ω)] ∈ R^d (cos first), then ``time_embed`` = Linear(d, 4d), SiLU,
  Linear(4d, 4d).  t is the raw (integer or fractional) timestep.
* ResBlock (keys ``in_layers``, ``emb_layers``, ``out_layers``, ``skip_connection``):
  h = conv(SiLU(GN(x))) (with ``resblock_updown`` the 2× nearest up- or 2×2 average down-sampling
  acts on h before that conv and on the skip input x); with ``use_scale_shift_norm``
  [s, b] = Linear(SiLU(e)) and h ← GN(h)·(1 + s) + b, else h ← GN(h + Linear(SiLU(e)));
  h ← conv(Dropout(SiLU(h))); out = skip(x) + h, skip = identity or a 1×1 conv.
* AttentionBlock (keys ``norm``, ``qkv``, ``proj_out``): qkv = Conv1d(C, 3C)(GN(x)) over the N = H·W
  positions; per head of width c, A = softmax((q c^(−1/4))ᵀ (k c^(−1/4))) (in float32),
  out = x + proj_out(v Aᵀ).  The *legacy* layout reads the 3C channels as [head][q, k, v][c], the
  ``use_new_attention_order`` layout as [q, k, v][head][c].
* GroupNorm: 32 groups, eps 1e-5, always computed in float32 (GroupNorm32).
* Layout: ``input_blocks.0.0`` conv; per level ``num_res_blocks`` × (ResBlock [+ attention]), then a
  down-sampling block (``op`` conv of stride 2, or a down ResBlock); ``middle_block`` = ResBlock,
  attention, ResBlock; ``output_blocks`` mirror the encoder with skip concatenation and, at each
  level's last block, an up-sampling block (``conv`` after 2× nearest, or an up ResBlock);
  ``out`` = GN, SiLU, conv to C_out.  The last conv, every ResBlock ``out_layers.3`` and every
  ``proj_out`` are zero-initialised (a fresh network outputs 0).
* ``use_fp16``: like upstream ``convert_to_fp16`` the convolutions inside input / middle / output
  blocks hold float16 weights (linears, norms, ``time_embed`` and ``out`` stay float32); activations are
  cast to the torso dtype on entry and back to the input dtype before ``out``.
* ``use_checkpoint``: activation checkpointing of each ResBlock / AttentionBlock with
  ``torch.utils.checkpoint`` (non-reentrant), only while gradients are being recorded; it works with
  frozen parameters and changes no value or gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from diffinv.nn.adm_config import ADMConfig


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (B,) → (B, dim): [cos(t ω_k), sin(t ω_k)], ω_k = max_period^(−k/half)."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    omega = torch.exp(k * (-math.log(max_period) / half))
    arg = t.to(torch.float32)[:, None] * omega[None, :]
    emb = torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 whatever the input dtype; the result has the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


def _zeroed(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class _EmbSequential(nn.Sequential):
    """nn.Sequential whose ResBlocks also receive the time embedding e (B, 4d)."""

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h


class Downsample(nn.Module):
    """Stride-2 3×3 conv (key ``op``) or, without a conv, 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """2× nearest-neighbour up-sampling, optionally followed by a 3×3 conv (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    """Residual block conditioned on e(t); see the module docstring for the formulas."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 scale_shift: bool = False, up: bool = False, down: bool = False,
                 use_checkpoint: bool = False) -> None:
        super().__init__()
        out_ch = out_channels or channels
        self.scale_shift = scale_shift
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_ch, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * out_ch if scale_shift else out_ch
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(_norm(out_ch), nn.SiLU(), nn.Dropout(p=dropout),
                                        _zeroed(nn.Conv2d(out_ch, out_ch, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_ch == channels else nn.Conv2d(channels, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        norm, rest = self.out_layers[0], self.out_layers[1:]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = rest(norm(h + e))
        return self.skip_connection(x) + h


def qkv_attention(qkv: Tensor, heads: int, legacy: bool) -> Tensor:
    """Multi-head attention on packed qkv (B, 3·heads·c, N) → (B, heads·c, N).

    ``legacy``: channels ordered [head][q, k, v][c]; otherwise [q, k, v][head][c].  Scores use
    q and k each scaled by c^(−1/4); the softmax runs in float32 and is cast back.
    """
    b, width, n = qkv.shape
    if width % (3 * heads):
        raise ValueError(f"attention: {width} qkv channels do not split into 3 x {heads} heads")
    c = width // (3 * heads)
    if legacy:
        q, k, v = qkv.reshape(b * heads, 3 * c, n).split(c, dim=1)
    else:
        q, k, v = (z.reshape(b * heads, c, n) for z in qkv.chunk(3, dim=1))
    s = c ** -0.25
    scores = torch.bmm((q * s).transpose(1, 2), k * s)            # (B·heads, N_query, N_key)
    attn = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
    out = torch.bmm(v, attn.transpose(1, 2))                       # (B·heads, c, N_query)
    return out.reshape(b, heads * c, n)


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions, residual; keys ``norm``, ``qkv``, ``proj_out``."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 new_order: bool = False, use_checkpoint: bool = False) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"attention: {channels} channels are not divisible by "
                                 f"num_head_channels={num_head_channels}")
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"attention: {channels} channels are not divisible by "
                             f"num_heads={self.num_heads}")
        self.legacy = not new_order
        self.use_checkpoint = use_checkpoint
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = qkv_attention(self.qkv(self.norm(x)), self.num_heads, self.legacy)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class ADMUNet(nn.Module):
    """guided-diffusion ``UNetModel`` (unconditional) with upstream parameter names.

    ``forward(x (B, C, H, W), t (B,) or scalar) -> (B, C_out, H, W)``, the raw network output.
    """

    def __init__(self, config: ADMConfig) -> None:
        super().__init__()
        if config.class_cond:
            raise ValueError("ADMUNet: class_cond=True (class-conditional ADM) is not supported")
        for mult_ch in config.level_channels:
            if mult_ch < 32 or mult_ch % 32:
                raise ValueError(f"ADMUNet: level width {mult_ch} (num_channels x channel_mult) must be a "
                                 f"multiple of 32 (GroupNorm with 32 groups)")
        self.config = config
        d = config.num_channels
        emb_dim = 4 * d
        heads_up = config.num_heads if config.num_heads_upsample == -1 else config.num_heads_upsample
        ds_attn = set(config.attention_ds)
        ckpt = config.use_checkpoint

        def res(ch_in: int, ch_out: int | None = None, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(ch_in, emb_dim, config.dropout, ch_out, config.use_scale_shift_norm, up=up,
                            down=down, use_checkpoint=ckpt)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, config.num_head_channels, config.use_new_attention_order, ckpt)

        self.time_embed = nn.Sequential(nn.Linear(d, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        widths = config.level_channels
        ch = widths[0]
        self.input_blocks = nn.ModuleList([_EmbSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        skips = [ch]
        ds = 1
        for level, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [res(ch, width)]
                ch = width
                if ds in ds_attn:
                    layers.append(attn(ch, config.num_heads))
                self.input_blocks.append(_EmbSequential(*layers))
                skips.append(ch)
            if level < len(widths) - 1:
                down = res(ch, ch, down=True) if config.resblock_updown else Downsample(ch, True)
                self.input_blocks.append(_EmbSequential(down))
                skips.append(ch)
                ds *= 2
        self.middle_block = _EmbSequential(res(ch), attn(ch, config.num_heads), res(ch))
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            for i in range(config.num_res_blocks + 1):
                layers = [res(ch + skips.pop(), width)]
                ch = width
                if ds in ds_attn:
                    layers.append(attn(ch, heads_up))
                if level > 0 and i == config.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if config.resblock_updown else Upsample(ch, True))
                    ds //= 2
                self.output_blocks.append(_EmbSequential(*layers))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(),
                                 _zeroed(nn.Conv2d(widths[0], config.out_channels, 3, padding=1)))
        if config.use_fp16:
            self.convert_to_fp16()

    # ------------------------------------------------------------------ precision
    def _torso_convs(self):
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in part.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    yield m

    def convert_to_fp16(self) -> None:
        """Cast the torso's convolutions to float16 (as upstream ``convert_to_fp16``)."""
        for m in self._torso_convs():
            m.to(torch.float16)

    def convert_to_fp32(self) -> None:
        """Undo :meth:`convert_to_fp16`."""
        for m in self._torso_convs():
            m.to(torch.float32)

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the torso activations (that of the first conv's weight)."""
        return self.input_blocks[0][0].weight.dtype

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, t: Tensor | float | int) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"ADMUNet: expected x of shape (B, {self.config.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"ADMUNet: expected t of shape ({x.shape[0]},), got {tuple(t.shape)}")
        e0 = timestep_embedding(t, self.config.num_channels)
        emb = self.time_embed(e0.to(self.time_embed[0].weight.dtype))
        hs = []
        h = x.to(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))


def _unwrap(state: Mapping) -> Mapping:
    for key in ("ema", "state_dict", "model"):
        inner = state.get(key) if isinstance(state, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
            return inner
    return state


def load_adm_state_dict(model: ADMUNet, state: Mapping[str, Tensor], source: str) -> None:
    """Load an upstream ADM state dict into ``model`` after a strict key and shape check.

    ``state`` is a bare state dict or one wrapped as ``{"ema": ...}``, ``{"state_dict": ...}`` or
    ``{"model": ...}`` (a ``module.`` prefix of DataParallel is dropped).  Any missing, unexpected or
    mis-shaped tensor raises one ``ValueError`` line naming ``source``, the first offending key and its
    shapes; nothing is loaded then (never a silent random init).  With ``use_fp16`` the torso
    convolutions keep their float16 dtype (the float32 values are rounded as upstream does).
    """
    state = _unwrap(state)
    if not isinstance(state, Mapping):
        raise ValueError(f"{source}: expected a state dict (mapping of names to tensors), "
                         f"got {type(state).__name__}")
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    bad = next((k for k, v in state.items() if not isinstance(v, Tensor)), None)
    if bad is not None:
        raise ValueError(f"{source}: entry {bad!r} is a {type(state[bad]).__name__}, not a tensor; "
                         f"not an ADM state dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shaped:
        wrong = set(missing) | set(shaped)
        first = next(k for k in expected if k in wrong) if wrong else unexpected[0]
        if first in shaped:
            what = (f"key {first!r} has shape {tuple(state[first].shape)} in the checkpoint but "
                    f"{tuple(expected[first].shape)} in the model")
        elif first in missing:
            what = f"key {first!r} (shape {tuple(expected[first].shape)}) is missing from the checkpoint"
        else:
            what = f"unexpected key {first!r} (shape {tuple(state[first].shape)}) in the checkpoint"
        raise ValueError(f"{source}: {what} ({len(missing)} missing, {len(unexpected)} unexpected, "
                         f"{len(shaped)} mis-shaped of {len(expected)} model tensors); the --arch config "
                         f"does not fit this checkpoint (check num_channels, num_res_blocks, channel_mult, "
                         f"attention_resolutions, learn_sigma, resblock_updown)")
    model.load_state_dict(dict(state), strict=True)

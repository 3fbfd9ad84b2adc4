"""The training recipe as one frozen dataclass (every ``diffinv train`` option is a field)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from diffinv.nn.unet import UNetConfig

# Fields that change the optimisation itself: a resumed run must use the saved values.
MATH_FIELDS = ("data", "image_size", "channels", "batch_size", "lr", "warmup", "weight_decay", "ema_decay",
               "grad_clip", "seed", "num_timesteps", "base_channels", "channel_mults", "num_res_blocks",
               "attention", "dropout", "flip", "amp")


@dataclass(frozen=True)
class TrainConfig:
    """Recipe of ``diffinv train``.

    data : 'fashion-mnist', 'emoji' or a folder of images.  image_size : S.  channels : 1 or 3.
    steps : total optimiser steps (a resumed run continues up to this).  out : checkpoint folder.
    lr : AdamW peak learning rate, reached linearly over ``warmup`` steps, then constant.
    ema_decay : EMA decay β, used as min(β, (1 + k)/(10 + k)) at step k.
    save_every / sample_every : steps between resumable states / sample grids (0 = never).
    grid_size, grid_steps : samples in a grid and DDPM (η = 1) steps used to draw them.
    amp : 'auto' (bf16 on CUDA if supported, else fp16; off on CPU), 'bf16', 'fp16' or 'off'.
    threads : torch intra-op threads (0 = leave as is).  evaluate : compute card figures at the end.
    """

    data: str
    image_size: int = 32
    channels: int = 1
    steps: int = 10000
    out: str = "checkpoints/prior"
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    num_timesteps: int = 1000
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = True
    dropout: float = 0.0
    flip: bool = False
    amp: str = "auto"
    device: str = "cpu"
    threads: int = 1
    save_every: int = 200
    sample_every: int = 1000
    grid_size: int = 64
    grid_steps: int = 50
    evaluate: bool = True
    eval_samples: int = 500

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))

    def validate(self) -> TrainConfig:
        positive = ("image_size", "steps", "batch_size", "num_timesteps", "base_channels", "num_res_blocks",
                    "grid_size", "grid_steps", "eval_samples")
        for name in positive:
            if getattr(self, name) < 1:
                value = getattr(self, name)
                raise ValueError(f"{name.replace('_', '-')}: expected a positive integer, got {value}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {self.channels}")
        if self.image_size % (2 ** (len(self.channel_mults) - 1)):
            raise ValueError(f"image-size: must be divisible by {2 ** (len(self.channel_mults) - 1)}")
        if self.lr <= 0 or not 0 <= self.ema_decay < 1:
            raise ValueError("lr: expected lr > 0 (and ema-decay in [0, 1))")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp: expected auto, bf16, fp16 or off, got {self.amp!r}")
        if min(self.warmup, self.save_every, self.sample_every, self.threads, self.seed) < 0:
            raise ValueError("warmup, save-every, sample-every, threads, seed: expected values ≥ 0")
        if self.grid_steps > self.num_timesteps:
            raise ValueError(f"grid-steps: expected at most {self.num_timesteps}")
        return self

    def unet(self) -> UNetConfig:
        return UNetConfig(in_channels=self.channels, base_channels=self.base_channels,
                          channel_mults=self.channel_mults, num_res_blocks=self.num_res_blocks,
                          attention=self.attention, dropout=self.dropout)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        return d

    @staticmethod
    def from_dict(d: dict) -> TrainConfig:
        names = {f.name for f in fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in d.items() if k in names})

    def mismatch(self, saved: dict) -> str | None:
        """The first math field whose value differs from a saved config, or None."""
        mine = self.to_dict()
        for name in MATH_FIELDS:
            if name in saved and saved[name] != mine[name]:
                return f"{name} (saved {saved[name]!r}, given {mine[name]!r})"
        return None

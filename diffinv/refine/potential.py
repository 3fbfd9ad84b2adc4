r"""The learned log density ratio ℓ_φ(x, t) ≈ log p_t(x)/p̃_t(x) and its gradient, the correction c_φ.

Discriminator guidance (Kim et al. 2023, "Refining generative process with discriminator guidance in
score-based diffusion models", ICML) corrects a trained score s_θ = ∇ log p̃_t by the gradient of the log
density ratio between the data's diffused law p_t and the model's p̃_t:

    s_refined(x, t) = s_θ(x, t) + c_φ(x, t),    c_φ = ∇_x ℓ_φ(x, t),    ℓ_φ = log d_φ/(1 − d_φ),

where d_φ ∈ (0, 1) is a discriminator (data vs model samples) and ℓ_φ its logit. Here ℓ_φ is written

    ℓ_φ(x, t) = ½ ⟨x, u_φ(x, t)⟩,    u_φ : (B, *shape) × (B,) → (B, *shape),

with u_φ a small time-conditioned network whose last layer is zero-initialised, so an untrained
correction is exactly zero (a blind discriminator d = ½). The quadratic form is a deliberate choice: an
affine u_φ = W x + b already gives c_φ = ½ (W + Wᵀ) x + ½ b, the correction between two Gaussians, so the
network only has to learn what is beyond second moments; any ℓ is still reachable.

Networks: images (C, S, S) use :class:`~diffinv.nn.unet.UNet` (in = out = C channels); vectors (d,) use
:class:`PotentialMLP`. Both take the integer timestep t (B,) like the priors' networks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from diffinv.nn.unet import UNet, UNetConfig, timestep_embedding


@dataclass(frozen=True)
class MLPConfig:
    """Architecture of :class:`PotentialMLP` (stored verbatim in the refined card)."""

    dim: int
    hidden: int = 128
    depth: int = 3
    temb_dim: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


class PotentialMLP(nn.Module):
    """u(x, t) for vectors: an MLP on [x, MLP(sinusoid(t))] with SiLU; x (B, d), t (B,) → (B, d)."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        self.temb = nn.Sequential(nn.Linear(config.temb_dim, config.hidden), nn.SiLU(),
                                  nn.Linear(config.hidden, config.hidden))
        layers: list[nn.Module] = [nn.Linear(config.dim + config.hidden, config.hidden), nn.SiLU()]
        for _ in range(config.depth - 1):
            layers += [nn.Linear(config.hidden, config.hidden), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(config.hidden, config.dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        e = self.temb(timestep_embedding(t, self.config.temb_dim).to(x.dtype))
        return self.out(self.body(torch.cat([x, e], dim=1)))


def build_potential(architecture: dict) -> nn.Module:
    """u_φ from a card's ``{"name": "UNet" | "MLP", "config": {...}}``; one-line ValueError otherwise."""
    name, config = architecture.get("name"), architecture.get("config", {})
    try:
        if name == "UNet":
            return UNet(UNetConfig.from_dict(config))
        if name == "MLP":
            return PotentialMLP(MLPConfig(**config))
    except (TypeError, KeyError) as err:
        raise ValueError(f"correction: bad architecture config ({err})") from None
    raise ValueError(f"correction: unknown architecture {name!r}; expected UNet or MLP")


def default_architecture(shape: tuple[int, ...], width: int = 8) -> dict:
    """A small u_φ for data of ``shape``: a UNet of ``width`` channels, two levels, no attention, for
    images; an MLP of 16·width hidden units for vectors."""
    if len(shape) == 3:
        groups = math.gcd(width, 8)
        config = UNetConfig(in_channels=shape[0], base_channels=width, channel_mults=(1, 2), num_res_blocks=1,
                            attention=False, groups=groups)
        return {"name": "UNet", "config": config.to_dict()}
    if len(shape) == 1:
        return {"name": "MLP", "config": MLPConfig(dim=shape[0], hidden=16 * width).to_dict()}
    raise ValueError(f"correction: no default architecture for data of shape {shape}")


def log_ratio(net: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    """ℓ_φ(x, t) = ½ ⟨x, u_φ(x, t)⟩ per item: x (B, *shape), t (B,) int64 → (B,)."""
    return 0.5 * (x * net(x, t)).flatten(1).sum(1)


def correction(net: nn.Module, x: Tensor, t: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
    """(ℓ_φ (B,), c_φ = ∇_x ℓ_φ (B, *shape)) at x, which must require grad. ``create_graph`` keeps the
    graph of c_φ (for a loss on c_φ, or a sampler that differentiates through the prior)."""
    with torch.enable_grad():
        ell = log_ratio(net, x, t)
        (grad,) = torch.autograd.grad(ell.sum(), x, create_graph=create_graph)
    return ell, grad

r"""Exponential moving average of network weights (Polyak averaging; Ho et al. 2020 use β = 0.9999).

θ̄ ← β_k θ̄ + (1 − β_k) θ with β_k = min(β, (1 + k)/(10 + k)) at optimiser step k (a warm-up, so
that short runs are not dominated by the random initialisation). Buffers are copied. Stored in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    """Shadow copy of a module's state dict (float32 tensors on the module's device)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items()}

    def beta(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        beta = self.beta(step)
        floats = []
        for key, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                floats.append((self.shadow[key], value.float()))
            else:
                self.shadow[key].copy_(value)
        # θ̄ + (1 − β)(θ − θ̄) = β θ̄ + (1 − β) θ, in one fused launch per dtype group
        torch._foreach_lerp_([s for s, _ in floats], [v for _, v in floats], 1 - beta)

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        if set(tensors) != set(self.shadow):
            raise ValueError("ema: saved EMA weights do not match the network")
        for key, value in tensors.items():
            self.shadow[key].copy_(value)

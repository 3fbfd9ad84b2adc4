r"""guided-diffusion (ADM) checkpoints: a bare state dict in a ``.pt`` / ``.pth`` / ``.safetensors`` file.

The file holds only weights; the architecture comes from ``arch``: a named preset (``adm-ffhq256`` for
DPS's ``ffhq_10m.pt``, ``adm-imagenet256-uncond`` for ``256x256_diffusion_uncond.pt``) or a YAML file of
guided-diffusion's own flags (:func:`diffinv.nn.adm_config.adm_config`). Without ``arch`` the presets
are tried and the one whose every key and shape fits is taken (the file names that fit in its card).

* ``.pt`` files are read with ``torch.load(weights_only=True)`` only: a file that needs arbitrary
  pickled objects is refused with one line, never executed.
* The network (Dhariwal & Nichol 2021) outputs 2C channels with ``learn_sigma``; ε̂ is the first C
  (:class:`~diffinv.priors.network.NetworkPrior`). Training used the linear β schedule 1e-4 → 0.02 over
  T = 1000 steps (guided-diffusion scales both ends by 1000/T for other T), ε-prediction, data in
  [−1, 1] and integer timesteps; a config's ``diffusion_steps`` / ``noise_schedule`` flags are honoured.
* ``fp16`` casts the torso's convolutions to float16 after loading (as upstream ``use_fp16``);
  ``checkpointing`` recomputes block activations in the backward pass (the memory of DPS / ΠGDM / DCPS
  at 256²).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffinv.priors.network import NetworkPrior
from diffinv.schedules import cosine_schedule, linear_schedule

SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or of a ``.pt`` file read with ``weights_only=True``."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"checkpoint: {str(path)!r} is not a readable safetensors file "
                             f"({err})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise ValueError(f"checkpoint: {str(path)!r} holds pickled Python objects, which diffinv never loads "
                         f"(torch.load weights_only=True: {first}); save the state dict alone "
                         "(torch.save(model.state_dict(), f)) or as .safetensors") from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint: cannot read {str(path)!r} as a PyTorch state dict ({first})") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint: {str(path)!r} holds a {type(state).__name__}, not a state dict")
    return state


def _fitting_preset(state: dict[str, Any]) -> str | None:
    """The ADM preset whose tensors (names and shapes) all match ``state``, built on the meta device."""
    from diffinv.nn.adm import ADMUNet, _unwrap
    from diffinv.nn.adm_config import ADM_PRESETS

    inner = _unwrap(state)
    shapes = {k.removeprefix("module."): tuple(v.shape) for k, v in inner.items() if isinstance(v, Tensor)}
    for name, config in ADM_PRESETS.items():
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in ADMUNet(config).state_dict().items()}
        if expected == shapes:
            return name
    return None


def adm_schedule(extras: dict[str, Any]):
    """The training schedule from a config's diffusion flags (default: linear, T = 1000)."""
    steps = int(extras.get("diffusion_steps", 1000))
    kind = str(extras.get("noise_schedule", "linear"))
    if kind == "linear":
        scale = 1000 / steps
        return linear_schedule(steps, scale * 1e-4, scale * 0.02)
    if kind == "cosine":
        return cosine_schedule(steps)
    raise ValueError(f"arch: noise_schedule {kind!r} is not supported; expected linear or cosine")


def load_adm_prior(path: Path, arch: str | Path | dict | None = None, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, fp16: bool = False,
                   checkpointing: bool = False) -> NetworkPrior:
    """An ADM checkpoint as a prior of shape (in_channels, image_size, image_size) on [−1, 1]."""
    import dataclasses

    from diffinv.nn.adm import ADMUNet, load_adm_state_dict
    from diffinv.nn.adm_config import ADM_PRESETS, adm_config

    state = read_state_dict(path)
    inferred = arch is None
    if arch is None:
        arch = _fitting_preset(state)
        if arch is None:
            raise ValueError(f"checkpoint: {str(path)!r} is a bare state dict that fits no ADM preset "
                             f"({', '.join(ADM_PRESETS)}); pass --arch with a YAML file of its "
                             "guided-diffusion flags (image_size, num_channels, num_res_blocks, ...)")
    config = adm_config(arch)
    if config.class_cond:
        raise ValueError("arch: class-conditional ADM models (class_cond: true) are not supported")
    config = dataclasses.replace(config, use_checkpoint=bool(checkpointing), use_fp16=False)
    with torch.device("meta"):
        net = ADMUNet(config)
    net = net.to_empty(device="cpu")
    load_adm_state_dict(net, state, f"checkpoint {path.name}")
    del state
    net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if fp16:
        net.convert_to_fp16()
    arch_name = arch if isinstance(arch, str) else str(arch) if isinstance(arch, Path) else "dict"
    card = {"name": path.stem, "format": "adm", "source": str(path), "arch": arch_name,
            "arch_inferred": inferred, "architecture": {"name": "ADMUNet", "config": config.to_dict()},
            "fp16": bool(fp16), "checkpointing": bool(checkpointing), "parametrisation": "eps",
            "value_range": [-1.0, 1.0]}
    shape = (config.in_channels, config.image_size, config.image_size)
    return NetworkPrior(net, adm_schedule(config.extras), shape, card=card, parametrisation="eps",
                        value_range=(-1.0, 1.0))

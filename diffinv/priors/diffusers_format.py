r"""Pixel-space diffusers checkpoints (``UNet2DModel`` + a DDPM/DDIM scheduler) as diffinv networks.

Two folder layouts are read, always from the local disk (``local_files_only``; nothing is downloaded):

* a **pipeline folder** (``DDPMPipeline.save_pretrained``): ``model_index.json``, ``unet/config.json``
  + ``unet/diffusion_pytorch_model.{safetensors,bin}`` and ``scheduler/scheduler_config.json``
  (older hub repositories keep the UNet files and ``scheduler_config.json`` at the root instead);
* a **bare UNet folder** (``UNet2DModel.save_pretrained``): ``config.json`` with
  ``"_class_name": "UNet2DModel"`` and the weights. Without a scheduler config the DDPM default is
  assumed: linear β from 1e-4 to 0.02, T = 1000, ε-prediction (Ho et al. 2020), and
  ``info["schedule_source"]`` says so.

Schedules. diffusers builds β in float32 and ᾱ as a float32 cumulative product. diffinv keeps
float64 schedules, so :func:`schedule_from_diffusers` rebuilds diffusers' float32 ᾱ_t and then
chooses float64 β_t = 1 − ᾱ_t/ᾱ_{t−1} (β_0 = 1 − ᾱ_0): the float64 product Π(1 − β_s) then
reproduces the float32 ᾱ the network was trained with to ~1e-14 relative, while β differs from the
float32 β by float32 round-off of ᾱ only (|Δβ| ≲ 2·2⁻²⁴). These β are also the one-step ratios
that diffusers' own DDPM sampler uses (β_t = 1 − ᾱ_t/ᾱ_{t−1}). Same 0-indexed convention as
diffinv: the network is called at integer t with noise level ᾱ_t.

Output parametrisations (``prediction_type``) are mapped to ε by :func:`output_to_eps`.

``diffusers`` is an optional dependency, imported only inside :func:`load_diffusers_unet`.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from diffinv.schedules import NoiseSchedule, output_to_eps  # noqa: F401 - re-exported

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
VALUE_RANGE = (-1.0, 1.0)

SAFETENSORS_NAME = "diffusion_pytorch_model.safetensors"
BIN_NAME = "diffusion_pytorch_model.bin"
WEIGHT_NAMES = (SAFETENSORS_NAME, SAFETENSORS_NAME + ".index.json", BIN_NAME)

DEFAULT_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                                     "beta_schedule": "linear", "prediction_type": "epsilon"}
DEFAULT_SOURCE = ("default (no scheduler config in the folder): DDPM linear β 1e-4 → 0.02, T = 1000, "
                  "ε-prediction")
MISSING_DIFFUSERS = ("checkpoint: reading a diffusers folder needs the diffusers package: "
                     "pip install 'diffinv[diffusers]'")

# scheduler fields copied verbatim into the info dict (inference-time options of diffusers' samplers)
_INFO_FIELDS = ("_class_name", "_diffusers_version", "variance_type", "clip_sample", "clip_sample_range",
                "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "timestep_spacing",
                "steps_offset", "set_alpha_to_one")


# --- schedules -----------------------------------------------------------------------------------

def _cosine_betas32(num_timesteps: int, max_beta: float = 0.999) -> Tensor:
    r"""β_t = min(1 − f((t+1)/T)/f(t/T), max_beta), f(u) = cos²((u + 0.008)/1.008 · π/2).

    The "squaredcos_cap_v2" schedule: Nichol & Dhariwal (2021, eq. 17) with s = 0.008, evaluated in
    Python floats and stored in float32 as diffusers does. Shape (T,).
    """
    def f(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / num_timesteps) / f(i / num_timesteps), max_beta)
             for i in range(num_timesteps)]
    return torch.tensor(betas, dtype=torch.float32)


def _betas32(config: dict) -> Tensor:
    """The float32 β_t (T,) diffusers' DDPMScheduler / DDIMScheduler would build from ``config``."""
    trained = config.get("trained_betas")
    if trained is not None:
        return torch.tensor(trained, dtype=torch.float32).flatten()
    T = int(config.get("num_train_timesteps", 1000))
    if T < 2:
        raise ValueError(f"scheduler: num_train_timesteps must be ≥ 2, got {T}")
    start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    kind = config.get("beta_schedule", "linear")
    if kind == "linear":  # Ho et al. (2020)
        return torch.linspace(start, end, T, dtype=torch.float32)
    if kind == "scaled_linear":  # √β linear (latent diffusion)
        return torch.linspace(start**0.5, end**0.5, T, dtype=torch.float32) ** 2
    if kind == "squaredcos_cap_v2":
        return _cosine_betas32(T)
    if kind == "sigmoid":  # β = σ(linspace(−6, 6, T)) (end − start) + start
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float32)) * (end - start) + start
    raise ValueError(f"scheduler: unsupported beta_schedule {kind!r} "
                     f"(expected one of {', '.join(BETA_SCHEDULES)})")


def schedule_from_diffusers(config: dict) -> NoiseSchedule:
    r"""diffinv's :class:`NoiseSchedule` for a diffusers ``scheduler_config.json`` (DDPM / DDIM style).

    Reads ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule`` (``linear``,
    ``scaled_linear``, ``squaredcos_cap_v2``, ``sigmoid``) or ``trained_betas``, with diffusers'
    defaults (1000, 1e-4, 0.02, linear). ᾱ_t equals diffusers' float32 ``alphas_cumprod[t]`` to about
    1e-14 relative (see the module docstring). Refuses ``rescale_betas_zero_snr = true`` (it sets
    ᾱ_{T−1} = 0, i.e. β_{T−1} = 1, outside a VP schedule with β < 1), variance-exploding (σ)
    schedulers, and unknown ``beta_schedule`` / ``prediction_type`` values, each with a one-line
    ValueError naming the field. The other fields are read by :func:`scheduler_info`.
    """
    if not isinstance(config, dict):
        raise ValueError(f"scheduler: expected a JSON object, got {type(config).__name__}")
    if config.get("rescale_betas_zero_snr"):
        raise ValueError("scheduler: rescale_betas_zero_snr=true gives ᾱ_{T-1} = 0 (β = 1), "
                         "which a variance-preserving schedule with β < 1 cannot represent")
    if "sigma_max" in config and "beta_start" not in config and "beta_schedule" not in config:
        raise ValueError(f"scheduler: {config.get('_class_name', 'this scheduler')} is a variance-exploding "
                         "(sigma_min / sigma_max) schedule; only DDPM/DDIM-style β schedules are supported")
    _prediction_type(config)
    betas32 = _betas32(config)
    if betas32.ndim != 1 or betas32.numel() < 2 or not bool(((betas32 > 0) & (betas32 < 1)).all()):
        raise ValueError("scheduler: trained_betas / beta_start / beta_end must give ≥ 2 values of β "
                         "in (0, 1)")
    alpha_bar32 = torch.cumprod(1.0 - betas32, dim=0).double()  # what diffusers stores as alphas_cumprod
    betas = torch.empty_like(alpha_bar32)
    betas[0] = 1.0 - alpha_bar32[0]
    betas[1:] = 1.0 - alpha_bar32[1:] / alpha_bar32[:-1]
    if not bool(((betas > 0) & (betas < 1)).all()):  # float32 ᾱ stalled or underflowed: keep the float32 β
        betas = betas32.double()
    trained = config.get("trained_betas") is not None
    source = "trained_betas" if trained else config.get("beta_schedule", "linear")
    return NoiseSchedule(betas=betas, kind=f"diffusers-{source}")


def _prediction_type(config: dict) -> str:
    kind = config.get("prediction_type") or "epsilon"
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"scheduler: unsupported prediction_type {kind!r} "
                         f"(expected one of {', '.join(PREDICTION_TYPES)})")
    return kind


def scheduler_info(config: dict) -> dict:
    """The fields of a scheduler config that matter besides β: prediction_type (default ``epsilon``),
    variance_type, clip_sample, steps_offset, timestep_spacing, … (absent fields are left out)."""
    info = {"prediction_type": _prediction_type(config)}
    info.update({k: config[k] for k in _INFO_FIELDS if k in config})
    return info


# --- output parametrisations ---------------------------------------------------------------------

# --- folders ---------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WEIGHT_NAMES)


def _is_unet_folder(folder: Path) -> bool:
    config = _read_json(folder / "config.json")
    return config is not None and config.get("_class_name") == "UNet2DModel" and _has_weights(folder)


def is_diffusers_folder(path: str | Path) -> bool:
    """True for a diffusers pipeline folder (``model_index.json``, or ``unet/`` with a config) or a
    bare ``UNet2DModel`` folder (``config.json`` naming UNet2DModel + diffusion_pytorch_model weights).
    Reads only small JSON files; never imports diffusers."""
    root = Path(path)
    if not root.is_dir():
        return False
    return ((root / "model_index.json").is_file() or (root / "unet" / "config.json").is_file()
            or _is_unet_folder(root))


def _locate(root: Path) -> tuple[Path, dict | None, str]:
    """(UNet folder, scheduler config or None, where the schedule comes from)."""
    index = _read_json(root / "model_index.json") or {}
    latent = [k for k in ("vqvae", "vae") if k in index]
    if latent:
        raise ValueError(f"checkpoint: {root} is a latent-diffusion pipeline (it has {latent[0]!r}); "
                         "only pixel-space UNet2DModel priors are supported")
    if (root / "unet" / "config.json").is_file():
        unet_dir = root / "unet"
    elif (root / "config.json").is_file():
        unet_dir = root
    else:
        raise ValueError(f"checkpoint: {root} has neither unet/config.json nor config.json")
    for cand in (root / "scheduler" / "scheduler_config.json", root / "scheduler_config.json"):
        if cand.is_file():
            config = _read_json(cand)
            if config is None:
                raise ValueError(f"checkpoint: {cand} is not a valid JSON object")
            return unet_dir, config, str(cand.relative_to(root))
    return unet_dir, None, DEFAULT_SOURCE


def _check_unet_config(config: dict | None, where: Path) -> dict:
    if config is None:
        raise ValueError(f"checkpoint: {where} is missing or not a valid JSON object")
    name = config.get("_class_name")
    if name != "UNet2DModel":
        raise ValueError(f"checkpoint: {where} describes {name!r}; only UNet2DModel (unconditional, pixel "
                         "space) is supported")
    if config.get("time_embedding_type", "positional") == "fourier":
        raise ValueError(f"checkpoint: {where} has time_embedding_type 'fourier' (a σ-conditioned "
                         "variance-exploding network); only integer-timestep VP networks are supported")
    if config.get("num_class_embeds") is not None or config.get("class_embed_type") is not None:
        raise ValueError(f"checkpoint: {where} is class-conditional (num_class_embeds / class_embed_type); "
                         "only unconditional networks are supported")
    return config


def _check_pickle(path: Path) -> None:
    """Refuse a ``.bin`` that torch's restricted (weights-only) unpickler rejects.

    diffusers (checked for 0.42.1, with torch ≥ 1.13) already reads ``.bin`` with
    ``torch.load(weights_only=True)``; this pre-check makes the guarantee independent of the version:
    a pickle stream that the restricted unpickler accepts calls only allow-listed constructors
    (tensors, containers, primitives), so any later full load of the same file executes nothing else.
    """
    mmap = zipfile.is_zipfile(path)
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # any failure means: not a plain weights file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint: {path} is not a plain weights file (weights-only load failed: "
                         f"{first})") from None


class DiffusersEpsNet(nn.Module):
    """A diffusers ``UNet2DModel`` called as ``net(x (B, C, H, W), t (B,) int64) -> (B, C_out, H, W)``.

    Returns the raw ``.sample`` output: ε, x̂0 or v depending on ``prediction_type`` (convert with
    :func:`output_to_eps`); C_out = 2C for learned-variance networks.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return self.unet(x, t.long(), return_dict=False)[0]


def _import_unet_class():
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ValueError(MISSING_DIFFUSERS) from None
    return UNet2DModel


def load_diffusers_unet(path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> tuple[DiffusersEpsNet, dict]:
    r"""Load a local diffusers pipeline or bare UNet2DModel folder (offline) as a :class:`DiffusersEpsNet`.

    Weights: ``diffusion_pytorch_model.safetensors`` when present (preferred), else the ``.bin``,
    which is first checked with ``torch.load(weights_only=True)`` (see :func:`_check_pickle`) and then
    read by diffusers, which itself uses ``weights_only=True``. Loading is strict: missing, unexpected
    or mis-shaped tensors raise (diffusers would otherwise leave such parameters randomly initialised).
    The module is returned in eval mode with frozen parameters, on ``device`` in ``dtype``.

    Returns ``(net, info)`` with info keys: ``sample_size``, ``in_channels``, ``out_channels``,
    ``prediction_type``, ``schedule`` (a :class:`NoiseSchedule`), ``scheduler`` (the fields of
    :func:`scheduler_info`), ``scheduler_config`` (the JSON dict, or None for a bare UNet folder),
    ``schedule_source``, ``unet_config`` and ``value_range`` = (−1, 1).
    Every failure is a one-line ValueError.
    """
    root = Path(path)
    if not is_diffusers_folder(root):
        raise ValueError(f"checkpoint: {root} is not a diffusers pipeline or UNet2DModel folder")
    unet_dir, sched_config, source = _locate(root)
    unet_config = _check_unet_config(_read_json(unet_dir / "config.json"), unet_dir / "config.json")
    schedule = schedule_from_diffusers(sched_config if sched_config is not None else DEFAULT_SCHEDULER)
    sched = scheduler_info(sched_config if sched_config is not None else DEFAULT_SCHEDULER)
    if unet_config.get("time_embedding_type") == "learned":
        steps = unet_config.get("num_train_timesteps")
        if steps is not None and int(steps) != schedule.num_timesteps:
            raise ValueError(f"checkpoint: unet num_train_timesteps {steps} differs from the scheduler's "
                             f"{schedule.num_timesteps}")
    safetensors = any((unet_dir / n).is_file() for n in (SAFETENSORS_NAME, SAFETENSORS_NAME + ".index.json"))
    if not safetensors:
        if not (unet_dir / BIN_NAME).is_file():
            raise ValueError(f"checkpoint: no {SAFETENSORS_NAME} or {BIN_NAME} in {unet_dir}")
        _check_pickle(unet_dir / BIN_NAME)

    unet_class = _import_unet_class()
    from diffusers.utils import logging as diffusers_logging  # diffusers is importable here

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # e.g. "accelerate not found": not actionable here
    try:
        # the UNet folder is passed directly (not subfolder=...), which sidesteps local-subfolder
        # resolution issues; local_files_only guarantees that the hub is never contacted
        unet, loading = unet_class.from_pretrained(str(unet_dir), local_files_only=True,
                                                   use_safetensors=safetensors, output_loading_info=True,
                                                   torch_dtype=dtype)
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"checkpoint: diffusers could not load {unet_dir} ({first})") from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        bad = list(loading.get(key) or [])
        if bad:
            raise ValueError(f"checkpoint: weights in {unet_dir} do not fit its config.json "
                             f"({key.replace('_', ' ')}, e.g. {bad[0]!r})")
    unet = unet.to(device=device).eval().requires_grad_(False)
    info = {
        "sample_size": unet_config.get("sample_size"),
        "in_channels": int(unet_config.get("in_channels", 3)),
        "out_channels": int(unet_config.get("out_channels", 3)),
        "prediction_type": sched["prediction_type"],
        "schedule": schedule,
        "scheduler": sched,
        "scheduler_config": sched_config,
        "schedule_source": source,
        "unet_config": unet_config,
        "value_range": VALUE_RANGE,
    }
    return DiffusersEpsNet(unet).eval(), info


def load_diffusers_prior(path: str | Path, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.float32, fp16: bool = False, checkpointing: bool = False):
    """A diffusers folder as a :class:`~diffinv.priors.network.NetworkPrior` of shape (C, S, S) on [−1, 1].

    The scheduler's ``prediction_type`` becomes the prior's parametrisation; ``fp16`` loads the UNet in
    float16; ``checkpointing`` turns on the UNet's gradient checkpointing (backward passes at 256²).
    """
    from diffinv.priors.network import NetworkPrior

    net, info = load_diffusers_unet(path, device=device, dtype=torch.float16 if fp16 else dtype)
    if checkpointing:
        net.unet.enable_gradient_checkpointing()
    size = info["sample_size"]
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"checkpoint: only square images are supported; sample_size is {size}")
        size = size[0]
    if size is None:
        raise ValueError(f"checkpoint: {path}: unet config.json has no sample_size")
    card = {"name": Path(path).name, "format": "diffusers", "source": str(path),
            "prediction_type": info["prediction_type"], "schedule_source": info["schedule_source"],
            "scheduler": info["scheduler"], "fp16": bool(fp16), "checkpointing": bool(checkpointing),
            "value_range": list(info["value_range"])}
    shape = (info["in_channels"], int(size), int(size))
    return NetworkPrior(net, info["schedule"], shape, card=card, parametrisation=info["prediction_type"],
                        value_range=info["value_range"])

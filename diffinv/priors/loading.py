r"""One entry point for every prior on disk: :func:`load_prior` and its registry of checkpoint formats.

A source is resolved, then the first format whose ``detect`` accepts it loads it:

=============  ===========================================================================  ==========
format         what the path holds                                                          loader
=============  ===========================================================================  ==========
``refined``    a ``diffinv refine`` folder: its base prior's NAME + a learned correction    refine
``diffinv``    a folder with ``card.json`` + ``model.safetensors`` (the shipped priors)     checkpoints
``diffusers``  a diffusers pipeline folder (``unet/`` + ``scheduler/``) or a UNet2DModel     diffusers_format
``adm``        a guided-diffusion state dict (``.pt``/``.pth``/``.safetensors``) + ``arch``   adm_format
=============  ===========================================================================  ==========

A new format is one file (its loader) plus one line in :data:`FORMATS`. A NAME that is no path
resolves, in order, to ``$DIFFINV_CHECKPOINTS/NAME``, ``./checkpoints/NAME`` (priors a user trained)
and the ``checkpoints/NAME`` shipped beside the installed package, so named priors work from any
working directory. Every loader returns a :class:`~diffinv.priors.network.NetworkPrior` (a refined folder: a
:class:`~diffinv.refine.prior.RefinedPrior` around one) that states
its parametrisation, its value range and its schedule; the pixel ↔ prior map is :mod:`diffinv.units`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent
SHIPPED = PACKAGE_ROOT / "checkpoints"


@dataclass(frozen=True)
class LoadOptions:
    """What a loader may be asked: ``arch`` (ADM), device, dtype, fp16 inference, activation checkpointing."""

    arch: str | Path | dict | None = None
    device: str | torch.device = "cpu"
    dtype: torch.dtype = torch.float32
    fp16: bool = False
    checkpointing: bool = False


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    description: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, LoadOptions], Any]


def _is_diffinv(path: Path) -> bool:
    return path.is_dir() and (path / "card.json").is_file()


def _load_diffinv(path: Path, options: LoadOptions):
    from diffinv.checkpoints import load_diffinv_prior

    _refuse_options("diffinv", options)
    return load_diffinv_prior(path, device=options.device, dtype=options.dtype)


def _is_diffusers(path: Path) -> bool:
    from diffinv.priors.diffusers_format import is_diffusers_folder

    return path.is_dir() and is_diffusers_folder(path)


def _load_diffusers(path: Path, options: LoadOptions):
    from diffinv.priors.diffusers_format import load_diffusers_prior

    if options.arch is not None:
        raise ValueError("arch: a diffusers folder carries its own config.json; drop --arch")
    return load_diffusers_prior(path, device=options.device, dtype=options.dtype, fp16=options.fp16,
                                checkpointing=options.checkpointing)


def _is_adm(path: Path) -> bool:
    from diffinv.priors.adm_format import SUFFIXES

    return path.is_file() and path.suffix.lower() in SUFFIXES


def _load_adm(path: Path, options: LoadOptions):
    from diffinv.priors.adm_format import load_adm_prior

    return load_adm_prior(path, arch=options.arch, device=options.device, dtype=options.dtype,
                          fp16=options.fp16, checkpointing=options.checkpointing)


def _is_refined(path: Path) -> bool:
    from diffinv.refine.checkpoint import is_refined_folder

    return is_refined_folder(path)


def _load_refined(path: Path, options: LoadOptions):
    from diffinv.refine.checkpoint import load_refined_prior

    _refuse_options("refined", options)
    return load_refined_prior(path, device=options.device, dtype=options.dtype)


FORMATS: dict[str, CheckpointFormat] = {
    "refined": CheckpointFormat("refined", "diffinv refine folder: a base prior NAME + a learned correction",
                                _is_refined, _load_refined),
    "diffinv": CheckpointFormat("diffinv", "diffinv folder: card.json + model.safetensors", _is_diffinv,
                                _load_diffinv),
    "diffusers": CheckpointFormat("diffusers", "diffusers pipeline or UNet2DModel folder (needs diffusers)",
                                  _is_diffusers, _load_diffusers),
    "adm": CheckpointFormat("adm", "guided-diffusion (ADM) state dict .pt/.safetensors, with --arch",
                            _is_adm, _load_adm),
}


def _refuse_options(fmt: str, options: LoadOptions) -> None:
    if options.arch is not None:
        raise ValueError(f"arch: a {fmt} checkpoint carries its own architecture; drop --arch")
    if options.fp16 or options.checkpointing:
        raise ValueError(f"checkpoint: --fp16 / --checkpointing apply to ADM and diffusers priors, not to a "
                         f"{fmt} folder")


def shipped_names() -> list[str]:
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if (p / "card.json").is_file())


def resolve_source(source: str | Path) -> Path:
    """The path a checkpoint NAME or path stands for (module docstring); one-line errors."""
    path = Path(source)
    if path.is_file() and path.name in ("model.safetensors", "card.json") \
            and (path.parent / "card.json").is_file():
        return path.parent
    if path.exists():
        return path
    if len(path.parts) == 1:
        roots = [Path(os.environ["DIFFINV_CHECKPOINTS"])] if os.environ.get("DIFFINV_CHECKPOINTS") else []
        for root in [*roots, Path("checkpoints"), SHIPPED]:
            if (root / path.name).exists():
                return root / path.name
    raise FileNotFoundError(f"checkpoint: {str(source)!r} not found: neither a file or folder nor a shipped "
                            f"prior ({', '.join(shipped_names()) or 'none found'})")


def detect_format(path: Path) -> CheckpointFormat:
    for fmt in FORMATS.values():
        if fmt.detect(path):
            return fmt
    if path.is_dir():
        raise ValueError(f"checkpoint: {str(path)!r} is neither a diffinv folder (card.json) nor a "
                         "diffusers folder (unet/ + scheduler/, or config.json + diffusion_pytorch_model.*)")
    raise ValueError(f"checkpoint: {str(path)!r} has an unknown format; expected a diffinv or diffusers "
                     "folder or an ADM state dict (.pt, .pth, .safetensors)")


def load_prior(source: str | Path, arch: str | Path | dict | None = None,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, fp16: bool = False,
               checkpointing: bool = False):
    """The :class:`~diffinv.priors.base.DiffusionPrior` of ``source`` (a NAME, folder or file).

    ``arch``: the ADM architecture (preset name, YAML file of guided-diffusion flags, or dict);
    ``fp16``: half-precision network; ``checkpointing``: activation checkpointing for backward passes.
    """
    path = resolve_source(source)
    options = LoadOptions(arch=arch, device=device, dtype=dtype, fp16=fp16, checkpointing=checkpointing)
    return detect_format(path).load(path, options)

r"""Embedded priors on disk: ``checkpoints/NAME/{model.safetensors, card.json}`` (never pickle).

``card.json`` (the model card) holds the architecture config, the schedule, the parametrisation
(ε), the data set and split, image size, channels, value range ([−1, 1] in the network), the
training recipe (steps, seed, git commit) and held-out figures, plus a ``weights`` entry: the
sha256 of ``model.safetensors`` and every tensor's shape and dtype. :func:`load_prior` checks the
card against the file (hash, key set, shapes, dtypes) and against the architecture it describes,
and fails with one ValueError line on any mismatch or corruption.

This module is the ``diffinv`` format of the loader registry (:mod:`diffinv.priors.loading`);
:func:`load_prior` here is that registry's entry point (diffinv folders, ADM state dicts and
diffusers folders alike). A NAME resolves to the folder NAME if it holds a card, else to
``$DIFFINV_CHECKPOINTS/NAME``, ``./checkpoints/NAME`` and the shipped ``checkpoints/NAME`` of the
installed package, in that order.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from diffinv.nn.unet import UNet, UNetConfig
from diffinv.priors.network import NetworkPrior
from diffinv.schedules import linear_schedule

CARD_FORMAT = "diffinv-prior/1"
MODEL_FILE, CARD_FILE = "model.safetensors", "card.json"


def resolve_checkpoint(name: str | Path) -> Path:
    """A diffinv checkpoint folder from a NAME or a path (the folder, its model.safetensors or card.json)."""
    from diffinv.priors.loading import resolve_source

    path = resolve_source(name)
    if not (path / CARD_FILE).is_file():
        raise FileNotFoundError(f"checkpoint: {str(name)!r} is not a diffinv checkpoint (no {CARD_FILE} in "
                                f"{path})")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str | None:
    """HEAD of the diffinv source tree (with ``+dirty`` if modified), or None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def tensor_table(tensors: dict[str, Tensor]) -> dict[str, dict]:
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in sorted(tensors.items())}


def save_prior(directory: str | Path, weights: dict[str, Tensor], card: dict,
               card_format: str = CARD_FORMAT) -> Path:
    """Write model.safetensors and card.json (card + format + weights table and sha256)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    tmp = directory / (MODEL_FILE + ".tmp")
    save_file(tensors, str(tmp))
    full = {"format": card_format, **card,
            "weights": {"file": MODEL_FILE, "sha256": sha256_file(tmp), "tensors": tensor_table(tensors)}}
    os.replace(tmp, directory / MODEL_FILE)
    write_card(directory, full)
    return directory


def write_card(directory: Path, card: dict) -> None:
    tmp = directory / (CARD_FILE + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, directory / CARD_FILE)


def load_card(directory: str | Path) -> dict:
    path = Path(directory) / CARD_FILE
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint: {path} is not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ValueError(f"checkpoint: {path} is not a {CARD_FORMAT} model card")
    for key in ("architecture", "schedule", "image_size", "channels", "weights"):
        if key not in card:
            raise ValueError(f"checkpoint: {path} lacks the field {key!r}")
    return card


def load_weights(directory: Path, card: dict) -> dict[str, Tensor]:
    """The tensors of model.safetensors, checked against the card (hash, keys, shapes, dtypes)."""
    path = directory / card["weights"].get("file", MODEL_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: {path} is missing")
    if sha256_file(path) != card["weights"].get("sha256"):
        raise ValueError(f"checkpoint: {path} is corrupted or was replaced "
                         f"(sha256 differs from {CARD_FILE})")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"checkpoint: {path} is not a readable safetensors file ({err})") from None
    expected, found = card["weights"].get("tensors", {}), tensor_table(tensors)
    if set(expected) != set(found):
        diff = sorted(set(expected) ^ set(found))
        raise ValueError(f"checkpoint: tensor names of {path} differ from {CARD_FILE} (e.g. {diff[0]!r})")
    for key, spec in expected.items():
        if spec != found[key]:
            raise ValueError(f"checkpoint: tensor {key!r} is {found[key]} in {path} "
                             f"but {spec} in {CARD_FILE}")
    return tensors


def build_network(card: dict) -> UNet:
    arch = card["architecture"]
    if arch.get("name") != "UNet":
        raise ValueError(f"checkpoint: unknown architecture {arch.get('name')!r}")
    try:
        return UNet(UNetConfig.from_dict(arch["config"]))
    except (TypeError, KeyError) as err:
        raise ValueError(f"checkpoint: bad architecture config in {CARD_FILE} ({err})") from None


def schedule_from_card(card: dict):
    sched = card["schedule"]
    if sched.get("kind") != "linear":
        raise ValueError(f"checkpoint: unsupported schedule {sched.get('kind')!r}")
    return linear_schedule(int(sched["num_timesteps"]), float(sched["beta_start"]), float(sched["beta_end"]))


def load_prior(source: str | Path, arch=None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, fp16: bool = False, checkpointing: bool = False):
    """Any prior on disk (a NAME, a diffinv or diffusers folder, an ADM file with ``arch``): see
    :func:`diffinv.priors.loading.load_prior`."""
    from diffinv.priors.loading import load_prior as load_any

    return load_any(source, arch=arch, device=device, dtype=dtype, fp16=fp16, checkpointing=checkpointing)


def load_diffinv_prior(name: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> NetworkPrior:
    """The prior of a diffinv checkpoint folder (validated; see the module docstring) on device/dtype."""
    directory = resolve_checkpoint(name)
    card = load_card(directory)
    tensors = load_weights(directory, card)
    net = build_network(card)
    reference = tensor_table(net.state_dict())
    if reference != tensor_table(tensors):
        bad = sorted(set(reference) ^ set(tensor_table(tensors))) or sorted(
            k for k in reference if reference[k] != tensor_table(tensors)[k])
        raise ValueError(f"checkpoint: weights do not fit the architecture in {CARD_FILE} (e.g. {bad[0]!r})")
    arch_channels = int(card["architecture"].get("config", {}).get("in_channels", card["channels"]))
    if int(card["channels"]) != arch_channels:
        raise ValueError(f"checkpoint: {CARD_FILE} says {card['channels']} channel(s) but its network takes "
                         f"{arch_channels} (architecture.config.in_channels)")
    net.load_state_dict(tensors)
    net = net.to(device=device, dtype=dtype).requires_grad_(False)  # an inference prior: no weight grads
    shape = (int(card["channels"]), int(card["image_size"]), int(card["image_size"]))
    return NetworkPrior(net, schedule_from_card(card), shape, card=card)

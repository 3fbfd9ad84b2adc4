r"""A refined prior on disk: ``OUT/{model.safetensors, card.json}`` beside its base, loaded by name.

``card.json`` has ``"format": "diffinv-refined/1"`` and names its base (``base.checkpoint``, a NAME or a
path, with the sha256 of the base's weights when it is a diffinv folder), the correction's architecture,
its time window, the loss it was trained with, the training log, the figures (base and refined side by
side, :mod:`.card`) and the weights table of the correction (checked on load exactly as for a prior).
Loading resolves the base first beside the refined folder (``OUT/../NAME``), then as any prior NAME, and
refuses a base whose weights changed since the correction was trained against it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffinv.checkpoints import CARD_FILE, load_weights, save_prior, tensor_table
from diffinv.refine.potential import build_potential
from diffinv.refine.prior import RefinedPrior

REFINED_FORMAT = "diffinv-refined/1"


def is_refined_folder(path: Path) -> bool:
    card = path / CARD_FILE
    if not (path.is_dir() and card.is_file()):
        return False
    try:
        return json.loads(card.read_text()).get("format") == REFINED_FORMAT
    except (json.JSONDecodeError, AttributeError, OSError):
        return False


def base_fingerprint(base) -> str | None:
    """sha256 of a base prior's weights when its card records one (diffinv folders), else None."""
    card = getattr(base, "card", None) or {}
    return (card.get("weights") or {}).get("sha256")


def save_refined(out: str | Path, net: torch.nn.Module, card: dict) -> Path:
    """Write the correction's weights and the refined card (``card`` without format/weights)."""
    return save_prior(out, net.state_dict(), card, card_format=REFINED_FORMAT)


def read_refined_card(path: Path) -> dict:
    try:
        card = json.loads((path / CARD_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint: {path / CARD_FILE} is not valid JSON ({err.msg})") from None
    for key in ("base", "correction", "t_range", "weights"):
        if key not in card:
            raise ValueError(f"checkpoint: {path / CARD_FILE} lacks the field {key!r}")
    return card


def resolve_base(path: Path, name: str) -> str | Path:
    beside = path.parent / name
    return beside if beside.exists() else name


def load_refined_prior(path: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> RefinedPrior:
    """The refined prior of folder ``path`` (base loaded on the same device/dtype)."""
    from diffinv.priors.loading import load_prior

    path = Path(path)
    card = read_refined_card(path)
    base_name = str(card["base"].get("checkpoint", ""))
    base = load_prior(resolve_base(path, base_name), device=device, dtype=dtype)
    expected = card["base"].get("sha256")
    if expected and base_fingerprint(base) not in (None, expected):
        raise ValueError(f"checkpoint: the base prior {base_name!r} has changed since {path.name} was "
                         "trained "
                         "against it (its weights' sha256 differs); retrain with diffinv refine")
    net = build_potential(card["correction"]["architecture"])
    tensors = load_weights(path, card)
    if tensor_table(net.state_dict()) != tensor_table(tensors):
        raise ValueError(f"checkpoint: the weights in {path} do not fit the correction's architecture")
    net.load_state_dict(tensors)
    net = net.to(device=device, dtype=dtype).requires_grad_(False).eval()
    lo, hi = card["t_range"]
    return RefinedPrior(base, net, (int(lo), int(hi)), card=card)

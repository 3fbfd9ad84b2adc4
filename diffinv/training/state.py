"""Resumable training state: ``OUT/state/{train_state.safetensors, state.json}`` (no pickle).

The safetensors file holds the network (``model.*``), its EMA (``ema.*``), AdamW moments and step
counters (``optim.<i>.<name>``) and the training generator's state (``rng.train``); state.json holds
the step, the config, AdamW's param_groups, the grad-scaler state, the loss log and the sha256 of
the tensor file (so a half-written pair is detected). Both files are written to temporaries and
renamed, tensors first, so an interruption leaves the previous state usable. The learning-rate
schedule is a pure function of the step, so the step restores it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor

from diffinv.checkpoints import sha256_file

STATE_DIR, TENSORS, META = "state", "train_state.safetensors", "state.json"


@dataclass
class TrainState:
    """Everything needed to continue a run exactly."""

    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor]
    optimizer: dict
    rng: Tensor
    config: dict
    scaler: dict | None = None
    log: list = field(default_factory=list)
    seconds: float = 0.0


def save_state(out: str | Path, state: TrainState) -> Path:
    folder = Path(out) / STATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in state.model.items()}
    tensors |= {f"ema.{k}": v for k, v in state.ema.items()}
    for index, slots in state.optimizer["state"].items():
        tensors |= {f"optim.{index}.{name}": value for name, value in slots.items()}
    tensors["rng.train"] = state.rng
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(tensors, str(folder / (TENSORS + ".tmp")))
    meta = {"step": state.step, "config": state.config, "param_groups": state.optimizer["param_groups"],
            "scaler": state.scaler, "seconds": state.seconds, "log": state.log,
            "sha256": sha256_file(folder / (TENSORS + ".tmp"))}
    (folder / (META + ".tmp")).write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(folder / (TENSORS + ".tmp"), folder / TENSORS)
    os.replace(folder / (META + ".tmp"), folder / META)
    return folder


def has_state(out: str | Path) -> bool:
    return (Path(out) / STATE_DIR / META).is_file()


def load_state(out: str | Path) -> TrainState:
    folder = Path(out) / STATE_DIR
    try:
        meta = json.loads((folder / META).read_text())
    except json.JSONDecodeError:
        raise ValueError(f"resume: {folder / META} is not valid JSON") from None
    if sha256_file(folder / TENSORS) != meta.get("sha256"):
        raise ValueError(f"resume: {folder / TENSORS} does not match {META} (corrupted or half-written)")
    tensors = load_file(str(folder / TENSORS))
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    slots: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return TrainState(step=int(meta["step"]), model=model, ema=ema,
                      optimizer={"state": slots, "param_groups": groups}, rng=tensors["rng.train"],
                      config=meta["config"], scaler=meta.get("scaler"), log=meta.get("log", []),
                      seconds=float(meta.get("seconds", 0.0)))

r"""Hyper-parameters of the guided-diffusion (ADM) UNet, under guided-diffusion's own flag names.

ADM (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis") checkpoints are bare
state dicts: the architecture is not in the file and must be rebuilt from the flags below, exactly as
the training run set them.  A wrong flag (``num_head_channels``, ``attention_resolutions``,
``learn_sigma`` ...) either fails the strict key / shape check of
:func:`diffinv.nn.adm.load_adm_state_dict` or, for flags that leave the shapes alone (attention
order, head count), silently changes the function; so configs are parsed strictly here.

Conventions (as in guided-diffusion's ``create_model``):

* ``channel_mult = ""`` picks the default by ``image_size``: 512 → (0.5, 1, 1, 2, 2, 4, 4),
  256 → (1, 1, 2, 2, 4, 4), 128 → (1, 1, 2, 3, 4), 64 → (1, 2, 3, 4); level ℓ has
  ``int(channel_mult[ℓ] · num_channels)`` channels.
* ``attention_resolutions`` lists feature-map *pixel sizes* r (e.g. "32,16,8"); the network attends at
  the downsample rates ds = image_size // r.
* ``learn_sigma`` (Nichol & Dhariwal 2021, "Improved DDPM") doubles the output: 2·C channels,
  ε̂ = out[:, :C] and the variance interpolation v = out[:, C:].
* ``num_head_channels > 0`` overrides ``num_heads`` (heads = channels / num_head_channels);
  ``num_heads_upsample = -1`` means ``num_heads`` in the decoder too.

A YAML file such as the DPS ``configs/model_config.yaml`` loads as it is: its non-architecture keys
(``model_path``, diffusion / sampling flags) are kept in :attr:`ADMConfig.extras` and otherwise ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from diffinv.typed import coerce, field_types, load_yaml, parse_value

DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}

#: Keys of guided-diffusion / DPS config files that do not change the network; kept, then ignored.
NON_ARCHITECTURE_KEYS: frozenset[str] = frozenset({
    "model_path", "diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl", "predict_xstart",
    "rescale_timesteps", "rescale_learned_sigmas", "sigma_small", "batch_size", "num_samples",
    "clip_denoised", "use_ddim", "microbatch", "lr", "weight_decay", "lr_anneal_steps", "ema_rate",
    "log_interval", "save_interval", "resume_checkpoint", "fp16_scale_growth", "data_dir",
    "schedule_sampler", "classifier_path", "classifier_scale",
})

@dataclass(frozen=True)
class ADMConfig:
    """Architecture of the ADM UNet (guided-diffusion ``create_model`` flag names and defaults).

    After construction ``channel_mult`` is the resolved tuple of level multipliers and
    ``attention_resolutions`` the tuple of pixel sizes r; :attr:`attention_ds` gives the rates
    image_size // r the network uses.  ``extras`` holds non-architecture keys of a config file.
    """

    image_size: int
    num_channels: int
    num_res_blocks: int
    channel_mult: Any = ""
    learn_sigma: bool = False
    class_cond: bool = False
    use_checkpoint: bool = False
    attention_resolutions: Any = "16"
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    dropout: float = 0.0
    resblock_updown: bool = False
    use_fp16: bool = False
    use_new_attention_order: bool = False
    in_channels: int = 3
    extras: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        for name, tp in field_types(type(self)).items():  # int / bool / float fields: the one typed reader
            if tp in (int, bool, float):
                value = getattr(self, name)  # command-line style strings ("True", "16") read as YAML 1.2
                put(self, name, coerce(parse_value(value) if isinstance(value, str) else value, tp, name))
        for name in ("image_size", "num_channels", "num_res_blocks", "in_channels", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_head_channels == 0 or self.num_head_channels < -1:
            raise ValueError(f"num_head_channels must be -1 (use num_heads) or > 0, "
                             f"got {self.num_head_channels}")
        if self.num_heads_upsample == 0 or self.num_heads_upsample < -1:
            raise ValueError(f"num_heads_upsample must be -1 (= num_heads) or > 0, "
                             f"got {self.num_heads_upsample}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        mult = self.channel_mult
        if mult is None or (isinstance(mult, str) and not mult.strip()):
            if self.image_size not in DEFAULT_CHANNEL_MULT:
                raise ValueError(f"channel_mult '' has no default for image_size {self.image_size} "
                                 f"(defaults exist for {sorted(DEFAULT_CHANNEL_MULT)}); give channel_mult")
            mult = DEFAULT_CHANNEL_MULT[self.image_size]
        mult = coerce([mult] if isinstance(mult, int) else mult, tuple[int, ...], "channel_mult")
        if not mult or any(m <= 0 for m in mult):
            raise ValueError(f"channel_mult must hold positive numbers, got {self.channel_mult!r}")
        put(self, "channel_mult", mult)
        res = self.attention_resolutions
        res = coerce([res] if isinstance(res, int) else res, tuple[int, ...], "attention_resolutions")
        if any(r < 1 for r in res):
            raise ValueError(f"attention_resolutions must be positive pixel sizes, "
                             f"got {self.attention_resolutions!r}")
        put(self, "attention_resolutions", res)
        put(self, "extras", dict(self.extras or {}))

    # ---------------------------------------------------------------- derived quantities
    @property
    def out_channels(self) -> int:
        """C_out = 2·C with a learned variance (ε̂ and v), else C."""
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def attention_ds(self) -> tuple[int, ...]:
        """Downsample rates ds = image_size // r at which self-attention runs."""
        return tuple(self.image_size // r for r in self.attention_resolutions)

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels per level, int(mult · num_channels)."""
        return tuple(int(m * self.num_channels) for m in self.channel_mult)

    def to_dict(self) -> dict[str, Any]:
        """The flags in guided-diffusion form (strings for ``channel_mult`` / ``attention_resolutions``)."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extras"}
        d["channel_mult"] = ",".join(str(m) for m in self.channel_mult)
        d["attention_resolutions"] = ",".join(str(r) for r in self.attention_resolutions)
        return d


ARCH_KEYS: tuple[str, ...] = tuple(f.name for f in fields(ADMConfig) if f.name != "extras")
_REQUIRED = ("image_size", "num_channels", "num_res_blocks")

ADM_PRESETS: dict[str, ADMConfig] = {
    # DPS FFHQ-256 (ffhq_10m.pt): 362 tensors, 93.6 M parameters.
    "adm-ffhq256": ADMConfig(
        image_size=256, num_channels=128, num_res_blocks=1, channel_mult="", learn_sigma=True,
        class_cond=False, attention_resolutions="16", num_heads=4, num_head_channels=64,
        num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=True, dropout=0.0,
    ),
    # guided-diffusion ImageNet-256 unconditional (256x256_diffusion_uncond.pt): 566 tensors, 552.8 M.
    "adm-imagenet256-uncond": ADMConfig(
        image_size=256, num_channels=256, num_res_blocks=2, channel_mult="", learn_sigma=True,
        class_cond=False, attention_resolutions="32,16,8", num_heads=4, num_head_channels=64,
        num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=True, dropout=0.0,
    ),
}


def _from_mapping(d: dict[Any, Any], where: str) -> ADMConfig:
    arch: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for k, v in d.items():
        key = str(k)
        if key in ARCH_KEYS:
            arch[key] = v
        elif key in NON_ARCHITECTURE_KEYS:
            extras[key] = v
        else:
            raise ValueError(f"arch: unknown key {key!r} in {where}; expected one of {', '.join(ARCH_KEYS)} "
                             f"(or a non-architecture key such as model_path)")
    missing = [k for k in _REQUIRED if k not in arch]
    if missing:
        raise ValueError(f"arch: {where} lacks {', '.join(missing)} (required to rebuild the ADM UNet)")
    try:
        return ADMConfig(**arch, extras=extras)
    except ValueError as e:
        raise ValueError(f"arch: {where}: {e}") from None


def adm_config(arch: str | Path | dict[str, Any] | ADMConfig) -> ADMConfig:
    """Resolve ``arch`` to an :class:`ADMConfig`.

    ``arch`` is a preset name (see :data:`ADM_PRESETS`), the path of a YAML file of guided-diffusion
    flags (e.g. DPS ``configs/model_config.yaml``), a dict of those flags, or an ADMConfig (returned
    as it is).  Errors are one-line ``ValueError`` messages starting with ``arch:``.
    """
    if isinstance(arch, ADMConfig):
        return arch
    if isinstance(arch, dict):
        return _from_mapping(arch, "the given dict")
    if isinstance(arch, str) and arch in ADM_PRESETS:
        return ADM_PRESETS[arch]
    if not isinstance(arch, (str, Path)):
        raise ValueError(f"arch: expected a preset name, a YAML path or a dict, got {type(arch).__name__}")
    path = Path(arch)
    if not path.is_file():
        if isinstance(arch, str) and path.suffix.lower() not in (".yaml", ".yml"):
            raise ValueError(f"arch: unknown ADM preset {arch!r}; expected one of "
                             f"{', '.join(ADM_PRESETS)} or a .yaml file of guided-diffusion flags")
        raise ValueError(f"arch: no such file {str(path)!r}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"arch: {path.name} is not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise ValueError(f"arch: {path.name} must hold a mapping of guided-diffusion flags, "
                         f"got {type(data).__name__}")
    return _from_mapping(data, path.name)

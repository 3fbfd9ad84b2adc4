r"""Problem presets: YAML files naming an operator, its noise and per-sampler defaults.

A preset (``problems/NAME.yaml``, or any YAML file of a user's) has exactly these keys::

    name: sr4                       # free text, defaults to the file stem
    description: ...                # free text
    operator: {name: sr_bicubic, factor: 4}       # a registry name and its constructor parameters
    noise: {kind: gaussian, sigma_y: 0.025}       # σ_y on the [0, 1] pixel scale
    samplers: {dps: {zeta: 1.0}, mcgdiff: {num_particles: 64}, ...}
    fit: {operator.sigma: {start: 1.5, lower: 0.3, upper: 4.0}, noise.sigma_y: {...}}   # optional

``fit`` gives the start value and bounds of the parameters that ``--fit NAME`` may estimate
(``noise.sigma_y`` and the fields the operator class lists in ``fittable``); a parameter without an
entry starts at the preset's value, with the class's default bounds (:mod:`diffinv.fitting.images`).

Units: diffinv takes σ_y on the **[0, 1] pixel scale**; the networks work on [−1, 1], where the
same noise has standard deviation 2σ_y (the DPS paper's 0.05 on [−1, 1] is 0.025 here).
Lengths: an operator's ``size`` (box, outpainting) given as a float in (0, 1) is a fraction of the
image side (rounded to pixels); integers are pixels. Operators that draw at random (random
inpainting, motion blur) take ``seed`` (default 0), so a preset always means the same mask/kernel.
``inpaint_mask`` needs ``mask`` (a PNG, white = observed) and ``blur_kernel`` needs ``kernel``
(.npy or PNG). Unknown keys anywhere are rejected with the key path named; Poisson noise is not
offered (no sampler here has its likelihood).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from diffinv import typed
from diffinv.operators.base import LinearOperator
from diffinv.operators.blur import CircularBlur
from diffinv.operators.inpainting import Inpainting
from diffinv.operators.noise import GaussianNoise
from diffinv.operators.registry import OPERATORS, operator_class
from diffinv.samplers.registry import SAMPLERS

PROBLEM_DIR = Path(__file__).resolve().parent.parent / "problems"
TOP_KEYS = ("name", "description", "operator", "noise", "samplers", "fit")
FIT_KEYS = ("start", "lower", "upper")
NOISE_KEYS = ("kind", "sigma_y")
FILE_PARAMS = {"inpaint_mask": "mask", "blur_kernel": "kernel"}  # operators built from a user's file
LENGTH_PARAMS = ("size",)
IMAGE_OPERATORS = tuple(n for n in OPERATORS if n not in ("dense", "select", "compose"))


@dataclass
class Problem:
    """A resolved preset: operator spec, σ_y ([0, 1] scale) and per-sampler option dicts."""

    name: str
    description: str
    operator: dict[str, Any]
    sigma_y: float
    samplers: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""
    fit: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "description": self.description, "operator": dict(self.operator),
               "noise": {"kind": "gaussian", "sigma_y": self.sigma_y},
               "samplers": copy.deepcopy(self.samplers), "source": self.source}
        if self.fit:
            out["fit"] = copy.deepcopy(self.fit)
        return out

    def sampler_options(self, sampler: str) -> dict[str, Any]:
        return dict(self.samplers.get(sampler, {}))

    @property
    def noise(self) -> GaussianNoise:
        return GaussianNoise(self.sigma_y)


def preset_names() -> list[str]:
    """Names of the shipped presets (problems/*.yaml)."""
    return sorted(p.stem for p in PROBLEM_DIR.glob("*.yaml"))


def _operator_params(name: str) -> list[str]:
    cls = operator_class(name)
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "shape")]
    params = [p for p in params if p not in ("generator", "kernel", "mask", "channels")]
    if "generator" in inspect.signature(cls.__init__).parameters:
        params.append("seed")
    if name in FILE_PARAMS:
        params.append(FILE_PARAMS[name])
    return params


def _operator_types(name: str) -> dict[str, Any]:
    """Types of an operator's preset keys: its constructor's annotations (+ seed, mask/kernel files)."""
    types_ = typed.parameter_types(operator_class(name).__init__)
    types_.update({"seed": int, "mask": str, "kernel": str})
    types_.update({k: int | float for k in LENGTH_PARAMS})
    return types_


def _check_keys(where: str, got: dict, allowed, prefix: str = "") -> None:
    """Reject the first key of ``got`` not in ``allowed``, naming its full path (prefix + key)."""
    unknown = [k for k in got if k not in allowed]
    if unknown:
        raise ValueError(f"{where}: unknown key '{prefix}{unknown[0]}'; expected one of {', '.join(allowed)}")


def validate(raw: Any, source: str = "", where: str | None = None) -> Problem:
    """Check a preset's dict (as read from YAML) and return the :class:`Problem`; errors start with
    ``where`` (default: ``problem SOURCE``)."""
    where = where or (f"problem {source}" if source else "problem")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a YAML mapping at the top level")
    _check_keys(where, raw, TOP_KEYS)
    op = raw.get("operator")
    if not isinstance(op, dict) or "name" not in op:
        raise ValueError(f"{where}: 'operator' must be a mapping with a 'name'")
    if op["name"] not in IMAGE_OPERATORS:
        raise ValueError(f"{where}: operator.name {op['name']!r} is not an image operator; expected one "
                         f"of {', '.join(IMAGE_OPERATORS)}")
    _check_keys(where, op, ["name", *_operator_params(op["name"])], "operator.")
    op = {"name": op["name"], **_coerce(where, _operator_types(op["name"]),
                                         {k: v for k, v in op.items() if k != "name"}, "operator.")}
    noise = raw.get("noise", {})
    if not isinstance(noise, dict):
        raise ValueError(f"{where}: 'noise' must be a mapping")
    _check_keys(where, noise, NOISE_KEYS, "noise.")
    if noise.get("kind", "gaussian") != "gaussian":
        raise ValueError(f"{where}: noise.kind {noise.get('kind')!r} is not supported; expected gaussian")
    sigma = noise.get("sigma_y", 0.025)
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not 0 < sigma < float("inf"):
        raise ValueError(f"{where}: noise.sigma_y must be a number > 0 (on the [0, 1] pixel scale), "
                         f"got {sigma!r}")
    samplers = raw.get("samplers") or {}
    if not isinstance(samplers, dict):
        raise ValueError(f"{where}: 'samplers' must be a mapping of sampler name to options")
    _check_keys(where, samplers, list(SAMPLERS), "samplers.")
    samplers = dict(samplers)
    for sname, options in samplers.items():
        if not isinstance(options, dict):
            raise ValueError(f"{where}: 'samplers.{sname}' must be a mapping of options")
        names = [f.name for f in dataclasses.fields(SAMPLERS[sname].Config)]
        _check_keys(where, options, names, f"samplers.{sname}.")
        samplers[sname] = _coerce(where, typed.field_types(SAMPLERS[sname].Config), options,
                                  f"samplers.{sname}.")
    return Problem(name=str(raw.get("name", Path(source).stem if source else "problem")),
                   description=str(raw.get("description", "")), operator=dict(op), sigma_y=float(sigma),
                   samplers={k: dict(v) for k, v in samplers.items()}, source=source,
                   fit=_fit_section(where, raw.get("fit") or {}, op["name"]))


def fittable_names(operator_name: str) -> list[str]:
    """The parameters ``--fit`` may estimate for an operator: noise.sigma_y and its ``fittable`` fields."""
    fields = getattr(operator_class(operator_name), "fittable", {})
    return ["noise.sigma_y", *(f"operator.{k}" for k in fields)]


def _fit_section(where: str, fit: Any, operator_name: str) -> dict[str, dict[str, float]]:
    if not isinstance(fit, dict):
        raise ValueError(f"{where}: 'fit' must be a mapping of parameter name to {{start, lower, upper}}")
    allowed = fittable_names(operator_name)
    _check_keys(where, fit, allowed, "fit.")
    out = {}
    for name, spec in fit.items():
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: 'fit.{name}' must be a mapping with keys start, lower, upper")
        _check_keys(where, spec, FIT_KEYS, f"fit.{name}.")
        for key, value in spec.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{where}: fit.{name}.{key} must be a number > 0, got {value!r}")
        out[name] = {k: float(v) for k, v in spec.items()}
    return out


def _coerce(where: str, types_: dict[str, Any], options: dict[str, Any], prefix: str) -> dict[str, Any]:
    try:
        return typed.coerce_options(types_, options, prefix)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def load_problem(name_or_path: str | Path) -> Problem:
    """A shipped preset by NAME, or a user's YAML file (validated)."""
    path = Path(name_or_path)
    if path.is_dir():
        raise ValueError(f"problem: {str(path)!r} is a folder; expected a preset name or a YAML file")
    if not path.is_file():
        shipped = PROBLEM_DIR / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise ValueError(f"problem: {str(name_or_path)!r} is neither a preset "
                             f"({', '.join(preset_names())}) nor a YAML file")
        path = shipped
    try:
        raw = typed.load_yaml(path.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"problem: {path} is not a text (YAML) file") from None
    except yaml.YAMLError as err:
        raise ValueError(f"problem: {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    return validate(raw, source=str(path))


def apply_overrides(problem: Problem, overrides: dict[str, Any]) -> Problem:
    """Override single fields by dotted key: ``operator.factor``, ``noise.sigma_y``, ``dcps.lr``
    (a sampler name is short for ``samplers.NAME``); the result is validated again."""
    raw = problem.to_dict()
    raw.pop("source")
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] in SAMPLERS:
            parts = ["samplers", *parts]
        node = raw
        for part in parts[:-1]:
            if part not in TOP_KEYS and node is raw:
                raise ValueError(f"set: unknown key {key!r}; expected operator.*, noise.*, SAMPLER.* or "
                                 "samplers.SAMPLER.*")
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"set: {key!r} does not name a field")
        node[parts[-1]] = value
    return validate(raw, source=problem.source, where="set")


def _resolve_length(value: Any, side: int, key: str) -> int:
    if isinstance(value, float) and 0 < value < 1:
        return max(1, round(value * side))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"operator.{key}: expected a pixel count ≥ 1 or a fraction in (0, 1), got {value!r}")
    return value


def build_operator(problem: Problem, shape: tuple[int, int, int], mask: str | Path | None = None,
                   kernel: str | Path | None = None) -> LinearOperator:
    """The problem's operator for images of ``shape`` (C, H, W); ``mask``/``kernel`` files override the
    preset's. Randomised operators draw from ``torch.Generator().manual_seed(operator.seed)``."""
    spec = dict(problem.operator)
    name = spec.pop("name")
    cls = operator_class(name)
    preset_mask, preset_kernel = spec.pop("mask", None), spec.pop("kernel", None)
    mask = mask if mask is not None else preset_mask
    kernel = kernel if kernel is not None else preset_kernel
    if name == "inpaint_mask":
        if mask is None:
            raise ValueError("mask: the operator inpaint_mask needs a mask PNG (--mask FILE)")
        return Inpainting.from_png(mask, shape)
    if name == "blur_kernel":
        if kernel is None:
            raise ValueError("kernel: the operator blur_kernel needs a kernel file (--kernel FILE.npy|.png)")
        return CircularBlur.from_file(kernel, shape)
    if mask is not None or kernel is not None:
        raise ValueError(f"{'mask' if mask is not None else 'kernel'}: the operator {name} takes no "
                         f"{'mask' if mask is not None else 'kernel'} file")
    for key in LENGTH_PARAMS:
        if key in spec:
            spec[key] = _resolve_length(spec[key], min(shape[1], shape[2]), key)
    if "seed" in spec or "generator" in inspect.signature(cls.__init__).parameters:
        spec["generator"] = torch.Generator().manual_seed(int(spec.pop("seed", 0)))
    try:
        return cls(tuple(shape), **spec)
    except TypeError as err:
        raise ValueError(f"operator: bad parameters for {name} ({err})") from None

"""Problem presets: every shipped preset loads and builds; unknown keys are named; overrides apply."""

from __future__ import annotations

import pytest
import torch
import yaml

from diffinv.operators.base import LinearOperator
from diffinv.problems import apply_overrides, build_operator, load_problem, preset_names

REQUIRED = {"sr4", "sr8", "inpaint_box", "inpaint_random", "inpaint_half", "outpaint", "deblur_gauss",
            "deblur_motion", "colorize"}


def test_required_presets_are_shipped():
    assert REQUIRED <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_preset_builds_at_32(name):
    problem = load_problem(name)
    shape = (3, 32, 32) if name == "colorize" else (1, 32, 32)
    op = build_operator(problem, shape)
    assert isinstance(op, LinearOperator) and op.in_shape == shape and op.has_svd
    assert 0 < problem.sigma_y < 0.1
    assert {"dps", "pgdm", "mcgdiff", "dcps"} <= set(problem.samplers)


def test_fraction_sizes_and_seeded_masks():
    box = build_operator(load_problem("inpaint_box"), (1, 32, 32))
    assert box.box[2] == 16
    a = build_operator(load_problem("inpaint_random"), (1, 32, 32))
    b = build_operator(load_problem("inpaint_random"), (1, 32, 32))
    assert torch.equal(a.mask, b.mask)
    c = build_operator(apply_overrides(load_problem("inpaint_random"), {"operator.seed": 5}), (1, 32, 32))
    assert not torch.equal(a.mask, c.mask)


@pytest.mark.parametrize("change, key", [
    ({"extra": 1}, "'extra'"),
    ({"operator": {"name": "sr_avgpool", "factr": 4}}, "'operator.factr'"),
    ({"noise": {"sigma": 0.1}}, "'noise.sigma'"),
    ({"samplers": {"dps": {"zeta": 1, "zetta": 2}}}, "'samplers.dps.zetta'"),
    ({"samplers": {"nope": {}}}, "'samplers.nope'"),
])
def test_unknown_keys_are_named(tmp_path, change, key):
    raw = yaml.safe_load(open(load_problem("sr4").source))
    raw.update(change)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=key):
        load_problem(path)


@pytest.mark.parametrize("override, message", [
    ({"noise.sigma_y": -1}, "sigma_y"),
    ({"noise.kind": "poisson"}, "noise.kind"),
    ({"bogus.x": 1}, "set: unknown key"),
    ({"operator.name": "dense"}, "not an image operator"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(load_problem("sr4"), override)


def test_overrides_apply_to_operator_noise_and_sampler():
    p = apply_overrides(load_problem("sr8"), {"operator.factor": 4, "noise.sigma_y": 0.05, "dcps.lr": 0.5})
    assert p.operator["factor"] == 4 and p.sigma_y == 0.05 and p.samplers["dcps"]["lr"] == 0.5
    assert build_operator(p, (1, 16, 16)).out_shape == (1, 4, 4)


def test_missing_preset_and_file_operators(tmp_path):
    with pytest.raises(ValueError, match="neither a preset"):
        load_problem("no_such_problem")
    raw = {"operator": {"name": "inpaint_mask"}, "noise": {"sigma_y": 0.01}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="--mask"):
        build_operator(load_problem(path), (1, 8, 8))


def test_baselines_bicubic_for_sr_and_pinv_otherwise():
    from diffinv.imaging.baselines import baseline

    x = torch.rand(1, 16, 16, dtype=torch.float64)
    sr = build_operator(load_problem("sr4"), (1, 16, 16))
    name, rec = baseline(sr, sr.A(x[None])[0])
    assert name == "bicubic" and rec.shape == (1, 16, 16)
    box = build_operator(load_problem("inpaint_box"), (1, 16, 16))
    name, rec = baseline(box, box.A(x[None])[0])
    assert name == "pinv" and torch.allclose(rec[box.mask], x[box.mask])
    assert float(rec[~box.mask].abs().max()) == 0

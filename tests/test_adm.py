"""The guided-diffusion (ADM) UNet port: upstream cross-check, state-dict checks, config parsing."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from diffinv.nn.adm import ADMUNet, load_adm_state_dict
from diffinv.nn.adm_config import ADM_PRESETS, ADMConfig, adm_config

# Flags of DPS configs/model_config.yaml, as that file spells them (attention_resolutions is a bare int).
DPS_FFHQ_YAML = """\
# Defaults for image training.

image_size: 256
num_channels: 128
num_res_blocks: 1
channel_mult: ""
learn_sigma: True
class_cond: False
use_checkpoint: False
attention_resolutions: 16
num_heads: 4
num_head_channels: 64
num_heads_upsample: -1
use_scale_shift_norm: True
dropout: 0.0
resblock_updown: True
use_fp16: False
use_new_attention_order: False

model_path: models/ffhq_10m.pt
"""

SMALL = dict(image_size=64, num_channels=32, num_res_blocks=1, channel_mult="1,2", learn_sigma=False,
             attention_resolutions="64,32", num_heads=2, num_head_channels=-1, num_heads_upsample=4,
             use_scale_shift_norm=True, resblock_updown=True, dropout=0.0)

# (name, flags, input side): every attention runs with >= 2 heads, so a wrong qkv order would show.
CROSS_CASES = [
    ("ffhq256-preset", adm_config("adm-ffhq256").to_dict(), 64),
    ("small-legacy-2heads", SMALL, 16),
    ("small-new-order",
     {**SMALL, "use_new_attention_order": True, "num_head_channels": 16, "learn_sigma": True}, 16),
    ("plain-resample-no-scale-shift", {**SMALL, "channel_mult": "1,2,2", "num_res_blocks": 2,
                                       "resblock_updown": False, "use_scale_shift_norm": False,
                                       "attention_resolutions": "32,16", "dropout": 0.1}, 16),
]


def randomise_(model: torch.nn.Module, seed: int) -> None:
    """Replace every parameter (also the zero-initialised ones) by seeded noise keeping activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif name.endswith("weight"):  # GroupNorm scale
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def make_inputs(cfg: ADMConfig, side: int, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, side, side, generator=g)
    w = torch.randn(batch, cfg.out_channels, side, side, generator=g)
    t = torch.tensor([3, 917][:batch], dtype=torch.int64)
    return x, t, w


def value_and_input_grad(model, x, t, w):
    x = x.clone().requires_grad_(True)
    out = model(x, t)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    return out.detach(), g


def upstream_model(flags: dict):
    script_util = pytest.importorskip(
        "guided_diffusion.script_util",
        reason="upstream guided-diffusion reference: pip install --no-deps guided-diffusion-sdk==1.0.0")
    kw = {k: v for k, v in flags.items() if k != "in_channels"}
    for k in ("channel_mult", "attention_resolutions"):
        if not isinstance(kw.get(k, ""), str):
            kw[k] = ",".join(str(v) for v in kw[k])
    return script_util.create_model(**kw)


def assert_close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    scale = b.abs().max().item()
    assert scale > 0
    assert (a - b).abs().max().item() <= rel * scale, (a - b).abs().max().item() / scale



def forward_or_skip(model, x, t):
    """The model's output without gradients, or a skip where float16 convolutions are unsupported."""
    try:
        with torch.no_grad():
            return model(x, t)
    except RuntimeError as e:
        pytest.skip(f"float16 convolution unsupported on this CPU build: {e}")


# --------------------------------------------------------------------------------- (a) upstream
@pytest.mark.parametrize("name,flags,side", CROSS_CASES, ids=[c[0] for c in CROSS_CASES])
def test_matches_upstream_output_and_input_gradient(name, flags, side):
    ref = upstream_model(flags)
    randomise_(ref, seed=11)
    cfg = adm_config(flags)
    ours = ADMUNet(cfg)
    load_adm_state_dict(ours, ref.state_dict(), source=name)
    ref.eval()
    ours.eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    x, t, w = make_inputs(cfg, side, batch=1 if name.startswith("ffhq") else 2)
    out_ref, g_ref = value_and_input_grad(ref, x, t, w)
    out, g = value_and_input_grad(ours, x, t, w)
    assert out.shape == (x.shape[0], cfg.out_channels, side, side)
    assert out.abs().max() > 1e-2  # re-randomised: not the zero-init output
    assert_close(out, out_ref)
    assert_close(g, g_ref)


def test_checkpointed_frozen_model_matches_upstream_gradient():
    flags = CROSS_CASES[2][1]
    ref = upstream_model(flags)
    randomise_(ref, seed=5)
    ours = ADMUNet(dataclasses.replace(adm_config(flags), use_checkpoint=True))
    load_adm_state_dict(ours, ref.state_dict(), source="ref")
    ours.requires_grad_(False)
    x, t, w = make_inputs(ours.config, 16)
    out_ref, g_ref = value_and_input_grad(ref, x, t, w)
    out, g = value_and_input_grad(ours, x, t, w)
    assert_close(out, out_ref)
    assert_close(g, g_ref)
    assert all(not p.requires_grad and p.grad is None for p in ours.parameters())


def test_wrong_attention_order_is_detected():
    flags = CROSS_CASES[1][1]
    ref = upstream_model(flags)
    randomise_(ref, seed=3)
    ours = ADMUNet(dataclasses.replace(adm_config(flags), use_new_attention_order=True))
    load_adm_state_dict(ours, ref.state_dict(), source="ref")  # same shapes, different function
    x, t, _ = make_inputs(ours.config, 16)
    with torch.no_grad():
        diff = (ours(x, t) - ref(x, t)).abs().max() / ref(x, t).abs().max()
    assert diff > 1e-3


def test_fp16_matches_upstream_convert_to_fp16():
    flags = {**SMALL, "use_fp16": True}
    ref = upstream_model(flags)
    randomise_(ref, seed=2)
    ours = ADMUNet(adm_config(flags))
    load_adm_state_dict(ours, ref.state_dict(), source="ref")
    ref.convert_to_fp16()
    x, t, _ = make_inputs(ours.config, 16)
    out_ref = forward_or_skip(ref, x, t)
    with torch.no_grad():
        out = ours(x, t)
    assert out.dtype == torch.float32
    assert_close(out, out_ref, rel=1e-3)


# --------------------------------------------------------------------------------- (b) own checks
@pytest.mark.parametrize("preset,tensors,millions", [("adm-ffhq256", 362, 93.6),
                                                     ("adm-imagenet256-uncond", 566, 552.8)])
def test_preset_sizes(preset, tensors, millions):
    with torch.device("meta"):
        model = ADMUNet(adm_config(preset))
    assert len(model.state_dict()) == tensors
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions
    assert model.config.out_channels == 6


def small_model(**over) -> ADMUNet:
    torch.manual_seed(0)
    return ADMUNet(adm_config({**SMALL, **over}))


def load_error(model, state) -> str:
    with pytest.raises(ValueError) as info:
        load_adm_state_dict(model, state, source="ckpt.pt")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("ckpt.pt:") and "--arch" in msg
    return msg


def test_state_dict_mismatches_are_one_line_errors():
    model = small_model()
    state = model.state_dict()
    before = {k: v.clone() for k, v in state.items()}
    dropped = dict(state)
    del dropped["middle_block.1.qkv.weight"]
    assert "'middle_block.1.qkv.weight'" in load_error(model, dropped)
    assert "'extra.weight'" in load_error(model, {**state, "extra.weight": torch.zeros(3)})
    bad = {**state, "out.2.weight": torch.zeros(6, 32, 3, 3)}
    msg = load_error(model, bad)
    assert "'out.2.weight'" in msg and "(6, 32, 3, 3)" in msg and "(3, 32, 3, 3)" in msg
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing loaded


def test_wrong_preset_for_checkpoint_is_refused():
    with torch.device("meta"):
        ffhq = ADMUNet(adm_config("adm-ffhq256"))
        imagenet = ADMUNet(adm_config("adm-imagenet256-uncond"))
    msg = load_error(ffhq, imagenet.state_dict())
    assert "'time_embed.0.weight'" in msg and "(1024, 256)" in msg


def test_wrapped_and_prefixed_state_dicts_load():
    src, dst = small_model(), small_model()
    randomise_(src, seed=1)
    for wrapped in ({"ema": src.state_dict(), "step": 3}, {"state_dict": src.state_dict()},
                    {f"module.{k}": v for k, v in src.state_dict().items()}):
        load_adm_state_dict(dst, wrapped, source="w")
        assert all(torch.equal(a, b) for a, b in zip(dst.state_dict().values(), src.state_dict().values(),
                                                     strict=True))


def test_fresh_model_outputs_zero_and_accepts_scalar_or_float_t():
    model = small_model(learn_sigma=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.count_nonzero(model(x, torch.tensor([1, 2]))) == 0
        randomise_(model, seed=4)
        a = model(x, torch.tensor([7, 7]))
        assert a.shape == (2, 6, 16, 16)
        assert torch.equal(a, model(x, 7))
        assert torch.allclose(a, model(x, torch.tensor([7.0, 7.0])))
    with pytest.raises(ValueError, match="t of shape"):
        model(x, torch.tensor([1, 2, 3]))


def test_checkpointing_keeps_values_and_gradients_with_frozen_parameters():
    plain = small_model(dropout=0.0)
    randomise_(plain, seed=9)
    ckpt = ADMUNet(dataclasses.replace(plain.config, use_checkpoint=True))
    load_adm_state_dict(ckpt, plain.state_dict(), source="plain")
    for m in (plain, ckpt):
        m.requires_grad_(False)
    x, t, w = make_inputs(plain.config, 16)
    out_a, g_a = value_and_input_grad(plain, x, t, w)
    out_b, g_b = value_and_input_grad(ckpt, x, t, w)
    assert torch.allclose(out_a, out_b, atol=1e-6) and torch.allclose(g_a, g_b, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(ckpt(x, t), out_a, atol=1e-6)

    def saved_numel(model) -> int:
        total = [0]

        def pack(z):
            total[0] += z.numel()
            return z

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda z: z):
            model(x.clone().requires_grad_(True), t)
        return total[0]

    assert saved_numel(ckpt) < 0.2 * saved_numel(plain)  # activations are recomputed, not stored


def test_fp16_runs_on_cpu():
    ref = small_model()
    randomise_(ref, seed=6)
    half = ADMUNet(dataclasses.replace(ref.config, use_fp16=True))
    load_adm_state_dict(half, ref.state_dict(), source="ref")
    assert half.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert half.input_blocks[1][0].emb_layers[1].weight.dtype == torch.float32
    assert half.out[2].weight.dtype == torch.float32 and half.time_embed[0].weight.dtype == torch.float32
    x, t, _ = make_inputs(ref.config, 16)
    out = forward_or_skip(half, x, t)
    with torch.no_grad():
        out32 = ref(x, t)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert_close(out, out32, rel=2e-2)


def test_class_conditional_is_refused():
    with pytest.raises(ValueError, match="class_cond"):
        ADMUNet(adm_config({**SMALL, "class_cond": True}))


# --------------------------------------------------------------------------------- configs
def test_dps_yaml_loads_as_the_ffhq_preset(tmp_path):
    path = tmp_path / "model_config.yaml"
    path.write_text(DPS_FFHQ_YAML)
    cfg = adm_config(path)
    assert cfg == ADM_PRESETS["adm-ffhq256"]
    assert cfg.extras == {"model_path": "models/ffhq_10m.pt"}
    assert cfg.channel_mult == (1, 1, 2, 2, 4, 4) and cfg.attention_ds == (16,)
    assert adm_config(str(path)) == cfg
    imagenet = DPS_FFHQ_YAML.replace("num_channels: 128", "num_channels: 256").replace(
        "num_res_blocks: 1", "num_res_blocks: 2").replace("attention_resolutions: 16",
                                                          'attention_resolutions: "32,16,8"')
    path.write_text(imagenet)
    assert adm_config(path) == ADM_PRESETS["adm-imagenet256-uncond"]
    assert ADM_PRESETS["adm-imagenet256-uncond"].attention_ds == (8, 16, 32)


def test_config_forms_and_round_trip():
    a = adm_config({**SMALL, "attention_resolutions": "32,16", "channel_mult": ""})
    b = adm_config({**SMALL, "attention_resolutions": [32, 16], "channel_mult": [1, 2, 3, 4]})
    assert a == b and a.channel_mult == (1, 2, 3, 4) and a.attention_ds == (2, 4)
    assert adm_config(a.to_dict()) == a
    assert adm_config("adm-ffhq256") is ADM_PRESETS["adm-ffhq256"]
    assert adm_config({**SMALL, "learn_sigma": "true"}).learn_sigma is True


def test_config_errors_name_arch(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text(DPS_FFHQ_YAML + "foo: 1\n")
    with pytest.raises(ValueError, match=r"^arch: unknown key 'foo' in my.yaml; expected one of image_size"):
        adm_config(path)
    with pytest.raises(ValueError, match=r"^arch: unknown ADM preset 'adm-nope'"):
        adm_config("adm-nope")
    with pytest.raises(ValueError, match=r"^arch: no such file"):
        adm_config(tmp_path / "absent.yaml")
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"^arch: my.yaml must hold a mapping"):
        adm_config(path)
    with pytest.raises(ValueError, match=r"^arch: the given dict lacks num_channels"):
        adm_config({"image_size": 64, "num_res_blocks": 1})
    with pytest.raises(ValueError, match=r"^arch: .*channel_mult '' has no default for image_size 96"):
        adm_config({**SMALL, "image_size": 96, "channel_mult": ""})
    with pytest.raises(ValueError, match=r"^arch: .*num_res_blocks: expected an integer"):
        adm_config({**SMALL, "num_res_blocks": "two"})

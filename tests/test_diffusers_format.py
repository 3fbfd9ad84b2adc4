"""diffusers checkpoints: schedules equal to DDPMScheduler's, offline UNet2DModel loading, ε conversions."""

from __future__ import annotations

import builtins
import json
import math
import sys

import pytest
import torch

from diffinv.priors.diffusers_format import (
    MISSING_DIFFUSERS,
    DiffusersEpsNet,
    is_diffusers_folder,
    load_diffusers_unet,
    output_to_eps,
    schedule_from_diffusers,
    scheduler_info,
)
from diffinv.rng import make_generator
from diffinv.schedules import linear_schedule

SCHEDULES = [
    {"beta_schedule": "linear"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "sigmoid", "beta_start": 1e-4, "beta_end": 0.02},
]


# --- schedules -----------------------------------------------------------------------------------

@pytest.mark.parametrize("num_timesteps", [50, 1000, 4000])
@pytest.mark.parametrize("cfg", SCHEDULES, ids=lambda c: c["beta_schedule"])
def test_alpha_bar_equals_diffusers(cfg, num_timesteps):
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (optional extra)")
    cfg = {**cfg, "num_train_timesteps": num_timesteps}
    ref = diffusers.DDPMScheduler(**cfg).alphas_cumprod.double()
    ours = schedule_from_diffusers(cfg)
    assert ours.num_timesteps == num_timesteps and ours.betas.dtype == torch.float64
    assert (ours.alpha_bar - ref).abs().div(ref).max().item() < 1e-12
    if cfg["beta_schedule"] != "sigmoid":  # DDIMScheduler has no sigmoid schedule
        ddim = diffusers.DDIMScheduler(**cfg).alphas_cumprod.double()
        assert (ours.alpha_bar - ddim).abs().div(ddim).max().item() < 1e-12


def test_trained_betas_equal_diffusers():
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (optional extra)")
    betas = torch.linspace(1e-3, 0.05, 200, dtype=torch.float64).tolist()
    cfg = {"num_train_timesteps": 200, "trained_betas": betas}
    ref = diffusers.DDPMScheduler(**cfg).alphas_cumprod.double()
    assert (schedule_from_diffusers(cfg).alpha_bar - ref).abs().div(ref).max().item() < 1e-12


def test_linear_matches_diffinv_linear_schedule():
    """No diffusers needed: the float32 build differs from the float64 one by float32 round-off only."""
    cfg = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
    ours, ref = schedule_from_diffusers(cfg), linear_schedule(1000, 1e-4, 0.02)
    assert (ours.alpha_bar - ref.alpha_bar).abs().div(ref.alpha_bar).max().item() < 1e-6
    assert (ours.betas - ref.betas).abs().max().item() < 2.5e-7  # ≈ 2 float32 ulps of ᾱ
    assert schedule_from_diffusers({}).num_timesteps == 1000  # diffusers' defaults


@pytest.mark.parametrize("cfg, field", [
    ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
    ({"beta_schedule": "quadratic"}, "beta_schedule"),
    ({"prediction_type": "flow"}, "prediction_type"),
    ({"_class_name": "ScoreSdeVeScheduler", "sigma_min": 0.01, "sigma_max": 50.0}, "variance-exploding"),
])
def test_schedule_refusals(cfg, field):
    with pytest.raises(ValueError, match=field) as err:
        schedule_from_diffusers(cfg)
    assert "\n" not in str(err.value)


def test_scheduler_info():
    cfg = {"_class_name": "DDPMScheduler", "beta_schedule": "linear", "clip_sample": True,
           "variance_type": "fixed_small", "steps_offset": 1, "prediction_type": "v_prediction"}
    info = scheduler_info(cfg)
    assert info["prediction_type"] == "v_prediction" and info["clip_sample"] is True
    assert info["steps_offset"] == 1 and info["variance_type"] == "fixed_small"
    assert scheduler_info({})["prediction_type"] == "epsilon"


# --- output parametrisations ---------------------------------------------------------------------

@pytest.mark.parametrize("alpha_bar", [0.999, 0.5, 0.01])
def test_output_to_eps_consistent(alpha_bar):
    gen = make_generator(0)
    x0 = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    x_t = a * x0 + s * eps
    v = a * eps - s * x0
    for kind, raw in (("epsilon", eps), ("sample", x0), ("v_prediction", v)):
        torch.testing.assert_close(output_to_eps(raw, x_t, alpha_bar, kind), eps, rtol=0, atol=1e-10)
    per_sample = torch.full((3, 1, 1, 1), alpha_bar, dtype=torch.float64)  # tensor ᾱ broadcasts
    torch.testing.assert_close(output_to_eps(v, x_t, per_sample, "v_prediction"), eps, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="parametrisation"):
        output_to_eps(eps, x_t, alpha_bar, "score")


# --- UNet2DModel folders -------------------------------------------------------------------------

UNET_KW = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1,
               down_block_types=("DownBlock2D", "AttnDownBlock2D"),
               up_block_types=("AttnUpBlock2D", "UpBlock2D"),
               norm_num_groups=8, attention_head_dim=8, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6)


@pytest.fixture(scope="module")
def tiny_unet():
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (optional extra)")
    torch.manual_seed(0)  # diffusers' own init draws from the global RNG; overwritten below anyway
    unet = diffusers.UNet2DModel(**UNET_KW)
    gen = make_generator(7)
    with torch.no_grad():  # re-randomise everything: several layers (conv_out, …) may start at zero
        for p in unet.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / math.sqrt(max(p[0].numel(), 1))))
    return unet.eval()


def _reference(unet, x, t):
    with torch.no_grad():
        return unet(x, t).sample


def _inputs():
    gen = make_generator(1)
    return torch.randn(2, 3, 16, 16, generator=gen), torch.tensor([3, 871], dtype=torch.long)


def test_bare_unet_folder(tiny_unet, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "bare"
    tiny_unet.save_pretrained(folder)
    assert is_diffusers_folder(folder) and not is_diffusers_folder(tmp_path / "nothing")
    net, info = load_diffusers_unet(folder)
    assert isinstance(net, DiffusersEpsNet) and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    x, t = _inputs()
    out = net(x, t)
    ref = _reference(tiny_unet, x, t)
    assert out.shape == (2, 3, 16, 16) and ref.abs().mean() > 1e-3  # not a zero network
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert info["scheduler_config"] is None and "default" in info["schedule_source"]
    assert info["prediction_type"] == "epsilon" and info["value_range"] == (-1.0, 1.0)
    assert (info["sample_size"], info["in_channels"], info["out_channels"]) == (16, 3, 3)
    torch.testing.assert_close(info["schedule"].alpha_bar, linear_schedule().alpha_bar, rtol=1e-6, atol=0)


def test_pipeline_folder(tiny_unet, tmp_path, monkeypatch):
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (optional extra)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                        prediction_type="v_prediction", clip_sample=False)
    folder = tmp_path / "pipe"
    diffusers.DDPMPipeline(unet=tiny_unet, scheduler=scheduler).save_pretrained(folder)
    assert (folder / "model_index.json").is_file() and is_diffusers_folder(folder)
    net, info = load_diffusers_unet(folder, dtype=torch.float64)
    x, t = _inputs()
    ref = _reference(tiny_unet, x, t).double()
    torch.testing.assert_close(net(x.double(), t), ref, rtol=0, atol=1e-5)  # float64 vs float32 forward
    assert info["prediction_type"] == "v_prediction" and info["scheduler"]["clip_sample"] is False
    assert info["scheduler_config"]["_class_name"] == "DDPMScheduler"
    assert info["schedule_source"].replace("\\", "/") == "scheduler/scheduler_config.json"
    ab = scheduler.alphas_cumprod.double()
    assert (info["schedule"].alpha_bar - ab).abs().div(ab).max().item() < 1e-12


def test_bin_weights_and_strict_loading(tiny_unet, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "bin"
    tiny_unet.save_pretrained(folder, safe_serialization=False)
    assert (folder / "diffusion_pytorch_model.bin").is_file()
    net, _ = load_diffusers_unet(folder)
    x, t = _inputs()
    torch.testing.assert_close(net(x, t), _reference(tiny_unet, x, t), rtol=0, atol=1e-6)
    # a config that no longer fits the weights must not load into a half-random network
    config = json.loads((folder / "config.json").read_text())
    config["layers_per_block"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not fit|could not load") as err:
        load_diffusers_unet(folder)
    assert "\n" not in str(err.value)


def test_pickle_with_code_is_refused(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", **UNET_KW}))
    torch.save({"weights": torch.zeros(1), "obj": make_generator}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="weights-only"):
        load_diffusers_unet(folder)


def test_refuses_other_models(tmp_path):
    folder = tmp_path / "cond"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "X", "unet": ["diffusers", "U"]}))
    assert is_diffusers_folder(folder)
    with pytest.raises(ValueError, match="UNet2DConditionModel"):
        load_diffusers_unet(folder)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LDMPipeline", "vqvae": ["d", "V"]}))
    with pytest.raises(ValueError, match="latent"):
        load_diffusers_unet(folder)


def test_missing_diffusers_message(tmp_path, monkeypatch):
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", **UNET_KW}))
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    real_import = builtins.__import__

    def no_diffusers(name, *args, **kwargs):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ModuleNotFoundError("No module named 'diffusers'")
        return real_import(name, *args, **kwargs)

    for key in [k for k in sys.modules if k == "diffusers" or k.startswith("diffusers.")]:
        monkeypatch.delitem(sys.modules, key)
    monkeypatch.setattr(builtins, "__import__", no_diffusers)
    with pytest.raises(ValueError) as err:
        load_diffusers_unet(folder)
    assert str(err.value) == MISSING_DIFFUSERS and "\n" not in MISSING_DIFFUSERS
    assert is_diffusers_folder(folder)  # detection never needs diffusers


def test_flat_layout_with_root_scheduler(tiny_unet, tmp_path, monkeypatch):
    """Older hub repositories keep config.json, the weights and scheduler_config.json in one folder."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (optional extra)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "flat"
    tiny_unet.save_pretrained(folder)
    diffusers.DDPMScheduler(num_train_timesteps=500, prediction_type="sample").save_pretrained(folder)
    _, info = load_diffusers_unet(folder)
    assert info["schedule_source"] == "scheduler_config.json" and info["prediction_type"] == "sample"
    assert info["schedule"].num_timesteps == 500

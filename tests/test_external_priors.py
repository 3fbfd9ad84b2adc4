"""External priors through the one loading seam: ADM state dicts and diffusers folders, end to end in solve.

* load_prior on a tiny ADM (.pt and .safetensors): shape, ε = the first C of 2C output channels,
  strict key errors in one line, pickled objects refused, a preset inferred from the tensors;
* every sampler through ``diffinv solve`` fully (default steps) on a tiny ADM, and with ``--steps 2`` on a
  random-weight ADM with the DPS FFHQ-256 config at 256×256 (slow; peak memory in benchmarks/adm256.py);
* a diffusers pipeline folder through ``solve`` (skipped without diffusers);
* named priors and presets resolve from any working directory.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from cli.main import app
from diffinv.imaging.io import save_png
from diffinv.nn.adm import ADMUNet
from diffinv.nn.adm_config import adm_config
from diffinv.priors.loading import FORMATS, load_prior
from diffinv.problems import load_problem
from diffinv.rng import make_generator
from diffinv.solve import SolveConfig, solve

TINY = {"image_size": 16, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
        "attention_resolutions": "8", "num_heads": 2, "num_head_channels": -1, "learn_sigma": True,
        "use_scale_shift_norm": True, "resblock_updown": True, "dropout": 0.0, "model_path": "ignored.pt"}
FAST = {"dps": [], "pgdm": [], "ddrm": [], "mcgdiff": ["--set", "mcgdiff.num_particles=2"],
        "dcps": ["--set", "dcps.num_blocks=1", "--set", "dcps.langevin_steps=1",
                 "--set", "dcps.gradient_steps=1"]}
runner = CliRunner()


class Opaque:
    """A pickled object that weights_only loading must refuse."""


def random_adm(config) -> ADMUNet:
    """An ADM with every parameter re-randomised (the default init zeroes the output)."""
    net = ADMUNet(adm_config(config))
    gen = make_generator(11)
    with torch.no_grad():
        for p in net.parameters():
            fan_in = max(p[0].numel(), 1) if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / math.sqrt(fan_in)))
    return net


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("adm")
    (root / "tiny.yaml").write_text("\n".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}"
                                              for k, v in TINY.items()) + "\n")
    net = random_adm(dict(TINY))
    torch.save(net.state_dict(), root / "tiny.pt")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(root / "tiny.safetensors"))
    save_png(torch.rand(3, 16, 16, generator=make_generator(2)), root / "truth.png")
    return root


def test_registry_lists_every_format():
    # refined first: its folder also holds a card.json
    assert list(FORMATS) == ["refined", "diffinv", "diffusers", "adm"]


@pytest.mark.parametrize("name", ["tiny.pt", "tiny.safetensors"])
def test_adm_file_loads_as_a_prior(tiny, name):
    prior = load_prior(tiny / name, arch=tiny / "tiny.yaml")
    assert prior.shape == (3, 16, 16) and prior.value_range == (-1.0, 1.0) and prior.parametrisation == "eps"
    assert prior.card["format"] == "adm" and prior.schedule.num_timesteps == 1000
    x = torch.randn(2, 3, 16, 16, generator=make_generator(3))
    raw = prior.network(x, torch.full((2,), 500, dtype=torch.long))
    out = prior.denoise(x, 500)
    assert raw.shape == (2, 6, 16, 16) and torch.equal(out.eps, raw[:, :3])
    assert not any(p.requires_grad for p in prior.network.parameters())


def test_adm_errors_are_one_line(tiny, tmp_path):
    wrong = dict(TINY, num_channels=64)
    with pytest.raises(ValueError, match="input_blocks|time_embed") as info:
        load_prior(tiny / "tiny.pt", arch=wrong)
    assert "\n" not in str(info.value) and "--arch" in str(info.value)
    with pytest.raises(ValueError, match="fits no ADM preset"):
        load_prior(tiny / "tiny.pt")  # no --arch, and no preset has these tensors
    torch.save({"weights": torch.zeros(2), "opt": Opaque()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="pickled Python objects"):
        load_prior(tmp_path / "pickled.pt", arch=tiny / "tiny.yaml")
    with pytest.raises(ValueError, match="arch: unknown key 'bogus'"):
        load_prior(tiny / "tiny.pt", arch=dict(TINY, bogus=1))


def test_every_sampler_fully_on_a_tiny_adm(tiny):
    for sampler in ("dps", "pgdm", "mcgdiff", "dcps", "ddrm"):
        report = solve(SolveConfig(image=str(tiny / "truth.png"), problem="inpaint_box", sampler=sampler,
                                   num_samples=2, simulate=True, device="cpu",
                                   checkpoint=str(tiny / "tiny.pt"), arch=str(tiny / "tiny.yaml")),
                       write=False)
        assert report.samples.shape == (2, 3, 16, 16) and report.metrics["nfe_forward"] > 0, sampler


@pytest.mark.slow
def test_every_sampler_at_256_on_the_ffhq_architecture(tmp_path):
    """Shapes and memory, not quality: random FFHQ-256 weights, --steps 2, one sample (~2 min, 2 cores)."""
    net = random_adm("adm-ffhq256")
    torch.save(net.state_dict(), tmp_path / "ffhq_rand.pt")
    del net
    save_png(torch.rand(3, 256, 256, generator=make_generator(4)), tmp_path / "face.png")
    for sampler, extra in FAST.items():
        out = tmp_path / f"r_{sampler}"
        res = runner.invoke(app, ["solve", str(tmp_path / "face.png"), "--simulate", "--problem", "sr4",
                                  "--sampler", sampler, "--steps", "2", "--num-samples", "1", "--quiet",
                                  "--device", "cpu", "--checkpoint", str(tmp_path / "ffhq_rand.pt"),
                                  "--arch", "adm-ffhq256", "--out", str(out), *extra])
        assert res.exit_code == 0, (sampler, res.output)
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["config"]["solve"]["arch"] == "adm-ffhq256"
        assert (out / "samples" / "000.png").is_file()


def test_diffusers_pipeline_folder_through_solve(tmp_path, monkeypatch):
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (optional extra)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3,
                                 block_out_channels=(16, 32), layers_per_block=1,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                                 attention_head_dim=8)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                        prediction_type="v_prediction")
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    prior = load_prior(tmp_path / "pipe")
    assert prior.shape == (3, 16, 16) and prior.parametrisation == "v" and prior.card["format"] == "diffusers"
    save_png(torch.rand(3, 16, 16, generator=make_generator(5)), tmp_path / "truth.png")
    res = runner.invoke(app, ["solve", str(tmp_path / "truth.png"), "--simulate", "--problem", "sr4",
                              "--sampler", "pgdm", "--steps", "3", "--quiet", "--device", "cpu",
                              "--checkpoint", str(tmp_path / "pipe"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["solve", str(tmp_path / "truth.png"), "--simulate", "--checkpoint",
                              str(tmp_path / "pipe"), "--arch", "adm-ffhq256", "--quiet",
                              "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "arch" in res.output


def test_named_priors_and_presets_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIFFINV_CHECKPOINTS", raising=False)
    assert load_prior("fashion32").shape == (1, 32, 32)
    assert load_problem("sr4").name == "sr4"

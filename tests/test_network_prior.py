"""NetworkPrior (ε-network as a DiffusionPrior) and checkpoint validation (safetensors + model card)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from diffinv.checkpoints import CARD_FILE, MODEL_FILE, load_prior, resolve_checkpoint, save_prior
from diffinv.nn.unet import UNet, UNetConfig, init_weights
from diffinv.priors.base import CountingPrior, DiffusionPrior
from diffinv.priors.network import NetworkPrior
from diffinv.rng import make_generator
from diffinv.schedules import eps_to_x0, linear_schedule

CONFIG = UNetConfig(in_channels=2, base_channels=8, channel_mults=(1, 2))


def random_net(dtype=torch.float32) -> UNet:
    """A UNet with random weights everywhere (also the zero-initialised output conv)."""
    gen = make_generator(3)
    net = init_weights(UNet(CONFIG), gen)
    with torch.no_grad():
        net.conv_out.weight.normal_(0, 0.1, generator=gen)
    return net.to(dtype)


def card() -> dict:
    return {"architecture": {"name": "UNet", "config": CONFIG.to_dict()},
            "schedule": {"kind": "linear", "num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
            "parametrisation": "eps", "image_size": 8, "channels": 2, "value_range": [-1.0, 1.0]}


@pytest.fixture
def saved(tmp_path):
    return save_prior(tmp_path / "tiny", random_net().state_dict(), card())


def test_protocol_and_eps_x0_consistency():
    prior = NetworkPrior(random_net(torch.float64), linear_schedule(), (2, 8, 8))
    assert isinstance(prior, DiffusionPrior) and prior.value_range == (-1.0, 1.0) and prior.differentiable
    x = torch.randn(3, 2, 8, 8, generator=make_generator(0), dtype=torch.float64)
    for t in (0, 500, 999):
        out = prior.denoise(x, t)
        assert out.x0.dtype == torch.float64 and out.eps.abs().max() > 0
        torch.testing.assert_close(out.x0, eps_to_x0(x, out.eps, prior.schedule.alpha_bar_at(t)))
    with pytest.raises(ValueError, match="x_t"):
        prior.denoise(torch.zeros(1, 1, 8, 8), 3)


def test_counting_prior_and_autograd():
    counted = CountingPrior(NetworkPrior(random_net(), linear_schedule(), (2, 8, 8)), max_batch=2)
    x = torch.randn(3, 2, 8, 8, generator=make_generator(1)).requires_grad_(True)
    with torch.enable_grad():
        out = counted.denoise(x, 100)
        (grad,) = torch.autograd.grad(out.x0.square().sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().max() > 0
    assert counted.stats.forward == 3 and counted.stats.backward == 3
    # the network's batch items are independent (GroupNorm, no BatchNorm): chunking changes nothing
    plain = NetworkPrior(random_net(), linear_schedule(), (2, 8, 8)).denoise(x.detach(), 100)
    torch.testing.assert_close(out.eps.detach(), plain.eps, rtol=1e-4, atol=1e-5)


def test_no_graph_without_input_gradient(saved):
    """Weights that require grad must not chain a graph onto particles (MCGDiff ran out of memory)."""
    counted = CountingPrior(NetworkPrior(random_net(), linear_schedule(), (2, 8, 8)))
    assert next(counted.prior.network.parameters()).requires_grad
    with torch.enable_grad():
        out = counted.denoise(torch.randn(2, 2, 8, 8, generator=make_generator(2)), 100)
    assert out.x0.grad_fn is None and out.eps.grad_fn is None
    assert not any(p.requires_grad for p in load_prior(saved).network.parameters())


def test_reload_is_bit_exact_and_resolves_names(saved, monkeypatch, tmp_path):
    prior = load_prior(saved)
    reference = random_net().state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in prior.network.state_dict().items())
    assert prior.shape == (2, 8, 8) and prior.card["weights"]["tensors"]
    monkeypatch.setenv("DIFFINV_CHECKPOINTS", str(tmp_path))
    assert resolve_checkpoint("tiny") == saved and resolve_checkpoint(saved / MODEL_FILE) == saved
    x = torch.randn(2, 2, 8, 8, generator=make_generator(2))
    assert torch.equal(load_prior("tiny").denoise(x, 7).eps, prior.denoise(x, 7).eps)


def rewrite_card(folder, change) -> None:
    doc = json.loads((folder / CARD_FILE).read_text())
    change(doc)
    (folder / CARD_FILE).write_text(json.dumps(doc))


@pytest.mark.parametrize("damage, message", [
    ("flip_byte", "corrupted"),
    ("truncate", "corrupted"),
    ("bad_json", "not valid JSON"),
    ("card_shape", "tensor 'conv_in.weight'"),
    ("card_dtype", "tensor 'conv_in.weight'"),
    ("card_missing_key", "tensor names"),
    ("architecture", "do not fit the architecture"),
    ("not_a_card", "not a diffinv-prior/1"),
])
def test_damaged_checkpoint_one_clear_error(saved, damage, message):
    weights = saved / MODEL_FILE
    if damage == "flip_byte":
        raw = bytearray(weights.read_bytes())
        raw[-5] ^= 0x01
        weights.write_bytes(bytes(raw))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "bad_json":
        (saved / CARD_FILE).write_text("{ not json")
    elif damage == "card_shape":
        rewrite_card(saved, lambda d: d["weights"]["tensors"]["conv_in.weight"].update(shape=[8, 1, 3, 3]))
    elif damage == "card_dtype":
        rewrite_card(saved, lambda d: d["weights"]["tensors"]["conv_in.weight"].update(dtype="float16"))
    elif damage == "card_missing_key":
        rewrite_card(saved, lambda d: d["weights"]["tensors"].pop("conv_in.bias"))
    elif damage == "architecture":
        rewrite_card(saved, lambda d: d["architecture"]["config"].update(base_channels=16))
    else:
        rewrite_card(saved, lambda d: d.update(format="something-else"))
    with pytest.raises(ValueError, match=message) as info:
        load_prior(saved)
    assert "\n" not in str(info.value)
    res = CliRunner().invoke(app, ["sample", "--checkpoint", str(saved), "-n", "2", "--steps", "2",
                                   "--out", str(saved / "g.png")])
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and message.split()[0].strip("'") in lines[0]

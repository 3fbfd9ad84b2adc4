"""Training embedded priors: data sources, exact resume, CLI train/sample, one-line data errors.

Everything runs on a tiny synthetic image folder (made with Pillow) and a tiny UNet, so the whole
file takes a few seconds; bit-exactness holds because both runs share the process (same threads).
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from cli.main import app
from diffinv.checkpoints import load_prior
from diffinv.data import batch_to_network, fashion_mnist, load_dataset
from diffinv.data import emoji as emoji_module
from diffinv.rng import make_generator
from diffinv.training import TrainConfig, train
from diffinv.training.state import load_state

runner = CliRunner()
TINY = dict(image_size=8, channels=3, batch_size=4, base_channels=8, channel_mults=(1, 2), warmup=2,
            save_every=0, sample_every=0, grid_size=4, grid_steps=3, evaluate=False, threads=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """20 random RGB images of assorted sizes (every 10th is held out: 18 train, 2 test)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(20):
        h, w = rng.integers(9, 20, size=2)
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(root / f"img{i:02d}.png")
    return root


def one_line(result) -> str:
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_folder_data_and_batches(folder):
    data = load_dataset(str(folder), 8, 3)
    assert data.train.shape == (18, 3, 9, 9) and data.test.shape == (2, 3, 9, 9)
    assert data.train.dtype == torch.uint8
    x = batch_to_network(data.train, torch.tensor([0, 1, 2]), 8, make_generator(0), flip=True)
    assert x.shape == (3, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    gray = load_dataset(str(folder), 8, 1)
    assert gray.train.shape == (18, 1, 9, 9)


def test_fashion_idx_reader_pads_to_32(tmp_path):
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 5), ("t10k", 3)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">4B3i", 0, 0, 8, 3, n, 28, 28) + images.tobytes())
        with gzip.open(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">4Bi", 0, 0, 8, 1, n) + bytes(range(n)))
    data = fashion_mnist.load_fashion_mnist(32, root=tmp_path)
    assert data.train.shape == (5, 1, 32, 32) and data.test.shape == (3, 1, 32, 32)
    assert data.train[:, :, :2].sum() == 0 and data.test_labels.tolist() == [0, 1, 2]
    assert torch.equal(data.test[0, 0, 2:30, 2:30], torch.from_numpy(images[0]))


def test_resume_is_bit_identical(folder, tmp_path):
    full = TrainConfig(data=str(folder), steps=6, out=str(tmp_path / "full"), **TINY)
    train(full)
    half = TrainConfig(**{**full.to_dict(), "out": str(tmp_path / "half")})
    calls = {"n": 0}

    def stop_after_three() -> bool:  # an interruption (signal) after step 3
        calls["n"] += 1
        return calls["n"] == 3

    stopped = train(half, stop=stop_after_three)
    assert stopped.step == 3 and not (tmp_path / "half" / "model.safetensors").exists()
    resumed = train(half)
    assert resumed.resumed_from == 3 and resumed.step == 6
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(
        str(tmp_path / "half" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = load_state(tmp_path / "full"), load_state(tmp_path / "half")
    assert all(torch.equal(sa.model[k], sb.model[k]) for k in sa.model)
    assert all(torch.equal(v, sb.optimizer["state"][i][n]) for i, s in sa.optimizer["state"].items()
               for n, v in s.items())
    assert torch.equal(sa.rng, sb.rng)
    with pytest.raises(ValueError, match="resume: .* different lr"):
        train(TrainConfig(**{**half.to_dict(), "lr": 0.5, "steps": 8}))


def test_saved_prior_reloads_exactly(folder, tmp_path):
    cfg = TrainConfig(data=str(folder), steps=2, out=str(tmp_path / "p"), **TINY)
    train(cfg)
    state = load_state(tmp_path / "p")
    prior = load_prior(tmp_path / "p")
    assert all(torch.equal(v, state.ema[k]) for k, v in prior.network.state_dict().items())
    card = prior.card
    assert card["parametrisation"] == "eps" and card["value_range"] == [-1.0, 1.0]
    assert card["schedule"] == {"kind": "linear", "num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    assert card["image_size"] == 8 and card["channels"] == 3 and card["training"]["steps"] == 2
    x = torch.randn(3, 3, 8, 8, generator=make_generator(0))
    again = load_prior(tmp_path / "p")
    assert torch.equal(prior.denoise(x, 10).eps, again.denoise(x, 10).eps)


def test_cli_train_sample_and_evaluate(folder, tmp_path):
    out = tmp_path / "cli"
    args = ["train", "--data", str(folder), "--out", str(out), "--image-size", "8", "--channels", "3",
            "--steps", "3", "--batch-size", "4", "--base-channels", "8", "--channel-mults", "1,2",
            "--sample-every", "2", "--grid-size", "4", "--grid-steps", "2", "--eval-samples", "8",
            "--threads", "1", "-q"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "samples" / "step_0000002.png").is_file() and (out / "samples" / "eval.png").is_file()
    figures = load_prior(out).card["figures"]
    assert len(figures["denoising_mse"]["network"]) == 4 and figures["frechet"]["features"] == "pixels-4x4"
    assert figures["nearest_neighbour"]["samples_median"] > 0
    res = runner.invoke(app, ["sample", "--checkpoint", str(out), "-n", "5", "--steps", "4",
                              "--out", str(tmp_path / "g.png"), "--npy", str(tmp_path / "g.npy")])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "g.png").size[0] > 8 and np.load(tmp_path / "g.npy").shape == (5, 3, 8, 8)
    res = runner.invoke(app, args[:-1] + ["--lr", "0.1", "-q"])  # resume with another recipe
    assert res.exit_code == 2 and "different lr" in one_line(res)


def test_missing_packages_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DIR", tmp_path / "none")
    res = runner.invoke(app, ["train", "--data", "fashion-mnist", "--out", str(tmp_path / "f"), "-q"])
    assert res.exit_code == 2 and "apt-get install dataset-fashion-mnist" in one_line(res)
    monkeypatch.setattr(emoji_module, "EMOJI_FONT", tmp_path / "none.ttf")
    res = runner.invoke(app, ["train", "--data", "emoji", "--out", str(tmp_path / "e"), "-q"])
    assert res.exit_code == 2 and "apt-get install fonts-noto-color-emoji" in one_line(res)
    res = runner.invoke(app, ["sample", "--checkpoint", "no-such-prior"])
    assert res.exit_code == 2 and "not found" in one_line(res)


@pytest.mark.skipif(not emoji_module.EMOJI_FONT.is_file(), reason="fonts-noto-color-emoji not installed")
def test_emoji_colour_prior_code_path(monkeypatch, tmp_path):
    monkeypatch.setattr(emoji_module, "BLOCKS", ((0x1F600, 0x1F614),))  # 20 smileys: fast
    data = load_dataset("emoji", 16, 3)
    assert data.train.shape == (18, 3, 16, 16) and data.test.shape == (2, 3, 16, 16)
    assert (data.train[:, :, 0, 0] == 255).all(1).float().mean() > 0.5  # mostly white corners
    cfg = TrainConfig(data="emoji", steps=2, out=str(tmp_path / "emoji"), **{**TINY, "image_size": 16})
    assert train(cfg).step == 2 and load_prior(tmp_path / "emoji").shape == (3, 16, 16)

"""Generators on devices: CPU draws unchanged, CUDA draws on the GPU without host syncs."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from torch import nn

from diffinv.priors import GaussianMixture, GaussianMixturePrior
from diffinv.priors.network import NetworkPrior
from diffinv.rng import generator_device, make_generator, rand, randn
from diffinv.schedules import linear_schedule
from diffinv.smc import RESAMPLING, resample
from tests.host_sync import count_host_syncs

D = torch.float64
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
WEIGHTS = [[0.05, 0.3, 0.15, 0.2, 0.3], [0.5, 0.1, 0.1, 0.2, 0.1]]
# ancestors of WEIGHTS, 6 draws, seed 11, recorded with the implementation before generators had devices
RECORDED = {
    "systematic": [[0, 1, 2, 3, 3, 4], [0, 0, 0, 2, 3, 4]],
    "stratified": [[0, 1, 2, 3, 4, 4], [0, 0, 0, 1, 3, 4]],
    "residual": [[1, 1, 3, 3, 4, 4], [0, 0, 0, 1, 1, 3]],
}


def _mixture(isotropic: bool) -> GaussianMixture:
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(4, 3, generator=gen, dtype=D)
    weights = torch.rand(4, generator=gen, dtype=D) + 0.1
    if isotropic:
        return GaussianMixture.create(means, weights, torch.rand(4, generator=gen, dtype=D) + 0.1)
    a = torch.randn(4, 3, 3, generator=gen, dtype=D)
    return GaussianMixture.create(means, weights, a @ a.transpose(-1, -2) + 0.1 * torch.eye(3, dtype=D))


class _Scale(nn.Module):
    """o = w x + t/1000: a network with one parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.7))

    def forward(self, x, t):
        return self.w * x + t.to(x.dtype)[:, None, None, None] * 1e-3


@contextmanager
def _sync_errors():
    """Every CUDA host sync inside raises (torch.cuda.set_sync_debug_mode("error"))."""
    mode = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(mode)


# ------------------------------------------------------------------ CPU: as before


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_cpu_generator_draws_as_a_plain_seeded_generator(device):
    gen = make_generator(7) if device is None else make_generator(7, device)
    ref = torch.Generator().manual_seed(7)
    assert gen.device == torch.device("cpu") == generator_device(gen) == generator_device(None)
    like = torch.empty((), dtype=D)
    assert torch.equal(randn((3, 4), gen, like), torch.randn(3, 4, generator=ref, dtype=D))
    assert torch.equal(rand((5,), gen, like), torch.rand(5, generator=ref, dtype=D))
    assert torch.equal(torch.multinomial(torch.ones(6), 9, True, generator=gen),
                       torch.multinomial(torch.ones(6), 9, True, generator=ref))


def test_bad_generator_arguments():
    with pytest.raises(ValueError, match="seed"):
        make_generator(-1)
    with pytest.raises(ValueError, match="device"):
        make_generator(0, "gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: 'cuda'"):
            make_generator(0, "cuda")


@pytest.mark.parametrize("scheme", list(RESAMPLING))
def test_resampling_on_the_cpu_is_unchanged(scheme):
    w = torch.tensor(WEIGHTS, dtype=D)
    anc = resample(scheme, w, 6, make_generator(11))
    if scheme == "multinomial":
        expected = torch.multinomial(w, 6, replacement=True, generator=torch.Generator().manual_seed(11))
        assert torch.equal(anc, expected)
    else:
        assert anc.tolist() == RECORDED[scheme]


@pytest.mark.parametrize("isotropic", [True, False])
def test_mixture_samples_on_the_cpu_are_unchanged(isotropic):
    mix = _mixture(isotropic)
    ref = torch.Generator().manual_seed(3)
    comp = torch.multinomial(mix.weights, 20, replacement=True, generator=ref)
    z = torch.randn(20, 3, generator=ref, dtype=D)
    if isotropic:
        expected = mix.means[comp] + mix.variances[comp].sqrt()[:, None] * z
    else:
        scaled = z * mix.eigvals[comp].sqrt()
        expected = mix.means[comp] + torch.einsum("nij,nj->ni", mix.eigvecs[comp], scaled)
    x, got = mix.sample(20, make_generator(3), return_components=True)
    assert torch.equal(got, comp) and torch.equal(x, expected)
    assert mix.to("cpu", D) is mix and mix.to(None, torch.float32).means.dtype == torch.float32


@pytest.mark.parametrize("isotropic", [True, False])
def test_gmm_prior_casts_are_cached_and_change_nothing(isotropic):
    prior = GaussianMixturePrior(_mixture(isotropic))
    gen = torch.Generator().manual_seed(1)
    x32 = torch.randn(5, 3, generator=gen)
    x64 = x32.double()
    first = prior.denoise(x32, 300)
    prior.denoise(x64, 300)
    again = prior.denoise(x32, 300)
    fresh = GaussianMixturePrior(prior.mixture).denoise(x32, 300)
    assert torch.equal(first.x0, again.x0) and torch.equal(first.x0, fresh.x0)
    assert first.x0.dtype == torch.float32 and prior.denoise(x64, 300).x0.dtype == D
    assert len(prior._casts) == 2
    other = _mixture(not isotropic)
    prior.mixture = other  # a new mixture: the cache follows it
    assert torch.equal(prior.denoise(x32, 300).x0, GaussianMixturePrior(other).denoise(x32, 300).x0)


def test_gmm_prior_gradients_through_parameters_are_not_cached():
    mix = _mixture(True)
    means = mix.means.clone().requires_grad_(True)
    prior = GaussianMixturePrior(GaussianMixture(means, mix.log_weights, variances=mix.variances,
                                                 shape=mix.shape))
    x = torch.zeros(2, 3)
    for _ in range(2):  # a second backward needs a fresh graph
        prior.denoise(x, 100).x0.sum().backward()
    assert means.grad is not None and not prior._casts


@pytest.mark.parametrize("parametrisation", ["eps", "x0", "v"])
def test_network_prior_converts_nothing_per_call(parametrisation):
    prior = NetworkPrior(_Scale(), linear_schedule(), (1, 2, 2), parametrisation=parametrisation)
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    prior.denoise(x, 5)
    with count_host_syncs(cuda=False) as syncs:
        for t in range(10, 20):
            prior.denoise(x, t)
    assert syncs.count == 0, syncs.summary()


@pytest.mark.parametrize("isotropic", [True, False])
def test_gmm_prior_converts_nothing_per_call(isotropic):
    prior = GaussianMixturePrior(_mixture(isotropic))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    prior.denoise(x, 5)
    with count_host_syncs(cuda=False) as syncs:
        for t in range(10, 20):
            prior.denoise(x, t)
    assert syncs.count == 0, syncs.summary()


# ------------------------------------------------------------------ CUDA: on the GPU, no syncs


@needs_cuda
def test_cuda_generator_draws_on_the_gpu():
    gen = make_generator(5, "cuda")
    assert gen.device.type == "cuda"
    like = torch.empty((), device="cuda", dtype=D)
    z = randn((4, 3), gen, like)
    assert z.device == like.device
    ref = torch.randn(4, 3, generator=torch.Generator(device="cuda").manual_seed(5), device="cuda", dtype=D)
    assert torch.equal(z, ref)
    assert torch.equal(randn((4, 3), make_generator(5, "cuda"), like), z)  # same seed, same device
    assert rand((6,), gen, like).device == like.device
    cpu_drawn = randn((4, 3), make_generator(5), like)  # the fallback: drawn on the CPU, moved
    assert cpu_drawn.device == like.device
    ref = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=D)
    assert torch.equal(cpu_drawn.cpu(), ref)


@needs_cuda
@pytest.mark.parametrize("scheme", list(RESAMPLING))
def test_resampling_on_the_gpu_has_no_host_sync(scheme):
    w = torch.softmax(torch.randn(8, 50, generator=torch.Generator().manual_seed(2), dtype=D), -1).cuda()
    gen = make_generator(3, "cuda")
    torch.cuda.synchronize()
    with _sync_errors():
        anc = resample(scheme, w, 50, gen)
        one = resample(scheme, w, 1, gen)
    assert anc.device == w.device and anc.shape == (8, 50) and one.shape == (8, 1)
    anc = anc.cpu()
    assert int(anc.min()) >= 0 and int(anc.max()) < 50
    if scheme == "residual":
        counts = torch.zeros(8, 50, dtype=D).scatter_add_(1, anc, torch.ones(8, 50, dtype=D))
        assert bool((counts >= torch.floor(50 * w.cpu())).all())


@needs_cuda
@pytest.mark.parametrize("isotropic", [True, False])
def test_gmm_prior_and_sampling_on_the_gpu_have_no_host_sync(isotropic):
    prior = GaussianMixturePrior(_mixture(isotropic))
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)).cuda()
    expected = prior.denoise(x.cpu(), 400)
    prior.denoise(x, 999)  # the first call on a device casts the parameters (a copy)
    torch.cuda.synchronize()
    with _sync_errors():
        out = prior.denoise(x, 400)
    assert torch.allclose(out.x0.cpu(), expected.x0, atol=1e-5)
    samples = prior.mixture.sample(32, make_generator(0, "cuda"))
    assert samples.device.type == "cuda" and samples.shape == (32, 3)


@needs_cuda
@pytest.mark.parametrize("parametrisation", ["eps", "x0", "v"])
def test_network_prior_on_the_gpu_has_no_host_sync(parametrisation):
    prior = NetworkPrior(_Scale().cuda(), linear_schedule(), (1, 2, 2), parametrisation=parametrisation)
    x = torch.randn(3, 1, 2, 2, device="cuda")
    prior.denoise(x, 5)
    torch.cuda.synchronize()
    with count_host_syncs(cpu=False) as syncs:  # torch's own syncs included (sync debug mode "warn")
        for t in range(10, 20):
            prior.denoise(x, t)
    assert syncs.count == 0, syncs.summary()

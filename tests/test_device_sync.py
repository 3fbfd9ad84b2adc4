"""No sampler converts a tensor to a Python value (a host synchronisation on a GPU) per step.

Every registered sampler runs with n and 2n steps under :func:`tests.host_sync.count_host_syncs`;
the counts and their call sites must be equal: set-up and the final diagnostics may convert, the step
loop may not. On CUDA (skipped here without one) the same runs happen under
``torch.cuda.set_sync_debug_mode("warn")``, whose warnings are counted too, and a whole SMC step loop
runs under ``"error"``.
"""

from __future__ import annotations

import pytest
import torch

from diffinv.benchmarks.gmm import make_problem
from diffinv.operators import GaussianNoise
from diffinv.priors import CountingPrior
from diffinv.rng import make_generator
from diffinv.samplers import SAMPLERS, InverseProblem
from diffinv.samplers.mcgdiff import MCGDiffConfig, MCGDiffModel
from diffinv.samplers.tds import TDSConfig, TDSModel
from diffinv.smc.engine import FeynmanKac
from tests.host_sync import count_host_syncs
from tests.test_tds import NoSVD

STEP_OPTIONS = {"dcps": ("num_steps", "langevin_steps")}
NAMES = [name for name in SAMPLERS if name != "exact"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def options(name: str, steps: int) -> dict:
    if name == "dcps":
        return {"num_blocks": 2, "num_steps": steps, "langevin_steps": steps, "gradient_steps": 2}
    base = {"num_steps": steps}
    if name in ("mcgdiff", "tds"):
        base["num_particles"] = 8
    return base


def run_counted(name: str, steps: int, problem, prior, device: str):
    sampler = SAMPLERS[name](**options(name, steps))
    generator = make_generator(0, device)
    with count_host_syncs() as syncs:
        sampler.sample(prior, problem, 3, generator, device=device)
    return syncs


@pytest.fixture(scope="module")
def gmm():
    return make_problem(4, 2, seed=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_no_host_conversion_per_step(name, device, gmm):
    short = run_counted(name, 4, gmm.problem, gmm.prior, device)
    long = run_counted(name, 8, gmm.problem, gmm.prior, device)
    assert long.sites == short.sites, f"{name}: per-step host conversions\n{long.summary()}"


@pytest.mark.parametrize("name", ["pgdm", "tds"])
def test_conjugate_gradients_check_convergence_every_k_iterations(name, gmm):
    """Without an SVD, Σ⁻¹ r comes from conjugate gradients, whose convergence test is the only
    conversion allowed per step: at most ⌈cg_iterations / k⌉ of them (k = 10, the default)."""
    hidden = InverseProblem(NoSVD(gmm.problem.operator), gmm.problem.y, GaussianNoise(gmm.problem.sigma_y))
    short = run_counted(name, 4, hidden, gmm.prior, "cpu")
    long = run_counted(name, 8, hidden, gmm.prior, "cpu")
    extra = long.sites - short.sites
    assert all(site.startswith("diffinv/operators/solve.py") for site in extra), long.summary()
    assert sum(extra.values()) <= 4 * 5, long.summary()  # 4 more steps, 50 iterations checked every 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model_class, config",
                         [(MCGDiffModel, MCGDiffConfig(num_particles=64, num_steps=20)),
                          (TDSModel, TDSConfig(num_particles=64, num_steps=20))])
def test_smc_steps_do_not_sync_on_cuda(model_class, config, gmm):
    """After the set-up, every engine step runs under set_sync_debug_mode("error")."""
    device = torch.device("cuda")
    prior = CountingPrior(gmm.prior.to(device) if hasattr(gmm.prior, "to") else gmm.prior)
    model = model_class(prior, gmm.problem, config, device, torch.float32)
    steps = FeynmanKac(model, 4, config.num_particles).steps(make_generator(0, "cuda"))
    next(steps)  # the initialisation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in steps:
            pass
    finally:
        torch.cuda.set_sync_debug_mode("default")

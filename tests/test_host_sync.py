"""The host-sync counter of tests/host_sync.py counts what it should, and leaves torch as it found it."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.host_sync import FACTORIES, TENSOR_METHODS, count_host_syncs

HERE = Path(__file__).name
PATCHED = (*TENSOR_METHODS, "to")


def _snapshot():
    return ({name: torch.Tensor.__dict__.get(name) for name in PATCHED},
            {name: getattr(torch, name) for name in FACTORIES})


CONVERSIONS = {
    "bool": lambda x: bool(x.sum() > 0),
    "float": lambda x: float(x[0]),
    "int": lambda x: int(x[0]),
    "item": lambda x: x.sum().item(),
    "tolist": lambda x: x.tolist(),
    "numpy": lambda x: x.numpy(),
    "cpu": lambda x: x.cpu(),
    "index": lambda x: [1, 2, 3][x[0].long()],
    "torch.tensor": lambda x: torch.tensor([1.0]),
    "torch.as_tensor": lambda x: torch.as_tensor(0.5, dtype=x.dtype),
}


@pytest.mark.parametrize("name", list(CONVERSIONS))
def test_each_conversion_counts_once_with_its_site(name):
    x = torch.arange(3.0)
    with count_host_syncs(cuda=False) as syncs:
        CONVERSIONS[name](x)
    assert syncs.count == 1, syncs.summary()
    (site,) = syncs.sites
    assert site.startswith(f"tests/{HERE}:"), site


def test_conversions_per_iteration_add_up():
    x = torch.arange(3.0)
    with count_host_syncs(cuda=False) as syncs:
        for _ in range(5):
            x[1].item()
            float(x[2])
    assert syncs.count == 10 and len(syncs.sites) == 2, syncs.summary()
    assert "10 host conversion(s)" in syncs.summary()


def test_one_call_into_torch_is_one_event():
    """repr converts many elements inside torch; each call is one event at the caller's line."""
    x = torch.arange(6.0).reshape(2, 3)
    with count_host_syncs(cuda=False) as syncs:
        for _ in range(3):
            repr(x)
        f"{x.sum():.2f}"
    assert syncs.count == 4, syncs.summary()


def test_pure_tensor_arithmetic_counts_nothing():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, generator=gen)
    with count_host_syncs(cuda=False) as syncs:
        y = (x @ x.T).softmax(-1) * 2 + 1
        y = torch.where(y > 1.5, y, -y).cumsum(-1).to(torch.float64).to(x).to("cpu")
        torch.as_tensor(y)
        torch.as_tensor(np.ones(2))  # host data already, no conversion of a tensor
        y.sum(), y.shape[0], len(y)
    assert syncs.count == 0, syncs.summary()


def test_cpu_false_ignores_cpu_tensors():
    x = torch.arange(3.0)
    with count_host_syncs(cpu=False, cuda=False) as syncs:
        bool(x.sum() > 0), x.tolist(), x.cpu(), torch.tensor([1.0]), repr(x)
    assert syncs.count == 0, syncs.summary()


def test_copies_from_another_device_to_the_cpu_count():
    """A meta tensor stands in for a GPU one (copying it out fails, after the event is counted)."""
    off_cpu = torch.ones(3, device="meta")
    with count_host_syncs(cpu=False, cuda=False) as syncs:
        for convert in (lambda: off_cpu.to("cpu"), lambda: off_cpu.to(torch.zeros(())), off_cpu.cpu):
            with pytest.raises((NotImplementedError, RuntimeError)):
                convert()
        off_cpu.to(torch.float64), off_cpu.to("meta")
    assert [kind for kind, _ in syncs.events] == ["to(cpu)", "to(cpu)", "cpu"], syncs.summary()


def test_restores_patches_on_exit_and_after_an_exception():
    before = _snapshot()
    with count_host_syncs(cuda=False):
        assert _snapshot() != before
    assert _snapshot() == before
    with pytest.raises(KeyError, match="boom"):
        with count_host_syncs(cuda=False):
            raise KeyError("boom")
    assert _snapshot() == before
    with count_host_syncs(cuda=False) as syncs:  # usable again
        bool(torch.ones(()))
    assert syncs.count == 1


def test_nested_use_raises_and_leaves_the_outer_block_working():
    before = _snapshot()
    with count_host_syncs(cuda=False) as outer:
        with pytest.raises(RuntimeError, match="nested"):
            with count_host_syncs(cuda=False):
                pass
        float(torch.ones(()))
    assert outer.count == 1
    assert _snapshot() == before


def test_other_warnings_pass_through():
    with pytest.warns(UserWarning, match="unrelated"):
        with count_host_syncs(cuda=torch.cuda.is_available()) as syncs:
            warnings.warn("unrelated", UserWarning, stacklevel=1)
    assert syncs.count == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_syncs_inside_ops_are_counted_and_the_mode_restored():
    mode = torch.cuda.get_sync_debug_mode()
    x = torch.arange(6.0, device="cuda")
    line = inspect.currentframe().f_lineno
    with count_host_syncs() as syncs:
        x[x > 2]  # boolean-mask indexing: the output size needs a sync         (line + 2)
        torch.nonzero(x)  # (line + 3)
        x.sum().item()  # one event, although the copy also raises a sync warning (line + 4)
        (x * 2 + 1).cumsum(0).exp_()  # nothing (line + 5)
    sites = {f"tests/{HERE}:{line + k}" for k in (2, 3, 4)}
    assert set(syncs.sites) == sites, syncs.summary()
    assert syncs.sites[f"tests/{HERE}:{line + 4}"] == 1, syncs.summary()
    assert torch.cuda.get_sync_debug_mode() == mode


def test_sync_warnings_are_counted_without_a_gpu(monkeypatch):
    """With CUDA faked: each sync-debug warning is one event at its line, unless a counted conversion
    raised it; the debug mode is set to "warn" inside and restored after."""
    modes = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    original_item = torch.Tensor.item

    def item_that_syncs(self):
        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        return original_item(self)

    monkeypatch.setattr(torch.Tensor, "item", item_that_syncs)
    with count_host_syncs() as syncs:
        for _ in range(2):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        torch.ones(()).item()
    assert modes == ["warn", 0]
    assert [kind for kind, _ in syncs.events] == ["cuda sync", "cuda sync", "item"], syncs.summary()
    assert all(site.startswith(f"tests/{HERE}:") for site in syncs.sites), syncs.summary()

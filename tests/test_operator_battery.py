"""The shared operator battery, parametrised over every registered operator (float64)."""

from __future__ import annotations

import copy
import importlib
import pkgutil

import pytest
import torch

import diffinv.operators as ops_pkg
from diffinv.operators import OPERATORS, LinearOperator, SVDOperator
from diffinv.rng import make_generator

D = torch.float64
NAMES = list(OPERATORS)


def make(name):
    return OPERATORS[name].example(make_generator(7))


def rand_in(op, b=3, seed=0, dtype=D):
    return torch.randn(b, *op.in_shape, generator=make_generator(seed), dtype=dtype)


def rand_out(op, b=3, seed=1, dtype=D):
    return torch.randn(b, *op.out_shape, generator=make_generator(seed), dtype=dtype)


def dot(a, b):
    return (a * b).reshape(a.shape[0], -1).sum(-1)


def test_every_operator_class_is_registered():
    found = set()
    for info in pkgutil.iter_modules(ops_pkg.__path__):
        module = importlib.import_module(f"diffinv.operators.{info.name}")
        found |= {obj for obj in vars(module).values() if isinstance(obj, type)
                  and issubclass(obj, LinearOperator) and obj not in (LinearOperator, SVDOperator)
                  and obj.__module__ == module.__name__}
    assert found <= set(OPERATORS.values()), found - set(OPERATORS.values())


@pytest.mark.parametrize("name", NAMES)
def test_adjointness(name):
    op = make(name)
    x, y = rand_in(op), rand_out(op)
    assert torch.allclose(dot(op.A(x), y), dot(x, op.At(y)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_batch_independence_and_no_mutation(name):
    op = make(name)
    before = copy.deepcopy(op.__dict__)
    x = rand_in(op, b=4)
    y = op.A(x)
    assert y.shape == (4, *op.out_shape) and y.dtype == D
    stacked = torch.cat([op.A(x[i : i + 1]) for i in range(4)])
    assert torch.allclose(y, stacked, atol=1e-12)
    assert op.At(y).shape == (4, *op.in_shape)
    assert op.A(x.float()).dtype == torch.float32
    after = op.__dict__
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key


@pytest.mark.parametrize("name", NAMES)
def test_penrose_identities(name):
    """A A⁺ A = A and A⁺ A A⁺ = A⁺ (SVD pseudo-inverse, or CG's minimum-norm least squares)."""
    op = make(name)
    x, y = rand_in(op), rand_out(op)
    assert torch.allclose(op.A(op.pinv(op.A(x))), op.A(x), atol=1e-8)
    assert torch.allclose(op.pinv(op.A(op.pinv(y))), op.pinv(y), atol=1e-8)


@pytest.mark.parametrize("name", [n for n in NAMES if OPERATORS[n].has_svd])
def test_svd_reconstruction_and_orthonormality(name):
    op = make(name)
    x, y = rand_in(op), rand_out(op)
    s = op.singulars()
    assert s.numel() == min(op.in_dim, op.out_dim) and bool((s >= 0).all())
    assert torch.allclose(op.U(op.pad(s * op.Vt(x)[:, : s.numel()], op.out_dim)), op.A(x), atol=1e-10)
    z_in = torch.randn(3, op.in_dim, generator=make_generator(3), dtype=D)
    z_out = torch.randn(3, op.out_dim, generator=make_generator(4), dtype=D)
    assert torch.allclose(op.Vt(op.V(z_in)), z_in, atol=1e-10)
    assert torch.allclose(op.V(op.Vt(x)), x, atol=1e-10)
    assert torch.allclose(op.Ut(op.U(z_out)), z_out, atol=1e-10)
    assert torch.allclose(op.U(op.Ut(y)), y, atol=1e-10)
    pinv_matrix = op.pinv(torch.eye(op.out_dim, dtype=D)).T  # (d, m): columns A⁺ e_i
    assert torch.allclose(torch.linalg.pinv(pinv_matrix), op.matrix(), atol=1e-8)


def test_known_singular_values():
    sel = OPERATORS["select"](5, [4, 1])
    assert torch.equal(sel.singulars(), torch.ones(2, dtype=D))
    assert torch.equal(sel.pinv(torch.tensor([[2.0, 3.0]], dtype=D)),
                       torch.tensor([[0.0, 3.0, 0.0, 0.0, 2.0]], dtype=D))
    a = torch.diag(torch.tensor([3.0, 0.5], dtype=D))
    dense = OPERATORS["dense"](a)
    assert torch.allclose(dense.singulars(), torch.tensor([3.0, 0.5], dtype=D))

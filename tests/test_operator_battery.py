"""The shared operator battery, parametrised over every registered operator (float64)."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil

import numpy as np
import operator_checks as checks
import pytest
import torch
import torch.nn.functional as F
from operator_checks import Tol, rand_in, rand_out
from PIL import Image

import diffinv.operators as ops_pkg
from diffinv.operators import OPERATORS, LinearOperator
from diffinv.operators.blur import CircularBlur, gaussian_kernel, motion_kernel
from diffinv.operators.colorization import Colorization
from diffinv.operators.inpainting import (
    BoxInpainting,
    HalfInpainting,
    Inpainting,
    Outpainting,
    RandomInpainting,
)
from diffinv.operators.superres import AvgPoolSR, BicubicSR, bicubic_matrix
from diffinv.rng import make_generator

D = torch.float64
NAMES, SVD_NAMES, make = checks.NAMES, checks.SVD_NAMES, checks.example


def test_every_operator_class_is_registered():
    found = set()
    for info in pkgutil.iter_modules(ops_pkg.__path__):
        module = importlib.import_module(f"diffinv.operators.{info.name}")
        found |= {obj for obj in vars(module).values() if isinstance(obj, type)
                  and issubclass(obj, LinearOperator) and not inspect.isabstract(obj)
                  and obj.__module__ == module.__name__}
    assert found <= set(OPERATORS.values()), found - set(OPERATORS.values())


@pytest.mark.parametrize("name", NAMES)
def test_adjointness(name):
    op = make(name)
    checks.check_adjoint(op, rand_in(op), rand_out(op), Tol(1e-12, 1e-10))


@pytest.mark.parametrize("name", NAMES)
def test_shapes_batch_independence_and_no_mutation(name):
    op = make(name)
    before = checks.snapshot(op)
    checks.check_shapes_and_dtypes(op, rand_in(op, b=4), Tol(1e-12))
    checks.assert_unchanged(op, before)


@pytest.mark.parametrize("name", NAMES)
def test_penrose_identities(name):
    """A A⁺ A = A, A⁺ A A⁺ = A⁺, A A⁺ and A⁺ A symmetric (SVD pseudo-inverse, or CG's minimum-norm
    least squares)."""
    op = make(name)
    x, y = rand_in(op), rand_out(op)
    checks.check_penrose(op, x, y, Tol(1e-8))
    checks.check_penrose_symmetry(op, x, y, Tol(1e-8))


@pytest.mark.parametrize("name", SVD_NAMES)
def test_svd_reconstruction_and_orthonormality(name):
    op = make(name)
    checks.check_svd(op, rand_in(op), rand_out(op), Tol(1e-10))
    eye = torch.eye(op.out_dim, dtype=D).reshape(op.out_dim, *op.out_shape)
    pinv_matrix = op.pinv(eye).reshape(op.out_dim, -1).T  # (d, m): columns A⁺ e_i (small d only)
    assert torch.allclose(torch.linalg.pinv(pinv_matrix), op.matrix(), atol=1e-8)


def test_known_singular_values():
    sel = OPERATORS["select"](5, [4, 1])
    assert torch.equal(sel.singulars(), torch.ones(2, dtype=D))
    assert torch.equal(sel.pinv(torch.tensor([[2.0, 3.0]], dtype=D)),
                       torch.tensor([[0.0, 3.0, 0.0, 0.0, 2.0]], dtype=D))
    a = torch.diag(torch.tensor([3.0, 0.5], dtype=D))
    dense = OPERATORS["dense"](a)
    assert torch.allclose(dense.singulars(), torch.tensor([3.0, 0.5], dtype=D))


# --- generic checks added with the image operators -------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_describe_is_json_and_every_call_leaves_the_operator_unchanged(name):
    op = make(name)
    json.dumps(op.describe())
    assert op.describe()["name"] in (name, type(op).__name__)
    before = checks.snapshot(op)
    checks.all_calls(op, rand_in(op), rand_out(op))
    checks.assert_unchanged(op, before)


@pytest.mark.parametrize("name", NAMES)
def test_all_maps_are_batch_independent(name):
    op = make(name)
    checks.check_batch_independent(op, rand_in(op), rand_out(op), Tol(1e-12))


@pytest.mark.parametrize("name", NAMES)
def test_float32_matches_float64(name):
    op = make(name)
    checks.check_float32(op, rand_in(op), rand_out(op), Tol(1e-4, 1e-4))


def test_cg_pinv_float32():
    op = make("compose")
    y = rand_out(op)
    assert torch.allclose(op.pinv(y.float()).double(), op.pinv(y), atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_device_is_preserved(name):
    op = make(name)
    x, y = rand_in(op), rand_out(op)
    ref = checks.all_calls(op, x, y)
    for key, value in checks.all_calls(op, x.cuda(), y.cuda()).items():
        assert value.is_cuda and value.dtype == D, key
        assert torch.allclose(value.cpu(), ref[key], atol=1e-10), key


@pytest.mark.parametrize("name", SVD_NAMES)
def test_observed_coordinates_come_first(name):
    checks.check_observed_first(make(name))


# --- known values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [2, 4, 8])
def test_avgpool_singulars_and_maps(r):
    op = AvgPoolSR((2, 16, 8), factor=r)
    assert torch.equal(op.singulars(), torch.full((2 * 16 * 8 // r**2,), 1.0 / r, dtype=D))
    x = rand_in(op, b=2)
    assert torch.allclose(op.A(x), F.avg_pool2d(x, r), atol=1e-13)
    y = op.A(x)
    up = y.repeat_interleave(r, dim=2).repeat_interleave(r, dim=3)
    assert torch.allclose(op.pinv(y), up, atol=1e-12)  # A⁺ = nearest-neighbour upsampling
    assert torch.allclose(op.Vt(x)[:, : op.out_dim], r * y.reshape(2, -1), atol=1e-12)


def test_bicubic_matrix_rows_and_interior():
    for boundary in ("reflect", "circular"):
        k = bicubic_matrix(32, 4, boundary)
        assert k.shape == (8, 32) and torch.allclose(k.sum(1), torch.ones(8, dtype=D))
    op = BicubicSR((1, 64, 48), factor=4)
    x = rand_in(op, b=1)
    ref = F.interpolate(x, scale_factor=0.25, mode="bicubic", antialias=True)  # same kernel, a = −0.5
    assert torch.allclose(op.A(x)[..., 2:-2, 2:-2], ref[..., 2:-2, 2:-2], atol=1e-12)
    s = op.singulars()
    assert bool((s[:-1] >= s[1:]).all()) and float(s.min()) > 0.05


def test_colorization_singulars_and_pinv():
    op = Colorization((3, 4, 5))
    assert torch.allclose(op.singulars(), torch.full((20,), 3**-0.5, dtype=D), atol=1e-15)
    x = rand_in(op)
    assert torch.allclose(op.A(x), x.mean(1, keepdim=True), atol=1e-14)
    y = op.A(x)
    assert torch.allclose(op.pinv(y), y.expand(-1, 3, -1, -1), atol=1e-13)


def circular_conv(x, kernel):
    """Direct circular convolution Σ_q k[q] x[p − q], kernel centre at (kh//2, kw//2)."""
    out = torch.zeros_like(x)
    kh, kw = kernel.shape
    for a in range(kh):
        for b in range(kw):
            out = out + kernel[a, b] * torch.roll(x, (a - kh // 2, b - kw // 2), dims=(-2, -1))
    return out


@pytest.mark.parametrize("shape", [(2, 8, 9), (1, 7, 6), (1, 5, 5)])
def test_blur_singulars_are_fft_magnitudes_and_a_is_a_circular_convolution(shape):
    kernel = torch.rand(3, 4, generator=make_generator(5), dtype=D)
    op = CircularBlur(kernel, shape)
    k = op.kernel
    assert torch.allclose(k.sum(), torch.tensor(1.0, dtype=D))
    x = rand_in(op, b=2)
    assert torch.allclose(op.A(x), circular_conv(x, k), atol=1e-13)
    padded = torch.zeros(shape[1:], dtype=D)
    padded[:3, :4] = k
    mag = torch.fft.fft2(padded).abs().reshape(-1).sort(descending=True).values
    assert torch.allclose(op.singulars(), mag.repeat_interleave(shape[0]), atol=1e-13)


def test_blur_kernels_and_files(tmp_path):
    g = gaussian_kernel(61, 3.0)
    assert torch.allclose(g.sum(), torch.tensor(1.0, dtype=D)) and int((g[30] > 0).sum()) == 25
    m1, m2 = motion_kernel(9, 0.5, make_generator(3)), motion_kernel(9, 0.5, make_generator(3))
    assert torch.equal(m1, m2) and bool((m1 >= 0).all()) and abs(float(m1.sum()) - 1) < 1e-12
    assert not torch.equal(m1, motion_kernel(9, 0.5, make_generator(4)))
    np.save(tmp_path / "k.npy", 2.0 * m1.numpy())
    op = CircularBlur.from_file(tmp_path / "k.npy", (1, 12, 12))
    assert torch.allclose(op.kernel, m1) and op.describe()["kernel_file"].endswith("k.npy")
    Image.fromarray(np.full((3, 3), 200, dtype=np.uint8)).save(tmp_path / "k.png")
    assert torch.allclose(CircularBlur.from_file(tmp_path / "k.png", (1, 6, 6)).kernel,
                          torch.full((3, 3), 1 / 9, dtype=D))
    with pytest.raises(ValueError, match="kernel"):
        CircularBlur.from_file(tmp_path / "k.npy", (1, 8, 8))  # 9×9 kernel, 8×8 image
    with pytest.raises(ValueError, match="kernel_file"):
        CircularBlur.from_file(tmp_path / "k.txt", (1, 12, 12))
    with pytest.raises(ValueError, match="kernel"):
        CircularBlur(torch.zeros(3, 3), (1, 8, 8))


def test_inpainting_pinv_and_masks(tmp_path):
    op = RandomInpainting((3, 10, 10), keep=0.2, generator=make_generator(0))
    assert op.out_dim == 3 * 20 and bool((op.mask == op.mask[:1]).all())  # per pixel, all channels
    y = rand_out(op)
    x = op.pinv(y)
    assert torch.equal(x[:, op.mask], y) and bool((x[:, ~op.mask] == 0).all())
    assert torch.equal(op.A(x), y)
    assert torch.equal(op.mask, RandomInpainting((3, 10, 10), 0.2, make_generator(0)).mask)
    box = BoxInpainting((1, 256, 256), size=150, top=50, left=50)
    assert box.out_dim == 256**2 - 150**2 and not bool(box.mask[0, 50:200, 50:200].any())
    out = Outpainting((1, 256, 256))
    assert out.out_dim == 78**2 and bool(out.mask[0, 89:167, 89:167].all())
    half = HalfInpainting((1, 4, 6), missing="right")
    assert bool(half.mask[0, :, :3].all()) and not bool(half.mask[0, :, 3:].any())
    with pytest.raises(ValueError, match="missing"):
        HalfInpainting((1, 4, 6), missing="middle")
    png = np.zeros((6, 5), dtype=np.uint8)
    png[1:4, 2:] = 255
    Image.fromarray(png).save(tmp_path / "mask.png")
    op = Inpainting.from_png(tmp_path / "mask.png", (3, 6, 5))
    assert op.out_dim == 3 * 9 and torch.equal(op.mask[1], torch.from_numpy(png > 127))
    with pytest.raises(ValueError, match="mask_png"):
        Inpainting.from_png(tmp_path / "mask.png", (3, 5, 6))

r"""Device hygiene of the operators (``LinearOperator.to``), CG's ``check_every`` and :class:`SpectralView`.

Parametrised over every registered operator's ``example`` (as in ``test_operator_battery.py``).
Without a GPU, two stand-ins: the CPU float32 copy (no float64 tensor may appear in any aten op of
a call: every cast happened once, at ``to``) and a copy on the ``meta`` device (every aten op of a
call may touch meta tensors only, so a host tensor created per call or a buffer copied per call
would show, and reading a meta tensor on the host — a synchronisation on a GPU — raises).
"""

from __future__ import annotations

import operator_checks as checks
import pytest
import torch
from operator_checks import NAMES, SVD_NAMES, rand_in, rand_out
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from diffinv.operators import LinearOperator, SpectralView
from diffinv.operators.solve import solve_normal

D, F = torch.float64, torch.float32
CG_NAMES = [n for n in NAMES if n not in SVD_NAMES]
NO_SYNC_ITERATIONS = 5  # < check_every = 10: CG reads no convergence flag on the host


class Recorder(TorchDispatchMode):
    """Every aten op run inside, with the tensors it reads and writes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[Tensor]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls.append((str(func), [t for t in tree_leaves((args, kwargs, out))
                                       if isinstance(t, torch.Tensor)]))
        return out


def calls(op: LinearOperator, x: Tensor, y: Tensor) -> dict:
    """Every public map as a thunk (CG pseudo-inverses limited to NO_SYNC_ITERATIONS)."""
    out = {"A": lambda: op.A(x), "At": lambda: op.At(y)}
    if op.has_svd:
        out |= {"Vt": lambda: op.Vt(x), "V": lambda: op.V(op.Vt(x)), "Ut": lambda: op.Ut(y),
                "U": lambda: op.U(op.Ut(y)), "pinv": lambda: op.pinv(y)}
    else:
        out["pinv"] = lambda: op.pinv(y, max_iter=NO_SYNC_ITERATIONS)
    return out


def buffers(op: LinearOperator) -> dict[str, Tensor]:
    """The tensors an operator holds (sub-operators included), without its memo and origin."""
    return {path: t for path, t in checks.reachable_tensors(op).items()
            if "._memo" not in path and "._original" not in path}


# --- LinearOperator.to --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_float32_copy_is_bit_identical_to_casting_at_call_time(name):
    op = checks.example(name)
    moved = op.to("cpu", F)
    x, y = rand_in(op, dtype=F), rand_out(op, dtype=F)
    ref, got = checks.all_calls(op, x, y), checks.all_calls(moved, x, y)
    for key, value in got.items():
        assert value.dtype == F and torch.equal(value, ref[key]), key
    for key, value in checks.all_calls(moved, x.double(), y.double()).items():  # still takes float64
        assert value.dtype == D, key
        checks.Tol(1e-4, 1e-4).assert_close(value, checks.all_calls(op, x.double(), y.double())[key], key)


@pytest.mark.parametrize("name", NAMES)
def test_moved_copies_are_memoised_and_the_original_is_unchanged(name):
    op = checks.example(name)
    before = checks.snapshot(op)
    moved = op.to("cpu")
    assert moved is not op and type(moved) is type(op) and moved.original is op and op.original is op
    assert op.to(torch.device("cpu"), F) is moved and moved.to("cpu", F) is moved
    assert moved.to("cpu", D) is op and op.to("cpu", D) is op
    assert op.device == moved.device == torch.device("cpu")
    checks.assert_unchanged(op, before)
    for path, t in buffers(op).items():
        assert t.device.type == "cpu" and t.dtype in (D, torch.complex128, torch.long, torch.bool), path
    for path, t in buffers(moved).items():
        expected = D if path.endswith("._s") else F
        if t.is_floating_point():
            assert t.dtype == expected, path
        elif t.is_complex():
            assert t.dtype == torch.complex64, path
    meta = op.to("meta", D)
    assert meta.device.type == "meta" and all(t.device.type == "meta" for t in buffers(meta).values())
    assert meta is not op and op.to("meta", D) is meta and meta.to("cpu", F) is moved


def test_composed_copies_move_their_sub_operators_through_their_memos():
    op = checks.example("compose")
    moved = op.to("cpu")
    assert moved.outer is op.outer.to("cpu") and moved.inner is op.inner.to("cpu")
    assert moved.outer is not op.outer


def test_to_rejects_a_non_floating_dtype_and_an_unknown_device():
    op = checks.example("dense")
    with pytest.raises(ValueError, match="dtype"):
        op.to("cpu", torch.int64)
    with pytest.raises(ValueError, match="device"):
        op.to("no-such-device")


@pytest.mark.parametrize("name", SVD_NAMES)
def test_spectral_quantities_are_cached_float64(name):
    op = checks.example(name)
    for each in (op, op.to("cpu"), op.to("meta")):
        s = each.singulars()
        assert s.dtype == D and s.device == each.device and each.singulars() is s
        assert each.inverse_singulars() is each.inverse_singulars()
        assert each.observed() is each.observed() and each.observed().dtype == torch.bool
    assert torch.equal(op.to("cpu").singulars(), op.singulars())
    assert torch.equal(op.to("cpu").inverse_singulars(), op.inverse_singulars())


@pytest.mark.parametrize("name", NAMES)
def test_float32_copy_casts_nothing_per_call(name):
    op = checks.example(name)
    moved = op.to("cpu", F)
    x, y = rand_in(op, dtype=F), rand_out(op, dtype=F)
    for key, thunk in calls(moved, x, y).items():
        thunk()  # fills the memo
        with Recorder() as rec:
            thunk()
        wide = [(f, t.dtype) for f, ts in rec.calls for t in ts if t.dtype in (D, torch.complex128)]
        assert not wide, (key, wide[:3])


@pytest.mark.parametrize("name", NAMES)
def test_meta_copy_touches_no_other_device_and_never_reads_on_the_host(name):
    op = checks.example(name)
    moved = op.to("meta")
    x = torch.empty(2, *op.in_shape, device="meta")
    y = torch.empty(2, *op.out_shape, device="meta")
    for key, thunk in calls(moved, x, y).items():
        thunk()
        with Recorder() as rec:
            out = thunk()
        assert out.device.type == "meta" and out.dtype == F, key
        foreign = [(f, t.device) for f, ts in rec.calls for t in ts if t.device.type != "meta"]
        assert not foreign, (key, foreign[:3])


def test_a_host_read_on_the_meta_device_is_caught():
    """Control for the test above: CG's convergence check is a host read, and it raises on meta."""
    op = checks.example("compose").to("meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        op.pinv(torch.empty(2, *op.out_shape, device="meta"), max_iter=5, check_every=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_copy_matches_and_does_not_synchronise(name):
    op = checks.example(name)
    moved = op.to("cuda")
    assert moved.device.type == "cuda" and op.to("cuda") is moved
    x, y = rand_in(op, dtype=F), rand_out(op, dtype=F)
    ref = {key: thunk() for key, thunk in calls(op, x, y).items()}
    xc, yc = x.cuda(), y.cuda()
    for key, thunk in calls(moved, xc, yc).items():
        thunk()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = thunk()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert out.is_cuda and out.dtype == F, key
        checks.Tol(1e-4, 1e-4).assert_close(out.cpu(), ref[key], key)


# --- conjugate gradients --------------------------------------------------------------------------------


def dense_pinv(op: LinearOperator, y: Tensor) -> Tensor:
    return (y.reshape(y.shape[0], -1) @ torch.linalg.pinv(op.matrix()).T).reshape(-1, *op.in_shape)


def test_cg_pinv_matches_the_dense_pseudo_inverse_for_every_check_interval():
    op = checks.example("compose")
    y = rand_out(op)
    ref = dense_pinv(op, y)
    results = {k: op.pinv(y, check_every=k) for k in (1, 10, 1000)}
    for k, value in results.items():
        assert torch.allclose(value, ref, atol=1e-8), k
    scale = float(ref.norm())
    assert float((results[1] - results[10]).norm()) <= 1e-6 * scale
    # 500 iterations past convergence (no early exit): frozen rows, no division by a vanishing pᵀAᵀAp
    assert torch.allclose(op.pinv(y, max_iter=500, check_every=1000), ref, atol=1e-8)
    y0 = torch.cat([y[:1], torch.zeros_like(y[:1])])  # a zero right-hand side converges at once
    out = op.pinv(y0, max_iter=50, check_every=100)
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.allclose(out[:1], ref[:1], atol=1e-8)
    out32 = op.pinv(y.float(), max_iter=500, check_every=1000)
    assert bool(torch.isfinite(out32).all()) and torch.allclose(out32.double(), ref, atol=1e-4)


@pytest.mark.parametrize("name", ["compose", "dense", "blur_gauss"])
def test_solve_normal_matches_a_dense_solve_for_every_check_interval(name):
    op = checks.example(name)
    b, lam = rand_out(op), 0.05
    a = op.matrix()
    ref = torch.linalg.solve(a @ a.T + lam * torch.eye(op.out_dim, dtype=D), b.reshape(3, -1).T).T
    ref = ref.reshape(b.shape)
    u1, u10 = (solve_normal(op, b, lam, max_iter=400, check_every=k) for k in (1, 10))
    assert torch.allclose(u10, ref, atol=1e-7, rtol=1e-6)
    assert float((u1 - u10).norm()) <= 1e-6 * float(ref.norm())
    past = solve_normal(op, b, lam, max_iter=400, check_every=1000)  # runs all 400 iterations
    assert torch.allclose(past, ref, atol=1e-7, rtol=1e-6)
    with pytest.raises(ValueError, match="check_every"):
        solve_normal(op, b, lam, check_every=0)


# --- SpectralView --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SVD_NAMES)
def test_spectral_view_identities(name):
    op = checks.example(name)
    y = rand_out(op)  # B = 3
    view = SpectralView.of(op, y)
    k, d, m = op.singulars().numel(), op.in_dim, op.out_dim
    assert view.s.shape == (k,) and view.s_inv.shape == view.observed.shape == (d,)
    assert view.y_bar.shape == (3, m) and view.y_over_s.shape == (3, d) and view.free_y.shape == (m,)
    assert all(t.dtype == D for t in (view.s, view.s_inv, view.y_bar, view.y_over_s))
    assert view.dim == d and int(view.observed.sum()) >= 1
    assert torch.equal(view.y_bar, op.Ut(y)) and torch.equal(view.s, op.singulars())
    obs_k = view.observed[:k]
    assert torch.allclose(view.y_over_s[:, :k][:, obs_k] * view.s[obs_k], view.y_bar[:, :k][:, obs_k],
                          rtol=1e-12, atol=1e-14)
    assert bool((view.y_over_s[:, ~view.observed] == 0).all())
    assert torch.equal(op.V(view.y_over_s), op.pinv(y))
    assert int(view.free_y.sum()) == m - int(obs_k.sum())
    assert bool(view.free_y[k:].all()) and torch.equal(view.free_y[:k], ~obs_k)
    assert torch.equal(view.noise_over_s(0.1), 0.1 * view.s_inv)


@pytest.mark.parametrize("name", SVD_NAMES)
def test_spectral_view_reproduces_the_samplers_float64_quantities(name):
    """The B = 1 formulas of MCGdiff's and DDRM's former private spectral set-up, value for value."""
    op = checks.example(name)
    y = rand_out(op, b=1)
    d = op.in_dim
    s = op.singulars().to(D)
    s_inv = op.pad(op.inverse_singulars().to(D)[None], d)[0]
    y_over_s = op.pad(op.Ut(y.to(D))[:, : s.numel()] * s_inv[: s.numel()], d)[0]
    free_y = torch.ones(op.out_dim, dtype=torch.bool)
    free_y[: s.numel()] = s_inv[: s.numel()] == 0
    view = SpectralView.of(op, y)
    for got, ref in ((view.s, s), (view.s_inv, s_inv), (view.observed, s_inv > 0),
                     (view.y_over_s[0], y_over_s), (view.free_y, free_y)):
        assert torch.equal(got, ref)


@pytest.mark.parametrize("name", SVD_NAMES)
def test_spectral_view_of_a_moved_copy_and_moving_the_view(name):
    op = checks.example(name)
    y = rand_out(op)
    view = SpectralView.of(op, y)
    for other in (SpectralView.of(op.to("cpu"), y), SpectralView.of(op.to("meta"), y)):
        for field in ("s", "s_inv", "observed", "y_bar", "y_over_s", "free_y"):
            assert torch.equal(getattr(other, field), getattr(view, field)), field
    assert SpectralView.of(op, y.float()).y_bar.dtype == D
    y_before = y.clone()
    y.add_(1.0)  # the view holds its own copy of ȳ
    assert torch.equal(view.y_bar, SpectralView.of(op, y_before).y_bar)
    meta = view.to("meta")
    assert meta.dim == view.dim
    for field in ("s", "s_inv", "observed", "y_bar", "y_over_s", "free_y"):
        got, ref = getattr(meta, field), getattr(view, field)
        assert got.device.type == "meta" and got.dtype == ref.dtype and got.shape == ref.shape, field


def test_spectral_view_rejects_bad_arguments():
    with pytest.raises(ValueError, match="op"):
        SpectralView.of(checks.example("compose"), torch.zeros(1, 3, dtype=D))
    op = checks.example("dense")
    with pytest.raises(ValueError, match="y"):
        SpectralView.of(op, torch.zeros(1, op.out_dim + 1, dtype=D))
    with pytest.raises(ValueError, match="sigma_y"):
        SpectralView.of(op, torch.zeros(1, op.out_dim, dtype=D)).noise_over_s(-1.0)

r"""The operator identities, written once and shared by the operator batteries.

``test_operator_battery.py`` runs them on each registered operator's small ``example`` and
``test_operator_battery_256.py`` on image operators at (3, 256, 256). Each ``check_*`` takes the
operator, inputs x (B, *in_shape), y (B, *out_shape) with B ≥ 2, and a :class:`Tol`.

Identities (A: R^d → R^m, A⁺ its pseudo-inverse; SVD layout A = U diag(s) Vᵀ of diffinv.operators.base):
  adjointness           ⟨A x, y⟩ = ⟨x, Aᵀ y⟩
  Penrose               A A⁺ A = A_k, A⁺ A A⁺ = A⁺, (A A⁺)ᵀ = A A⁺, (A⁺ A)ᵀ = A⁺ A (these four fix A⁺)
                        with A_k = A minus the singular values that A⁺ discards (s_i ≤ rcond·max s), so
                        ‖A x − A_k x‖ ≤ rcond·max(s)·‖x‖; A_k = A for CG pseudo-inverses
  SVD                   U(pad(s ⊙ (Vᵀx)_{:k})) = A x, VᵀV = I, V Vᵀ = I, UᵀU = I, U Uᵀ = I, s ≥ 0
  batches               every map acts on each batch item alone; calls never change the operator
                        (its memo of derived data, ``_memo``, aside)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diffinv.operators import OPERATORS, LinearOperator
from diffinv.rng import make_generator

D = torch.float64
NAMES = list(OPERATORS)
SVD_NAMES = [n for n in NAMES if OPERATORS[n].has_svd]


def example(name: str) -> LinearOperator:
    """The registered operator's small ``example`` instance, from a fixed seed (the batteries' cases)."""
    return OPERATORS[name].example(make_generator(7))


@dataclass(frozen=True)
class Tol:
    r"""When a computed tensor a counts as equal to a reference b (same shape (B, ...)).

    Elementwise (``norm=False``, torch.allclose): |a − b| ≤ atol + rtol·|b| entry by entry.
    Normwise (``norm=True``), per batch item with n entries: ‖a − b‖₂ ≤ atol·√n + rtol·‖b‖₂ — the
    scale of FFT and matmul round-off, which follows ‖b‖ rather than each entry. For two inner
    products, the normwise scale is the Cauchy–Schwarz bound ‖u‖‖v‖ of both.
    """

    atol: float
    rtol: float = 1e-5
    norm: bool = False

    def assert_close(self, a: Tensor, b: Tensor, what: str) -> None:
        assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        diff = (a - b).reshape(a.shape[0], -1)
        if self.norm:
            err, ref = diff.norm(dim=1), b.reshape(b.shape[0], -1).norm(dim=1)
            bound = self.atol * math.sqrt(diff.shape[1]) + self.rtol * ref
            assert bool((err <= bound).all()), f"{what}: ‖a − b‖ = {err.tolist()} > {bound.tolist()}"
        else:
            assert torch.allclose(a, b, rtol=self.rtol, atol=self.atol), \
                f"{what}: max |a − b| = {float(diff.abs().max()):.3g}"

    def assert_dots_equal(self, u1: Tensor, v1: Tensor, u2: Tensor, v2: Tensor, what: str) -> None:
        """⟨u1, v1⟩ = ⟨u2, v2⟩ per batch item (normwise: up to rtol·max(‖u1‖‖v1‖, ‖u2‖‖v2‖))."""
        lhs, rhs = dot(u1, v1), dot(u2, v2)
        if not self.norm:
            self.assert_close(lhs, rhs, what)
            return
        scale = torch.maximum(norm(u1) * norm(v1), norm(u2) * norm(v2))
        err = (lhs - rhs).abs()
        assert bool((err <= self.atol + self.rtol * scale).all()), \
            f"{what}: |difference| = {err.tolist()}, scale ‖u‖‖v‖ = {scale.tolist()}"


def rand_in(op: LinearOperator, b: int = 3, seed: int = 0, dtype: torch.dtype = D) -> Tensor:
    return torch.randn(b, *op.in_shape, generator=make_generator(seed), dtype=dtype)


def rand_out(op: LinearOperator, b: int = 3, seed: int = 1, dtype: torch.dtype = D) -> Tensor:
    return torch.randn(b, *op.out_shape, generator=make_generator(seed), dtype=dtype)


def dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-item inner products (B,)."""
    return (a * b).reshape(a.shape[0], -1).sum(-1)


def norm(a: Tensor) -> Tensor:
    return a.reshape(a.shape[0], -1).norm(dim=1)


def all_calls(op: LinearOperator, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Every public map of the operator applied once (A, Aᵀ, A⁺ and, for SVD operators, U, V)."""
    out = {"A": op.A(x), "At": op.At(y), "pinv": op.pinv(y)}
    if op.has_svd:
        out |= {"Vt": op.Vt(x), "Ut": op.Ut(y), "V": op.V(op.Vt(x)), "U": op.U(op.Ut(y))}
    return out


def truncated_A(op: LinearOperator, x: Tensor) -> Tensor:
    """A_k x: A without the singular values that A⁺ discards (A itself for CG pseudo-inverses)."""
    if not op.has_svd:
        return op.A(x)
    s = op.singulars().to(x)
    kept = s * (op.inverse_singulars().to(x) > 0)
    return op.U(op.pad(kept * op.Vt(x)[:, : s.numel()], op.out_dim))


# --- the checks --------------------------------------------------------------------------------------


def check_adjoint(op: LinearOperator, x: Tensor, y: Tensor, tol: Tol) -> None:
    tol.assert_dots_equal(op.A(x), y, x, op.At(y), "⟨A x, y⟩ vs ⟨x, Aᵀ y⟩")


def check_shapes_and_dtypes(op: LinearOperator, x: Tensor, tol: Tol) -> None:
    """Output shapes and dtypes; A on the batch = A on each item stacked."""
    b = x.shape[0]
    y = op.A(x)
    assert y.shape == (b, *op.out_shape) and y.dtype == x.dtype
    tol.assert_close(y, torch.cat([op.A(x[i : i + 1]) for i in range(b)]), "A x by items")
    assert op.At(y).shape == (b, *op.in_shape)
    assert op.A(x.float()).dtype == torch.float32


def check_penrose(op: LinearOperator, x: Tensor, y: Tensor, tol: Tol) -> None:
    """A A⁺ A = A_k and A⁺ A A⁺ = A⁺ (SVD pseudo-inverse, or CG's minimum-norm least squares)."""
    ax = op.A(x)
    if op.has_svd:  # the discarded part is bounded by the cut-off: ‖A x − A_k x‖ ≤ rcond·max(s)·‖x‖
        s_max = float(op.singulars().max())
        gap = norm(ax - truncated_A(op, x))
        assert bool((gap <= op.rcond * s_max * norm(x) * (1 + 1e-6) + 1e-12 * norm(ax)).all()), gap
    tol.assert_close(op.A(op.pinv(ax)), truncated_A(op, x), "A A⁺ A x")
    p = op.pinv(y)
    tol.assert_close(op.pinv(op.A(p)), p, "A⁺ A A⁺ y")


def check_penrose_symmetry(op: LinearOperator, x: Tensor, y: Tensor, tol: Tol) -> None:
    """A⁺A and AA⁺ are symmetric: ⟨P u, v⟩ = ⟨u, P v⟩ for the batch items paired with the next one."""
    px, qy = op.pinv(op.A(x)), op.A(op.pinv(y))
    nx, ny = x.roll(1, 0), y.roll(1, 0)
    tol.assert_dots_equal(px, nx, x, px.roll(1, 0), "(A⁺A)ᵀ = A⁺A")
    tol.assert_dots_equal(qy, ny, y, qy.roll(1, 0), "(AA⁺)ᵀ = AA⁺")


def check_svd(op: LinearOperator, x: Tensor, y: Tensor, tol: Tol) -> None:
    """SVD reconstruction and orthonormality of U and V (SVD operators only)."""
    b = x.shape[0]
    s = op.singulars()
    assert s.numel() == min(op.in_dim, op.out_dim) and bool((s >= 0).all())
    tol.assert_close(op.U(op.pad(s.to(x) * op.Vt(x)[:, : s.numel()], op.out_dim)), op.A(x), "U s Vᵀ x")
    z_in = torch.randn(b, op.in_dim, generator=make_generator(3), dtype=x.dtype)
    z_out = torch.randn(b, op.out_dim, generator=make_generator(4), dtype=x.dtype)
    tol.assert_close(op.Vt(op.V(z_in)), z_in, "Vᵀ V z")
    tol.assert_close(op.V(op.Vt(x)), x, "V Vᵀ x")
    tol.assert_close(op.Ut(op.U(z_out)), z_out, "Uᵀ U z")
    tol.assert_close(op.U(op.Ut(y)), y, "U Uᵀ y")


def check_observed_first(op: LinearOperator) -> None:
    obs = op.observed()
    n_obs = int(obs.sum())
    assert n_obs >= 1 and bool(obs[:n_obs].all()) and not bool(obs[n_obs:].any())


def check_batch_independent(op: LinearOperator, x: Tensor, y: Tensor, tol: Tol) -> None:
    full = all_calls(op, x, y)
    singles = [all_calls(op, x[i : i + 1], y[i : i + 1]) for i in range(x.shape[0])]
    for key, value in full.items():
        tol.assert_close(value, torch.cat([s[key] for s in singles]), key)


def check_float32(op: LinearOperator, x: Tensor, y: Tensor, tol: Tol, pinv_tol: Tol | None = None) -> None:
    """float32 inputs give float32 outputs close to float64's. A⁺ is compared with ``pinv_tol``
    (default ``tol``); CG pseudo-inverses are not (float32 CG: a separate test)."""
    ref = all_calls(op, x, y)
    for key, value in all_calls(op, x.float(), y.float()).items():
        assert value.dtype == torch.float32, key
        if key == "pinv" and not op.has_svd:
            continue
        ((pinv_tol or tol) if key == "pinv" else tol).assert_close(value.double(), ref[key], key)


def state(op: LinearOperator) -> dict:
    """The operator's attributes without its memo of derived data (``_memo``: not state, see
    diffinv.operators.base)."""
    return {key: value for key, value in vars(op).items() if key != "_memo"}


def snapshot(op: LinearOperator) -> dict:
    return copy.deepcopy(state(op))


def assert_unchanged(op: LinearOperator, before: dict, where: str = "") -> None:
    """The operator's attributes equal the snapshot ``before`` (composed children recursively)."""
    after = state(op)
    assert before.keys() == after.keys(), f"{where}: attributes {set(before) ^ set(after)}"
    for key, value in before.items():
        if isinstance(value, Tensor):
            assert torch.equal(value, after[key]), f"{where}{key}"
        elif isinstance(value, LinearOperator):
            assert_unchanged(after[key], state(value), f"{where}{key}.")
        else:
            assert value == after[key], f"{where}{key}"


def reachable_tensors(obj, prefix: str = "op", seen: set | None = None) -> dict[str, Tensor]:
    """Every tensor reachable from an operator's attributes (composed children, lists, tuples and
    dicts included): {attribute path: tensor}, each tensor once."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return {}
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = vars(obj).items()
    else:
        return {}
    out: dict[str, Tensor] = {}
    for key, value in items:
        out |= reachable_tensors(value, f"{prefix}.{key}", seen)
    return out


def tensor_buffers(obj) -> dict[str, int]:
    """Bytes held by every tensor reachable from an operator (:func:`reachable_tensors`):
    {attribute path: max(view size, storage size)}."""
    return {path: max(t.numel() * t.element_size(), t.untyped_storage().nbytes())
            for path, t in reachable_tensors(obj).items()}

r"""Linear operators y = A x on batches, with an optional SVD given as fast transforms.

Shapes: x is (B, *in_shape) with d = prod(in_shape); y is (B, *out_shape) with m = prod(out_shape).

SVD layout (the convention of the DDRM code's ``H_functions``, Kawar et al., 2022): A = U diag(s) Vᵀ with
U: R^m → R^m and V: R^d → R^d orthogonal, given as transforms

    Vt(x) : (B, *in_shape)  → (B, d)     spectral coordinates x̄ = Vᵀ x
    V(z)  : (B, d)          → (B, *in_shape)
    Ut(y) : (B, *out_shape) → (B, m)     ȳ = Uᵀ y
    U(z)  : (B, m)          → (B, *out_shape)
    singulars : (k,), k = min(m, d)      s_i pairs spectral coordinate i of U and of V

so that A x = U(pad_m(s ⊙ x̄_{:k})), Aᵀ y = V(pad_d(s ⊙ ȳ_{:k})), A⁺ y = V(pad_d(s⁺ ⊙ ȳ_{:k})) with
s⁺_i = 1/s_i when s_i > rcond · max(s) and 0 otherwise. :class:`SVDOperator` derives A, Aᵀ and A⁺
from the transforms in this one place. Operators without an SVD get A⁺ from conjugate gradients on
the normal equations (the minimum-norm least-squares solution).

Operators hold only buffers fixed at construction: calling them never mutates them. Derived data
(s⁺, the observed mask, casts of s to an input's dtype, moved copies) is memoised on first use in
one private dict, ``_memo``, which is not part of the operator's state (copies and pickles drop it).

Devices: operators are built in float64 on the CPU and accept inputs of any floating dtype and
device (buffers are cast at call time). :meth:`LinearOperator.to` gives a memoised copy whose
buffers already live on a device in a dtype; on inputs of that device and dtype every map runs
without host↔device copies or host synchronisation (conjugate gradients: one per ``check_every``
iterations).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from diffinv.operators.solve import conjugate_gradients

MAX_MATRIX_BYTES = 2 * 2**30  # LinearOperator.matrix() refuses larger dense builds


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _move(value, device: torch.device, dtype: torch.dtype, keep_float64: bool = False):
    """``value`` on ``device``: real floating tensors in ``dtype`` (float64 if ``keep_float64``),
    complex ones in the matching complex dtype, others only moved; operators by their ``to``;
    lists, tuples and dicts item by item; anything else unchanged."""
    if isinstance(value, Tensor):
        if value.is_complex():
            return value.to(device=device, dtype=dtype.to_complex())
        if value.is_floating_point():
            return value.to(device=device, dtype=torch.float64 if keep_float64 else dtype)
        return value.to(device=device)
    if isinstance(value, LinearOperator):
        return value.to(device, dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_move(v, device, dtype, keep_float64) for v in value)
    if isinstance(value, dict):
        return {k: _move(v, device, dtype, keep_float64) for k, v in value.items()}
    return value


class LinearOperator(ABC):
    """A linear map A: R^{in_shape} → R^{out_shape}, batched over a leading dimension."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    has_svd: bool = False
    _keep_float64: tuple[str, ...] = ()  # attributes whose floating buffers stay float64 in to()
    _original: LinearOperator | None = None  # set on moved copies: the operator they come from
    _placement: tuple[torch.device, torch.dtype] | None = None  # set on moved copies
    # constructor fields that ``--fit`` may estimate (positive scalars) → their default bounds
    fittable: dict[str, tuple[float, float]] = {}

    def __getstate__(self) -> dict:
        """State without the memo (copy.copy, deepcopy and pickle start with an empty one)."""
        state = self.__dict__.copy()
        state.pop("_memo", None)
        return state

    def _cache(self) -> dict:
        """The memo of derived data (module docstring); created on first use."""
        return self.__dict__.setdefault("_memo", {})

    @property
    def original(self) -> LinearOperator:
        """The operator as constructed (float64, CPU) that this one was moved from; itself if not moved."""
        return self._original or self

    @property
    def device(self) -> torch.device:
        """The device of the operator's buffers (cpu for an operator as constructed from CPU data)."""
        if self._placement is not None:
            return self._placement[0]
        for name, value in vars(self).items():
            if name != "_memo" and isinstance(value, (Tensor, LinearOperator)):
                return value.device
        return torch.device("cpu")

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> LinearOperator:
        r"""This operator with its buffers on ``device``: a copy (copy.copy, tensor attributes replaced).

        Real floating buffers are cast to ``dtype``, complex ones to the matching complex dtype
        (float32 → complex64, float64 → complex128), integer and boolean ones only moved; singular
        values stay float64; sub-operators are moved recursively. Always made from the original
        (float64) operator and memoised there by (device, dtype): moving twice returns the same
        object, a copy's ``to`` of its own placement returns itself and the original's ``to`` of
        (its device, float64) returns the original. The original is not changed.
        """
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype: expected a real floating torch dtype, got {dtype!r}")
        try:
            device = torch.empty(0, device=device).device  # canonical: "cuda" → cuda:0
        except (RuntimeError, AssertionError, TypeError) as err:
            raise ValueError(f"device: cannot place tensors on {device!r} ({err})") from None
        root = self.original
        key = (device, dtype)
        if key == (root.device, torch.float64):
            return root
        moved = root._cache().setdefault("moved", {})
        if key not in moved:
            op = copy.copy(root)
            op.__dict__.update({name: _move(value, device, dtype, name in root._keep_float64)
                                for name, value in vars(op).items()})
            op._original, op._placement = root, key
            moved[key] = op
        return moved[key]

    @property
    def in_dim(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_dim(self) -> int:
        return math.prod(self.out_shape)

    @abstractmethod
    def A(self, x: Tensor) -> Tensor:
        """y = A x; (B, *in_shape) → (B, *out_shape)."""

    @abstractmethod
    def At(self, y: Tensor) -> Tensor:
        """x = Aᵀ y; (B, *out_shape) → (B, *in_shape)."""

    def pinv(self, y: Tensor, max_iter: int | None = None, tol: float = 1e-10,
             check_every: int = 10) -> Tensor:
        r"""A⁺ y by conjugate gradients on AᵀA x = Aᵀ y from x = 0 (stays in range(Aᵀ), so the
        limit is the minimum-norm least-squares solution). (B, *out_shape) → (B, *in_shape).

        Each row stops at ‖AᵀA x − Aᵀy‖ ≤ tol·‖Aᵀy‖ (:func:`~diffinv.operators.solve.conjugate_gradients`,
        at most ``max_iter`` = 2d iterations; convergence read on the host every ``check_every``)."""
        def normal(p: Tensor) -> Tensor:
            return _flat(self.At(self.A(p.reshape(-1, *self.in_shape))))

        x = conjugate_gradients(normal, _flat(self.At(y)), max_iter or 2 * self.in_dim, tol, check_every)
        return x.reshape(-1, *self.in_shape)

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The dense (m, d) matrix of A, built column by column (small problems only).

        Needs d·(d + m) entries (the identity and the result); above MAX_MATRIX_BYTES (e.g. any image
        operator at 256×256×3, d = 196 608: 309 GB) it raises ValueError instead of exhausting memory."""
        need = self.in_dim * (self.in_dim + self.out_dim) * torch.empty((), dtype=dtype).element_size()
        if need > MAX_MATRIX_BYTES:
            raise ValueError(f"matrix: the dense ({self.out_dim}, {self.in_dim}) matrix of "
                             f"{type(self).__name__} needs {need / 2**30:.3g} GiB (limit "
                             f"{MAX_MATRIX_BYTES / 2**30:.3g} GiB); matrix() is for small problems")
        eye = torch.eye(self.in_dim, dtype=dtype, device=self.device).reshape(self.in_dim, *self.in_shape)
        return _flat(self.A(eye)).T.contiguous()

    def describe(self) -> dict:
        """A JSON-able description (name and parameters)."""
        return {"name": type(self).__name__, "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape)}

    def check_input(self, x: Tensor, name: str = "x") -> None:
        if tuple(x.shape[1:]) != tuple(self.in_shape):
            raise ValueError(f"{name}: expected shape (B, {', '.join(map(str, self.in_shape))}), "
                             f"got {tuple(x.shape)}")

    def check_output(self, y: Tensor, name: str = "y") -> None:
        if tuple(y.shape[1:]) != tuple(self.out_shape):
            raise ValueError(f"{name}: expected shape (B, {', '.join(map(str, self.out_shape))}), "
                             f"got {tuple(y.shape)}")


class SVDOperator(LinearOperator):
    """A linear operator given by its SVD transforms (module docstring); A, Aᵀ, A⁺ follow.

    Subclasses set ``self._s`` (k,) float64 at construction and implement V, Vᵀ, U, Uᵀ.
    """

    has_svd = True
    rcond: float = 1e-7
    _keep_float64 = ("_s",)
    _s: Tensor

    @abstractmethod
    def V(self, z: Tensor) -> Tensor: ...

    @abstractmethod
    def Vt(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def U(self, z: Tensor) -> Tensor: ...

    @abstractmethod
    def Ut(self, y: Tensor) -> Tensor: ...

    def singulars(self) -> Tensor:
        """s, shape (k,) with k = min(m, d), non-negative, float64 on the operator's device.

        The tensor stored at construction, the same object on every call: do not modify it."""
        return self._s

    def pad(self, z: Tensor, size: int) -> Tensor:
        """Zero-pad spectral coordinates (B, k) to (B, size)."""
        if z.shape[1] == size:
            return z
        return torch.cat([z, z.new_zeros(z.shape[0], size - z.shape[1])], dim=1)

    def inverse_singulars(self) -> Tensor:
        """s⁺: 1/s_i above the cut-off rcond · max(s), 0 below it. Shape (k,), float64, computed once."""
        cache = self._cache()
        if "s_inv" not in cache:
            s = self.singulars()
            keep = s > self.rcond * s.max().clamp_min(torch.finfo(s.dtype).tiny)
            cache["s_inv"] = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)),
                                         torch.zeros_like(s))
        return cache["s_inv"]

    def observed(self) -> Tensor:
        """Boolean mask (d,) of spectral coordinates that carry an observation (s⁺ > 0), computed once."""
        cache = self._cache()
        if "observed" not in cache:
            cache["observed"] = self.pad(self.inverse_singulars()[None] > 0, self.in_dim)[0]
        return cache["observed"]

    def _spectrum_like(self, which: str, like: Tensor) -> Tensor:
        """s (``which`` = "s") or s⁺ ("s_inv") in ``like``'s dtype and device, cast once (memoised)."""
        cache = self._cache()
        key = (which, like.dtype, like.device)
        if key not in cache:
            cache[key] = (self.singulars() if which == "s" else self.inverse_singulars()).to(like)
        return cache[key]

    def A(self, x: Tensor) -> Tensor:
        s = self._spectrum_like("s", x)
        xb = self.Vt(x)[:, : s.numel()]
        return self.U(self.pad(s * xb, self.out_dim))

    def At(self, y: Tensor) -> Tensor:
        s = self._spectrum_like("s", y)
        yb = self.Ut(y)[:, : s.numel()]
        return self.V(self.pad(s * yb, self.in_dim))

    def pinv(self, y: Tensor, max_iter: int | None = None, tol: float = 1e-10,
             check_every: int = 10) -> Tensor:
        """A⁺ y = V(pad(s⁺ ⊙ (Uᵀy)_{:k})) exactly (the iteration arguments are unused)."""
        s_inv = self._spectrum_like("s_inv", y)
        yb = self.Ut(y)[:, : s_inv.numel()]
        return self.V(self.pad(s_inv * yb, self.in_dim))


class IdentityUOperator(SVDOperator):
    """An SVD operator whose left singular vectors are the identity: Uᵀy and U z only reshape."""

    def Ut(self, y: Tensor) -> Tensor:
        self.check_output(y)
        return y.reshape(y.shape[0], -1)

    def U(self, z: Tensor) -> Tensor:
        return z.reshape(z.shape[0], *self.out_shape)

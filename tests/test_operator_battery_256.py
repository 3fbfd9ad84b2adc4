r"""The operator battery at image size (3, 256, 256): d = 196 608, float64, batch 2 (slow tier).

The identities are those of ``test_operator_battery.py`` (shared in ``operator_checks.py``), except
the dense A⁺ = pinv(matrix) comparison, which needs (m, d) matrices; at this size the four Penrose
conditions are checked on random vectors instead (together they determine A⁺).

Cases: one per registered operator (defaults: ``blur_gauss`` 61×61 σ = 3 and ``blur_motion`` 61×61
intensity 0.5 are the DPS protocol, ``sr_bicubic`` is ×4), the DPS box (128×128, off-centre) and
random (8 % kept) masks, and every shipped problem preset built by diffinv.problems.build_operator.
Exempt: ``dense``. A DenseOperator stores A (m, d) and its full SVD factors U (m, m), V (d, d) —
O(m² + d²) memory by design, 309 GB for V alone at d = 196 608 — and is not an image operator; its
identities are covered at small d by the main battery. ``select`` (index based) runs on R^d.

Tolerances, normwise per batch item (operator_checks.Tol); float64 FFT / matmul round-off is
about ε·log₂ n ≈ 4e-15 relative (measured ≤ 3e-15). Maps: 1e-12·‖reference‖. Penrose identities of
SVD operators: 1e-11 (measured ≤ 3e-13: the symmetry of A⁺A for the σ = 3 Gaussian blur, whose A⁺
amplifies round-off by up to κ = max s / min kept s ≈ 1e7 = 1/rcond); A A⁺ A is compared with A_k,
A without the singular values ≤ rcond·max(s) (that blur discards 88 743 of 196 608, each ≤ 1e-7).
CG pseudo-inverse (``compose``): 1e-8 (CG stops at a 1e-10 relative residual of the normal
equations; measured 8e-11). float32 against float64: 1e-5 (measured ≤ 5e-7).

Memory: every tensor an operator holds (composed children included) must be ≤ 64 MiB (measured:
≤ 1.5 MiB), and one call of A, Aᵀ, A⁺, V, Vᵀ, U or Uᵀ on a batch of 2 may raise the process's
resident-set peak by at most 96 MiB, about 30 float64 copies of the 3 MiB input (measured: ≤ 30 MiB,
the blurs' complex spectra; slack for transparent huge pages). The peak is measured in a subprocess
from Linux's VmHWM (reset through /proc/self/clear_refs) with glibc's mmap threshold fixed, so that
every large temporary is mapped on allocation and unmapped on release; where /proc/self/clear_refs
is unavailable that test is skipped and the buffer-size test still applies.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import operator_checks as checks
import pytest
import torch
from operator_checks import Tol, rand_in, rand_out

from diffinv.operators import OPERATORS, ComposedOperator, SelectOperator
from diffinv.operators.blur import CircularBlur, GaussianBlur, MotionBlur, UniformBlur
from diffinv.operators.colorization import Colorization
from diffinv.operators.inpainting import (
    BoxInpainting,
    HalfInpainting,
    Inpainting,
    Outpainting,
    RandomInpainting,
)
from diffinv.operators.superres import AvgPoolSR, BicubicSR
from diffinv.rng import make_generator

pytestmark = pytest.mark.slow

S = (3, 256, 256)
DIM = math.prod(S)
BATCH = 2
MAX_BUFFER = 64 * 2**20  # bytes: largest tensor an operator may hold
MAX_CALL_PEAK = 96 * 2**20  # bytes: resident-set growth allowed for one call on a batch of 2
NO_SVD = {"compose"}  # A⁺ by conjugate gradients
EXEMPT = {"dense": "stores (m, d) and (d, d) matrices by design; not an image operator"}


def _g():
    return make_generator(0)


REGISTRY_CASES = {
    "select": lambda: SelectOperator(DIM, torch.randperm(DIM, generator=_g())[: DIM // 4]),
    "compose": lambda: ComposedOperator(BicubicSR((1, 256, 256), factor=4), Colorization(S)),
    "sr_avgpool": lambda: AvgPoolSR(S, factor=4),
    "sr_bicubic": lambda: BicubicSR(S),
    "inpaint_mask": lambda: Inpainting(torch.rand(S, generator=_g()) < 0.5),
    "inpaint_box": lambda: BoxInpainting(S),
    "inpaint_random": lambda: RandomInpainting(S, generator=_g()),
    "inpaint_half": lambda: HalfInpainting(S),
    "outpaint": lambda: Outpainting(S),
    "blur_kernel": lambda: CircularBlur(torch.rand(61, 61, generator=_g(), dtype=torch.float64), S),
    "blur_gauss": lambda: GaussianBlur(S),
    "blur_uniform": lambda: UniformBlur(S),
    "blur_motion": lambda: MotionBlur(S, generator=_g()),
    "colorize": lambda: Colorization(S),
}
EXTRA_CASES = {
    "dps_box_128": lambda: BoxInpainting(S, size=128, top=40, left=70),
    "dps_random_8pct": lambda: RandomInpainting(S, keep=0.08, generator=_g()),
}


def _preset(name: str):
    from diffinv.problems import build_operator, load_problem

    return build_operator(load_problem(name), S)


def _preset_names() -> list[str]:
    from diffinv.problems import preset_names

    return preset_names()


CASES = {**REGISTRY_CASES, **EXTRA_CASES,
         **{f"preset_{name}": functools.partial(_preset, name) for name in _preset_names()}}


@functools.cache
def build(case: str):
    return CASES[case]()


@functools.cache
def inputs(case: str):
    op = build(case)
    return rand_in(op, b=BATCH), rand_out(op, b=BATCH)


MAP = Tol(0.0, 1e-12, norm=True)
PENROSE_SVD = Tol(0.0, 1e-11, norm=True)
PENROSE_CG = Tol(0.0, 1e-8, norm=True)
F32 = Tol(0.0, 1e-5, norm=True)


def test_every_registered_operator_is_covered_or_exempt():
    assert set(REGISTRY_CASES) | set(EXEMPT) == set(OPERATORS)
    assert not set(REGISTRY_CASES) & set(EXEMPT)


def test_dps_protocol_operators():
    """The defaults are the DPS 256² tasks: Gaussian 61×61 σ = 3, motion 61×61 intensity 0.5, SR ×4."""
    gauss, motion, sr = build("blur_gauss"), build("blur_motion"), build("sr_bicubic")
    assert gauss.kernel.shape == motion.kernel.shape == (61, 61) and gauss.sigma == 3.0
    assert motion.intensity == 0.5 and sr.factor == 4 and sr.out_shape == (3, 64, 64)
    assert int((gauss.kernel[30] > 0).sum()) == 25  # truncate 4σ: 25×25 support
    assert build("dps_box_128").out_dim == 3 * (256**2 - 128**2)
    assert build("dps_random_8pct").out_dim == 3 * round(0.08 * 256**2)


@pytest.mark.parametrize("case", list(CASES))
def test_adjointness_256(case):
    checks.check_adjoint(build(case), *inputs(case), MAP)


@pytest.mark.parametrize("case", list(CASES))
def test_shapes_describe_and_no_mutation_256(case):
    op = build(case)
    json.dumps(op.describe())
    if case in REGISTRY_CASES:
        assert op.describe()["name"] in (case, type(op).__name__)
    before = checks.snapshot(op)
    checks.check_shapes_and_dtypes(op, inputs(case)[0], MAP)
    checks.all_calls(op, *inputs(case))
    checks.assert_unchanged(op, before)


@pytest.mark.parametrize("case", list(CASES))
def test_penrose_identities_256(case):
    op = build(case)
    tol = PENROSE_SVD if op.has_svd else PENROSE_CG
    checks.check_penrose(op, *inputs(case), tol)
    checks.check_penrose_symmetry(op, *inputs(case), tol)


@pytest.mark.parametrize("case", [c for c in CASES if c not in NO_SVD])
def test_svd_reconstruction_and_orthonormality_256(case):
    op = build(case)
    assert op.has_svd
    checks.check_svd(op, *inputs(case), MAP)
    checks.check_observed_first(op)


@pytest.mark.parametrize("case", list(CASES))
def test_all_maps_are_batch_independent_256(case):
    checks.check_batch_independent(build(case), *inputs(case), MAP)


@pytest.mark.parametrize("case", list(CASES))
def test_float32_matches_float64_256(case):
    checks.check_float32(build(case), *inputs(case), F32)


@pytest.mark.parametrize("case", list(CASES))
def test_operator_buffers_are_bounded_256(case):
    buffers = checks.tensor_buffers(build(case))
    big = {k: v for k, v in buffers.items() if v > MAX_BUFFER}
    assert not big, f"tensors over {MAX_BUFFER / 2**20:.0f} MiB: {big}"


@pytest.mark.parametrize("case", ["select", "compose", "blur_gauss", "preset_sr4"])
def test_dense_matrix_is_refused_not_built_256(case):
    with pytest.raises(ValueError, match="matrix: the dense"):
        build(case).matrix()


# --- resident-set peak of one call, measured in a fresh process ----------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def call_peaks(cases: list[str]) -> dict[str, dict[str, int]]:
    """{case: {call: bytes}}: VmHWM − VmRSS across one call on a batch of 2 (after one warm-up)."""
    import gc

    torch.set_num_threads(1)
    result = {}
    for case in cases:
        op = build(case)
        x, y = inputs(case)
        calls = {"A": (op.A, x), "At": (op.At, y), "pinv": (op.pinv, y)}
        if op.has_svd:
            calls |= {"Vt": (op.Vt, x), "V": (op.V, op.Vt(x)), "Ut": (op.Ut, y), "U": (op.U, op.Ut(y))}
        peaks = {}
        for name, (fn, arg) in calls.items():
            fn(arg)  # warm-up (FFT plans, lazy initialisation)
            gc.collect()
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
            base = _status_kib("VmRSS")
            out = fn(arg)
            peaks[name] = 1024 * (_status_kib("VmHWM") - base)
            del out
        result[case] = peaks
    return result


def _clear_refs_works() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def test_one_call_memory_is_bounded_256():
    if not sys.platform.startswith("linux") or not _clear_refs_works():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the resident-set peak")
    here = Path(__file__).resolve().parent
    code = (f"import sys, json; sys.path.insert(0, {str(here)!r}); import test_operator_battery_256 as t; "
            f"print(json.dumps(t.call_peaks(list(t.CASES))))")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    peaks = json.loads(run.stdout.strip().splitlines()[-1])
    worst = {case: max(calls.values()) for case, calls in peaks.items()}
    over = {case: value for case, value in worst.items() if value > MAX_CALL_PEAK}
    assert not over, f"calls over {MAX_CALL_PEAK / 2**20:.0f} MiB: {over}"

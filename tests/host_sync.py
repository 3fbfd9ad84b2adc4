"""Count host conversions and host syncs in a block of code (a test utility, not part of diffinv).

    with count_host_syncs() as syncs:
        sampler.sample(prior, problem, 4, generator, device=device)
    assert syncs.count == 0, syncs.summary()

Counted, each event with its call site (``file:line`` of the innermost frame outside torch, the
``warnings`` module and this file; paths relative to the repository when inside it):

* ``Tensor.item``, ``__bool__``, ``__float__``, ``__int__``, ``__index__``, ``__complex__``,
  ``tolist``, ``numpy`` and ``cpu`` — on every device: on the CPU they cost nothing, but the same line
  waits for the GPU in a CUDA run (``.cpu()`` of a CPU tensor is counted for that reason);
* ``Tensor.to`` from a device other than the CPU to the CPU (``x.to(device)`` on a CPU run is the
  device-agnostic idiom, not a conversion, so it is not counted there);
* ``torch.tensor`` / ``torch.as_tensor`` whose data is not a tensor or an ndarray (a Python number,
  bool, list, tuple): host data, copied to the device (a sync on CUDA);
* with ``cuda`` (default: when CUDA is available) torch's own syncs inside ops: the block runs under
  ``torch.cuda.set_sync_debug_mode("warn")`` and each "called a synchronizing CUDA operation"
  warning is an event (e.g. ``nonzero``, boolean-mask indexing, ``repeat_interleave`` without
  ``output_size``, copies between the host's pageable memory and the GPU). Other warnings pass on.

One event counts once: conversions made by torch inside a counted call (``repr`` calling ``item``),
and the sync warning a counted conversion raises itself, are not counted again. With ``cpu=False``
conversions of CPU tensors (and ``torch.tensor`` calls that build a CPU tensor) are left out.

Intended use: run a sampler with n and 2n steps and compare ``count`` (and ``sites``): equal counts
mean no conversion per step; setup code may convert CPU tensors as long as that does not grow.

Limits: the patches are process-wide (other threads are counted too) and are restored on exit, also
after an exception; nested use raises RuntimeError; code that bound ``torch.tensor`` to another name
before the block (``from torch import tensor``) is not seen.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

TENSOR_METHODS = ("item", "__bool__", "__float__", "__int__", "__index__", "__complex__", "tolist",
                  "numpy", "cpu")
FACTORIES = ("tensor", "as_tensor")
SYNC_WARNING = "called a synchronizing CUDA operation"

_SKIP_DIRS = (os.path.dirname(torch.__file__) + os.sep,)
_SKIP_FILES = {os.path.abspath(__file__), os.path.abspath(warnings.__file__)}
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_MISSING = object()


@dataclass
class HostSyncCounter:
    """Events of one :func:`count_host_syncs` block: ``events`` [(kind, site)], in order."""

    events: list[tuple[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.events)

    @property
    def sites(self) -> Counter[str]:
        """Number of events per call site ``file:line``."""
        return Counter(site for _, site in self.events)

    def summary(self) -> str:
        """One line per call site, most frequent first (for assertion messages)."""
        kinds: dict[str, set[str]] = {}
        for kind, site in self.events:
            kinds.setdefault(site, set()).add(kind)
        lines = [f"  {n}x {site} ({', '.join(sorted(kinds[site]))})" for site, n in self.sites.most_common()]
        return "\n".join([f"{self.count} host conversion(s) or sync(s)", *lines])


@dataclass
class _State:
    counter: HostSyncCounter | None = None
    cpu: bool = True
    stack: list[bool] = field(default_factory=list)  # per active patched call: was it counted?
    entry: Any = None  # the torch frame of the last event, if it came through one (see _record)


_STATE = _State()


def _record(kind: str) -> None:
    """Append (kind, site) to the active counter; the site is the innermost frame outside torch, the
    warnings module and this file. Events raised inside one call into torch's Python code (``repr``
    converting every element) are one event: the torch frame entered from the site is remembered."""
    counter = _STATE.counter
    if counter is None:
        return
    frame, entry = sys._getframe(1), None
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_SKIP_DIRS) and path not in _SKIP_FILES:
            break
        entry = frame if path.startswith(_SKIP_DIRS) else None
        frame = frame.f_back
    if entry is not None and entry is _STATE.entry:
        return
    _STATE.entry = entry
    if frame is None:
        counter.events.append((kind, "<unknown>"))
        return
    path = os.path.abspath(frame.f_code.co_filename)
    shown = path[len(_ROOT):] if path.startswith(_ROOT) else path
    counter.events.append((kind, f"{shown}:{frame.f_lineno}"))


def _device(spec: Any) -> torch.device:
    if spec is None:
        return torch.get_default_device()
    if isinstance(spec, torch.Tensor):
        return spec.device
    return torch.device(spec)


def _to_counts(tensor: torch.Tensor, args: tuple, kwargs: dict) -> bool:
    """Whether ``tensor.to(*args, **kwargs)`` copies from another device to the CPU."""
    if tensor.device.type == "cpu":
        return False
    target = kwargs.get("device", kwargs.get("other"))
    for arg in args:
        if isinstance(arg, (str, torch.device, int, torch.Tensor)) and not isinstance(arg, bool):
            target = arg
            break
    return target is not None and _device(target).type == "cpu"


def _factory_counts(name: str, args: tuple, kwargs: dict) -> bool:
    data = args[0] if args else kwargs.get("data")
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return False
    if _STATE.cpu:
        return True
    spec = kwargs.get("device", args[2] if name == "as_tensor" and len(args) > 2 else None)
    return _device(spec).type != "cpu"


def _counted_call(kind: str, counts: bool, original, *args, **kwargs):
    """Call ``original``; record one event when ``counts`` and no enclosing patched call is running."""
    if _STATE.stack:
        counts = False
    elif counts:
        _record(kind)
    _STATE.stack.append(counts)
    try:
        return original(*args, **kwargs)
    finally:
        _STATE.stack.pop()


def _method(name: str, original):
    if name == "to":
        def wrapper(self, *args, **kwargs):
            counts = not _STATE.stack and _to_counts(self, args, kwargs)
            return _counted_call("to(cpu)", counts, original, self, *args, **kwargs)
    else:
        def wrapper(self, *args, **kwargs):
            counts = _STATE.cpu or self.device.type != "cpu"
            return _counted_call(name, counts, original, self, *args, **kwargs)
    wrapper.__name__ = getattr(original, "__name__", name)
    return wrapper


def _factory(name: str, original):
    def wrapper(*args, **kwargs):
        counts = not _STATE.stack and _factory_counts(name, args, kwargs)
        return _counted_call(f"torch.{name}", counts, original, *args, **kwargs)
    wrapper.__name__ = name
    return wrapper


def _sync_warning_handler(previous):
    def handler(message, category, filename, lineno, file=None, line=None):
        if SYNC_WARNING not in str(message):
            return previous(message, category, filename, lineno, file, line)
        if not any(_STATE.stack):
            _record("cuda sync")
        return None
    return handler


@contextmanager
def count_host_syncs(cpu: bool = True, cuda: bool | None = None) -> Iterator[HostSyncCounter]:
    """Count host conversions and syncs inside the block (module docstring); yields the counter.

    cpu : also count conversions of CPU tensors (default; they sync in a CUDA run of the same code).
    cuda : also count torch's own CUDA syncs via ``torch.cuda.set_sync_debug_mode("warn")``
        (default: when CUDA is available).
    """
    if _STATE.counter is not None:
        raise RuntimeError("count_host_syncs: already active (nested use is not supported)")
    if cuda and not torch.cuda.is_available():
        raise ValueError("cuda: CUDA sync counting requested but no CUDA device is available")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    counter = HostSyncCounter()
    saved = [(torch.Tensor, name, torch.Tensor.__dict__.get(name, _MISSING))
             for name in (*TENSOR_METHODS, "to")]
    saved += [(torch, name, torch.__dict__[name]) for name in FACTORIES]
    debug_mode = torch.cuda.get_sync_debug_mode() if cuda else None
    _STATE.counter, _STATE.cpu, _STATE.stack, _STATE.entry = counter, cpu, [], None
    try:
        for owner, name, _ in saved:
            wrap = _method if owner is torch.Tensor else _factory
            setattr(owner, name, wrap(name, getattr(owner, name)))
        with warnings.catch_warnings():
            if cuda:
                warnings.filterwarnings("always", message=".*" + SYNC_WARNING)
                warnings.showwarning = _sync_warning_handler(warnings.showwarning)
                torch.cuda.set_sync_debug_mode("warn")
            try:
                yield counter
            finally:
                if debug_mode is not None:
                    torch.cuda.set_sync_debug_mode(debug_mode)
    finally:
        for owner, name, value in saved:
            if value is _MISSING:
                if name in owner.__dict__:
                    delattr(owner, name)
            else:
                setattr(owner, name, value)
        _STATE.counter, _STATE.stack, _STATE.entry = None, [], None

"""Which items of a batch this process runs: torchrun ranks × job-array shards, and per-item seeds.

The rule: the runner sorts the item names, and the process with part ``index`` of ``count`` runs the names
at positions ``i ≡ index (mod count)``, where ``index = shard * world_size + rank`` and
``count = num_shards * world_size``. Shards come from ``--shard K/N`` (1-based, like Playwright and Jest)
or a Slurm job array (``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT``);
ranks from torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). The split depends only on the sorted list
and these numbers — never on timing, on which process starts first, or on what is already finished — so
the parts are disjoint and cover every item exactly once, a rerun assigns each item to the same part, and
round-robin keeps the parts within one item of each other in size.

Each item draws its randomness from :func:`item_seed` (base seed and item name only), so its results do not
depend on the order, the shard or the number of workers that ran it.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GROUP_TIMEOUT = datetime.timedelta(hours=6)  # the start-up barrier waits for every rank's prior to load


@dataclass(frozen=True)
class Partition:
    """Part ``index`` of ``count`` (0-based): ``shard * world_size + rank`` of ``num_shards * world_size``."""

    index: int
    count: int
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    shard: int = 0
    num_shards: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"index: expected 0 ≤ index < count={self.count}, got {self.index}")

    def select(self, names: list[str]) -> list[str]:
        """The names at positions ``i ≡ index (mod count)``, in their given (sorted) order."""
        return list(names)[self.index::self.count]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"K/N"`` (1 ≤ K ≤ N, 1-based) -> ``(K - 1, N)``; None -> None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text) if isinstance(text, str) else None
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"shard: expected K/N with 1 ≤ K ≤ N (e.g. 3/16), got {str(text)!r}")
    return int(match[1]) - 1, int(match[2])


def _env_int(env: Mapping[str, str], name: str, default: int | None, minimum: int) -> int:
    value = env.get(name, "")
    if not value.strip():
        if default is None:
            raise ValueError(f"{name}: not set (needed with SLURM_ARRAY_TASK_COUNT)")
        return default
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ValueError(f"{name}: expected an integer ≥ {minimum}, got {value!r}")
    return number


def partition(shard: str | None = None, env: Mapping[str, str] | None = None) -> Partition:
    """This process's part, from ``--shard K/N`` (or a Slurm job array) and torchrun's variables.

    ``env`` defaults to ``os.environ``. Missing torchrun variables mean one process (rank 0 of 1); malformed
    ones raise a ``ValueError`` naming the variable. Without ``shard``, a Slurm job array
    (``SLURM_ARRAY_TASK_COUNT`` set) gives shard ``(ID - MIN) / STEP`` of ``COUNT``; ``shard`` wins over
    Slurm. An array that is not a plain range (e.g. ``--array=1,4,9``) is refused rather than guessed at.
    """
    env = os.environ if env is None else env
    world_size = _env_int(env, "WORLD_SIZE", 1, 1)
    rank = _env_int(env, "RANK", 0, 0)
    local_rank = _env_int(env, "LOCAL_RANK", 0, 0)
    if rank >= world_size:
        raise ValueError(f"RANK: {rank} is not below WORLD_SIZE={world_size}")
    parsed = parse_shard(shard)
    if parsed is None and env.get("SLURM_ARRAY_TASK_COUNT", "").strip():
        count = _env_int(env, "SLURM_ARRAY_TASK_COUNT", None, 1)
        task = _env_int(env, "SLURM_ARRAY_TASK_ID", None, 0)
        low = _env_int(env, "SLURM_ARRAY_TASK_MIN", 0, 0)
        step = _env_int(env, "SLURM_ARRAY_TASK_STEP", 1, 1)
        high = _env_int(env, "SLURM_ARRAY_TASK_MAX", low + (count - 1) * step, 0)
        offset = task - low
        if high - low != (count - 1) * step or offset % step or not 0 <= offset // step < count:
            raise ValueError(f"SLURM_ARRAY_TASK_ID: task {task} of an array that is not a plain range "
                             f"(min {low}, max {high}, step {step}, count {count}); pass --shard K/N instead")
        parsed = offset // step, count
    shard_index, num_shards = parsed or (0, 1)
    return Partition(index=shard_index * world_size + rank, count=num_shards * world_size, rank=rank,
                     world_size=world_size, local_rank=local_rank, shard=shard_index, num_shards=num_shards)


def item_seed(base_seed: int, name: str) -> int:
    """A seed for item ``name``: the first 7 bytes of ``sha256(f"{base_seed}:{name}")``, so 0 ≤ seed < 2**56.

    It depends on nothing but ``base_seed`` and ``name``: an item's results do not depend on the order,
    the shard or the number of workers that ran it, and a resumed run redoes an item identically.
    """
    digest = hashlib.sha256(f"{base_seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


class Group:
    """The ``torch.distributed`` group of a torchrun launch; with one process every call is a no-op."""

    def __init__(self, part: Partition, device: Any = None, started: bool = False) -> None:
        self.part, self.device, self._started = part, device, started
        self.active = device is not None

    @classmethod
    def start(cls, part: Partition, device_type: str) -> Group:
        """Join the group (backend ``nccl`` for ``cuda``, else ``gloo``; ``init_method="env://"``).

        Only with ``part.world_size > 1``; a group that is already initialised is reused (and not closed).
        """
        if part.world_size <= 1:
            return cls(part)
        import torch
        import torch.distributed as dist

        if not dist.is_available():
            raise ValueError("WORLD_SIZE: torch.distributed is not available in this build of torch")
        started = False
        if not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(part.local_rank)
            dist.init_process_group(backend=backend, init_method="env://", timeout=GROUP_TIMEOUT)
            started = True
        nccl = dist.get_backend() == "nccl"
        return cls(part, torch.device("cuda", part.local_rank) if nccl else torch.device("cpu"), started)

    def barrier(self) -> None:
        """Wait until every process reaches this point."""
        if self.active:
            import torch.distributed as dist

            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def sum(self, value: int) -> int:
        """The sum of ``value`` over all processes (``value`` itself with one process)."""
        if not self.active:
            return int(value)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return int(tensor.item())

    def close(self) -> None:
        """Leave the group if :meth:`start` joined it (idempotent)."""
        if self._started:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._started = False
        self.active = False

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

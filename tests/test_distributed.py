"""diffinv.distributed: shards × torchrun ranks cover every item exactly once; item seeds; Group."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import socket

import pytest

from diffinv.distributed import Group, Partition, item_seed, parse_shard, partition

NAMES = [f"img{i:03d}" for i in range(23)]


@pytest.mark.parametrize(("text", "expected"), [
    (None, None), ("1/1", (0, 1)), ("3/16", (2, 16)), ("16/16", (15, 16)), (" 2 / 3 ", (1, 3)),
])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "-1/3", "1/0", "", "1/2/3", "1.5/3"])
def test_parse_shard_refuses(text):
    with pytest.raises(ValueError, match=r"^shard: expected K/N with 1 ≤ K ≤ N \(e\.g\. 3/16\), got '"):
        parse_shard(text)


def test_single_process_defaults():
    part = partition(env={})
    assert part == Partition(index=0, count=1, rank=0, world_size=1, local_rank=0, shard=0, num_shards=1)
    assert part.select(NAMES) == NAMES


def test_ranks_times_shards_cover_every_item_once():
    parts = [partition(f"{k}/3", {"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r)})
             for k in (1, 2, 3) for r in (0, 1)]
    assert sorted(p.index for p in parts) == list(range(6)) and {p.count for p in parts} == {6}
    assert parts[3] == Partition(index=3, count=6, rank=1, world_size=2, local_rank=1, shard=1, num_shards=3)
    for n in (0, 1, 5, 6, 23):
        chosen = [name for p in parts for name in p.select(NAMES[:n])]
        assert sorted(chosen) == NAMES[:n]
    sizes = [len(p.select(NAMES)) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert parts[0].select(NAMES) == NAMES[0::6]  # order kept


def test_malformed_torchrun_variables():
    with pytest.raises(ValueError, match="^RANK: "):
        partition(env={"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="^WORLD_SIZE: "):
        partition(env={"WORLD_SIZE": "0"})
    with pytest.raises(ValueError, match="^RANK: "):
        partition(env={"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="^LOCAL_RANK: "):
        partition(env={"LOCAL_RANK": "-1"})


def test_slurm_array():
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8",
           "SLURM_ARRAY_TASK_COUNT": "8"}
    part = partition(env=env)
    assert (part.shard, part.num_shards, part.index, part.count) == (4, 8, 4, 8)
    assert partition(env={"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}).shard == 0
    stepped = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6",
               "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert partition(env=stepped).shard == 3
    with pytest.raises(ValueError, match="^SLURM_ARRAY_TASK_ID: .*--shard K/N"):  # --array=1,4,9
        partition(env={**env, "SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MAX": "9",
                       "SLURM_ARRAY_TASK_COUNT": "3"})
    with pytest.raises(ValueError, match="^SLURM_ARRAY_TASK_ID: "):
        partition(env={"SLURM_ARRAY_TASK_COUNT": "4"})
    with_ranks = partition(env={**env, "RANK": "1", "WORLD_SIZE": "2"})
    assert (with_ranks.index, with_ranks.count) == (9, 16)


def test_shard_overrides_slurm():
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"}
    part = partition("2/3", env)
    assert (part.shard, part.num_shards) == (1, 3)


def test_item_seed_stable_and_distinct():
    assert item_seed(0, "img000") == item_seed(0, "img000")
    assert item_seed(0, "img000") == int.from_bytes(hashlib.sha256(b"0:img000").digest()[:7], "big")
    seeds = {item_seed(s, n) for s in (0, 1) for n in NAMES}
    assert len(seeds) == 2 * len(NAMES)
    assert all(0 <= s < 2**56 for s in seeds)


def test_group_one_process_is_a_no_op():
    group = Group.start(partition(env={}), "cpu")
    assert not group.active
    group.barrier()
    assert group.sum(7) == 7
    group.close()
    group.close()


def _member(rank: int, port: int, queue) -> None:
    env = {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    os.environ.update(env)
    with Group.start(partition(env=env), "cpu") as group:
        group.barrier()
        queue.put((rank, group.sum(rank + 1)))


def test_group_two_gloo_processes():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_member, args=(r, port, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert results == [(0, 3), (1, 3)]

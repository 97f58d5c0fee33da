"""``torchrun -m diffir restore``: every file restored once by one of the processes, the same bytes as one
process, one summary; and the split, the rank's device and thread share on their own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

import diffir
from conftest import REPO, shared_data, tiny_model
from diffir.errors import DiffIRError
from diffir.pipelines import sharding
from diffir.pipelines.sharding import Shard, fair_threads, rank_device, shard


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_split_takes_every_item_exactly_once(world) -> None:
    for n in range(13):
        items = list(range(n))
        shares = [shard(items, r, world) for r in range(world)]
        assert sorted(i for s in shares for i in s) == items  # each index once, none lost
        for r, s in enumerate(shares):
            assert s == list(range(r, n, world))  # rank r takes r, r + N, ... in order
        # grouped by key: one group never straddles two ranks, and shares differ by at most one group
        keys = [i // 2 for i in items]  # pairs with the same key
        grouped = [shard(items, r, world, key=lambda i: keys[i]) for r in range(world)]
        assert sorted(i for s in grouped for i in s) == items
        owner = {keys[i]: r for r, s in enumerate(grouped) for i in s}
        assert all(owner[keys[i]] == r for r, s in enumerate(grouped) for i in s)
        groups = [len({keys[i] for i in s}) for s in grouped]
        assert max(groups) - min(groups) <= 1
    with pytest.raises(ValueError):
        shard([1, 2], 2, 2)


def test_rank_from_env_device_and_threads(monkeypatch) -> None:
    assert not Shard.from_env({}).enabled and not Shard.from_env({"WORLD_SIZE": "1"}).enabled
    part = Shard.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (part.rank, part.world_size, part.local_rank, part.local_world_size) == (3, 4, 1, 2)
    assert part.label == " [rank 3/4]" and not part.is_main
    for bad in ({"WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "two", "RANK": "0"}):
        with pytest.raises(DiffIRError):
            Shard.from_env(bad)

    # CPU: cores shared by the processes of one machine; torchrun's own OMP_NUM_THREADS=1 is not a user choice
    monkeypatch.setattr("diffir.runtime.threads.available_cores", lambda: 8)
    assert fair_threads(Shard(), {}) is None  # alone: torch's count, unchanged
    assert fair_threads(part, {}) == 4 and fair_threads(part, {"OMP_NUM_THREADS": "1"}) == 4
    assert fair_threads(part, {"OMP_NUM_THREADS": "3"}) is None
    assert fair_threads(Shard(0, 16, 0, 16), {}) == 1

    # CUDA: auto/cuda -> cuda:LOCAL_RANK (modulo the GPUs); explicit choices are kept
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert rank_device("auto", Shard()) == "auto"
    assert rank_device("auto", Shard(1, 2, 1, 2)) == "cuda:1" and current == [1]
    assert rank_device("cuda", Shard(3, 4, 3, 4)) == "cuda:1"
    assert [rank_device(d, Shard(1, 2, 1, 2)) for d in ("cpu", "cuda:0", "mps")] == ["cpu", "cuda:0", "mps"]
    assert sharding.gather_counts(Shard(), {"done": 1}) == [{"done": 1}]  # alone: no process group


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    # One thread everywhere: the single run and each rank then do the very same float arithmetic (bytes equal).
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _restore(*args: str, procs: int = 0) -> subprocess.CompletedProcess:
    launch = (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)] if procs else [])
    cmd = [sys.executable, *launch, "-m", "diffir", "restore", *args, "-q"]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)


def _lines(err: str, start: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(start)]


def test_torchrun_two_processes_restore_each_file_once(tmp_path) -> None:
    lr = shared_data("sr", "Set5", "LR_bicubic", "X4")
    model = tmp_path / "tiny.safetensors"
    diffir.save_model(tiny_model("diffir_sr_x4_s2"), model)
    inp = tmp_path / "in"
    inp.mkdir()
    for i, src in enumerate(sorted(lr.glob("*.png"))):
        with Image.open(src) as im:
            im.crop((i, 0, i + 24, 20)).save(inp / src.name)
    names = sorted(p.stem for p in inp.iterdir())
    assert len(names) == 5
    # a damaged file among them (sorted 4th: rank 1's): its error must not hang rank 0, and the job fails
    (inp / "c_broken.png").write_bytes((inp / "babyx4.png").read_bytes()[:60])
    two, one = tmp_path / "two", tmp_path / "one"

    done = _restore("-i", str(inp), "-o", str(two), "-m", str(model), procs=2)
    assert done.returncode != 0, done.stderr[-3000:]
    err = done.stderr
    summary = _lines(err, "diffir restore:")  # rank 0's, without a rank label
    assert len(summary) == 1, err[-3000:]
    assert "5 restored, 1 failed" in summary[0] and "by 2 processes" in summary[0], summary
    headers = _lines(err, "diffir restore [rank ")
    assert sorted(h[: len("diffir restore [rank 0/2]: 3 of 6 file(s)")] for h in headers) == [
        "diffir restore [rank 0/2]: 3 of 6 file(s)", "diffir restore [rank 1/2]: 3 of 6 file(s)"], headers
    assert all("device cpu (1 thread)" in h for h in headers)
    assert len(_lines(err, "diffir: error: ")) == 1 and "c_broken.png" in _lines(err, "diffir: error: ")[0], err
    assert sorted(p.name for p in two.iterdir()) == [f"{n}_out.png" for n in names]

    single = _restore("-i", str(inp), "-o", str(one), "-m", str(model))
    assert single.returncode == 1 and "5 restored, 1 failed in" in single.stderr, single.stderr[-3000:]
    assert "[rank" not in single.stderr and "by 2 processes" not in single.stderr
    for name in names:
        assert (two / f"{name}_out.png").read_bytes() == (one / f"{name}_out.png").read_bytes(), name

    # Existing outputs are skipped by whichever process owns them; a missing one is restored again.
    (two / "headx4_out.png").unlink()
    stamp = (two / "babyx4_out.png").stat().st_mtime_ns
    again = _restore("-i", str(inp / "[!c]*.png"), "-o", str(two), "-m", str(model), procs=2)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = _lines(again.stderr, "diffir restore:")
    assert len(summary) == 1 and "1 restored, 4 skipped" in summary[0] and "failed" not in summary[0], summary
    assert (two / "headx4_out.png").read_bytes() == (one / "headx4_out.png").read_bytes()
    assert (two / "babyx4_out.png").stat().st_mtime_ns == stamp

"""Tests for torch_utils.distributed (single process, spawned and torchrun 2-process gloo runs), cross-rank
training_stats and the rank-consistency checks of torch_utils.misc."""

import json
import math
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from torch_utils import distributed

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------


def test_single_process_without_torchrun(monkeypatch):
    for key in ["RANK", "WORLD_SIZE", "LOCAL_RANK"]:
        monkeypatch.delenv(key, raising=False)
    device = distributed.init(backend="gloo")
    assert device == torch.device("cpu")
    assert not torch.distributed.is_initialized()
    assert (distributed.get_rank(), distributed.get_world_size(), distributed.get_local_rank()) == (0, 1, 0)
    assert distributed.get_backend() is None and distributed.get_sync_device() is None

    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce(t, op="mean") is t and t.tolist() == [1.0, 2.0]
    assert distributed.broadcast(t) is t
    assert distributed.all_gather(t)[0] is t
    assert distributed.broadcast_object({"seed": 3}) == {"seed": 3}
    distributed.barrier()


def test_print0_and_bad_inputs(monkeypatch, capsys):
    distributed.print0("only rank 0 speaks")
    assert capsys.readouterr().out == "only rank 0 speaks\n"
    with pytest.raises(ValueError, match="backend must be None, 'nccl' or 'gloo', got 'mpi'"):
        distributed.init(backend="mpi")
    with pytest.raises(ValueError, match="op must be one of .*got 'prod'"):
        distributed.all_reduce(torch.zeros(1), op="prod")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5, WORLD_SIZE=2"):
        distributed.init()


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.resolve_device(None) == distributed.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device 'cuda:1' requested but CUDA is not available"):
        distributed.resolve_device("cuda:1")
    for bad in ("tpu", "gpu0"):
        with pytest.raises(ValueError, match=f"device must be cpu, cuda or cuda:N, got '{bad}'"):
            distributed.resolve_device(bad)
    # With CUDA (each rank on its own GPU under torchrun): tests/test_gpu_path.py.


# ----------------------------------------------------------------------------
# Gradient sync, module broadcast and object gathers (used by the training step and checkpoints).


def test_sync_grads_cleans_nan_inf_and_applies_gain():
    a = torch.nn.Parameter(torch.zeros(4))
    b = torch.nn.Parameter(torch.zeros(2))
    unused = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([1.0, float("nan"), float("inf"), -float("inf")])
    b.grad = torch.tensor([2.0, -3.0])
    distributed.sync_grads([a, b, unused], gain=0.5)
    assert a.grad.tolist() == [0.5, 0.0, 1e5, -1e5]
    assert b.grad.tolist() == [1.0, -1.5]
    assert unused.grad is None  # Parameters without a gradient keep none.


def test_single_process_module_broadcast_and_gather():
    m = torch.nn.Linear(2, 2)
    before = [t.clone() for t in m.parameters()]
    distributed.broadcast_module(m)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert distributed.all_gather_objects({"x": 1}) == [{"x": 1}]


def _spawned_worker(rank, world_size, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        a = torch.nn.Parameter(torch.zeros(5))
        b = torch.nn.Parameter(torch.zeros(3))
        a.grad = torch.arange(5, dtype=torch.float32) * (rank + 1)
        b.grad = torch.tensor([float("nan") if rank == 1 else 1.0, 2.0, 4.0])
        distributed.sync_grads([a, b], gain=2.0, shard_numel=3)  # 8 values in 3 shards.
        m = torch.nn.Linear(2, 2)
        torch.nn.init.constant_(m.weight, float(rank + 1))
        m.register_buffer("stat", torch.full([2], 10.0 * rank))
        distributed.broadcast_module(m, src=1)
        gathered = distributed.all_gather_objects({"rank": rank})
        torch.save(
            {"a": a.grad, "b": b.grad, "weight": m.weight.detach(), "stat": m.stat, "gathered": gathered},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        torch.distributed.destroy_process_group()


def test_sync_grads_broadcast_and_gather_two_ranks(tmp_path):
    torch.multiprocessing.spawn(_spawned_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        g = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(g["a"], torch.arange(5, dtype=torch.float32) * 3)  # (1x + 2x) / 2 * 2.
        assert g["b"].tolist() == [0.0, 4.0, 8.0]  # NaN summed in, then cleaned to 0.
        assert g["weight"].eq(2.0).all() and g["stat"].tolist() == [10.0, 10.0]  # Rank 1's parameters and buffers.
        assert g["gathered"] == [{"rank": 0}, {"rank": 1}]


# ----------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from torch_utils import distributed, misc, training_stats

    out_dir = sys.argv[1]
    device = distributed.init()
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    result = dict(rank=rank, world_size=world_size, device=str(device), backend=distributed.get_backend(),
                  local_rank=distributed.get_local_rank())

    # training_stats: every rank reports; the collector sees the union of both ranks' samples.
    collector = training_stats.Collector(regex="test/.*")
    training_stats.report("test/values", torch.arange(4, dtype=torch.float32) + 10 * rank)  # 0..3 and 10..13
    training_stats.report("test/scalar", float(rank))
    training_stats.report0("test/step", 7 + rank)  # only rank 0's 7 counts
    collector.update()
    result["stats"] = collector.as_dict()
    training_stats.report("test/values", torch.full([2], 100.0 + rank))
    collector.update()
    result["second"] = [collector.num("test/values"), collector.mean("test/values"), collector.num("test/scalar")]

    # Collectives.
    t = torch.tensor([float(rank + 1)])
    result["sum"] = distributed.all_reduce(t).item()
    result["mean"] = distributed.all_reduce(torch.tensor([float(rank + 1)]), op="mean").item()
    result["max"] = distributed.all_reduce(torch.tensor([float(rank + 1)]), op="max").item()
    result["bcast"] = distributed.broadcast(torch.tensor([float(rank)]), src=1).item()
    result["gather"] = [x.item() for x in distributed.all_gather(torch.tensor([2.0 * rank]))]
    result["obj"] = distributed.broadcast_object({"seed": 1234} if rank == 0 else None)

    # check_rank_consistency: digests agree for identical modules; a differing module is named on every rank.
    m = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(m.weight, 1.0)
    torch.nn.init.constant_(m.bias, 0.0)
    result["digests"] = misc.check_rank_consistency({"m": m})
    with torch.no_grad():
        m.bias.add_(rank)
    try:
        misc.check_rank_consistency({"m": m})
        result["rank_mismatch"] = None
    except RuntimeError as err:
        result["rank_mismatch"] = str(err)

    # check_ddp_consistency: identical modules pass; a differing bias is caught on the differing rank.
    m = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(m.weight, 1.0)
    torch.nn.init.constant_(m.bias, 0.0)
    misc.check_ddp_consistency(m)
    with torch.no_grad():
        m.bias.add_(rank)
    try:
        misc.check_ddp_consistency(m)
        result["mismatch"] = None
    except AssertionError as err:
        result["mismatch"] = str(err)

    # ddp_sync: no all-reduce while sync=False, then the accumulated gradient is averaged.
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(lin.weight, 1.0)
    ddp = torch.nn.parallel.DistributedDataParallel(lin)
    x = torch.full([1, 1], float(rank + 1))
    with misc.ddp_sync(ddp, sync=False):
        ddp(x).sum().backward()
    result["grad_local"] = lin.weight.grad.item()
    with misc.ddp_sync(ddp, sync=True):
        ddp(x).sum().backward()
    result["grad_synced"] = lin.weight.grad.item()

    distributed.print0("printed by rank", rank)
    distributed.barrier()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    distributed.shutdown()
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~10-25 s: torchrun starts three Python processes that each import torch.
def test_two_process_gloo_run(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    for key in ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"]:
        env.pop(key, None)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), str(tmp_path),
    ]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=str(tmp_path))
    assert res.returncode == 0, f"torchrun failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert res.stdout.count("printed by rank") == 1 and "printed by rank 0" in res.stdout

    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    values = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]
    mean = sum(values) / len(values)
    std = math.sqrt(sum(v * v for v in values) / len(values) - mean**2)
    for r, result in enumerate(results):
        assert (result["rank"], result["world_size"], result["local_rank"]) == (r, 2, r)
        assert result["device"] == "cpu" and result["backend"] == "gloo"
        stats = result["stats"]
        assert stats["test/values"]["num"] == 8
        assert stats["test/values"]["mean"] == pytest.approx(mean, rel=1e-12)
        assert stats["test/values"]["std"] == pytest.approx(std, rel=1e-12)
        assert stats["test/scalar"] == {"num": 2, "mean": 0.5, "std": 0.5}
        assert stats["test/step"] == {"num": 1, "mean": 7.0, "std": 0.0}
        assert result["second"] == [4, 100.5, 2]  # keep_previous keeps test/scalar from the first update
        assert (result["sum"], result["mean"], result["max"], result["bcast"]) == (3.0, 1.5, 2.0, 1.0)
        assert result["gather"] == [0.0, 2.0]
        assert result["obj"] == {"seed": 1234}
        assert result["grad_local"] == float(r + 1)
        assert result["grad_synced"] == 3.0  # mean over ranks of 2 * (rank + 1)
    assert results[0]["digests"] == results[1]["digests"] and len(set(results[0]["digests"])) == 1
    assert results[0]["rank_mismatch"] == results[1]["rank_mismatch"] == "m differs between rank 0 and ranks [1]"
    assert results[0]["mismatch"] is None
    assert "Linear.bias" in results[1]["mismatch"]

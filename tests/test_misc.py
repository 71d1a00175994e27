"""Tests for torch_utils.misc."""

import itertools
import random
import warnings

import numpy as np
import pytest
import torch

from torch_utils import misc


def test_constant_is_cached_and_broadcast():
    a = misc.constant(np.sqrt(2))
    assert a.dtype == torch.get_default_dtype() and a.device.type == "cpu" and a.ndim == 0
    assert misc.constant(np.sqrt(2)) is a
    assert misc.constant(np.sqrt(2), dtype=torch.float64) is not a
    b = misc.constant([1, 2, 3], shape=[2, 3], dtype=torch.int64)
    assert b.tolist() == [[1, 2, 3], [1, 2, 3]] and b.is_contiguous()
    assert misc.constant([1, 2, 3], shape=(2, 3), dtype=torch.int64, device="cpu") is b
    assert misc.constant([1, 2, 4], shape=(2, 3), dtype=torch.int64) is not b


def test_nan_to_num_and_symbolic_assert():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0])
    y = misc.nan_to_num(x, nan=0.0, posinf=5.0, neginf=-5.0)
    assert y.tolist() == [0.0, 5.0, -5.0, 1.0]
    assert misc.symbolic_assert is torch._assert
    with pytest.raises(AssertionError, match="custom message"):
        misc.symbolic_assert(False, "custom message")


def test_assert_shape_messages():
    x = torch.zeros(2, 3, 16, 36, 64)  # [N, C, T, H, W]
    misc.assert_shape(x, [None, 3, 16, 36, 64])
    misc.assert_shape(x, [2, None, None, None, torch.tensor(64)])
    with pytest.raises(AssertionError, match="Wrong number of dimensions: got 5, expected 4"):
        misc.assert_shape(x, [None, 3, 16, 36])
    with pytest.raises(AssertionError, match="Wrong size for dimension 2: got 16, expected 8"):
        misc.assert_shape(x, [None, 3, 8, 36, 64])
    with pytest.raises(AssertionError, match="Wrong size for dimension 4"):
        misc.assert_shape(x, [None, 3, 16, 36, torch.tensor(65)])


def test_suppress_tracer_warnings_and_profiled_function():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with misc.suppress_tracer_warnings():
            warnings.warn("tracer noise", torch.jit.TracerWarning)
        warnings.warn("kept", UserWarning)
    assert [str(w.message) for w in caught] == ["kept"]

    @misc.profiled_function
    def scaled_add(a, b, scale=1):
        return (a + b) * scale

    assert scaled_add.__name__ == "scaled_add"
    with torch.autograd.profiler.profile() as prof:
        assert scaled_add(torch.ones(2), 1, scale=3).tolist() == [6.0, 6.0]
    assert any(e.name == "scaled_add" for e in prof.function_events)


def test_infinite_sampler_is_seeded_and_partitions_ranks():
    dataset = list(range(10))
    full = list(itertools.islice(misc.InfiniteSampler(dataset, seed=3), 40))
    assert full == list(itertools.islice(misc.InfiniteSampler(dataset, seed=3), 40))
    assert full != list(itertools.islice(misc.InfiniteSampler(dataset, seed=4), 40))
    assert set(full) == set(dataset)  # every item comes up (the swap window wraps, so passes may repeat items)
    assert full[10:20] != full[:10]  # later passes are reshuffled
    rank0 = list(itertools.islice(misc.InfiniteSampler(dataset, rank=0, num_replicas=2, seed=3), 20))
    rank1 = list(itertools.islice(misc.InfiniteSampler(dataset, rank=1, num_replicas=2, seed=3), 20))
    assert rank0 == full[0::2] and rank1 == full[1::2]
    ordered = list(itertools.islice(misc.InfiniteSampler(dataset, shuffle=False), 12))
    assert ordered == dataset + [0, 1]
    with pytest.raises(ValueError, match="rank must be in \\[0, 2\\), got 2"):
        misc.InfiniteSampler(dataset, rank=2, num_replicas=2)
    with pytest.raises(ValueError, match="window_size must be in \\[0, 1\\], got 1.5"):
        misc.InfiniteSampler(dataset, window_size=1.5)
    with pytest.raises(ValueError, match="dataset must be non-empty"):
        misc.InfiniteSampler([])


# Precision flags, seeds, RNG states and seeded, resumable loading (what training uses).


def test_set_precision_flags():
    flags = [
        (torch.backends.cuda.matmul, "allow_tf32"),
        (torch.backends.cudnn, "allow_tf32"),
        (torch.backends.cuda.matmul, "allow_fp16_reduced_precision_reduction"),
        (torch.backends.cudnn, "benchmark"),
    ]
    saved = [getattr(obj, name) for obj, name in flags]
    try:
        misc.set_precision_flags(allow_tf32=True, allow_fp16_reduce=True, benchmark=True)
        assert all(getattr(obj, name) for obj, name in flags)
        misc.set_precision_flags()  # The original's strict fp32.
        assert not any(getattr(obj, name) for obj, name in flags)
        misc.set_precision_flags(allow_fp16_reduce=True)
        assert [getattr(obj, name) for obj, name in flags] == [False, False, True, False]
    finally:
        for (obj, name), value in zip(flags, saved):
            setattr(obj, name, value)


def test_rank_seed_and_seed_all():
    assert [misc.rank_seed(3, r, 2) for r in range(2)] == [6, 7]  # rank + seed * world_size, as the original.
    misc.seed_all(5)
    first = (torch.rand(2), np.random.rand(), random.random())
    misc.seed_all(5)
    assert torch.equal(first[0], torch.rand(2)) and first[1:] == (np.random.rand(), random.random())


def test_rng_state_round_trip():
    dev = torch.device("cpu")
    torch.manual_seed(5)
    state = misc.get_rng_state(dev)
    first = (torch.rand(3), np.random.rand(), random.random())
    misc.set_rng_state(state, dev)
    assert torch.equal(first[0], torch.rand(3)) and first[1:] == (np.random.rand(), random.random())
    with pytest.raises(ValueError, match="no CUDA generator state"):
        misc.set_rng_state(state, torch.device("cuda"))


class _RandomItems(torch.utils.data.Dataset):
    """Draws from the global torch RNG like the video datasets do."""

    def __len__(self):
        return 5

    def __getitem__(self, idx):
        return {"index": idx, "value": torch.rand([])}


def test_seeded_sampler_epochs_ranks_and_order():
    keys = [iter(misc.SeededInfiniteSampler(5, seed=3, rank=r, world_size=2)) for r in range(2)]
    first_epoch = [next(keys[r])[0] for _ in range(3) for r in range(2)]
    assert sorted(first_epoch[:5]) == [0, 1, 2, 3, 4]  # Each epoch covers every item (padded by wrapping).
    start = misc.SeededInfiniteSampler(5, seed=3, rank=1, world_size=2, start=7)
    full = iter(misc.SeededInfiniteSampler(5, seed=3, rank=1, world_size=2))
    tail = [next(full) for _ in range(12)][7:]
    assert [next(iter_) for iter_ in [iter(start)] for _ in range(5)] == tail
    # The order itself is part of the training's reproducibility (stored runs, the training-step reference).
    keys = list(itertools.islice(misc.SeededInfiniteSampler(5, seed=3, rank=1, world_size=2), 8))
    assert [index for index, _ in keys] == [0, 3, 1, 4, 3, 1, 2, 0]
    assert keys[0] == (0, 981808652984847667) == (0, misc.item_seed(3, 1, 0))
    with pytest.raises(ValueError, match="num_items must be positive, got 0"):
        misc.SeededInfiniteSampler(0)


def test_infinite_loader_resumes_with_any_worker_count():
    torch.manual_seed(0)
    rng = torch.get_rng_state()
    loader = misc.InfiniteLoader(_RandomItems(), batch_size=2, seed=1, num_workers=0)
    batches = [next(loader) for _ in range(5)]
    assert torch.equal(rng, torch.get_rng_state())  # Neither the loader nor reading items touch the global RNG.
    assert loader.position == 5
    resumed = misc.InfiniteLoader(_RandomItems(), batch_size=2, seed=1, start_batches=3, num_workers=1)
    for expected in batches[3:]:
        got = next(resumed)
        assert torch.equal(got["index"], expected["index"]) and torch.equal(got["value"], expected["value"])


# ----------------------------------------------------------------------------


class _Net(torch.nn.Module):
    def __init__(self, channels=3, extra=False):
        super().__init__()
        self.fc = torch.nn.Linear(channels, channels)
        self.register_buffer("avg", torch.zeros(channels))
        if extra:
            self.head = torch.nn.Linear(channels, 2)

    def forward(self, x):
        y = self.fc(x) + self.avg
        return (y, y.mean(dim=1)) if hasattr(self, "head") else y


def test_params_and_buffers_and_copy():
    torch.manual_seed(0)
    src, dst = _Net(), _Net()
    assert [name for name, _ in misc.named_params_and_buffers(src)] == ["fc.weight", "fc.bias", "avg"]
    assert len(misc.params_and_buffers(src)) == 3
    with torch.no_grad():
        src.avg.fill_(2.0)
    misc.copy_params_and_buffers(src, dst, require_all=True)
    for (_, a), (_, b) in zip(misc.named_params_and_buffers(src), misc.named_params_and_buffers(dst)):
        assert torch.equal(a, b)
    assert dst.fc.weight.requires_grad

    bigger = _Net(extra=True)
    misc.copy_params_and_buffers(src, bigger)  # head.* missing in src: skipped
    with pytest.raises(KeyError, match="'head.weight'"):
        misc.copy_params_and_buffers(src, bigger, require_all=True)
    with pytest.raises(ValueError, match="'fc.weight' has shape \\[4, 4\\] in src_module but \\[3, 3\\]"):
        misc.copy_params_and_buffers(_Net(channels=4), dst)
    with pytest.raises(TypeError, match="src_module must be a torch.nn.Module, got dict"):
        misc.copy_params_and_buffers({}, dst)


def test_ddp_helpers_without_a_process_group():
    net = _Net()
    with misc.ddp_sync(net, sync=False):
        net(torch.ones(1, 3)).sum().backward()
    assert net.fc.weight.grad is not None
    misc.check_ddp_consistency(net)  # no group: nothing to compare against
    with pytest.raises(TypeError, match="module must be a torch.nn.Module, got str"):
        misc.check_ddp_consistency("net")


def test_module_digest_changes_with_values():
    a, b = _Net(), _Net()
    misc.copy_params_and_buffers(a, b)
    assert misc.module_digest(a) == misc.module_digest(b)
    with torch.no_grad():
        b.avg[0] += 1e-7  # Buffers count too.
    assert misc.module_digest(a) != misc.module_digest(b)
    assert misc.module_digest(a, b) != misc.module_digest(b, a)  # Order of the modules counts.
    # One process: nothing to compare against; the per-rank digest list has this rank's combined digest.
    assert misc.check_rank_consistency({"a": a, "b": b}) == [misc.combined_digest({"a": a, "b": b})]


def test_print_module_summary(capsys):
    torch.manual_seed(0)
    net = _Net(extra=True)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    outputs = misc.print_module_summary(net, [x])
    assert isinstance(outputs, tuple) and torch.equal(outputs[0], net(x)[0])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["Module", "Parameters", "Buffers", "Output", "shape", "Datatype", "Mean", "Std",
                                "Min|x|", "Max|x|"]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["fc"][1:4] == ["12", "-", "[4,"]
    assert rows["<top-level>:0"][1:3] == ["8", "3"] and rows["<top-level>:1"][3] == "[4]"
    assert "head" not in rows  # never called, so it has no row ...
    assert rows["Total"][1:3] == ["20", "3"]  # ... but its parameters count towards the top level
    expected_mean = f"{outputs[1].mean().item():.3g}"
    assert rows["<top-level>:1"][5] == expected_mean
    with pytest.raises(TypeError, match="inputs must be a tuple or list, got Tensor"):
        misc.print_module_summary(net, x)

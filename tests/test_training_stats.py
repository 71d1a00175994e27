"""Tests for torch_utils.training_stats in one process (the 2-rank gloo case is in test_distributed.py)."""

import math
import pickle
import uuid

import numpy as np
import pytest
import torch

from torch_utils import training_stats


@pytest.fixture
def prefix():
    """Unique name prefix, so tests never see statistics reported elsewhere in the process."""
    return f"t{uuid.uuid4().hex[:8]}/"


def test_mean_std_num_over_reports(prefix):
    collector = training_stats.Collector(regex=prefix + ".*")
    values = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    assert training_stats.report(prefix + "loss", values) is values
    training_stats.report(prefix + "loss", np.array([9.0]))
    training_stats.report(prefix + "loss", 10)
    collector.update()
    all_values = np.array([1.0, 2.0, 3.0, 5.0, 9.0, 10.0])
    assert collector.num(prefix + "loss") == 6
    assert collector.mean(prefix + "loss") == pytest.approx(all_values.mean(), rel=1e-12)
    assert collector.std(prefix + "loss") == pytest.approx(all_values.std(), rel=1e-12)
    assert collector[prefix + "loss"] == collector.mean(prefix + "loss")
    assert collector.as_dict() == {
        prefix + "loss": {"num": 6, "mean": collector.mean(prefix + "loss"), "std": collector.std(prefix + "loss")}
    }
    assert collector.as_dict()[prefix + "loss"].num == 6  # EasyDict all the way down.


def test_updates_see_only_new_samples_and_keep_previous(prefix):
    keep = training_stats.Collector(regex=prefix + ".*", keep_previous=True)
    drop = training_stats.Collector(regex=prefix + ".*", keep_previous=False)
    training_stats.report(prefix + "a", [1.0, 3.0])
    training_stats.report(prefix + "b", 4.0)
    keep.update()
    drop.update()
    training_stats.report(prefix + "a", [10.0])
    keep.update()
    drop.update()
    assert (keep.num(prefix + "a"), keep.mean(prefix + "a")) == (1, 10.0)
    assert (drop.num(prefix + "a"), drop.mean(prefix + "a")) == (1, 10.0)
    assert (keep.num(prefix + "b"), keep.mean(prefix + "b")) == (1, 4.0)  # kept from the previous update
    assert drop.num(prefix + "b") == 0 and math.isnan(drop.mean(prefix + "b"))
    assert keep.names() == [prefix + "a", prefix + "b"]


def test_edge_cases(prefix):
    collector = training_stats.Collector(regex=prefix + ".*")
    training_stats.report(prefix + "one", 2.5)
    training_stats.report(prefix + "empty", [])
    training_stats.report(prefix + "inf", [1.0, float("inf")])
    training_stats.report(prefix + "half", torch.tensor([1.0, 2.0], dtype=torch.float16))
    training_stats.report0(prefix + "rank0", 7)  # rank 0 in a single process
    collector.update()
    assert (collector.num(prefix + "one"), collector.mean(prefix + "one"), collector.std(prefix + "one")) == (1, 2.5, 0)
    assert collector.num(prefix + "empty") == 0 and math.isnan(collector.mean(prefix + "empty"))
    assert math.isnan(collector.std(prefix + "empty"))
    assert math.isinf(collector.mean(prefix + "inf")) and math.isnan(collector.std(prefix + "inf"))
    assert collector.mean(prefix + "half") == 1.5 and collector.std(prefix + "half") == 0.5
    assert collector[prefix + "rank0"] == 7.0
    assert math.isnan(collector.mean(prefix + "never_reported"))
    assert prefix + "empty" in collector.names()  # empty reports register the name


def test_collector_pickles_and_errors_name_the_input(prefix):
    collector = training_stats.Collector(regex=prefix + ".*")
    assert list(collector.__dict__) == ["_regex", "_keep_previous", "_cumulative", "_moments"]
    clone = pickle.loads(pickle.dumps(collector))
    assert clone._regex.pattern == prefix + ".*"
    with pytest.raises(KeyError, match="'other/x' does not match"):
        collector.mean("other/x")
    with pytest.raises(TypeError, match="name must be a str, got int"):
        training_stats.report(3, 1.0)
    with pytest.raises(ValueError, match="rank must be a non-negative int, got -1"):
        training_stats.init_multiprocessing(rank=-1, sync_device=None)


def test_default_collector_exists():
    assert isinstance(training_stats.default_collector, training_stats.Collector)
    assert training_stats.default_collector._regex.pattern == ".*"

"""Shared pytest fixtures and markers for the LongVideoGAN test suite."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def single_thread():
    """One torch intra-op thread for a module's tests (`pytestmark = pytest.mark.usefixtures("single_thread")`).

    Tiny tensors gain nothing from threads, and on a shared 2-core machine busy with other processes multi-threaded
    small convolutions spend most of their time spinning at OpenMP barriers (README, CPU and GPU), so one thread is
    both faster and steadier there.
    """
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)

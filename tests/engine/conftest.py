"""Engine tests run single-threaded: their tiny convolutions are faster on one thread than on threads that
fight over shared cores, and one thread keeps CPU results deterministic."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

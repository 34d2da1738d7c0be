"""The benchmark scripts set torch's thread count for their own runs; give it back after each smoke test so
later tests (e.g. tests/data/test_learnability.py) train with the machine's default."""

import pytest
import torch


@pytest.fixture(autouse=True)
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)

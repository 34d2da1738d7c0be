"""One thread for torch, OpenMP and BLAS in these tests: the toy problems are tiny, and several threads on a
busy or single core machine spend far longer waiting for each other than computing."""

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)

"""Every test starts from the same process state, whatever ran before it, so the suite passes alone, in its own
order and shuffled (``pytest --random-order``): Python's, NumPy's and torch's global random generators are seeded
to 0 before each test; torch's thread count, its deterministic-algorithm and cuDNN flags (which MONAI's
``set_determinism`` changes), the environment variables and the working directory are put back after it."""

import os
import random

import numpy as np
import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (the README's ``-n 2``) each worker gets its share of the cores for torch's threads and
    for the processes it starts, instead of every worker using all of them (4 busy threads on 2 cores run slower
    than 2)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_process_state():
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    environ = dict(os.environ)
    cwd = os.getcwd()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)
    os.chdir(cwd)


@pytest.fixture(autouse=True, scope="module")
def _delete_weight_files(request, tmp_path_factory):
    """Delete the ``*.pt`` files (checkpoints, models, encoder exports: 50-300 MB each for a 3D ResNet-10) that a
    test module wrote under pytest's temporary folder once the module is done and its tests have checked them, so
    the suite leaves little on disk; a module with a failed test keeps them for a look."""
    basetemp = tmp_path_factory.getbasetemp()
    before, failed = set(basetemp.iterdir()), request.session.testsfailed
    yield
    if request.session.testsfailed == failed:
        for folder in set(basetemp.iterdir()) - before:
            for path in folder.rglob("*.pt"):
                path.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _config_home(tmp_path_factory, monkeypatch):
    """What a command keeps in the user's config folder (dicom_to_nifti's site salt) goes to a temporary one."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "config"))

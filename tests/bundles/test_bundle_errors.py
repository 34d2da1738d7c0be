"""A failed bundle run ends with one line naming the file and the problem (``medssl3d.bundle_errors``).

The summary is tested on built exception chains (MONAI's wrapping, a DataLoader worker's re-raise, a reader's
``filename`` argument), then on real ``python -m monai.bundle run`` processes of ``genesis_ct`` on a one-volume
cohort: a truncated ``.nii.gz`` and a constant volume refused by ``CheckImaged``. Both runs fail while the
dataset is cached, before any network is built, so they take a few seconds each and run side by side.
"""

from __future__ import annotations

import configparser
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch._utils import ExceptionWrapper

from medssl3d.bundle_errors import PREFIX, error_line
from medssl3d.errors import InputError

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TIMEOUT_S = 120


def _raised(function, *args) -> BaseException:
    try:
        function(*args)
    except BaseException as exc:  # noqa: BLE001 - the exception is the test's subject
        return exc
    raise AssertionError("nothing raised")


def _wrapped_like_monai(cause: BaseException):
    """Raise ``cause`` inside two MONAI-style wrappers (``applying transform``, ``Failed to instantiate``)."""
    try:
        try:
            raise cause
        except BaseException as exc:
            raise RuntimeError("applying transform <monai.transforms.io.dictionary.LoadImaged object>") from exc
    except RuntimeError as exc:
        raise RuntimeError("Failed to instantiate component 'monai.data.dataset.CacheDataset'") from exc


def test_input_error_deep_in_the_chain_is_the_summary(tmp_path, monkeypatch):
    message = "CheckImaged, key 'image': '{}a/b.nii.gz': constant volume (every voxel is 0) — a blank or failed export?"
    exc = _raised(_wrapped_like_monai, InputError(message.format(f"{tmp_path}/")))
    monkeypatch.setattr(sys, "argv", ["monai.bundle", "run"])
    assert error_line(exc) == message.format(f"{tmp_path}/")
    monkeypatch.setattr(sys, "argv", ["monai.bundle", "run", f"--dataset_dir={tmp_path}"])
    assert error_line(exc) == message.format("")  # named relative to the input folder


def test_reader_failure_names_the_file_relative_to_dataset_dir(tmp_path, monkeypatch):
    (tmp_path / "imagesTr").mkdir()
    volume = tmp_path / "imagesTr" / "case_7.nii.gz"
    volume.write_bytes(b"\x1f\x8b")

    def read(filename):
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    def load(data):
        return read((str(volume),))  # MONAI's LoadImage holds its file names as a tuple named `filename`

    monkeypatch.setattr(sys, "argv", ["monai.bundle", "run", "--dataset_dir", str(tmp_path)])
    line = error_line(_raised(_wrapped_like_monai_call, load))
    assert line.startswith("cannot read 'imagesTr/case_7.nii.gz' (under --dataset_dir): EOFError: Compressed file")
    assert "truncated or corrupt" in line and str(tmp_path) not in line

    monkeypatch.setattr(sys, "argv", ["monai.bundle", "run"])  # no --dataset_dir: the path as read
    assert f"cannot read '{volume}'" in error_line(_raised(_wrapped_like_monai_call, load))


def _wrapped_like_monai_call(function):
    try:
        function({"image": "ignored"})
    except Exception as exc:
        raise RuntimeError("applying transform <LoadImaged>") from exc


def test_failure_on_a_loaded_image_names_its_file(tmp_path):
    source = tmp_path / "scan.nii.gz"
    source.write_bytes(b"")

    def transform(img):
        raise IndexError("index 4 is out of bounds for axis 0 with size 3")

    image = MetaTensor(torch.zeros(1, 2, 2, 2), meta={"filename_or_obj": str(source)})
    line = error_line(_raised(_wrapped_like_monai_call, lambda data: transform(image)))
    assert line == f"while processing '{source}': IndexError: index 4 is out of bounds for axis 0 with size 3"


def _reraised_from_worker(cause: BaseException):
    try:
        try:
            raise cause
        except BaseException as exc:
            raise RuntimeError("applying transform <RandGenesisCorruptiond>") from exc
    except RuntimeError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    wrapper.reraise()


def test_worker_errors_give_the_input_error_or_the_innermost_cause():
    message = "'x.nii.gz': 2 NaN/Inf voxel(s) of 8; expected finite values."
    assert error_line(_raised(_reraised_from_worker, InputError(message))) == message
    line = error_line(_raised(_reraised_from_worker, EOFError("Compressed file ended before the end-of-stream")))
    assert line.startswith("EOFError: Compressed file ended before the end-of-stream (raised in a data-loader worker")
    assert "--num_workers 0" in line


def test_other_errors_give_the_innermost_cause():
    exc = _raised(_wrapped_like_monai, KeyError("query key: export_metadata"))
    assert error_line(exc) == "KeyError: 'query key: export_metadata'"


def test_a_config_file_in_the_frames_is_not_blamed(tmp_path):
    # MONAI's runner keeps its config file in a local called ``filename``: an error while training is not about it
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 1\n")

    def run(filename):
        raise ValueError("loss is NaN")

    try:
        run(str(config))
    except ValueError as exc:
        assert error_line(exc) == "ValueError: loss is NaN"


# ---- real bundle runs ------------------------------------------------------------------------------------------
def _ct_volume(path: Path, data: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data.astype(np.int16), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))


def _cohort(root: Path, problem: str) -> Path:
    """A dataset folder whose only training volume, ``imagesTr/bad_<problem>.nii.gz``, has ``problem``."""
    (root / "imagesTr").mkdir(parents=True)
    bad = root / "imagesTr" / f"bad_{problem}.nii.gz"
    if problem == "truncated":
        rng = np.random.default_rng(0)
        body = np.full((32, 32, 16), -1000.0)
        body[4:28, 4:28, 2:14] = rng.normal(40, 200, (24, 24, 12))
        _ct_volume(bad, body)
        data = bad.read_bytes()
        assert gzip.decompress(data)  # a valid file before the cut
        bad.write_bytes(data[: len(data) // 2])
    else:  # constant: every voxel -1000 (a blank export)
        _ct_volume(bad, np.full((32, 32, 16), -1000.0))
    (root / "datalist.json").write_text(json.dumps({"training": [{"image": f"imagesTr/{bad.name}"}]}))
    return bad


def _start(dataset: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               str(BUNDLES / "genesis_ct" / "configs" / "train.yaml"), "--bundle_root", str(out),
               "--dataset_dir", str(dataset), "--num_workers", "0", "--epochs", "1", "--encoder", "resnet10",
               "--crop_size", "[32,32,16]", "--min_input_size", "16"]
    return subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def failed_runs(tmp_path_factory):
    """``{problem: (bad file, return code, stderr)}`` of genesis_ct runs on the two broken cohorts."""
    root = tmp_path_factory.mktemp("bundle_errors")
    started = {problem: (_cohort(root / problem, problem), _start(root / problem, root / f"out_{problem}"))
               for problem in ("truncated", "constant")}
    results = {}
    for problem, (bad, process) in started.items():
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        assert "logging.conf does not exist" not in stdout + stderr  # every bundle ships configs/logging.conf
        results[problem] = (bad, process.returncode, stderr)
    return results


def test_every_bundle_ships_a_model_zoo_logging_conf():
    bundles = sorted(path.parent.parent for path in BUNDLES.glob("*/configs/train.yaml"))
    assert len(bundles) >= 12
    for bundle in bundles:
        config = configparser.ConfigParser()
        assert config.read(bundle / "configs" / "logging.conf"), f"{bundle.name}: configs/logging.conf missing"
        assert config["logger_root"]["handlers"] == "consoleHandler", bundle.name
        assert config["handler_consoleHandler"]["class"] == "StreamHandler", bundle.name
        assert config["handler_consoleHandler"]["args"] == "(sys.stdout,)", bundle.name


def test_every_bundle_config_with_imports_installs_the_hook():
    configs = [path for path in BUNDLES.glob("*/configs/*.yaml") if "\nimports:" in path.read_text()]
    assert len(configs) >= 13
    missing = [str(path.relative_to(BUNDLES)) for path in configs
               if "- $import medssl3d.bundle_errors" not in path.read_text()]
    assert not missing, missing


def test_a_failed_distributed_process_prints_its_traceback_and_line(tmp_path):
    # init_process_group (every multi_gpu_train.yaml) wraps the hook, buffering its output until it returns
    code = ("import medssl3d.bundle_errors, torch.distributed as dist\n"
            f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'store'}', rank=0, world_size=1)\n"
            "raise ValueError('the run failed')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback (most recent call last):" in lines, result.stderr
    assert lines[-1] == PREFIX + "ValueError: the run failed"


def test_truncated_nifti_run_ends_naming_the_file(failed_runs):
    bad, code, stderr = failed_runs["truncated"]
    lines = stderr.strip().splitlines()
    assert code == 1, stderr[-3000:]
    assert "Traceback (most recent call last)" in stderr  # the traceback stays above the summary
    assert lines[-1] == (f"{PREFIX}cannot read 'imagesTr/{bad.name}' (under --dataset_dir): EOFError: Compressed file "
                         "ended before the end-of-stream marker was reached -- the file is truncated or corrupt; copy "
                         "or export it again, or remove it from the datalist."), lines[-5:]


def test_volume_refused_by_check_imaged_run_ends_naming_the_file(failed_runs):
    bad, code, stderr = failed_runs["constant"]
    last = stderr.strip().splitlines()[-1]
    assert code == 1, stderr[-3000:]
    assert last.startswith(f"{PREFIX}CheckImaged, key 'image': 'imagesTr/bad_constant.nii.gz': "), last
    assert "constant" in last, last
    assert str(bad.parent.parent) not in last

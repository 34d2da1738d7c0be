"""The 3D downstream bundles' ``multi_gpu_train.yaml`` with 2 gloo processes (``torchrun --nproc_per_node 2``);
the 2D ones' in ``test_multi_node.py`` (xray_cls, on two nodes) and here (histology_cls holds the same override).

One epoch each (ResNet-10, tiny inputs). Each rank trains on its half of the training list and validates its
half of the validation list; the validation metric that rank 0 logs (and selects model.pt by) must be the one
a single process computes on the whole validation list with the same weights (the epoch's last weights,
model_final.pt): it is only when both ranks' predictions are gathered. Rank 0 alone writes (the TensorBoard
files of one process, one model.pt, one model_final.pt).

The two runs start together, one torch thread per rank, when the module starts.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ConfigWorkflow
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medssl3d.data.synthetic import synthesize_cohort

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300
COMMON = {"num_workers": 0, "cache_rate": 0, "encoder": "resnet10", "epochs": 1}
# bundle: (data folder, overrides, validation metric tag, training items, batch size). xray_cls is not run here:
# test_multi_node.py::test_downstream_on_two_nodes runs its multi_gpu_train.yaml with 2 ranks on the same data
# and settings and asserts the same (rank 0 writes alone, its half of the training list, the gathered AUC equals
# one process's). histology_cls is not run either: its multi_gpu_train.yaml is xray_cls's but for the input check
# (test_2d_classifiers_share_one_multi_gpu_override), and its train.yaml differs from xray_cls's in preprocessing
# only, which its single-process tests train.
RUNS = {
    "seg_ct": ("ct", {"crop_size": [32, 32, 32], "decoder_channels": [32, 16, 16, 8, 8], "batch_size": 1,
                      "crops_per_volume": 2}, "val_mean_dice", 4, 1),
    "nodule_cls_ct": ("nodules", {"batch_size": 2}, "val_auc", 4, 2),
}


def _fake_medmnist(path: Path) -> Path:
    """A MedMNIST-style npz of 28x28 grey images, 20 / 6 / 2 in train / val / test, classes alternating."""
    rng = np.random.default_rng(1)
    arrays = {}
    for prefix, n in (("train", 20), ("val", 6), ("test", 2)):
        arrays[f"{prefix}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    np.savez(path, **arrays)
    return path


def _relist(folder: Path, n_train: int, n_val: int, balanced_key: str | None = None) -> None:
    """Rewrite ``folder/datalist.json`` with ``n_train`` training and ``n_val`` validation items (both classes of
    ``balanced_key`` in the validation list), so that each of 2 ranks gets a share of both."""
    datalist = json.loads((folder / "datalist.json").read_text())
    items = [item for key in ("training", "validation", "test") for item in datalist.get(key, [])]
    if balanced_key:  # alternate the classes: the first n_val items hold both
        by_class = [[i for i in items if i[balanced_key] == c] for c in (0, 1)]
        items = [i for pair in zip(*by_class) for i in pair]
    assert len(items) >= n_train + n_val, len(items)
    (folder / "datalist.json").write_text(json.dumps(
        {"validation": items[:n_val], "training": items[n_val:n_val + n_train]}))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multi_gpu")
    synthesize_cohort("ct", 6, root / "ct", size=(64, 64, 32), progress=False)
    extract = runpy.run_path(str(ROOT / "data_prep" / "extract_nodule_patches.py"))["main"]
    assert extract([str(root / "ct" / "nodules.csv"), str(root / "ct" / "imagesTr"), "--output",
                    str(root / "nodules"), "--patch-size", "32", "32", "32", "--spacing", "1", "1", "1",
                    "--label-fractions", "0.75"]) == 0
    _relist(root / "ct", 4, 2)
    _relist(root / "nodules", 4, 4, balanced_key="class")
    return {"root": root, **{name: root / name for name in ("ct", "nodules")}}


def _configs(bundle: str, *names: str) -> list[str]:
    return [str(ROOT / "bundles" / bundle / "configs" / name) for name in names]


@pytest.fixture(scope="module")
def runs(data):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    started = {}
    for bundle, (folder, overrides, _, _, _) in RUNS.items():
        out = data["root"] / f"out_{bundle}"
        settings = {**COMMON, **overrides}
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                   "--standalone", "-m", "monai.bundle", "run", "--config_file",
                   str(_configs(bundle, "train.yaml", "multi_gpu_train.yaml")), "--dataset_dir", str(data[folder]),
                   "--output_dir", str(out)]
        for key, value in settings.items():
            command += [f"--{key}", json.dumps(value)]
        started[bundle] = (subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT), out, settings)
    yield started
    for process, _, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def _scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in (out / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events)).Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars


def _single_process_metric(bundle: str, folder: Path, settings: dict, weights: Path, out: Path, tag: str) -> float:
    """The validation metric of one process on the whole validation list with ``weights``."""
    workflow = ConfigWorkflow(config_file=_configs(bundle, "train.yaml"), workflow_type="train",
                              dataset_dir=str(folder), output_dir=str(out), **settings)
    workflow.initialize()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    workflow.parser.get_parsed_content("network").load_state_dict(state.get("model", state))
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    return float(evaluator.state.metrics[tag])


@pytest.mark.parametrize("bundle", list(RUNS))
def test_two_ranks_match_one_process(bundle, runs, data, tmp_path):
    process, out, settings = runs[bundle]
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output[-4000:]
    folder, _, tag, n_train, batch = RUNS[bundle]

    assert (out / "model.pt").is_file() and (out / "model_final.pt").is_file()
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2  # trainer + evaluator, rank 0
    scalars = _scalars(out)
    assert len(scalars["train_loss"]) == n_train // 2 // batch  # rank 0 trained on its half of the list
    ((epoch, logged),) = scalars[tag]
    assert epoch == 1
    single = _single_process_metric(bundle, data[folder], settings, out / "model_final.pt", tmp_path, tag)
    assert np.isfinite(single) and logged == pytest.approx(single, abs=1e-5), (logged, single)


def test_2d_classifiers_share_one_multi_gpu_override():
    """histology_cls's override is xray_cls's (run with 2 ranks in test_multi_node.py) but for the input check."""
    def keys(bundle: str) -> dict:
        content = yaml.safe_load((ROOT / "bundles" / bundle / "configs" / "multi_gpu_train.yaml").read_text())
        content["initialize"] = [line for line in content["initialize"] if "check_input" not in line]
        return content

    assert keys("histology_cls") == keys("xray_cls")

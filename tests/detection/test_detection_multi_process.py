"""The detection bundles under torchrun with two processes (DDP, gloo on CPU): each rank trains on its shard of the
training list and validates its shard of the validation list; the metric both ranks log (and rank 0 selects
model.pt by) is the value one process computes on the whole list, and rank 0 alone writes (the bare
detector's weights, TensorBoard)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from medssl3d.data.synthetic import synthesize_cohort

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
COMMON = {"num_workers": 0, "cache_rate": 0, "encoder": "resnet10", "epochs": 1, "batch_size": 2}
# bundle: (modality, cases, cohort settings, run settings, key metric); the cohorts' test cases join validation
CASES = {
    "detection_xray": ("xray", 8, {"size": (64, 64)}, {"image_size": 64}, "val_mAP"),  # 5 training, 3 validation
    "detection_ct": ("ct", 5, {"size": (64, 64, 24), "spacing": (1.0, 1.0, 2.0), "seed": 1},  # 3 training, 2 validation
                     {"spacing": [1.0, 1.0, 2.0], "patch_size": [32, 32, 32], "val_patch_size": [64, 64, 32],
                      "crops_per_scan": 1, "val_interval": 1}, "val_froc"),
}


def _cohort(bundle: str, root: Path) -> tuple[Path, dict]:
    modality, cases, cohort, _, _ = CASES[bundle]
    datalist_path = synthesize_cohort(modality, cases, root / modality, progress=False, **cohort)
    datalist = json.loads(datalist_path.read_text())
    datalist["validation"] += datalist.pop("test")  # a validation shard for each rank
    datalist_path.write_text(json.dumps(datalist))
    return datalist_path.parent, datalist


def _one_process_metric(bundle: str, folder: Path, settings: dict, weights: Path, out: Path) -> float:
    """The key metric of the bundle's own evaluator, in this process, on the whole validation list."""
    workflow = ConfigWorkflow(config_file=str(BUNDLES / bundle / "configs" / "train.yaml"), workflow_type="train",
                              dataset_dir=str(folder), output_dir=str(out), **settings)
    workflow.initialize()
    workflow.parser.get_parsed_content("network").load_state_dict(torch.load(weights, weights_only=True))
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    return float(evaluator.state.metrics[CASES[bundle][4]])


@pytest.mark.parametrize("bundle", sorted(CASES))
def test_two_process_training(bundle, tmp_path):
    folder, datalist = _cohort(bundle, tmp_path)
    settings, out, configs = {**COMMON, **CASES[bundle][3]}, tmp_path / "out", BUNDLES / bundle / "configs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
               "-m", "monai.bundle", "run", "--config_file",
               str([str(configs / "train.yaml"), str(configs / "multi_gpu_train.yaml")]),
               "--dataset_dir", str(folder), "--output_dir", str(out)]
    for key, value in settings.items():
        command += [f"--{key}", json.dumps(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]

    shard = -(-len(datalist["training"]) // 2)  # DistributedSampler pads the list to a multiple of 2
    iterations = -(-shard // settings["batch_size"])
    assert output.count(f"Epoch: 1/1, Iter: {iterations}/{iterations} --") == 2  # both ranks, their shard each
    assert output.count("saved final checkpoint") == 1  # rank 0 alone writes
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2  # trainer + evaluator, rank 0
    logged = re.findall(rf"Got new best metric of {CASES[bundle][4]}: (\S+)", output)
    assert len(logged) == 2 and logged[0] == logged[1], logged  # the gathered value, on both ranks
    for name in ("model.pt", "model_final.pt"):
        weights = torch.load(out / name, map_location="cpu", weights_only=True)
        assert not any(key.startswith("module.") for key in weights)  # the bare detector's names, loadable anywhere
    one = _one_process_metric(bundle, folder, settings, out / "model_final.pt", tmp_path / "one")
    assert float(logged[0]) == pytest.approx(one, abs=1e-6)  # rank 0's weights and batch-norm statistics

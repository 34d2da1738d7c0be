"""detection_xray under torchrun with two processes (DDP, gloo on CPU): both ranks train and validate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from medssl3d.data.synthetic import synthesize_cohort

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "detection_xray" / "configs"


def test_two_process_training(tmp_path):
    data = synthesize_cohort("xray", 8, tmp_path / "xray", size=(64, 64), progress=False).parent
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
               "-m", "monai.bundle", "run", "--config_file",
               str([str(CONFIGS / "train.yaml"), str(CONFIGS / "multi_gpu_train.yaml")]),
               "--dataset_dir", str(data), "--output_dir", str(out), "--num_workers", "0", "--cache_rate", "0",
               "--encoder", "resnet10", "--image_size", "64", "--epochs", "1", "--batch_size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert output.count("Epoch: 1/1, Iter: 2/2") == 2  # 5 training images, 2 ranks of batch 2: 2 iterations each
    weights = torch.load(out / "model_final.pt", map_location="cpu", weights_only=True)
    assert not any(key.startswith("module.") for key in weights)  # the bare detector's names, loadable anywhere

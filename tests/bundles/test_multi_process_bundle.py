"""``torchrun --nproc_per_node 2`` with the contrastive CT bundle's multi-GPU override, on CPU (gloo).

Two ranks train SimCLR for 2 iterations on 2 crops each. At a fresh start the crops' embeddings are nearly
alike, so NT-Xent is about log(2N - 1) for the N samples whose negatives it sees: log(3) = 1.10 with one
rank's 2 crops, log(7) = 1.95 with both ranks' 4. A first loss above 1.5 shows the other rank's negatives.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine import load_checkpoint, load_encoder_export

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "contrastive_ct" / "configs"


def test_torchrun_two_ranks_gloo(tmp_path):
    synthesize_cohort("ct", 6, tmp_path / "ct", size=(64, 64, 32), progress=False)  # 4 training volumes
    out = tmp_path / "models"
    configs = f"['{CONFIGS / 'train.yaml'}','{CONFIGS / 'multi_gpu_train.yaml'}']"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
        "-m", "monai.bundle", "run", "--config_file", configs, "--dataset_dir", str(tmp_path / "ct"),
        "--output_dir", str(out), "--epochs", "1", "--batch_size", "1", "--crops_per_volume", "2",
        "--crop_size", "[32,32,16]", "--min_input_size", "16", "--num_workers", "0", "--cache_rate", "0",
        "--checkpoint_every", "1", "--log_every", "1", "--encoder", "resnet10", "--method", "simclr",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=240)
    assert result.returncode == 0, result.stdout[-4000:]

    # each rank: 2 of the 4 volumes, one per iteration
    assert load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["iteration"] == 2
    load_encoder_export(out / "encoder.pt", 3, 1, "resnet10")
    first_losses = []
    for events in (out / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events)).Reload()
        tag = next(t for t in accumulator.Tags()["scalars"] if t.endswith("loss"))
        first_losses.append(accumulator.Scalars(tag)[0].value)
    assert first_losses and min(first_losses) > 1.5, first_losses

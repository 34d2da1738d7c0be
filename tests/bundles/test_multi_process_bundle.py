"""``torchrun --nproc_per_node 2`` with the contrastive CT bundle's multi-GPU override, on CPU (gloo).

Two ranks train SimCLR for 2 iterations on 2 crops each. At a fresh start the crops' embeddings are nearly
alike, so NT-Xent is about log(2N - 1) for the N samples whose negatives it sees: log(3) = 1.10 with one
rank's 2 crops, log(7) = 1.95 with both ranks' 4. A first loss above 1.5 shows the other rank's negatives.

Only rank 0 writes: one set of checkpoints and encoder exports, one TensorBoard events file. Run again with
``--epochs 2``, every rank resumes from ``checkpoint_last.pt`` at iteration 2 (a rank that did not would run
4 iterations against rank 0's 2 and hang in DDP's all-reduce) and trains iterations 3 and 4.
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


def _torchrun(dataset_dir: Path, output_dir: Path, epochs: int) -> None:
    configs = f"['{CONFIGS / 'train.yaml'}','{CONFIGS / 'multi_gpu_train.yaml'}']"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
        "-m", "monai.bundle", "run", "--config_file", configs, "--dataset_dir", str(dataset_dir),
        "--output_dir", str(output_dir), "--epochs", str(epochs), "--batch_size", "1", "--crops_per_volume", "2",
        "--crop_size", "[32,32,16]", "--min_input_size", "16", "--num_workers", "0", "--cache_rate", "0",
        "--checkpoint_every", "1", "--log_every", "1", "--encoder", "resnet10", "--method", "simclr",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=240)
    assert result.returncode == 0, result.stdout[-4000:]


def _losses(events: Path) -> dict[int, float]:
    accumulator = EventAccumulator(str(events)).Reload()
    return {event.step: event.value for event in accumulator.Scalars("loss")}


def test_torchrun_two_ranks_gloo(tmp_path):
    synthesize_cohort("ct", 6, tmp_path / "ct", size=(64, 64, 32), progress=False)  # 4 training volumes
    out = tmp_path / "models"
    _torchrun(tmp_path / "ct", out, epochs=1)

    # rank 0 alone wrote; each rank trained on 2 of the 4 volumes, one per iteration
    assert sorted(p.name for p in out.rglob("*") if p.is_file() and "tensorboard" not in p.parts) == [
        "checkpoint_00000001.pt", "checkpoint_00000002.pt", "checkpoint_last.pt",
        "encoder.pt", "encoder_00000001.pt", "encoder_00000002.pt"]
    assert load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["iteration"] == 2
    load_encoder_export(out / "encoder.pt", 3, 1, "resnet10")
    (first_events,) = (out / "tensorboard").glob("events.out.tfevents.*")
    first = _losses(first_events)
    assert sorted(first) == [1, 2] and first[1] > 1.5, first

    _torchrun(tmp_path / "ct", out, epochs=2)
    assert load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["iteration"] == 4
    (second_events,) = set((out / "tensorboard").glob("events.out.tfevents.*")) - {first_events}
    assert sorted(_losses(second_events)) == [3, 4]
    assert {p.name for p in (out / "checkpoints").glob("*.pt")} == {  # keep_last_checkpoints: 2
        "checkpoint_00000003.pt", "checkpoint_00000004.pt", "checkpoint_last.pt"}

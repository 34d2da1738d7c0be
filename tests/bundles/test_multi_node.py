"""Two "nodes" on this machine: two ``torchrun --nnodes 2 --nproc_per_node 1`` launchers meeting through c10d
rendezvous (gloo), as on a cluster where each node runs the same command.

* Pretraining (contrastive_ct, SimCLR, 1 crop pair per node): at a fresh start the embeddings are nearly alike,
  so NT-Xent is about log(2N - 1) for the N samples whose negatives it sees: log(3) = 1.10 for one node's 2
  crops, log(7) = 1.95 for both nodes' 4, what one process gets on the whole batch. Rank 0 alone writes (one
  set of checkpoints and encoder exports, one TensorBoard events file). Run again with ``--epochs 2``, every
  rank resumes from ``checkpoint_last.pt`` at iteration 2 (a rank that did not would run 4 iterations against
  rank 0's 2 and hang in DDP's all-reduce) and trains iterations 3 and 4.
* Downstream (xray_cls): the validation AUC rank 0 logs is the one a single process computes on the whole
  validation list with the same weights (the two nodes' predictions are gathered).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch.distributed
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine import load_checkpoint, load_encoder_export
from medssl3d.prep.medmnist import convert_medmnist
from tests.benchmarks._scripts import load_benchmark
from tests.bundles.test_multi_gpu_downstream import _fake_medmnist, _scalars, _single_process_metric

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TIMEOUT_S = 240
_descendants = load_benchmark("load_memory")._children  # the process tree, from /proc


def _two_nodes(bundle: str, settings: dict) -> None:
    """Run ``bundle`` with its multi-GPU override on 2 nodes of 1 process each; both must exit 0."""
    configs = str([str(BUNDLES / bundle / "configs" / n) for n in ("train.yaml", "multi_gpu_train.yaml")])
    # The rendezvous store lives in this process, which outlives both nodes: when one node's agent hosts it
    # (torchrun's default), the other can fail its own shutdown with RendezvousConnectionError after training
    # finished, because the host exited first. Port 0: the system picks one nothing else holds (a port found free
    # and bound later can be taken in between by a parallel test's connection).
    store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    port = store.port
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", bundle,
               "--rdzv_conf", "is_host=false", "-m", "monai.bundle", "run", "--config_file", configs]
    for key, value in settings.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    # PYTHONFAULTHANDLER: on SIGABRT, the worker of a node still running at the deadline prints where each of its
    # threads stands, before the node is killed.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONFAULTHANDLER": "1"}
    # Each node writes to a file, not a pipe: waiting on one node while the other fills its unread pipe
    # (64 KB of logs) would block that node and, through the collectives, both.
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(2)]
    nodes = [subprocess.Popen(command, env=env, text=True, stdout=log, stderr=subprocess.STDOUT) for log in logs]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for node in nodes:
            node.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        pass  # reported below, with where each node stood
    finally:
        late = [node for node in nodes if node.poll() is None]
        if late:  # torchrun starts each worker in a session of its own: signal the workers, then the agents
            workers = [pid for node in late for pid in _descendants(node.pid)]
            _signal(workers, signal.SIGABRT)
            time.sleep(5)
            _signal(workers + [node.pid for node in late], signal.SIGKILL)
        for node in nodes:
            node.wait()
        del store
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
            log.close()
    assert not late and all(node.returncode == 0 for node in nodes), "\n".join(
        f"--- node {i}: {'still running after ' + str(TIMEOUT_S) + ' s' if node in late else node.returncode}; "
        f"its last lines:\n{output[-3000:]}" for i, (node, output) in enumerate(zip(nodes, outputs)))


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.kill(pid, signum)


def _losses(events: Path) -> dict[int, float]:
    return {e.step: e.value for e in EventAccumulator(str(events)).Reload().Scalars("loss")}


def test_pretraining_on_two_nodes_and_resume(tmp_path):
    synthesize_cohort("ct", 6, tmp_path / "ct", size=(64, 64, 32), progress=False)  # 4 training volumes
    out = tmp_path / "models"
    settings = {"dataset_dir": str(tmp_path / "ct"), "output_dir": str(out), "epochs": 1, "batch_size": 1,
                "crops_per_volume": 2, "crop_size": [32, 32, 16], "min_input_size": 16, "num_workers": 0,
                "cache_rate": 0, "checkpoint_every": 1, "log_every": 1, "encoder": "resnet10", "method": "simclr"}
    _two_nodes("contrastive_ct", settings)
    # rank 0 alone wrote; each rank trained on 2 of the 4 volumes, one per iteration
    assert sorted(p.name for p in out.rglob("*") if p.is_file() and "tensorboard" not in p.parts) == [
        "checkpoint_00000001.pt", "checkpoint_00000002.pt", "checkpoint_last.pt",
        "encoder.pt", "encoder_00000001.pt", "encoder_00000002.pt"]
    assert load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["iteration"] == 2
    load_encoder_export(out / "encoder.pt", 3, 1, "resnet10")
    (first_events,) = (out / "tensorboard").glob("events.out.tfevents.*")
    first = _losses(first_events)
    assert sorted(first) == [1, 2]
    assert abs(first[1] - math.log(7)) < abs(first[1] - math.log(3)), first  # both nodes' negatives

    _two_nodes("contrastive_ct", {**settings, "epochs": 2})
    assert load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["iteration"] == 4
    (second_events,) = set((out / "tensorboard").glob("events.out.tfevents.*")) - {first_events}
    assert sorted(_losses(second_events)) == [3, 4]
    assert {p.name for p in (out / "checkpoints").glob("*.pt")} == {  # keep_last_checkpoints: 2
        "checkpoint_00000003.pt", "checkpoint_00000004.pt", "checkpoint_last.pt"}


def test_downstream_on_two_nodes(tmp_path):
    convert_medmnist(_fake_medmnist(tmp_path / "grey.npz"), tmp_path / "grey", label_fractions=(0.5,))
    out = tmp_path / "out"
    settings = {"num_workers": 0, "cache_rate": 0, "encoder": "resnet10", "epochs": 1, "image_size": 28,
                "batch_size": 5}
    _two_nodes("xray_cls", {**settings, "dataset_dir": str(tmp_path / "grey"), "output_dir": str(out)})
    assert (out / "model.pt").is_file() and len(list((out / "tensorboard").glob("events.*"))) == 2  # rank 0
    scalars = _scalars(out)
    assert len(scalars["train_loss"]) == 2  # 10 of the 20 training images on rank 0, batches of 5
    ((_, logged),) = scalars["auc"]
    single = _single_process_metric("xray_cls", tmp_path / "grey", settings, out / "model_final.pt",
                                    tmp_path / "single", "auc")
    assert np.isfinite(single) and logged == pytest.approx(single, abs=1e-5), (logged, single)

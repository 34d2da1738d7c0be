"""Which stage of an encoder holds what a task needs: kNN and linear probes on each stage's pooled feature maps.

    python benchmarks/stage_probes.py --exports rotation=WORK/adrenalmnist3d/rotation/encoder.pt \\
        scratch=WORK/adrenalmnist3d/scratch/encoder.pt [--dataset adrenalmnist3d] [--fraction 0.1] \\
        [--seeds 0 1 2 3 4] [--out benchmarks/stage_probes.json]

``label_efficiency.py`` probes an encoder's last stage only (``Encoder.embed``, the pooled coarsest map), as a
classifier built on it reads it. This script pools every stage's map (the stem and each residual stage of a
ResNet; ``Encoder.pool``, global average) and fits, per stage, the benchmark's kNN (k = 200, cosine) and linear
probe (``linear_probe``: standardised features, L2 logistic regression) on the same labelled subsets
(``nested_label_fractions``) and the official test split. It tells whether a pretext task kept the target's signal
in its deepest stage, whether a randomly initialised encoder (a ``scratch`` export) already exposes it at some
depth, and so whether a head on several stages (``FineTuneRecipe.pooled_stages``) or re-initialising the last
stages (``reset_last_stages``) is worth a fine-tuning comparison. Probes of frozen features do not predict
fine-tuning by themselves: measure that with ``label_efficiency.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from medssl3d.atomic import write_json_atomic
from medssl3d.evaluation import (
    classification_metrics,
    knn_classify,
    linear_probe,
    nested_label_fractions,
    summarize_runs,
)
from medssl3d.prep.medmnist import load_medmnist
from medssl3d.transfer import build_classifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_efficiency import METRICS, resolve_data_dir  # noqa: E402


def stage_features(encoder, images: np.ndarray, batch_size: int = 128) -> list[np.ndarray]:
    """``(N, C, *spatial)`` images -> one ``(N, channels_i)`` float32 array of pooled features per encoder stage
    (the encoder in eval mode, no gradients)."""
    encoder.eval()
    batches = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            maps = encoder(torch.as_tensor(images[start:start + batch_size], dtype=torch.float32))
            batches.append([encoder.pool(feature).numpy() for feature in maps])
    return [np.concatenate(stage) for stage in zip(*batches)]


def named_exports(values: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` (or a bare path, named by its folder) -> {name: path}; a missing file or a repeated name is an
    error naming it."""
    exports = {}
    for value in values:
        name, _, path = value.rpartition("=") if "=" in value else ("", "", value)
        path = Path(path)
        name = name or path.parent.name
        if not path.is_file():
            raise SystemExit(f"stage_probes: encoder export {path} ({name}) does not exist.")
        if name in exports:
            raise SystemExit(f"stage_probes: two exports are named {name!r}; name them NAME=PATH.")
        exports[name] = path
    return exports


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", nargs="+", required=True,
                        help="encoder exports (medssl3d.engine.export_encoder) as NAME=PATH or PATH")
    parser.add_argument("--data-dir", help="folder with <dataset>.npz (default: ../shared/data/medmnist)")
    parser.add_argument("--dataset", default="adrenalmnist3d", help="MedMNIST file <name>.npz (default adrenalmnist3d)")
    parser.add_argument("--fraction", type=float, default=0.1, help="labelled fraction of the training split")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="label draws")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "stage_probes.json"))
    args = parser.parse_args(argv)
    exports = named_exports(args.exports)
    splits = load_medmnist(resolve_data_dir(args.data_dir) / f"{args.dataset}.npz")
    (train_x, train_y), (test_x, test_y) = splits["training"], splits["test"]
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    torch.set_num_threads(1)
    records = []
    for init, path in exports.items():
        encoder = build_classifier(num_classes, pretrained_encoder=path).encoder
        train_f, test_f = stage_features(encoder, train_x), stage_features(encoder, test_x)
        for seed in args.seeds:
            index = nested_label_fractions(train_y, [args.fraction], seed=seed)[args.fraction]
            for stage, (train_s, test_s) in enumerate(zip(train_f, test_f)):
                for kind, probs in (
                        ("knn", knn_classify(train_s[index], train_y[index], test_s, k=200, num_classes=num_classes)),
                        ("linear", linear_probe(train_s[index], train_y[index], test_s, seed=seed,
                                                num_classes=num_classes))):
                    metrics = classification_metrics(test_y, probs, num_classes)
                    records.append({"init": init, "stage": stage, "channels": train_s.shape[1], "eval": kind,
                                    "fraction": args.fraction, "seed": seed, "n_labels": len(index),
                                    **{m: metrics[m] for m in METRICS}})
    summary = summarize_runs(records, ["init", "stage", "eval"], METRICS)
    for row in summary:
        print(f"{row['init']:>12} stage {row['stage']} {row['eval']:>6}: AUC {row['auc_mean']:.3f} ± "
              f"{row['auc_std']:.3f}")
    write_json_atomic({"dataset": args.dataset, "exports": {k: str(v) for k, v in exports.items()},
                       "command": "python benchmarks/stage_probes.py " + " ".join(argv or sys.argv[1:]),
                       "records": records, "summary": summary}, Path(args.out))
    return summary


if __name__ == "__main__":
    main()

"""Why a pretrained init fell below scratch at 1 % of the labels: fine-tuning variants on a small set.

    python benchmarks/low_label_diagnosis.py [--data-dir DIR] [--work-dir WORK] [--seeds 0 1 2] [--out FILE.json]

A stratified 546-image subset of PneumoniaMNIST's training split (78 validation images, the test split whole;
``label_efficiency.subset_splits``), 1 % of its labels (5 images, nested per seed), scratch and a SimCLR encoder
pretrained on the 546 images (the "recipe" profile's pretraining, reused from ``--work-dir`` when stamped there).
Each variant adds one part of the recipe (``medssl3d.evaluation.recipe``) to a plain step-budget fine-tuning:

A. the former sample-budget protocol (1,000 samples: 200 epochs of one batch of 5, encoder lr 0.3 x head lr for
   the pretrained init, class-balanced, the best of 10 validation epochs);
B. 200 steps, batch = the 5 images, encoder and head at 1e-3, no warm-up;
C. B with a minimum batch of 16 draws (repeats under augmentation);
D. B with the linear-probe warm-up (LP-FT, 20 % of the steps);
E. the recipe: warm-up, minimum batch 16 and the encoder lr factor (1, 0.1) chosen on validation.

Test AUC per variant, init and seed; a JSON of the records.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import label_efficiency as le  # noqa: E402

from medssl3d.atomic import write_json_atomic  # noqa: E402
from medssl3d.evaluation import (  # noqa: E402
    FineTuneRecipe,
    SymmetryGroup,
    classification_metrics,
    fine_tune_with_recipe,
    nested_label_fractions,
    predict_proba,
)
from medssl3d.prep.medmnist import load_medmnist  # noqa: E402
from medssl3d.transfer import build_classifier  # noqa: E402

FORMER = {"finetune_samples": {2: {0.01: 1000}}, "finetune_batch": 32, "finetune_lr": 1e-3, "encoder_lr_scale": 0.3,
          "class_balanced": True, "val_evaluations": 10, "augment_3d": "flip"}
BASE = dict(lr=1e-3, head_lr=1e-2, batch_size=16, epochs=4, min_steps=200, max_steps=1200, evaluations=10,
            lr_decay="none", selection="best", fit_loss=None)  # the recipe these records were made with ("recipe")
VARIANTS = {
    "B": FineTuneRecipe(**BASE, min_batch=1, head_warmup=0.0, grid=((1.0, "full"),)),
    "C": FineTuneRecipe(**BASE, min_batch=16, head_warmup=0.0, grid=((1.0, "full"),)),
    "D": FineTuneRecipe(**BASE, min_batch=1, head_warmup=0.2, grid=((1.0, "full"),)),
    "E": FineTuneRecipe(**BASE, min_batch=16, head_warmup=0.2),
}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help=f"folder with pneumoniamnist.npz (default {le.DEFAULT_DATA_DIR})")
    parser.add_argument("--work-dir", help="folder of the recipe profile's encoder exports (reused when stamped)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(le.REPO / "benchmarks" / "low_label_diagnosis.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    splits = le.subset_splits(load_medmnist(le.resolve_data_dir(args.data_dir) / "pneumoniamnist.npz"), 546, 78)
    (x, y), val, (test_x, test_y) = splits["training"], splits["validation"], splits["test"]
    profile = le.load_profile("recipe")
    records = []
    with tempfile.TemporaryDirectory(prefix="low_label_") as tmp:
        work = Path(args.work_dir or tmp) / "pneumoniamnist_546"
        exports = {"scratch": le.random_init_export(x, profile, work / "scratch"),
                   "simclr": le.pretrained_export("simclr", x, profile, work / "simclr", "cpu", True)[0]}
        for seed in args.seeds:
            index = nested_label_fractions(y, (0.01,), seed=seed)[0.01]
            train = (x[index], y[index])
            for init, export in exports.items():
                start = time.perf_counter()
                model = le.fine_tune(init, export, train, val, FORMER, 0.01, seed, 2, "cpu")[0]
                runs = [("A", model, {})]
                for name, recipe in VARIANTS.items():
                    build = lambda mode, export=export: build_classifier(2, pretrained_encoder=export, mode=mode)
                    result = fine_tune_with_recipe(build, train, val, 2, recipe, seed=seed, augment=SymmetryGroup(2))
                    runs.append((name, result.model, {k: result.summary()[k] for k in
                                                      ("encoder_lr_factor", "val_auc", "step_kept", "batch")}))
                for name, model, extra in runs:
                    auc = classification_metrics(test_y, predict_proba(model, test_x, batch_size=256), 2)["auc"]
                    records.append({"variant": name, "init": init, "seed": seed, "n_labels": len(index),
                                    "auc": auc, **extra})
                print(f"seed {seed} {init}: " + "  ".join(f"{r['variant']} {r['auc']:.3f}" for r in records[-5:])
                      + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    summary = {}
    for name in ("A", *VARIANTS):
        for init in exports:
            aucs = [r["auc"] for r in records if r["variant"] == name and r["init"] == init]
            summary[f"{name} {init}"] = {"mean": float(np.mean(aucs)), "std": float(np.std(aucs, ddof=1)) if len(aucs) > 1
                                         else 0.0, "n": len(aucs)}
    write_json_atomic({"records": records, "summary": summary, "command": "python benchmarks/low_label_diagnosis.py "
                       + " ".join(sys.argv[1:] if argv is None else argv), "cpu": le.cpu_name()}, Path(args.out))
    for key, value in summary.items():
        print(f"{key}: {value['mean']:.3f} ± {value['std']:.3f} (n={value['n']})")
    return records


if __name__ == "__main__":
    main()

"""Validation and test AUC along the recipe's fine-tuning: does the checkpoint chosen on validation keep what the
test split rewards, and what do the first full fine-tuning steps do to a pretrained encoder?

    python benchmarks/finetune_curves.py --profile recipe_v3 --exports scratch=WORK/scratch/encoder.pt \\
        simclr=WORK/simclr/encoder.pt [--dataset pneumoniamnist] [--fraction 0.01] [--seeds 0 1 2] [--out FILE.json]

Each export is fine-tuned exactly as ``label_efficiency.py`` does with the profile (same label subsets, seeds,
recipe and augmentation); a ``monitor`` of ``fine_tune_with_recipe`` scores the TEST split, and the fit of the
labelled set (cross-entropy and accuracy, eval mode, no augmentation), at every validation evaluation, which changes
nothing in the run (the selection never sees either). Printed per init and seed: test AUC
at the end of the linear-probe warm-up, after the first evaluation of full fine-tuning, at the kept checkpoint
and the best along the curve. The JSON holds every point.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import label_efficiency as le  # noqa: E402

from medssl3d.atomic import write_json_atomic  # noqa: E402
from medssl3d.errors import InputError  # noqa: E402
from medssl3d.evaluation import classification_metrics, labelled_fit, predict_proba  # noqa: E402


def curves(export: Path, splits: dict, profile: dict, fraction: float, seed: int) -> dict:
    """One fine-tuning run: every (grid entry, step, validation AUC, test AUC, fit of the labelled set) and the kept
    checkpoint's record."""
    (train_x, train_y), val, (test_x, test_y) = splits["training"], splits["validation"], splits["test"]
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    index = le.nested_label_fractions(train_y, [fraction], seed=seed)[fraction]
    points = []

    def score_test(entry: str, step: int, val_auc: float, model) -> None:
        test_auc = classification_metrics(test_y, predict_proba(model, test_x, batch_size=256), num_classes)["auc"]
        loss, accuracy = labelled_fit(model, train_x[index], train_y[index])
        points.append({"grid": entry, "step": step, "val_auc": round(val_auc, 4), "test_auc": round(test_auc, 4),
                       "labelled_loss": round(loss, 4), "labelled_acc": round(accuracy, 4)})

    model, record = le.fine_tune_recipe(export, (train_x[index], train_y[index]), val, profile, seed, num_classes,
                                        "cpu", monitor=score_test)
    test_auc = classification_metrics(test_y, predict_proba(model, test_x, batch_size=256), num_classes)["auc"]
    return {"seed": seed, "n_labels": len(index), "points": points, "kept": record, "test_auc": round(test_auc, 4)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="recipe_v3", help="a label_efficiency profile with a recipe")
    parser.add_argument("--exports", nargs="+", required=True, metavar="INIT=ENCODER.pt")
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(le.REPO / "benchmarks" / "finetune_curves.json"))
    args = parser.parse_args(argv)
    try:
        profile = le.load_profile(args.profile)
    except InputError as error:
        parser.error(str(error))
    if "recipe" not in profile:
        parser.error(f"--profile {args.profile} has no recipe; curves follow the recipe's evaluations")
    exports = dict(item.split("=", 1) for item in args.exports if "=" in item)
    if len(exports) != len(args.exports):
        parser.error("--exports takes INIT=PATH pairs, e.g. simclr=WORK/simclr/encoder.pt")
    splits = le.load_medmnist(le.resolve_data_dir(args.data_dir) / f"{args.dataset}.npz")
    torch.set_num_threads(1)  # as label_efficiency.py: the figures depend on the thread count
    runs = {}
    for init, export in exports.items():
        runs[init] = [curves(Path(export), splits, profile, args.fraction, seed) for seed in args.seeds]
        for run in runs[init]:
            first = [p for p in run["points"] if p["grid"] == run["points"][0]["grid"]]
            print(f"{init} seed {run['seed']}: test AUC at warm-up end {first[0]['test_auc']:.3f}, after the first "
                  f"full steps {first[1]['test_auc']:.3f}, kept (step {run['kept']['step_kept']}, "
                  f"{run['kept']['encoder_lr_factor']:g} {run['kept']['mode']}) {run['test_auc']:.3f}, best on the "
                  f"curve {max(p['test_auc'] for p in run['points']):.3f}; labelled set at the end: loss "
                  f"{first[-1]['labelled_loss']:.3f}, accuracy {first[-1]['labelled_acc']:.3f}", flush=True)
    result = {"dataset": args.dataset, "profile": profile["name"], "fraction": args.fraction,
              "command": "python benchmarks/finetune_curves.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "runs": runs}
    write_json_atomic(result, Path(args.out))
    return result


if __name__ == "__main__":
    main()

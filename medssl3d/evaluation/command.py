"""``medssl3d evaluate``: frozen-feature evaluation of an encoder export (or of a random encoder) on a labelled
datalist — kNN (weighted and majority), linear and MLP probes, representation quality, a t-SNE map and,
with ``--fractions``, a label-fraction sweep of the linear probe — written as ``report.md`` + ``metrics.json``.
With ``--detections`` it scores detection runs instead (:mod:`medssl3d.evaluation.detection`).

Features are extracted once per item (the encoder is frozen); only kNN and the probes are fitted per split:

* fixed split (default): fitted on the ``--train-key`` items, measured on the ``--test-key`` items; the
  probes once per seed, kNN (deterministic) once.
* ``--folds k``: stratified k-fold cross-validation (:func:`medssl3d.evaluation.kfold_splits`, shuffled with
  each seed) over the ``--train-key`` and ``--test-key`` items pooled: each item is tested once per seed by
  kNN/probes fitted on the other folds; metrics are mean ± std over folds (and seeds). Pooling is the point
  of cross-validation on small labelled cohorts: every labelled item is tested, not one small fixed list.

Representation quality and the t-SNE map use all items together; confusion matrices add up the splits of the
first seed (with folds: every item once). Fine-tuning is the downstream bundles' job; this command never
updates the encoder. :func:`evaluation_args`, :func:`labelled_data` and :func:`probe_export` run the same
steps for other commands (``medssl3d sweep``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medssl3d.errors import InputError

__all__ = ["METRICS", "PROBES", "add_parser", "evaluation_args", "labelled_data", "probe_export", "run"]

METRICS = ("accuracy", "f1_weighted", "precision_weighted", "recall_weighted", "auc")
PROBES = ("knn_weighted", "knn_majority", "linear_probe", "mlp_probe")


def _add_options(parser: argparse.ArgumentParser, out_required: bool = True) -> None:
    from medssl3d.preprocessing import CHAINS

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--encoder", type=Path, help="encoder export (.pt) written by pretraining")
    source.add_argument("--scratch", action="store_true", help="evaluate a randomly initialised encoder instead")
    source.add_argument("--detections", type=Path, nargs="+",
                        help="detection runs to score instead (run folders or their predictions.json/.csv, as a "
                        "detection bundle's inference writes them): COCO mAP/mAR and, for 3D, LUNA16 FROC against "
                        "--boxes on the --test-key images; no encoder, chain or probes")
    parser.add_argument("--architecture", default=None,
                        help="encoder name (--scratch: default resnet18; with --encoder: checked against the export)")
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), default=None,
                        help="--scratch: default 3; with --encoder: checked against the export")
    parser.add_argument("--in-channels", type=int, default=None,
                        help="--scratch: default 1; with --encoder: checked against the export")
    parser.add_argument("--patch-size", type=int, nargs="+", default=None,
                        help="input size fed to the encoder (default: the export's patch_size)")
    parser.add_argument("--fit", choices=("resize", "crop"), default="resize",
                        help="how preprocessed images reach the patch size: resize (area) or centre crop/pad")
    parser.add_argument("--compare-scratch", action="store_true",
                        help="also evaluate a random encoder of the same architecture (a 'scratch' line in every "
                        "table and curve)")
    parser.add_argument("--datalist", required=True, type=Path, help="Decathlon-style datalist with class labels")
    parser.add_argument("--train-key", default="training", help="datalist key of the labelled training items")
    parser.add_argument("--test-key", default="test", help="datalist key of the test items")
    parser.add_argument("--label-key", default="class", help="item key holding the class label (default class)")
    parser.add_argument("--chain", help=f"preprocessing chain: one of {', '.join(CHAINS)}, or a YAML file "
                        "(required with --encoder and --scratch)")
    parser.add_argument("--boxes", type=Path, default=None,
                        help="--detections: reference box table, as the detection bundles read it (LUNA16 "
                        "annotations.csv in world mm for CT; image_id,class_name,x_min,y_min,x_max,y_max pixels for "
                        "radiographs); --test-key images without a row are negatives")
    parser.add_argument("--dataset-dir", type=Path, default=None,
                        help="--detections: folder the datalist's relative image paths start from, as the bundles' "
                        "dataset_dir (default: the datalist's folder)")
    parser.add_argument("--class-names", nargs="+", default=None,
                        help="--detections: the detected classes (default: 3D nodule; 2D the classes of --boxes and "
                        "the detections)")
    parser.add_argument("--out", required=out_required, type=Path, help="report folder")
    parser.add_argument("--probes", nargs="+", choices=PROBES, default=list(PROBES),
                        help="which classifiers to fit on the frozen features (default: all)")
    parser.add_argument("--folds", type=int, default=None,
                        help="k-fold cross-validation over the training and test items pooled, instead of the "
                        "fixed split (mean ± std over folds)")
    parser.add_argument("--fractions", type=float, nargs="+", default=None,
                        help="label fractions of the training set for the linear-probe sweep, e.g. 0.01 0.1 1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the probes and subsets (default 0)")
    parser.add_argument("--k", type=int, default=200, help="kNN neighbours (capped at the training set size)")
    parser.add_argument("--temperature", type=float, default=0.07, help="weighted-kNN temperature (default 0.07)")
    parser.add_argument("--mlp-epochs", type=int, default=100, help="MLP probe epochs (default 100)")
    parser.add_argument("--batch-size", type=int, default=16, help="feature extraction batch size")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--finetune", action="store_true",
                        help="also fine-tune every init by the library's recipe (medssl3d.evaluation.recipe: a step "
                        "budget with a floor that grows while the labelled set is not fit, linear-probe warm-up, a "
                        "small grid selected on validation), method 'finetune' in the tables; needs the fixed split")
    parser.add_argument("--recipe", type=Path, default=None,
                        help="--finetune: a YAML file of FineTuneRecipe fields replacing the library defaults (see "
                        "docs/finetuning_recipe.md)")
    parser.add_argument("--val-key", default="validation",
                        help="--finetune: datalist key of the validation items (default validation; without it, a "
                        "stratified 15 %% of the training items)")


def add_parser(subparsers) -> None:
    """Register the ``evaluate`` subcommand on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a pretrained encoder on a labelled datalist (kNN, linear/MLP probes, label fractions), or "
        "score detection runs (COCO mAP/mAR, LUNA16 FROC)",
        description="Extract frozen features of an encoder export (or a random encoder with --scratch) on the "
        "training and test items of a datalist with 'class' labels, then write kNN, linear-probe and MLP-probe "
        "metrics (fixed split, or --folds k cross-validation), representation quality, a t-SNE plot and (with "
        "--fractions) a label-fraction sweep of the linear probe to OUT/report.md and OUT/metrics.json. "
        "With --detections RUN [RUN ...] --boxes TABLE instead, score the boxes detection runs wrote against the "
        "reference boxes of the --test-key images: COCO mAP/mAR (2D over IoU 0.50:0.95 and AP at 0.50; 3D over "
        "0.10:0.50 and AP at 0.10) and, for 3D, LUNA16's FROC (sensitivity at 1/8 ... 8 false positives per "
        "scan), one row per run in OUT/report.md and OUT/metrics.json.",
    )
    _add_options(parser)
    parser.set_defaults(run=run)


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


def evaluation_args(options: list[str]) -> argparse.Namespace:
    """Parse ``medssl3d evaluate`` options (command-line strings, ``--out`` optional) into the namespace
    :func:`labelled_data` and :func:`probe_export` take; a bad option raises a ValueError, not SystemExit."""
    parser = _RaisingParser(prog="medssl3d evaluate", add_help=False)
    _add_options(parser, out_required=False)
    args = parser.parse_args(options)
    _check_chain(args)
    return args


def _check_chain(args) -> None:
    if args.chain is None and not args.detections:
        raise ValueError("--chain is required with --encoder and --scratch (the preprocessing of the images).")


def _read_items(datalist: Path, key: str, label_key: str) -> list[dict]:
    if not datalist.is_file():
        raise FileNotFoundError(f"datalist '{datalist}' does not exist.")
    content = json.loads(datalist.read_text())
    items = content.get(key)
    if not items:
        raise ValueError(f"datalist '{datalist}' has no items under key '{key}'; keys: {', '.join(content)}.")
    unlabelled = [i for i, item in enumerate(items) if label_key not in item]
    if unlabelled:
        raise ValueError(f"no labels in {datalist} key {key}: {len(unlabelled)} of {len(items)} items have no "
                         f"'{label_key}' entry (first: {items[unlabelled[0]].get('image')}).")
    resolved = []
    for item in items:
        image = Path(item["image"])
        resolved.append({"image": str(image if image.is_absolute() else datalist.parent / image),
                         "label_value": item[label_key]})
    return resolved


def _encoders(args) -> tuple[list[tuple[str, object]], dict]:
    """``[(init name, encoder)]`` and the export metadata (``{}`` for --scratch)."""
    import torch

    from medssl3d.encoder_export import load_encoder_export
    from medssl3d.networks import build_encoder

    def scratch(architecture: str, dims: int, channels: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seeds[0])
            return build_encoder(architecture, dims, channels).eval()

    if args.scratch:
        metadata = {"architecture": args.architecture or "resnet18", "spatial_dims": args.spatial_dims or 3,
                    "in_channels": args.in_channels or 1, "patch_size": None}
        encoders = [("scratch", scratch(metadata["architecture"], metadata["spatial_dims"], metadata["in_channels"]))]
        return encoders, metadata
    encoder, metadata = load_encoder_export(args.encoder, args.spatial_dims, args.in_channels, args.architecture)
    encoders = [(str(metadata.get("method") or "pretrained"), encoder)]
    if args.compare_scratch:
        encoders.append(("scratch", scratch(metadata["architecture"], metadata["spatial_dims"], metadata["in_channels"])))
    return encoders, metadata


def _patch_size(args, metadata: dict) -> list[int]:
    dims = metadata["spatial_dims"]
    size = args.patch_size or metadata.get("patch_size")
    if not size:
        raise ValueError("no patch size: the encoder export has no patch_size metadata; pass --patch-size."
                         if not args.scratch else "--scratch needs --patch-size (the input size of the encoder).")
    size = list(size) * dims if len(size) == 1 else list(size)
    if len(size) != dims:
        raise ValueError(f"patch size {size} has {len(size)} axes; the encoder is {dims}D.")
    return size


def _dataset(args, items: list[dict], patch_size: list[int], metadata: dict):
    """A MONAI Dataset: the chain, then resize or crop/pad to the patch size; checks dims and channels once."""
    from monai.data import Dataset
    from monai.transforms import Compose, Resized, ResizeWithPadOrCropd

    from medssl3d.preprocessing import load_chain

    chain = load_chain(args.chain)
    first = chain({"image": items[0]["image"]})["image"]
    if first.ndim - 1 != metadata["spatial_dims"] or first.shape[0] != metadata["in_channels"]:
        raise ValueError(
            f"chain '{args.chain}' gives {first.ndim - 1}D images with {first.shape[0]} channel(s) "
            f"({items[0]['image']}); the {metadata['architecture']} encoder expects {metadata['spatial_dims']}D "
            f"with {metadata['in_channels']} channel(s)."
        )
    fit = (Resized("image", patch_size, mode="area") if args.fit == "resize"
           else ResizeWithPadOrCropd("image", patch_size))
    return Dataset(items, Compose([chain, fit]))


def _records(init: str, method: str, seed: int, labels, probs, num_classes: int, **extra) -> tuple[dict, dict]:
    """One run's table row (the scalar metrics) and its full metrics."""
    from .metrics import classification_metrics

    metrics = classification_metrics(labels, probs, num_classes)
    return {"init": init, "method": method, "seed": seed, **extra, **{m: metrics[m] for m in METRICS}}, metrics


def _splits(args, labels, n_train: int) -> list[tuple[int, int | None, object, object]]:
    """``(seed, fold, train indices, test indices)`` into the pooled items (training items first): the fixed
    split once per seed (fold ``None``), or ``--folds`` stratified folds per seed."""
    import numpy as np

    from .fractions import kfold_splits

    if args.folds is None:
        train, test = np.arange(n_train), np.arange(n_train, len(labels))
        return [(seed, None, train, test) for seed in args.seeds]
    try:
        return [(seed, fold, train, test) for seed in args.seeds
                for fold, (train, test) in enumerate(kfold_splits(labels, args.folds, seed))]
    except ValueError as err:
        raise ValueError(f"--folds {args.folds} on datalist '{args.datalist}' ({args.train_key} + {args.test_key}, "
                         f"{len(labels)} items): {err}") from err


def labelled_data(args) -> tuple[list[dict], list[str], list[tuple]]:
    """The pooled labelled items (``--train-key`` then ``--test-key``) with ``class`` indices ``0..C-1`` (sorted
    label values), the class names (the datalist's ``classes`` entry where it has one) and the splits
    ``(seed, fold, train indices, test indices)``; fails early on labels, folds or fractions no probe can use."""
    import numpy as np

    from .fractions import nested_label_fractions

    train_items = _read_items(args.datalist, args.train_key, args.label_key)
    test_items = _read_items(args.datalist, args.test_key, args.label_key)
    items = train_items + test_items
    values = sorted({item["label_value"] for item in items}, key=lambda v: (str(type(v)), v))
    index = {value: i for i, value in enumerate(values)}
    for item in items:
        item["class"] = index[item.pop("label_value")]
    names = json.loads(args.datalist.read_text()).get("classes") or {}
    class_names = [str(names.get(str(value), value)) for value in values]
    if len(values) < 2:
        raise ValueError(f"datalist '{args.datalist}' holds a single class ({class_names[0]}); evaluation needs two.")
    labels = np.array([item["class"] for item in items])
    splits = _splits(args, labels, len(train_items))
    for seed, fold, train, _ in splits:
        missing = [class_names[c] for c in sorted(set(range(len(values))) - set(labels[train].tolist()))]
        if missing:
            raise ValueError(f"datalist '{args.datalist}': class(es) {missing} of key {args.test_key} never occur in "
                             f"key {args.train_key}, so no classifier can learn them.")
        if args.fractions:  # fail on an impossible fraction before any work
            nested_label_fractions(labels[train], args.fractions, seed)
    return items, class_names, splits


def _probe(args, probe: str, train_x, train_y, test_x, seed: int, num_classes: int):
    from .knn import knn_classify
    from .probes import linear_probe, mlp_probe

    if probe.startswith("knn_"):
        return knn_classify(train_x, train_y, test_x, args.k, args.temperature, probe[len("knn_"):], num_classes)
    if probe == "linear_probe":
        return linear_probe(train_x, train_y, test_x, seed, num_classes=num_classes)
    return mlp_probe(train_x, train_y, test_x, args.mlp_epochs, seed, device=args.device, num_classes=num_classes)


def _probe_records(args, init: str, features, labels, splits, num_classes: int) -> dict:
    """Per-split run rows of every probe in ``args.probes``, label-fraction rows and the summed confusion
    matrices of the first seed's splits. kNN is deterministic: on a fixed split it runs once."""
    import numpy as np

    from .fractions import nested_label_fractions
    from .probes import linear_probe

    result = {"runs": [], "sweep": [], "confusion": {}}
    for seed, fold, train, test in splits:
        extra = {} if fold is None else {"fold": fold}
        for probe in args.probes:
            if probe.startswith("knn_") and fold is None and seed != args.seeds[0]:
                continue
            probs = _probe(args, probe, features[train], labels[train], features[test], seed, num_classes)
            record, metrics = _records(init, probe, seed, labels[test], probs, num_classes, **extra)
            result["runs"].append(record)
            if seed == args.seeds[0]:
                key = f"{init} {probe}"
                previous = result["confusion"].get(key, 0)
                result["confusion"][key] = (np.asarray(metrics["confusion_matrix"]) + previous).tolist()
        for fraction, subset in (nested_label_fractions(labels[train], args.fractions, seed).items()
                                 if args.fractions else ()):
            probs = linear_probe(features[train][subset], labels[train][subset], features[test], seed,
                                 num_classes=num_classes)
            result["sweep"].append(_records(init, "linear_probe", seed, labels[test], probs, num_classes,
                                            **extra, fraction=fraction)[0])
    return result


def probe_export(args, data: tuple[list[dict], list[str], list[tuple]]) -> list[dict]:
    """Run rows (``init, method, seed[, fold]`` and :data:`METRICS`) of the encoder(s) of ``args`` (see
    :func:`evaluation_args`) on ``data`` from :func:`labelled_data`: frozen features, then ``args.probes`` on
    every split. No report, no figures."""
    from .features import extract_features

    items, class_names, splits = data
    encoders, metadata = _encoders(args)
    dataset = _dataset(args, items, _patch_size(args, metadata), metadata)
    rows = []
    for init, encoder in encoders:
        features, labels = extract_features(encoder, dataset, args.batch_size, args.device)
        rows += _probe_records(args, init, features, labels, splits, len(class_names))["runs"]
    return rows


def _evaluate(args, init: str, encoder, dataset, splits, class_names: list[str]) -> dict:
    """Everything measured on one encoder: run rows, label-fraction rows, confusion matrices, representation
    quality and the t-SNE figure."""
    from .features import extract_features
    from .metrics import representation_quality
    from .plots import plot_tsne

    features, labels = extract_features(encoder, dataset, args.batch_size, args.device)
    print(f"{init}: {len(features)} labelled features of dimension {features.shape[1]}")
    result = _probe_records(args, init, features, labels, splits, len(class_names))
    result["quality"] = representation_quality(features, labels)
    result["tsne"] = args.out / f"tsne_{init}.png"
    plot_tsne(features, labels, result["tsne"], seed=args.seeds[0], class_names=class_names)
    return result


def run(args) -> None:
    """Run ``medssl3d evaluate`` (see the module docstring) with parsed ``args``."""
    from .plots import plot_label_fraction_curves
    from .report import write_report
    from .summary import summarize_runs

    if args.detections:
        from .detection import run as run_detection

        return run_detection(args)
    _check_chain(args)
    if getattr(args, "finetune", False) and args.folds is not None:
        raise InputError("medssl3d evaluate: --finetune needs the fixed split (training, validation and test items); "
                         "drop --folds, or evaluate with the probes only.")
    items, class_names, splits = labelled_data(args)
    encoders, metadata = _encoders(args)
    patch_size = _patch_size(args, metadata)
    dataset = _dataset(args, items, patch_size, metadata)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {init: _evaluate(args, init, encoder, dataset, splits, class_names) for init, encoder in encoders}
    runs = [row for result in results.values() for row in result["runs"]]
    finetune = None
    if args.finetune:  # the fine-tuning recipe beside the probes (method "finetune"), the same for every init
        from .finetune_command import finetune_rows

        rows, finetune = finetune_rows(args, items, len(splits[0][2]), splits[0][3], encoders, metadata,
                                       lambda subset: _dataset(args, subset, patch_size, metadata), len(class_names))
        runs += rows
    sweep = [row for result in results.values() for row in result["sweep"]]
    figures = [result["tsne"] for result in results.values()]
    n_test = len(splits[0][3])
    train_sizes = sorted({len(train) for _, _, train, _ in splits})
    metrics = {
        "setup": {
            "encoder": str(args.encoder) if args.encoder else "scratch", "architecture": metadata["architecture"],
            "spatial_dims": metadata["spatial_dims"], "in_channels": metadata["in_channels"],
            "patch_size": "x".join(map(str, patch_size)), "chain": args.chain, "datalist": str(args.datalist),
            "train_key": args.train_key, "test_key": args.test_key,
            "split": f"{args.folds}-fold cross-validation over both keys" if args.folds else "fixed",
            "n_train": train_sizes[0] if len(train_sizes) == 1 else f"{train_sizes[0]}-{train_sizes[-1]}",
            "n_test": n_test if args.folds is None else f"{len(items)} (every item once per seed)",
            "classes": ", ".join(class_names), "k": min(args.k, train_sizes[0]),
            "temperature": args.temperature, "seeds": " ".join(map(str, args.seeds)),
        },
        "classification": summarize_runs(runs, ["init", "method"], METRICS),
        "representation_quality": {init: result["quality"] for init, result in results.items()},
        "confusion_matrices": {k: v for result in results.values() for k, v in result["confusion"].items()},
    }
    if finetune:
        metrics["finetune"] = finetune
    per = "one row per seed" if args.folds is None else "one row per fold and seed"
    tables = {f"runs (test items, {per})": runs}
    if args.fractions:
        metrics["label_fractions"] = summarize_runs(sweep, ["init", "fraction"], METRICS)
        tables["label-fraction runs (linear probe)"] = sweep
        figures.append(args.out / "label_fractions.png")
        plot_label_fraction_curves(metrics["label_fractions"], "accuracy", figures[-1])
    title = f"medssl3d evaluation: {', '.join(results)} on {args.datalist.name}"
    report = write_report(args.out, metrics, tables, figures, title)
    for row in metrics["classification"]:
        print(f"{row['init']:<12} {row['method']:<15} accuracy {row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f}"
              f"  AUC {row['auc_mean']:.3f}  (n={row['n']})")
    print(f"report: {report}")
    print(f"metrics: {args.out / 'metrics.json'}")

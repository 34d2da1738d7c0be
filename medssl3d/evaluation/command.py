"""``medssl3d evaluate``: frozen-feature evaluation of an encoder export (or of a random encoder) on a labelled
datalist — kNN (weighted and majority), linear and MLP probes, representation quality, a t-SNE map and,
with ``--fractions``, a label-fraction sweep of the linear probe — written as ``report.md`` + ``metrics.json``.

Metrics are on the test items; kNN and probes are fitted on the training items; representation quality and
the t-SNE map use both together. Fine-tuning is the downstream bundles' job; this command never updates the
encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["METRICS", "add_parser", "run"]

METRICS = ("accuracy", "f1_weighted", "precision_weighted", "recall_weighted", "auc")


def add_parser(subparsers) -> None:
    """Register the ``evaluate`` subcommand on an ``argparse`` subparsers object."""
    from medssl3d.preprocessing import CHAINS

    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a pretrained encoder on a labelled datalist: kNN, linear/MLP probes, label fractions",
        description="Extract frozen features of an encoder export (or a random encoder with --scratch) on the "
        "training and test items of a datalist with 'class' labels, then write kNN, linear-probe and MLP-probe "
        "metrics, representation quality, a t-SNE plot and (with --fractions) a label-fraction sweep of the "
        "linear probe to OUT/report.md and OUT/metrics.json.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--encoder", type=Path, help="encoder export (.pt) written by pretraining")
    source.add_argument("--scratch", action="store_true", help="evaluate a randomly initialised encoder instead")
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
    parser.add_argument("--chain", required=True, help=f"preprocessing chain: one of {', '.join(CHAINS)}, or a YAML file")
    parser.add_argument("--out", required=True, type=Path, help="report folder")
    parser.add_argument("--fractions", type=float, nargs="+", default=None,
                        help="label fractions of the training set for the linear-probe sweep, e.g. 0.01 0.1 1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the probes and subsets (default 0)")
    parser.add_argument("--k", type=int, default=200, help="kNN neighbours (capped at the training set size)")
    parser.add_argument("--temperature", type=float, default=0.07, help="weighted-kNN temperature (default 0.07)")
    parser.add_argument("--mlp-epochs", type=int, default=100, help="MLP probe epochs (default 100)")
    parser.add_argument("--batch-size", type=int, default=16, help="feature extraction batch size")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(run=run)


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

    from medssl3d.engine import load_encoder_export
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
    return {"init": init, "method": method, **extra, "seed": seed, **{m: metrics[m] for m in METRICS}}, metrics


def _labelled_items(args) -> tuple[list[dict], list[dict], list[str]]:
    """Training and test items with ``class`` indices ``0..C-1`` (sorted label values), and the class names
    (the datalist's ``classes`` entry where it has one); fails early on labels no probe can use."""
    import numpy as np

    from .fractions import nested_label_fractions

    train_items = _read_items(args.datalist, args.train_key, args.label_key)
    test_items = _read_items(args.datalist, args.test_key, args.label_key)
    values = sorted({item["label_value"] for item in train_items + test_items}, key=lambda v: (str(type(v)), v))
    index = {value: i for i, value in enumerate(values)}
    for item in train_items + test_items:
        item["class"] = index[item.pop("label_value")]
    names = json.loads(args.datalist.read_text()).get("classes") or {}
    class_names = [str(names.get(str(value), value)) for value in values]
    if len(values) < 2:
        raise ValueError(f"datalist '{args.datalist}' holds a single class ({class_names[0]}); evaluation needs two.")
    train_labels = np.array([item["class"] for item in train_items])
    missing = [class_names[c] for c in sorted(set(range(len(values))) - set(train_labels.tolist()))]
    if missing:
        raise ValueError(f"datalist '{args.datalist}': class(es) {missing} of key {args.test_key} never occur in key "
                         f"{args.train_key}, so no classifier can learn them.")
    for seed in args.seeds if args.fractions else []:  # fail on an impossible fraction before any work
        nested_label_fractions(train_labels, args.fractions, seed)
    return train_items, test_items, class_names


def _evaluate(args, init: str, encoder, train_set, test_set, class_names: list[str]) -> dict:
    """Everything measured on one encoder: per-seed run rows, label-fraction rows, representation quality,
    confusion matrices (first seed), and the t-SNE figure."""
    import numpy as np

    from .features import extract_features
    from .fractions import nested_label_fractions
    from .knn import knn_classify
    from .metrics import representation_quality
    from .plots import plot_tsne
    from .probes import linear_probe, mlp_probe

    num_classes = len(class_names)
    train_x, train_y = extract_features(encoder, train_set, args.batch_size, args.device)
    test_x, test_y = extract_features(encoder, test_set, args.batch_size, args.device)
    print(f"{init}: {len(train_x)} training and {len(test_x)} test features of dimension {train_x.shape[1]}")
    probs = {f"knn_{vote}": [(args.seeds[0], knn_classify(train_x, train_y, test_x, args.k, args.temperature, vote,
                                                          num_classes))] for vote in ("weighted", "majority")}
    probs["linear_probe"] = [(s, linear_probe(train_x, train_y, test_x, s, num_classes=num_classes))
                             for s in args.seeds]
    probs["mlp_probe"] = [(s, mlp_probe(train_x, train_y, test_x, args.mlp_epochs, s, device=args.device,
                                        num_classes=num_classes)) for s in args.seeds]
    result = {"runs": [], "sweep": [], "confusion": {}}
    for method, outputs in probs.items():
        for seed, p in outputs:
            record, metrics = _records(init, method, seed, test_y, p, num_classes)
            result["runs"].append(record)
            result["confusion"].setdefault(f"{init} {method}", metrics["confusion_matrix"])
    both_x, both_y = np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])
    result["quality"] = representation_quality(both_x, both_y)
    result["tsne"] = args.out / f"tsne_{init}.png"
    plot_tsne(both_x, both_y, result["tsne"], seed=args.seeds[0], class_names=class_names)
    for seed in args.seeds if args.fractions else []:
        for fraction, subset in nested_label_fractions(train_y, args.fractions, seed).items():
            p = linear_probe(train_x[subset], train_y[subset], test_x, seed, num_classes=num_classes)
            result["sweep"].append(_records(init, "linear_probe", seed, test_y, p, num_classes, fraction=fraction)[0])
    return result


def run(args) -> None:
    """Run ``medssl3d evaluate`` (see the module docstring) with parsed ``args``."""
    from .plots import plot_label_fraction_curves
    from .report import write_report
    from .summary import summarize_runs

    train_items, test_items, class_names = _labelled_items(args)
    encoders, metadata = _encoders(args)
    patch_size = _patch_size(args, metadata)
    train_set = _dataset(args, train_items, patch_size, metadata)
    test_set = _dataset(args, test_items, patch_size, metadata)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {init: _evaluate(args, init, encoder, train_set, test_set, class_names) for init, encoder in encoders}
    runs = [row for result in results.values() for row in result["runs"]]
    sweep = [row for result in results.values() for row in result["sweep"]]
    figures = [result["tsne"] for result in results.values()]
    metrics = {
        "setup": {
            "encoder": str(args.encoder) if args.encoder else "scratch", "architecture": metadata["architecture"],
            "spatial_dims": metadata["spatial_dims"], "in_channels": metadata["in_channels"],
            "patch_size": "x".join(map(str, patch_size)), "chain": args.chain, "datalist": str(args.datalist),
            "train_key": args.train_key, "test_key": args.test_key, "n_train": len(train_items),
            "n_test": len(test_items), "classes": ", ".join(class_names), "k": min(args.k, len(train_items)),
            "temperature": args.temperature, "seeds": " ".join(map(str, args.seeds)),
        },
        "classification": summarize_runs(runs, ["init", "method"], METRICS),
        "representation_quality": {init: result["quality"] for init, result in results.items()},
        "confusion_matrices": {k: v for result in results.values() for k, v in result["confusion"].items()},
    }
    tables = {"runs (test set, one row per seed)": runs}
    if args.fractions:
        metrics["label_fractions"] = summarize_runs(sweep, ["init", "fraction"], METRICS)
        tables["label-fraction runs (linear probe)"] = sweep
        figures.append(args.out / "label_fractions.png")
        plot_label_fraction_curves(metrics["label_fractions"], "accuracy", figures[-1])
    title = f"medssl3d evaluation: {', '.join(results)} on {args.datalist.name}"
    report = write_report(args.out, metrics, tables, figures, title)
    for row in metrics["classification"]:
        print(f"{row['init']:<12} {row['method']:<15} accuracy {row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f}"
              f"  AUC {row['auc_mean']:.3f}")
    print(f"report: {report}")
    print(f"metrics: {args.out / 'metrics.json'}")

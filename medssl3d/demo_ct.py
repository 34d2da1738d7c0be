"""``medssl3d demo --synthetic-ct``: the whole 3D chain once, end to end, on a synthetic chest-CT cohort.

A smoke path for the 3D product (the main job, :mod:`medssl3d.demo`, runs on real radiographs):

1. synthesize a small chest-CT cohort (int16 HU, LPS, anisotropic spacing, nodules in a LUNA16-style CSV);
2. pretrain a 3D ResNet encoder with Models Genesis (Zhou et al., MedIA 2021) by running the
   ``bundles/genesis_ct`` bundle on the cohort's training volumes, without labels;
3. cut patches around the nodules (world-mm coordinates from the CSV, :mod:`medssl3d.prep.nodule_patches`),
   split by patient exactly as the cohort (the test patients' volumes were never seen in pretraining);
4. fine-tune benign-vs-malignant nodule classification with 10 % and 100 % of the training labels, from the
   pretrained encoder and from random initialisation with the same budget, over several seeds;
5. print AUC and accuracy (mean ± std, SSL vs scratch) and write a report folder (``metrics.json``,
   ``report.md``, label-fraction curve, t-SNE of the test embeddings, Grad-CAM overlays).

The synthetic nodules (4-7 mm, told apart only by shape) are not learnable at this budget: both inits stay
near chance (test AUC about 0.5). This path shows that every 3D step runs, not a pretraining gain. Uses a GPU
when one is present; about 6 minutes on 2 CPU cores.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigWorkflow
from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Orientation, ScaleIntensityRange
from monai.utils import set_determinism

from medssl3d.atomic import write_json_atomic
from medssl3d.data.synthetic import split_counts, synthesize_cohort
from medssl3d.prep.nodule_patches import check_candidates, extract_series, find_volumes, read_candidates
from medssl3d.preprocessing import configs_dir

__all__ = ["CTDemoSettings", "run_ct_demo"]

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
MIN_CASES = 4  # the smallest cohort with training, validation and test patients (70/10/20 split)
INITS = ("ssl", "scratch")  # pretrained (Models Genesis) vs random initialisation


@dataclass(frozen=True)
class CTDemoSettings:
    """Everything the demo does, with defaults sized for ~10 minutes on 2 CPU cores."""

    out: Path = Path("demo_output")
    cases: int = 64  # synthetic chest CTs; 70 % train / 10 % validation / 20 % test by patient
    ct_size: tuple[int, int, int] = (96, 96, 48)  # voxels at 0.7 x 0.7 x 2.5 mm
    encoder: str = "resnet10"
    pretrain_epochs: int = 10  # passes over the training volumes
    # Nodules are 4-7 mm across: pretraining and patches keep the scans' own 0.7 x 0.7 x 2.5 mm grid (the
    # bundle's 1 x 1 x 2 mm default would blur them) and the lung window, which shows their texture.
    spacing: tuple[float, float, float] = (0.7, 0.7, 2.5)
    window: tuple[float, float] = (-1000.0, 400.0)
    pretrain_crop: tuple[int, int, int] = (32, 32, 8)  # Genesis crops, the size of the nodule patches
    crops_per_volume: int = 4
    patch_size: tuple[int, int, int] = (32, 32, 8)  # 22 x 22 x 20 mm around each nodule
    fractions: tuple[float, ...] = (0.1, 1.0)  # shares of the training nodules whose labels are used
    seeds: tuple[int, ...] = (0, 1, 2)
    finetune_steps: int = 60  # optimiser steps of 16 patches per run, the same for every fraction and init
    finetune_batch: int = 16
    seed: int = 0

    def finetune_epochs(self, labelled: int) -> int:
        """Epochs that give ``finetune_steps`` optimiser steps on ``labelled`` patches (at least one epoch)."""
        return max(1, round(self.finetune_steps * self.finetune_batch / labelled))

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _step(number: int, text: str, start: float) -> None:
    print(f"[{number}/5 {time.perf_counter() - start:6.0f} s] {text}", flush=True)


def pretrain_genesis(settings: CTDemoSettings, dataset_dir: Path, output_dir: Path) -> Path:
    """Run the ``genesis_ct`` bundle on the cohort's training volumes; return the encoder export."""
    bundle = configs_dir().parent / "bundles" / "genesis_ct"
    train_volumes = split_counts(settings.cases)[0]
    iterations = settings.pretrain_epochs * -(-train_volumes // 2)
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.yaml"), workflow_type="train", bundle_root=str(bundle),
        dataset_dir=str(dataset_dir), output_dir=str(output_dir), encoder=settings.encoder,
        epochs=settings.pretrain_epochs, batch_size=2, crops_per_volume=settings.crops_per_volume,
        crop_size=list(settings.pretrain_crop), min_input_size=min(settings.pretrain_crop), num_workers=0,
        cache_rate=1.0, pixdim=list(settings.spacing), ct_windows={"demo": list(settings.window)}, ct_window="demo",
        warmup_iterations=max(1, iterations // 10), checkpoint_every=iterations, log_every=10,
        seed=settings.seed, resume=False, device=f"$torch.device('{settings.device.type}')",
        **{"train#trainer#monitoring#progress_bar": sys.stdout.isatty()},  # no carriage returns in a log file
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return output_dir / "encoder.pt"


def nodule_patches(settings: CTDemoSettings, dataset_dir: Path, out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Patches around every CSV nodule, windowed like pretraining; ``{"training"|"test": (images, classes)}``.

    Nodules of the cohort's validation and test patients form the test set, so no test patient's volume was
    seen in pretraining.
    """
    import json

    datalist = json.loads((dataset_dir / "datalist.json").read_text())
    split_of = {Path(item["image"]).name.split(".")[0]: ("training" if key == "training" else "test")
                for key in ("training", "validation", "test") for item in datalist[key]}
    candidates = read_candidates(dataset_dir / "nodules.csv")
    volumes = find_volumes(dataset_dir / "imagesTr")
    check_candidates(candidates, volumes, dataset_dir / "nodules.csv")
    load = Compose([
        LoadImage(image_only=True), EnsureChannelFirst(), Orientation(axcodes="RAS", labels=RAS_LABELS),
        ScaleIntensityRange(*settings.window, 0.0, 1.0, clip=True),
    ])
    by_series: dict[str, list] = {}
    for candidate in candidates:
        by_series.setdefault(candidate.seriesuid, []).append(candidate)
    splits: dict[str, tuple[list, list]] = {"training": ([], []), "test": ([], [])}
    for series, series_candidates in sorted(by_series.items()):
        items = extract_series(volumes[series], series_candidates, out, settings.patch_size, settings.spacing,
                               overwrite=True)
        images, classes = splits[split_of[series]]
        for item in items:
            images.append(torch.as_tensor(load(str(out / item["image"]))).float())
            classes.append(item["class"])
    return {key: (torch.stack(images).numpy(), np.asarray(classes, dtype=np.int64))
            for key, (images, classes) in splits.items()}


def _random_flips(batch: torch.Tensor) -> torch.Tensor:
    """Fine-tuning augmentation: flip each spatial axis of the whole batch with probability 0.5."""
    axes = [axis for axis in range(2, batch.ndim) if torch.rand(()) < 0.5]
    return batch.flip(axes) if axes else batch


def fine_tune_sweep(settings: CTDemoSettings, encoder_export: Path, patches: dict) -> tuple[list[dict], torch.nn.Module]:
    """Fine-tune a classifier for every (init, fraction, seed); return one record of test metrics each, and the
    pretrained model fine-tuned on the most labels with the first seed (for the Grad-CAM figure)."""
    from medssl3d.evaluation import classification_metrics, fine_tune_classifier, nested_label_fractions, predict_proba
    from medssl3d.transfer import build_classifier

    train_images, train_classes = patches["training"]
    test_images, test_classes = patches["test"]
    records, shown = [], None
    for seed in settings.seeds:
        subsets = nested_label_fractions(train_classes, settings.fractions, seed=seed)
        for fraction in settings.fractions:
            index = subsets[fraction]
            for init in INITS:
                set_determinism(seed=seed)  # the same head initialisation and batch order for both inits
                model = build_classifier(
                    2, encoder=settings.encoder, spatial_dims=3, in_channels=1,
                    pretrained_encoder=encoder_export if init == "ssl" else None,
                )
                fine_tune_classifier(
                    model, torch.as_tensor(train_images[index]), torch.as_tensor(train_classes[index]),
                    epochs=settings.finetune_epochs(len(index)), batch_size=settings.finetune_batch, lr=1e-3, seed=seed,
                    device=settings.device, augment=_random_flips,
                )
                probs = predict_proba(model, torch.as_tensor(test_images), device=settings.device)
                metrics = classification_metrics(test_classes, probs, num_classes=2)
                records.append({"init": init, "fraction": fraction, "seed": seed, "labelled": len(index),
                                **metrics})
                if init == "ssl" and fraction == max(settings.fractions) and shown is None:
                    shown = model
    set_determinism(seed=None)
    return records, shown


def _embeddings(encoder_export: Path, images: np.ndarray, classes: np.ndarray, device: torch.device) -> np.ndarray:
    """Frozen pretrained-encoder embeddings of ``images`` (for the t-SNE plot)."""
    from medssl3d.encoder_export import load_encoder_export
    from medssl3d.evaluation import extract_features

    encoder, _ = load_encoder_export(encoder_export)
    data = [{"image": torch.as_tensor(image), "class": int(c)} for image, c in zip(images, classes, strict=True)]
    features, _ = extract_features(encoder, data, device=device)
    return features


def write_demo_report(settings: CTDemoSettings, records: list[dict], model: torch.nn.Module, encoder_export: Path,
                      patches: dict, seconds: dict[str, float]) -> tuple[Path, list[dict]]:
    """Report folder: metrics.json, report.md, label-fraction curves, t-SNE, Grad-CAM; returns (report, summary)."""
    from medssl3d.evaluation import (
        gradcam_overlays,
        plot_label_fraction_curves,
        plot_tsne,
        representation_quality,
        summarize_runs,
        write_report,
    )
    report_dir = settings.out / "report"
    metric_keys = ["auc", "accuracy", "f1_weighted"]
    summary = summarize_runs(records, ["fraction", "init"], metric_keys)
    figures = [plot_label_fraction_curves(summary, metric, report_dir / f"label_fraction_{metric}.png")
               for metric in ("auc", "accuracy")]
    test_images, test_classes = patches["test"]
    features = _embeddings(encoder_export, test_images, test_classes, settings.device)
    figures.append(report_dir / "tsne_pretrained_test.png")
    plot_tsne(features, test_classes, figures[-1], seed=settings.seed, class_names=["benign-like", "malignant-like"])
    figures.append(report_dir / "gradcam_test.png")
    # layer1 keeps 8 x 8 x 2 voxels of a 32 x 32 x 8 patch (layer4 is one voxel: a flat map)
    gradcam_overlays(model.cpu(), torch.as_tensor(test_images[:8]), figures[-1], target_layer="encoder.layer1")
    metrics = {
        "cohort": {"cases": settings.cases, "training_nodules": len(patches["training"][1]),
                   "test_nodules": len(test_classes), "seeds": len(settings.seeds)},
        "pretrained_test_embeddings": representation_quality(features, test_classes),
        "seconds": seconds,
    }
    tables = {"fine-tuning on the test nodules (mean ± std over seeds)": summary, "every run": records}
    report = write_report(report_dir, metrics, tables, figures, title="medssl3d demo: Models Genesis vs scratch")
    return report, summary


def _print_table(summary: list[dict]) -> None:
    print(f"{'labels':>7} {'init':>8} {'AUC':>15} {'accuracy':>15}")
    for row in summary:
        print(f"{row['fraction']:>7.0%} {row['init']:>8} {row['auc_mean']:>8.3f} ± {row['auc_std']:.3f} "
              f"{row['accuracy_mean']:>8.3f} ± {row['accuracy_std']:.3f}")


def run_ct_demo(settings: CTDemoSettings) -> Path:
    """Run the five steps (module docstring); return the report's path."""
    if settings.cases < MIN_CASES:
        raise ValueError(f"--cases must be at least {MIN_CASES} (training, validation and test patients), "
                         f"got {settings.cases}.")
    start, seconds = time.perf_counter(), {}
    out = settings.out
    _step(1, f"synthesizing {settings.cases} chest CTs ({'x'.join(map(str, settings.ct_size))} voxels, int16 HU, "
          "LPS) with nodules ...", start)
    datalist = synthesize_cohort("ct", settings.cases, out / "synthetic_ct", settings.ct_size, seed=settings.seed,
                                 overwrite=True, progress=False)
    seconds["synthesis"] = time.perf_counter() - start
    _step(2, f"Models Genesis pretraining (bundles/genesis_ct, {settings.encoder}, {settings.pretrain_epochs} "
          f"epochs, device {settings.device.type}) on the training volumes, no labels ...", start)
    encoder_export = pretrain_genesis(settings, datalist.parent, out / "pretraining")
    seconds["pretraining"] = time.perf_counter() - start - sum(seconds.values())
    _step(3, "extracting nodule patches from the CSV's world coordinates ...", start)
    patches = nodule_patches(settings, datalist.parent, out / "nodule_patches")
    seconds["patches"] = time.perf_counter() - start - sum(seconds.values())
    counts = {key: len(classes) for key, (_, classes) in patches.items()}
    _step(4, f"fine-tuning nodule classification ({counts['training']} training, {counts['test']} test nodules) at "
          f"{', '.join(f'{f:.0%}' for f in settings.fractions)} of the labels, pretrained vs scratch, "
          f"{len(settings.seeds)} seeds ...", start)
    records, model = fine_tune_sweep(settings, encoder_export, patches)
    seconds["fine_tuning"] = time.perf_counter() - start - sum(seconds.values())
    _step(5, "writing the report ...", start)
    report, summary = write_demo_report(settings, records, model, encoder_export, patches, seconds)
    write_json_atomic({"records": records}, out / "report" / "runs.json")
    print()
    _print_table(summary)
    print(f"\ndone in {time.perf_counter() - start:.0f} s. Report: {report}  Encoder: {encoder_export}")
    return report

"""The main job, ``medssl3d demo``: does self-supervised pretraining help a small labelled task?

On a fresh machine with no data it runs the product's real path once, end to end, on real radiographs shipped
with the package (PneumoniaMNIST of MedMNIST v2, CC BY 4.0, see ``medssl3d/data/medmnist/ATTRIBUTION.md``):

1. convert the ``.npz`` into PNG files and a datalist with the official splits (:mod:`medssl3d.prep.medmnist`,
   as ``data_prep/medmnist.py`` does for a user's file);
2. pretrain a 2D ResNet-10 encoder with SimCLR (Chen et al., ICML 2020) by running the ``contrastive_xray``
   bundle on the training images, without their labels; its encoder export is the pretrained init;
3. load every split through the ``xray_cls`` bundle's preprocessing chain (min-max, CLAHE, resize, pad);
4. fine-tune normal-vs-pneumonia classification with 1 %, 10 % and 100 % of the training labels, from the
   pretrained encoder and from random initialisation, with the same budget (training images drawn) and the same
   selection (the epoch with the best validation AUC), over 3 seeds;
5. print test AUC and accuracy (mean ± std over the seeds, SSL vs scratch) and write ``<out>/report/``
   (``report.md``, ``metrics.json``, ``runs.json``, label-fraction curve with error bars, t-SNE of the test
   embeddings pretrained vs scratch, Grad-CAM on correctly and wrongly classified test images). The
   intermediate files are deleted; ``<out>/encoder.pt`` (the pretrained encoder) and the report stay.

``--data`` runs the same on another 2D grey MedMNIST file; ``--synthetic-ct`` runs the 3D chain on a synthetic
chest-CT cohort instead (:mod:`medssl3d.demo_ct`, a smoke path). Uses a GPU when one is present.
"""

from __future__ import annotations

import argparse
import copy
import math
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.transforms import Compose, RandGaussianSmooth
from monai.utils import set_determinism

from medssl3d.atomic import write_json_atomic
from medssl3d.errors import InputError
from medssl3d.preprocessing import configs_dir

__all__ = ["PNEUMONIAMNIST", "DemoSettings", "add_parser", "run_demo"]

PNEUMONIAMNIST = Path(__file__).parent / "data" / "medmnist" / "pneumoniamnist.npz"
INITS = ("ssl", "scratch")  # fine-tuned from the SimCLR export vs from random initialisation
STEPS = 5


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo does; the defaults take about 5 minutes of one CPU core (README)."""

    out: Path = Path("demo_output")
    data: Path = PNEUMONIAMNIST  # a 2D grey MedMNIST .npz
    class_names: tuple[str, ...] | None = ("normal", "pneumonia")  # None: the class indices
    max_images: int | None = None  # per split, a stratified subset of at most this many (None: all)
    encoder: str = "resnet10"
    stem_kernel: int = 3  # first convolution 3 x 3 (a 7-wide kernel spans a quarter of a 28-pixel image)
    pretrain_epochs: int = 3  # SimCLR passes over the training images (74 iterations each at 4,708 images)
    pretrain_batch: int = 64
    view_crop_scale: tuple[float, float] = (0.5, 1.0)  # each view keeps 50-100 % of a 28-pixel image
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)  # shares of the training labels used for fine-tuning
    seeds: tuple[int, ...] = (0, 1, 2)  # label subset, head initialisation, batch order, augmentation
    # training images drawn per run at least (whole epochs), the same for every fraction and init: a short
    # budget (1 %: 11 epochs of 47 images, 16 optimiser steps), where a pretrained init pays off most
    finetune_images: int = 500
    finetune_batch: int = 32
    lr: float = 1e-3  # head learning rate (AdamW); scratch trains everything at this rate
    encoder_lr_scale: float = 0.3  # a pretrained encoder trains at 0.3 x lr, so little data does not erase it
    val_evaluations: int = 4  # validation AUC measured this many times per run; the best epoch is kept
    explain_layer: str = "encoder.layer2"  # Grad-CAM stage: 4 x 4 of a 28-pixel image (layer4 is 1 x 1)
    keep_intermediates: bool = False  # keep the PNGs, checkpoints and TensorBoard logs under <out>/work
    # torch CPU threads: at 28 pixels a second thread gains little, and on a machine shared with other jobs it
    # costs several times the CPU time; one thread also makes the printed numbers independent of the core count
    threads: int = 1
    seed: int = 0  # pretraining seed
    device: torch.device = field(
        default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"))

    @classmethod
    def smoke(cls, **overrides) -> DemoSettings:
        """A run of well under a minute on CPU (the tests' size): 200 training images, 2 fractions, 2 seeds."""
        return replace(cls(max_images=200, pretrain_epochs=1, pretrain_batch=32, fractions=(0.1, 1.0), seeds=(0, 1),
                           finetune_images=64, val_evaluations=2), **overrides)

    def epochs(self, labelled: int) -> int:
        """Fine-tuning epochs on ``labelled`` images: the fewest whole epochs that draw ``finetune_images``."""
        return max(1, math.ceil(self.finetune_images / labelled))


class Progress:
    """Numbered stage lines and plain text lines with the elapsed time; never a carriage return, so a log file
    (``medssl3d demo > log``) reads like the terminal."""

    def __init__(self) -> None:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def cpu(self) -> float:
        """CPU seconds of this process (all threads) since the start."""
        return time.process_time() - self.cpu_start

    def stage(self, number: int, text: str) -> None:
        print(f"[{number}/{STEPS} {self.elapsed():5.0f} s] {text}", flush=True)

    def line(self, text: str) -> None:
        print(f"    {text}", flush=True)


class EpochLines:
    """Ignite handler: one line per pretraining epoch (mean loss, elapsed). The bundle's progress bar runs only
    on a terminal; this line is what a log gets."""

    def __init__(self, progress: Progress, epochs: int) -> None:
        self.progress, self.epochs, self.losses = progress, epochs, []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: self.losses.append(float(e.state.output["loss"])))
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_completed(self, engine) -> None:
        self.progress.line(f"pretraining epoch {engine.state.epoch}/{self.epochs}: {len(self.losses)} iterations, "
                           f"mean loss {np.mean(self.losses):.3f} ({self.progress.elapsed():.0f} s)")
        self.losses = []


def _stratified(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``count`` images with the class proportions kept (every class keeps at least one)."""
    from medssl3d.evaluation import nested_label_fractions

    if count >= len(labels):
        return images, labels
    index = nested_label_fractions(labels, [count / len(labels)], seed=seed)[count / len(labels)]
    return images[index], labels[index]


def prepare_dataset(settings: DemoSettings, work: Path) -> tuple[Path, dict]:
    """Check ``settings.data``, take the subset ``max_images`` asks for, convert it with
    :func:`medssl3d.prep.medmnist.convert_medmnist`; return (dataset folder, description of the data)."""
    from medssl3d.prep.medmnist import MEDMNIST_SPLITS, REFERENCE, convert_medmnist, read_medmnist

    try:
        splits = read_medmnist(settings.data)
    except ValueError as error:
        raise InputError(f"{error} Pass a MedMNIST v2 .npz with --data, or leave it out for the packaged "
                         "PneumoniaMNIST.") from error
    images = splits["training"][0]
    if images.ndim != 3:
        raise InputError(f"{settings.data}: images of shape {images.shape[1:]}; the demo runs 2D grey MedMNIST "
                         "files (N, H, W) such as pneumoniamnist.npz or breastmnist.npz. Use --synthetic-ct for 3D.")
    source = settings.data
    if settings.max_images is not None:
        splits = {key: _stratified(*split, settings.max_images, settings.seed) for key, split in splits.items()}
        source = work / f"{settings.data.stem}_subset.npz"
        source.parent.mkdir(parents=True, exist_ok=True)
        np.savez(source, **{f"{prefix}_{kind}": splits[key][index] for prefix, key in MEDMNIST_SPLITS.items()
                            for index, kind in enumerate(("images", "labels"))})
    datalist = convert_medmnist(source, work / "dataset", image_format="png", label_fractions=(),
                                seed=settings.seed, class_names=settings.class_names, overwrite=True)
    description = {"file": settings.data.name, "reference": REFERENCE, "image_size": images.shape[1],
                   **{f"{key}_images": len(labels) for key, (_, labels) in splits.items()},
                   "training_images_per_class": ", ".join(map(str, np.bincount(splits["training"][1])))}
    return datalist.parent, description


def xray_views_without_blur(size, crop_scale, horizontal_axis: int) -> Compose:
    """:func:`medssl3d.transforms.xray_views_2d` without its Gaussian blur: sigma up to 2 pixels erases most of a
    28-pixel image, the remaining views (crop, flip, histogram shift, noise) keep what tells the classes apart."""
    from medssl3d.transforms import xray_views_2d

    chain = xray_views_2d(size, crop_scale, horizontal_axis=horizontal_axis)
    return Compose([t for t in chain.transforms if not isinstance(t, RandGaussianSmooth)])


def pretrain_simclr(settings: DemoSettings, dataset_dir: Path, output_dir: Path, image_size: int,
                    progress: Progress) -> Path:
    """Run the ``contrastive_xray`` bundle (SimCLR) on the training list; return the encoder export."""
    bundle = configs_dir().parent / "bundles" / "contrastive_xray"
    training = len(ConfigParser.load_config_file(str(dataset_dir / "datalist.json"))["training"])
    iterations = settings.pretrain_epochs * math.ceil(training / settings.pretrain_batch)
    encoder_kwargs = {"conv1_t_size": settings.stem_kernel}
    overrides = {
        "network_def": f"$medssl3d.networks.build_encoder(@encoder, spatial_dims=2, in_channels=1, "
                       f"conv1_t_size={settings.stem_kernel})",
        "train#trainer#export_metadata#encoder_kwargs": encoder_kwargs,
        "train#random_transforms#0#view_transform":
            "$medssl3d.demo.xray_views_without_blur(@view_size, @view_crop_scale, @horizontal_axis)",
        "train#trainer#monitoring#progress_bar": sys.stdout.isatty(),  # bars on a terminal, EpochLines in a log
        "train#dataset#progress": sys.stdout.isatty(),
        "train#handlers": [EpochLines(progress, settings.pretrain_epochs)],
    }
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.yaml"), workflow_type="train", bundle_root=str(bundle),
        dataset_dir=str(dataset_dir), output_dir=str(output_dir), encoder=settings.encoder, method="simclr",
        epochs=settings.pretrain_epochs, batch_size=settings.pretrain_batch, num_workers=0, cache_rate=1.0,
        image_size=image_size, view_crop_scale=list(settings.view_crop_scale), min_input_size=min(16, image_size),
        warmup_iterations=max(1, iterations // 10), checkpoint_every=iterations, log_every=max(1, iterations // 10),
        seed=settings.seed, resume=False, device=f"$torch.device('{settings.device.type}')", **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return output_dir / "encoder.pt"


def xray_cls_chains(image_size: int) -> tuple[Compose, Compose]:
    """The ``xray_cls`` bundle's deterministic chain (min-max, CLAHE, resize, pad: the one its training,
    evaluation and inference share) and its training augmentation (RandAffined: rotation, scale, translation,
    p = 0.5; no flips), for images of ``image_size`` pixels."""
    parser = ConfigParser()
    parser.read_config(str(configs_dir().parent / "bundles" / "xray_cls" / "configs" / "train.yaml"))
    parser["image_size"] = image_size
    parser.get_parsed_content("imports")
    return Compose(parser.get_parsed_content("image_transforms")), Compose(parser.get_parsed_content(
        "train#random_transforms"))


def load_splits(dataset_dir: Path, chain: Compose) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every list of the datalist through ``chain``: ``{"training"|"validation"|"test": (images (N, 1, S, S),
    classes (N,))}``."""
    from medssl3d.data import load_datalist

    splits = {}
    for key in ("training", "validation", "test"):
        items = [chain(item) for item in load_datalist(dataset_dir / "datalist.json", key, dataset_dir)]
        splits[key] = (torch.stack([torch.as_tensor(item["image"]) for item in items]).numpy(),
                       np.asarray([item["class"] for item in items], dtype=np.int64))
    return splits


def batch_augmentation(augmentation: Compose, seed: int):
    """``augmentation`` (a dictionary chain on ``"image"``) applied to each image of a batch, seeded."""
    augmentation.set_random_state(seed=seed)
    return lambda batch: torch.stack([torch.as_tensor(augmentation({"image": image})["image"]) for image in batch])


def fine_tune_run(settings: DemoSettings, pretrained: dict | None, splits: dict, index: np.ndarray, seed: int,
                  num_classes: int, augmentation: Compose) -> tuple[torch.nn.Module, dict]:
    """Fine-tune one classifier on the training images ``index``, its encoder initialised from the ``pretrained``
    state dict or at random (``None``); keep the evaluated epoch with the best validation AUC. Returns (model in
    eval mode, record of the run's test metrics)."""
    from medssl3d.evaluation import classification_metrics, fine_tune_classifier, predict_proba
    from medssl3d.networks import build_encoder
    from medssl3d.transfer import EncoderClassifier

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (splits[k] for k in ("training", "validation", "test"))
    start = time.perf_counter()
    set_determinism(seed=seed)  # both inits build the same network from the same random state ...
    model = EncoderClassifier(build_encoder(settings.encoder, 2, 1, conv1_t_size=settings.stem_kernel), num_classes)
    encoder_lr = None  # scratch trains everything at lr
    if pretrained is not None:  # ... then the pretrained one takes the exported encoder weights
        model.encoder.load_state_dict(pretrained)
        encoder_lr = settings.lr * settings.encoder_lr_scale
    epochs = settings.epochs(len(index))
    every = max(1, epochs // max(1, settings.val_evaluations))
    best = {"auc": -math.inf, "epoch": epochs, "state": None}

    def keep_best(epoch: int, _loss: float) -> None:
        if (epoch + 1) % every and epoch + 1 != epochs:
            return
        auc = classification_metrics(val_y, predict_proba(model, val_x, 256, settings.device), num_classes)["auc"]
        model.train()
        if auc > best["auc"]:
            best.update(auc=auc, epoch=epoch + 1, state=copy.deepcopy(model.state_dict()))

    fine_tune_classifier(model, train_x[index], train_y[index], epochs=epochs, batch_size=settings.finetune_batch,
                         lr=settings.lr, encoder_lr=encoder_lr, seed=seed, device=settings.device,
                         augment=batch_augmentation(augmentation, seed), class_balanced=True, on_epoch_end=keep_best)
    model.load_state_dict(best["state"])
    model.eval()
    probs = predict_proba(model, test_x, 256, settings.device)
    metrics = classification_metrics(test_y, probs, num_classes)
    record = {"seed": seed, "labelled": len(index), "epochs": epochs, "epoch_kept": best["epoch"],
              "val_auc": best["auc"], **{k: metrics[k] for k in ("auc", "accuracy", "f1_weighted")},
              "seconds": round(time.perf_counter() - start, 1)}
    return model, record


def fine_tune_sweep(settings: DemoSettings, export: Path, splits: dict, augmentation: Compose,
                    progress: Progress) -> tuple[list[dict], dict[str, torch.nn.Module]]:
    """Every (seed, fraction, init); returns the records and the two seed-0 models at the smallest fraction
    (for the t-SNE and Grad-CAM figures)."""
    from medssl3d.evaluation import nested_label_fractions
    from medssl3d.transfer import build_classifier

    train_y = splits["training"][1]
    num_classes = int(max(labels.max() for _, labels in splits.values())) + 1
    # the export read once, through the downstream loader (it checks the metadata and reports the keys loaded)
    pretrained = build_classifier(num_classes, pretrained_encoder=export).encoder.state_dict()
    records, shown = [], {}
    for seed in settings.seeds:
        subsets = nested_label_fractions(train_y, settings.fractions, seed=seed)
        for fraction in sorted(settings.fractions):
            for init in INITS:
                model, record = fine_tune_run(settings, pretrained if init == "ssl" else None, splits,
                                              subsets[fraction], seed, num_classes, augmentation)
                records.append({"fraction": fraction, "init": init, **record})
                progress.line(f"seed {seed}, {fraction:>4.0%} labels ({record['labelled']:>4} images), {init:>7}: "
                              f"test AUC {record['auc']:.3f}, accuracy {record['accuracy']:.3f} "
                              f"(epoch {record['epoch_kept']}/{record['epochs']} kept, {record['seconds']:.0f} s)")
                if seed == settings.seeds[0] and fraction == min(settings.fractions):
                    shown[init] = model
    set_determinism(seed=None)
    return records, shown


def _class_names(settings: DemoSettings, num_classes: int) -> list[str]:
    return list(settings.class_names) if settings.class_names else [str(c) for c in range(num_classes)]


def plot_tsne_pair(models: dict[str, torch.nn.Module], images: np.ndarray, classes: np.ndarray, names: list[str],
                   title: str, path: Path, seed: int) -> dict[str, dict]:
    """t-SNE (scikit-learn, PCA init) of the test embeddings of each model, side by side, coloured by class;
    returns :func:`medssl3d.evaluation.representation_quality` of each model's embeddings."""
    from matplotlib.figure import Figure
    from sklearn.manifold import TSNE

    from medssl3d.atomic import atomic_path
    from medssl3d.evaluation import extract_features, representation_quality

    items = [{"image": torch.as_tensor(image), "class": int(c)} for image, c in zip(images, classes, strict=True)]
    figure = Figure(figsize=(5 * len(models), 4.6))
    quality = {}
    for column, (init, model) in enumerate(models.items()):
        features, _ = extract_features(model.encoder, items, batch_size=256, device=next(model.parameters()).device)
        quality[init] = representation_quality(features, classes)
        perplexity = max(1.0, min(30.0, (len(features) - 1) / 3))
        embedding = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
        axes = figure.add_subplot(1, len(models), column + 1)
        for c in np.unique(classes):
            axes.scatter(*embedding[classes == c].T, s=8, alpha=0.7, label=names[int(c)])
        axes.set_title(f"{init} (silhouette {quality[init]['silhouette']:.2f})")
        axes.set_xticks([])
        axes.set_yticks([])
        axes.legend(title="class", fontsize="small", markerscale=2)
    figure.suptitle(title)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, bbox_inches="tight", format="png")
    return quality


def plot_gradcam_pair(models: dict[str, torch.nn.Module], images: np.ndarray, classes: np.ndarray,
                      names: list[str], layer: str, caption: str, path: Path, per_kind: int = 4) -> list[int]:
    """Grad-CAM (``monai.visualize.GradCAM``, upsampled to the image) of the predicted class at ``layer``, one
    row per model, on the same test images: ``per_kind`` the first model classifies correctly and ``per_kind``
    it gets wrong. Each panel names the true and predicted class. Returns the test indices shown."""
    from matplotlib.figure import Figure
    from monai.visualize import GradCAM

    from medssl3d.atomic import atomic_path
    from medssl3d.evaluation import predict_proba

    x = torch.as_tensor(images).float()
    first = next(iter(models.values()))
    predicted = predict_proba(first.cpu(), x).argmax(1)
    right, wrong = np.flatnonzero(predicted == classes), np.flatnonzero(predicted != classes)
    shown = [*right[:per_kind], *wrong[:per_kind]]
    figure = Figure(figsize=(1.75 * len(shown), 1.95 * len(models) + 0.5))
    for row, (init, model) in enumerate(models.items()):
        model = copy.deepcopy(model).cpu().eval()
        cam = GradCAM(nn_module=model, target_layers=layer)
        probs = predict_proba(model, x[shown])
        for column, index in enumerate(shown):
            heat = cam(x=x[index : index + 1]).detach().numpy()[0, 0].T  # MONAI's PIL reader gives (W, H)
            axes = figure.add_subplot(len(models), len(shown), row * len(shown) + column + 1)
            axes.imshow(x[index, 0].numpy().T, cmap="gray")
            axes.imshow(heat, cmap="jet", alpha=0.6 * heat, vmin=0, vmax=1)  # the weak part stays see-through
            guess = int(probs[column].argmax())
            mark = "\u2713" if guess == classes[index] else "\u2717"
            axes.set_title(f"true {names[classes[index]]}\ngot {names[guess]} {probs[column, guess]:.2f} {mark}",
                           fontsize=7)
            axes.set_axis_off()
            if column == 0:
                axes.text(-0.1, 0.5, init, transform=axes.transAxes, rotation=90, ha="right", va="center")
    figure.suptitle(f"Grad-CAM at {layer} (upsampled) of the predicted class, {caption}: test images the "
                    f"{next(iter(models))} model classifies right (left {min(per_kind, len(right))}) and wrong "
                    f"(right {min(per_kind, len(wrong))})", fontsize=8)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, bbox_inches="tight", format="png")
    return [int(i) for i in shown]


def write_demo_report(settings: DemoSettings, records: list[dict], models: dict, splits: dict, data: dict,
                      seconds: dict[str, float], report_dir: Path) -> tuple[Path, list[dict]]:
    """metrics.json, runs.json, report.md and the figures; returns (report.md, summary rows)."""
    from medssl3d.evaluation import plot_label_fraction_curves, summarize_runs, write_report

    summary = summarize_runs(records, ["fraction", "init"], ["auc", "accuracy", "f1_weighted"])
    test_x, test_y = splits["test"]
    names = _class_names(settings, int(test_y.max()) + 1)
    smallest = min(settings.fractions)
    figures = [plot_label_fraction_curves(summary, "auc", report_dir / "label_fraction_auc.png")]
    caption = f"after fine-tuning with {smallest:.0%} of the labels (seed {settings.seeds[0]})"
    figures.append(report_dir / "tsne_test_embeddings.png")
    quality = plot_tsne_pair(models, test_x, test_y, names, f"test embeddings {caption}", figures[-1], settings.seed)
    figures.append(report_dir / "gradcam_test.png")
    shown = plot_gradcam_pair(models, test_x, test_y, names, settings.explain_layer, caption, figures[-1])
    gain = _gain(summary, smallest)
    metrics = {
        "data": data,
        "seeds": list(settings.seeds),
        "fractions": list(settings.fractions),
        "pretraining": {"method": "simclr", "bundle": "contrastive_xray", "encoder": settings.encoder,
                        "stem_kernel": settings.stem_kernel, "epochs": settings.pretrain_epochs,
                        "batch": settings.pretrain_batch},
        "fine_tuning": {"images_drawn_per_run": settings.finetune_images, "batch": settings.finetune_batch,
                        "lr": settings.lr, "encoder_lr_scale_pretrained": settings.encoder_lr_scale,
                        "class_balanced": True, "seeds": ", ".join(map(str, settings.seeds)),
                        "selection": f"best validation AUC, measured every max(1, epochs // "
                        f"{settings.val_evaluations}) epochs and at the last"},
        f"auc_gain_at_{smallest:g}": gain,
        "test_embedding_quality_smallest_fraction": quality,
        "gradcam_test_indices": shown,
        "seconds": {key: round(value, 1) for key, value in seconds.items()},
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "device": settings.device.type,
        "torch_threads": torch.get_num_threads(),
    }
    tables = {"test metrics (mean ± std over seeds)": summary, "every run": records}
    report = write_report(report_dir, metrics, tables, figures, title="medssl3d demo: SimCLR pretraining vs scratch "
                          f"on {data['file']}")
    write_json_atomic({"records": records}, report_dir / "runs.json")
    return report, summary


def _gain(summary: list[dict], fraction: float) -> float:
    auc = {row["init"]: row["auc_mean"] for row in summary if row["fraction"] == fraction}
    return round(auc["ssl"] - auc["scratch"], 4)


def _print_table(summary: list[dict], seeds: tuple[int, ...]) -> None:
    print(f"test metrics, mean ± std over seeds {', '.join(map(str, seeds))}:")
    print(f"{'labels':>7} {'init':>8} {'AUC':>15} {'accuracy':>15}")
    for row in sorted(summary, key=lambda row: (row["fraction"], INITS.index(row["init"]))):
        print(f"{row['fraction']:>7.0%} {row['init']:>8} {row['auc_mean']:>8.3f} ± {row['auc_std']:.3f} "
              f"{row['accuracy_mean']:>8.3f} ± {row['accuracy_std']:.3f}")


def _megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def run_demo(settings: DemoSettings) -> Path:
    """Run the five steps (module docstring) with ``settings.threads`` torch threads; return the report's path."""
    previous = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _run_steps(settings)
    finally:
        torch.set_num_threads(previous)


def _run_steps(settings: DemoSettings) -> Path:
    progress, seconds = Progress(), {}
    out, work = settings.out, settings.out / "work"

    def lap(name: str) -> None:  # wall-clock seconds of each stage
        seconds[name] = progress.elapsed() - sum(v for k, v in seconds.items() if not k.startswith("cpu"))

    progress.stage(1, f"converting {settings.data.name} to PNG files and a datalist ...")
    dataset_dir, data = prepare_dataset(settings, work)
    image_size = data["image_size"]
    progress.line(f"{data['training_images']} training, {data['validation_images']} validation and "
                  f"{data['test_images']} test images of {image_size}x{image_size} pixels")
    lap("conversion")
    progress.stage(2, f"SimCLR pretraining (bundles/contrastive_xray, {settings.encoder}, {settings.pretrain_epochs} "
                   f"epochs, device {settings.device.type}) on the training images, no labels ...")
    export = pretrain_simclr(settings, dataset_dir, work / "pretraining", image_size, progress)
    lap("pretraining")
    progress.stage(3, "loading every split through the xray_cls bundle's preprocessing ...")
    chain, augmentation = xray_cls_chains(image_size)
    splits = load_splits(dataset_dir, chain)
    lap("loading")
    progress.stage(4, f"fine-tuning at {', '.join(f'{f:.0%}' for f in sorted(settings.fractions))} of the labels, "
                   f"pretrained (ssl) vs random init (scratch), seeds {', '.join(map(str, settings.seeds))} ...")
    records, models = fine_tune_sweep(settings, export, splits, augmentation, progress)
    lap("fine_tuning")
    progress.stage(5, "writing the report ...")
    encoder = out / "encoder.pt"
    shutil.copyfile(export, encoder)
    seconds["cpu_before_report"] = progress.cpu()
    report, summary = write_demo_report(settings, records, models, splits, data, seconds, out / "report")
    if not settings.keep_intermediates:
        shutil.rmtree(work)
    print()
    _print_table(summary, settings.seeds)
    smallest = min(settings.fractions)
    print(f"\nAUC gain of pretraining at {smallest:.0%} of the labels: {_gain(summary, smallest):+.3f}")
    print(f"done in {progress.elapsed():.0f} s ({progress.cpu():.0f} s of CPU time), peak memory "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB, {_megabytes(out):.0f} MB left in "
          f"{out}. Report: {report}  Encoder: {encoder}")
    return report


def add_parser(subparsers) -> None:
    """The ``medssl3d demo`` subcommand."""
    defaults = DemoSettings()
    parser = subparsers.add_parser(
        "demo", help="the main job: SimCLR pretraining on chest radiographs -> fine-tuning with 1/10/100 %% of "
        "the labels, pretrained vs scratch -> report", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=defaults.out, help="output folder (default demo_output)")
    parser.add_argument("--data", type=Path, default=None,
                        help="a 2D grey MedMNIST v2 .npz (default: the packaged PneumoniaMNIST)")
    parser.add_argument("--seeds", type=int, default=len(defaults.seeds), help="fine-tuning seeds (default 3)")
    parser.add_argument("--pretrain-epochs", type=int, default=defaults.pretrain_epochs,
                        help=f"SimCLR passes over the training images (default {defaults.pretrain_epochs})")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help=f"torch CPU threads (default {defaults.threads}; the measured figures in the README use 1)")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run (200 images per split, 2 fractions, 2 seeds) that checks the chain")
    parser.add_argument("--keep-intermediates", action="store_true",
                        help="keep the PNGs, checkpoints and TensorBoard logs under <out>/work")
    parser.add_argument("--synthetic-ct", action="store_true",
                        help="run the 3D chain instead: synthetic chest CTs -> Models Genesis -> nodule patches -> "
                        "fine-tuning (a smoke path: its nodules are not learnable at this budget)")
    parser.add_argument("--cases", type=int, default=64, help="--synthetic-ct: synthetic CTs (default 64)")
    parser.set_defaults(run=_run)


def _run(args) -> None:
    if min(args.seeds, args.pretrain_epochs, args.threads) < 1:
        raise InputError(f"--seeds, --pretrain-epochs and --threads must be at least 1, got {args.seeds}, "
                         f"{args.pretrain_epochs} and {args.threads}.")
    if args.synthetic_ct:
        from medssl3d.demo_ct import CTDemoSettings, run_ct_demo

        run_ct_demo(CTDemoSettings(out=args.out, cases=args.cases, seeds=tuple(range(args.seeds))))
        return
    settings = DemoSettings.smoke() if args.smoke else DemoSettings()
    changes = {"out": args.out, "keep_intermediates": args.keep_intermediates, "threads": args.threads}
    if args.data is not None:
        changes.update(data=args.data, class_names=None)
    if not args.smoke:
        changes.update(seeds=tuple(range(args.seeds)), pretrain_epochs=args.pretrain_epochs)
    run_demo(replace(settings, **changes))

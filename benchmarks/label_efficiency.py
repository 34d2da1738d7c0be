"""Label efficiency on MedMNIST v2 (PneumoniaMNIST 28², AdrenalMNIST3D 28³): self-supervised pretraining vs
random initialisation, evaluated with 1 %, 10 % and 100 % of the training labels on the official test split.

    python benchmarks/label_efficiency.py [--data-dir DIR] [--datasets pneumoniamnist adrenalmnist3d]
        [--profile recipe_v9|recipe_v6|recipe_v5|recipe_v4|recipe_v2|recipe|quick|long|long_shape|full|smoke|FILE.yaml]
        [--subset TRAIN VAL] [--inits INIT ...] [--init-seed N] [--out FILE.json]

Per dataset:

1. Pretraining on the training images WITHOUT labels, library only: ``medssl3d.networks.build_encoder``,
   ``medssl3d.methods.build_method`` / ``build_multitask``, the pretext transforms of ``medssl3d.transforms``
   in a MONAI ``Dataset`` over in-memory dicts, and ``medssl3d.engine.build_trainer`` (which writes the
   encoder export ``encoder.pt``). One pretraining run per method, seeded with ``--init-seed`` (default 0).
2. "scratch": the same network randomly initialised (``--init-seed``) and exported, evaluated the same way.
3. For each encoder, seed (0, 1, 2) and label fraction (``nested_label_fractions``, stratified and nested,
   drawn per seed): kNN (k = 200, weighted votes) and a linear probe on frozen pooled features, and full
   fine-tuning of ``build_classifier(pretrained_encoder=export)`` with the same budget, learning rate and
   augmentation for every encoder. Metrics (AUC, ACC, weighted F1) on the official TEST split only. Profiles
   with a ``recipe`` ("full", "quick" and the "recipe*" files) fine-tune by the library's recipe
   (``medssl3d.evaluation.fine_tune_with_recipe``, docs/finetuning_recipe.md: a step budget with a floor, a
   linear-probe warm-up, a minimum batch, class-balanced draws when skewed, a grid and checkpoint chosen on
   VALIDATION, the same for every init). The older profiles "long" and "long_shape" keep the fine-tuning epoch
   with the best VALIDATION AUC.
   "finetune_tta" records evaluate that same fine-tuned model with its softmax averaged over the group of its
   fine-tuning augmentation (``medssl3d.evaluation.SymmetryGroup``: 2 views in 2D, 8 flips or the cube's 48
   symmetries in 3D).

Settings for 28-pixel images (why):

* ResNet stem: ``conv1_t_size=3`` (a 7-wide kernel spans a quarter of a 28-pixel image; CIFAR-style ResNets
  and the MedMNIST ResNet (28) baseline use 3). The full profile uses ``conv1_t_stride=1`` so the last stage
  still has 2 pixels per side (28 -> 28 -> 14 -> 7 -> 4 -> 2); the quick profile keeps stride 2 (last stage
  1 pixel) because stride 1 costs about 4x the compute, too much for 2 CPU cores. Stride 2 makes the
  encoder's total stride 32 > 28, so the methods' ``min_input_size`` is lowered to 16 there.
* Contrastive views: the library chains (``xray_views_2d``, ``ct_mri_views_3d``) with crops of 50-100 % of
  the area (sides 20-28 px in 2D; 35-100 % of the volume, sides 20-28 px in 3D) resized back to 28, no
  elastic deformation, and WITHOUT the Gaussian blur (sigma up to 2 px erases most of a 28-pixel image).
* Models Genesis: published probabilities; local pixel shuffling windows scaled to the image (the published
  10,000 windows are for 64x64x32 = 131k voxels; here ``10000 * voxels / 131072``, at least 50); window
  sides 1-2 px (``dim // 10``), painting boxes as published (sides dim/6..dim/3, 3 px border).
* Rotation prediction: 4 classes in 2D, 10 in 3D, on the whole (square/cubic) image after a random 80-100 % crop
  resized back (profile key ``rotation_rescale: false``: on the image as it is).
* Fine-tuning augmentation: a random element per sample of ``SymmetryGroup`` (2D: left-right flips; 3D: flips
  of every axis, or the cube's 48 symmetries for the shape profiles).

Profiles (``--profile NAME`` for ``benchmarks/profiles/NAME.yaml``, or the path of a YAML file with the same keys;
every setting of a run lives there, see ``benchmarks/profiles/README.md``): "recipe_v4" is the first protocol of
RESULTS.md (SimCLR 2D, Models Genesis 3D, the library's recipe: 16 epochs, at least 200 steps, cosine decay, the
final checkpoint kept unless clearly beaten on validation); "recipe_v2" the version before it (constant rates, the
best validation candidate); "recipe_v6" and "recipe_v5" are "recipe_v4" with the 3D encoder pretrained by rotation
prediction (3,000 and 1,000 x 32 volumes; "recipe_v7" and "recipe_v7_batch64", 6,000 x 32 and 3,000 x 64,
were compared and not adopted); "recipe_v9", the current profile and the library's defaults, is "recipe_v6" with
another cosine cycle while the labelled set's loss is above 0.3 (up to three); "recipe" its first version
(4 epochs; the same budget below about 200 labelled images); "quick" (``--quick``) is "recipe_v4" with one grid
entry, on PneumoniaMNIST only unless ``--datasets`` says otherwise (about 13 min of one CPU core);
"recipe_v3" is "recipe_v2" after 5x longer SimCLR pretraining (RESULTS.md); "long" fine-tunes with a budget of
training SAMPLES per label fraction, class-balanced sampling, the encoder of a pretrained init at
``encoder_lr_scale`` times the head's learning rate, the epoch with the best validation AUC kept, and 2D SimCLR
1000 x 128 and 3D SimCLR and Models
Genesis, 400 x 32) more pretraining samples, about an hour on 2 CPU cores; "long_shape" is "long" with rigid,
size-keeping 3D views (``shape_views_3d``) and the cube's symmetries as 3D fine-tuning augmentation, for
AdrenalMNIST3D's binary masks; the default "full" profile runs every method, ResNet-18 with a stride-1 stem and
longer pretraining, fine-tuned by recipe_v9's recipe (a GPU is used when available); "smoke" (``--smoke-size``) is
for the tests (1-2 iterations, the long fine-tuning protocol). Output: a JSON with every per-seed record, the
settings, the mean ± std summary, the markdown tables and the targets (among them the sanity bound: scratch
fine-tuning at 100 % of the labels within 0.03 AUC of the published supervised row, checked for every MedMNIST v2
set in ``BASELINES`` and printed after each dataset); records of datasets not run now are kept from an existing
``--out`` file.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from monai.data import DataLoader, Dataset
from monai.transforms import (
    Compose,
    RandGaussianSmooth,
    RandScaleCropd,
    Resized,
)

from medssl3d.atomic import write_json_atomic
from medssl3d.engine import (
    build_optimizer,
    build_trainer,
    export_encoder,
    warmup_cosine_schedule,
)
from medssl3d.evaluation import (
    FineTuneRecipe,
    RepeatFactorSampler,
    SymmetryGroup,
    classification_metrics,
    extract_features,
    fine_tune_classifier,
    fine_tune_with_recipe,
    knn_classify,
    linear_probe,
    markdown_table,
    nested_label_fractions,
    predict_proba,
    recipe_max_steps,
    recipe_steps,
    summarize_runs,
)
from medssl3d.evaluation.recipe import cpu_name
from medssl3d.evaluation.symmetry import GROUPS
from medssl3d.errors import InputError
from medssl3d.methods import build_method
from medssl3d.methods.multitask import build_multitask
from medssl3d.networks import build_encoder
from medssl3d.prep.medmnist import load_medmnist
from medssl3d.transfer import build_classifier
from medssl3d.transforms import (
    MultiViewd,
    RandGenesisCorruptiond,
    RandRotationPredictiond,
)
from medssl3d.transforms.views import ct_mri_views_3d, shape_views_3d, xray_views_2d

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "medmnist"
METRICS = ("auc", "accuracy", "f1_weighted")
# evaluation kinds of a record, and their names in the tables; "finetune_tta" is the fine-tuned model with its
# softmax averaged over the fine-tuning augmentation's group (``SymmetryGroup.views``)
EVALUATIONS = {"knn": "kNN (k=200)", "linear": "linear probe", "finetune": "fine-tune",
               "finetune_tta": "fine-tune + test-time views"}
FRACTIONS = (0.01, 0.1, 1.0)
SEEDS = (0, 1, 2)

# Published supervised baselines (AUC, ACC), 100 % of the labels, official test split: MedMNIST v2 (Yang et al.,
# Scientific Data 2023); the single-label sets (ChestMNIST is multi-label). A dataset's first row is the sanity
# bound's reference: ResNet-18 (28) in 2D; in 3D ResNet-18+3D, or ResNet-50+3D where only that row is listed.
BASELINES = {
    "pathmnist": [("ResNet-18 (28)", 0.983, 0.907), ("ResNet-50 (28)", 0.990, 0.911)],
    "dermamnist": [("ResNet-18 (28)", 0.917, 0.735), ("ResNet-50 (28)", 0.913, 0.735)],
    "octmnist": [("ResNet-18 (28)", 0.943, 0.743), ("ResNet-50 (28)", 0.952, 0.762)],
    "pneumoniamnist": [("ResNet-18 (28)", 0.944, 0.854), ("ResNet-50 (28)", 0.948, 0.854),
                       ("auto-sklearn", 0.942, 0.855)],
    "retinamnist": [("ResNet-18 (28)", 0.717, 0.524), ("ResNet-50 (28)", 0.726, 0.528)],
    "breastmnist": [("ResNet-18 (28)", 0.901, 0.863), ("ResNet-50 (28)", 0.857, 0.812)],
    "bloodmnist": [("ResNet-18 (28)", 0.998, 0.958), ("ResNet-50 (28)", 0.997, 0.956)],
    "tissuemnist": [("ResNet-18 (28)", 0.930, 0.676), ("ResNet-50 (28)", 0.931, 0.680)],
    "organamnist": [("ResNet-18 (28)", 0.997, 0.935), ("ResNet-50 (28)", 0.997, 0.935)],
    "organcmnist": [("ResNet-18 (28)", 0.992, 0.900), ("ResNet-50 (28)", 0.992, 0.905)],
    "organsmnist": [("ResNet-18 (28)", 0.972, 0.782), ("ResNet-50 (28)", 0.972, 0.770)],
    "organmnist3d": [("ResNet-18+3D", 0.996, 0.907), ("ResNet-50+3D", 0.994, 0.883)],
    "nodulemnist3d": [("ResNet-50+3D", 0.875, 0.847)],
    "adrenalmnist3d": [("ResNet-18+3D", 0.827, 0.721), ("ResNet-50+3D", 0.828, 0.745),
                       ("ResNet-18+ACS", 0.839, 0.754), ("auto-sklearn", 0.828, 0.802)],
    "fracturemnist3d": [("ResNet-50+3D", 0.725, 0.494)],
    "vesselmnist3d": [("ResNet-50+3D", 0.907, 0.918)],
    "synapsemnist3d": [("ResNet-50+3D", 0.851, 0.795)],
}

SANITY_MARGIN = 0.03  # scratch fine-tuning at 100 % of the labels must come this close to the published row's AUC
PROFILE_DIR = REPO / "benchmarks" / "profiles"  # one YAML file per profile; keys in profiles/README.md
MULTITASK = ("genesis", "simclr")  # the tasks of the "multitask" method (fixed weights 1)
VIEW_METHODS = ("simclr", "dcl", "vicreg", "simsiam", "multitask")  # methods trained on MultiViewd views
METHODS = ("genesis", "rotation", *VIEW_METHODS)  # the methods this benchmark has a pretext transform for
# VICReg's published 8192-wide expander has 134M parameters: far too many for 28-pixel data and a CPU.
METHOD_ARGS = {"vicreg": {"expander_dim": 2048}}


def profile_names() -> list[str]:
    """The profiles shipped in ``benchmarks/profiles/`` (file stems)."""
    return sorted(path.stem for path in PROFILE_DIR.glob("*.yaml"))


def _fail(path: Path, problem: str) -> None:
    raise InputError(f"label_efficiency: profile {path.name}: {problem}")


def _check_table(path: Path, key: str, table, value_ok, wanted: str, keys_ok=None, keys_wanted: str = "") -> None:
    """``table`` must be a non-empty mapping whose keys pass ``keys_ok`` and values pass ``value_ok``."""
    if not isinstance(table, dict) or not table:
        _fail(path, f"'{key}' must be a mapping {keys_wanted}: {wanted}; got {table!r}.")
    for k, v in table.items():
        if keys_ok is not None and not keys_ok(k):
            _fail(path, f"'{key}' has the key {k!r}; its keys must be {keys_wanted}.")
        if not value_ok(v):
            _fail(path, f"'{key}' at {k!r} is {v!r}; it must be {wanted}.")


# any profile: the datasets run when --datasets is not given; whether the rotation pretext rescales (default true)
OPTIONAL_KEYS = {"datasets", "rotation_rescale"}
DATASETS = ("pneumoniamnist", "adrenalmnist3d")  # without 'datasets'


def load_profile(name_or_path: str | Path) -> dict:
    """The settings of a profile: ``benchmarks/profiles/<name>.yaml`` or a YAML file's path, checked (one
    :class:`InputError` naming the file, the key and what it must be); ``name`` is the file's stem."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise InputError(f"label_efficiency: no profile {path}; pass one of {profile_names()} or the path of a "
                         "YAML file with the keys of benchmarks/profiles/README.md.")
    try:
        profile = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InputError(f"label_efficiency: profile {path.name} is not valid YAML: {error}".replace("\n", " "))
    if not isinstance(profile, dict):
        _fail(path, f"expected a mapping of settings, got {type(profile).__name__}.")
    datasets = profile.get("datasets", list(DATASETS))
    if not (isinstance(datasets, list) and datasets and all(isinstance(d, str) and d for d in datasets)):
        _fail(path, f"'datasets' must be a non-empty list of dataset names (e.g. {list(DATASETS)}); "
              f"got {datasets!r}.")
    if not isinstance(profile.get("rotation_rescale", True), bool):
        _fail(path, f"'rotation_rescale' must be true or false; got {profile['rotation_rescale']!r}.")
    if "recipe" in profile:  # the library's fine-tuning recipe (medssl3d.evaluation.recipe)
        return _load_recipe_profile(path, profile)
    length = [k for k in ("epochs", "finetune_samples") if k in profile]
    if len(length) != 1:
        _fail(path, "give the fine-tuning length as exactly one of 'epochs' (per label fraction) or "
              f"'finetune_samples' (per spatial dims and label fraction); found {length or 'neither'}.")
    required = {"encoder", "encoder_kwargs", "methods", "pretrain_iterations", "pretrain_batch", "pretrain_lr",
                "finetune_batch", "finetune_lr", "workers", "class_balanced", "encoder_lr_scale",
                "val_evaluations", "views_3d", "augment_3d", *length}
    if set(profile) - OPTIONAL_KEYS != required:
        missing, unknown = sorted(required - set(profile)), sorted(set(profile) - required - OPTIONAL_KEYS)
        _fail(path, f"missing keys {missing}, unknown keys {unknown} (see benchmarks/profiles/README.md).")
    count = lambda low: lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low
    positive = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
    fraction = lambda f: isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1
    dims = lambda d: d in (2, 3)
    if not isinstance(profile["encoder"], str):
        _fail(path, f"'encoder' must be an encoder name (str); got {profile['encoder']!r}.")
    if not isinstance(profile["encoder_kwargs"], dict):
        _fail(path, f"'encoder_kwargs' must be a mapping; got {profile['encoder_kwargs']!r}.")
    known = lambda v: isinstance(v, list) and v and all(m in METHODS for m in v)
    _check_table(path, "methods", profile["methods"], known, f"a non-empty list of {list(METHODS)}", dims, "2, 3")
    for key in ("pretrain_iterations", "pretrain_batch"):
        _check_table(path, key, profile[key], count(1), "an integer >= 1", dims, "2, 3")
    if "epochs" in profile:
        _check_table(path, "epochs", profile["epochs"], count(1), "an integer >= 1", fraction, "fractions in (0, 1]")
    else:
        per_fraction = lambda t: isinstance(t, dict) and t and all(fraction(f) and count(1)(n) for f, n in t.items())
        _check_table(path, "finetune_samples", profile["finetune_samples"], per_fraction,
                     "a mapping {fraction in (0, 1]: samples >= 1}", dims, "2, 3")
    for key, ok, wanted in (("pretrain_lr", positive, "a number > 0"), ("finetune_lr", positive, "a number > 0"),
                            ("encoder_lr_scale", positive, "a number > 0"),
                            ("finetune_batch", count(1), "an integer >= 1"), ("workers", count(0), "an integer >= 0"),
                            ("val_evaluations", count(0), "an integer >= 0"),
                            ("class_balanced", lambda v: isinstance(v, bool), "true or false"),
                            ("views_3d", lambda v: v in ("ct", "shape"), "'ct' or 'shape'"),
                            ("augment_3d", lambda v: v in GROUPS, " or ".join(map(repr, GROUPS)))):
        if not ok(profile[key]):
            _fail(path, f"'{key}' must be {wanted}; got {profile[key]!r}.")
    return {"name": path.stem, **profile, "methods": {d: tuple(m) for d, m in profile["methods"].items()}}


RECIPE_KEYS = {"encoder", "encoder_kwargs", "methods", "pretrain_iterations", "pretrain_batch", "pretrain_lr",
               "workers", "views_3d", "augment_3d", "recipe", "test_time_views"}


def _load_recipe_profile(path: Path, profile: dict) -> dict:
    """A profile fine-tuning with :class:`medssl3d.evaluation.FineTuneRecipe` (``recipe``: its fields; missing
    ones take the library defaults), checked like the others."""
    if set(profile) - OPTIONAL_KEYS != RECIPE_KEYS:
        missing = sorted(RECIPE_KEYS - set(profile))
        unknown = sorted(set(profile) - RECIPE_KEYS - OPTIONAL_KEYS)
        _fail(path, f"a profile with 'recipe' has exactly the keys {sorted(RECIPE_KEYS)} (and optionally "
              f"{sorted(OPTIONAL_KEYS)}): missing {missing}, unknown {unknown} "
              "(see benchmarks/profiles/README.md).")
    recipe = profile["recipe"]
    if not isinstance(recipe, dict):
        _fail(path, f"'recipe' must be a mapping of FineTuneRecipe fields; got {recipe!r}.")
    try:
        FineTuneRecipe.from_dict(recipe)
    except (TypeError, ValueError) as error:
        _fail(path, f"'recipe': {error}")
    if not isinstance(profile["test_time_views"], bool):
        _fail(path, f"'test_time_views' must be true or false; got {profile['test_time_views']!r}.")
    count = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1
    dims = lambda d: d in (2, 3)
    known = lambda v: isinstance(v, list) and v and all(m in METHODS for m in v)
    _check_table(path, "methods", profile["methods"], known, f"a non-empty list of {list(METHODS)}", dims, "2, 3")
    for key in ("pretrain_iterations", "pretrain_batch"):
        _check_table(path, key, profile[key], count, "an integer >= 1", dims, "2, 3")
    for key, ok, wanted in (("views_3d", lambda v: v in ("ct", "shape"), "'ct' or 'shape'"),
                            ("augment_3d", lambda v: v in GROUPS, " or ".join(map(repr, GROUPS))),
                            ("workers", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")):
        if not ok(profile[key]):
            _fail(path, f"'{key}' must be {wanted}; got {profile[key]!r}.")
    return {"name": path.stem, **profile, "methods": {d: tuple(m) for d, m in profile["methods"].items()}}


def _no_blur(chain: Compose) -> Compose:
    """The library view chain without its Gaussian blur (sigma up to 2 px is too strong at 28 px)."""
    return Compose([t for t in chain.transforms if not isinstance(t, RandGaussianSmooth)])


def view_chain(dims: int, size: int, views_3d: str = "ct") -> Compose:
    """Contrastive view chain for ``size``-pixel 2D radiographs or 3D volumes (see module docstring);
    ``views_3d``: "ct" (crop-and-resize CT/MRI chain) or "shape" (rigid ``shape_views_3d``, for masks)."""
    if dims == 2:
        return _no_blur(xray_views_2d((size, size), crop_scale=(0.5, 1.0)))
    if views_3d == "shape":
        return shape_views_3d((size,) * 3)
    if views_3d == "ct":
        return _no_blur(ct_mri_views_3d((size,) * 3, crop_scale=(0.35, 1.0), elastic=False))
    raise ValueError(f"label_efficiency: views_3d must be 'ct' or 'shape', got {views_3d!r}.")


def pretext_transform(method: str, dims: int, size: int, views_3d: str = "ct",
                      rotation_rescale: bool = True) -> Compose:
    """The MONAI chain turning ``{"image": (1, *spatial)}`` into what ``method`` learns from; ``rotation_rescale``:
    whether rotation prediction sees a random 80-100 % crop resized to ``size`` (false: the image as it is, so an
    object's size stays what it is, as in the ``shape`` views)."""
    voxels = size**dims
    genesis = RandGenesisCorruptiond(keys="image", target_key="target",
                                     num_windows=max(50, round(10000 * voxels / (64 * 64 * 32))))
    views = MultiViewd(keys="image", view_transform=view_chain(dims, size, views_3d), num_views=2, spatial_dims=dims)
    if method == "genesis":
        return Compose([genesis])
    if method in ("simclr", "dcl", "vicreg", "simsiam"):
        return Compose([views])
    if method == "rotation":  # light crop + resize so the rotation is not read off the image border alone
        rescale = [RandScaleCropd("image", roi_scale=0.8, max_roi_scale=1.0, random_size=True),
                   Resized("image", (size,) * dims, mode="bilinear" if dims == 2 else "trilinear")]
        return Compose([*(rescale if rotation_rescale else []), RandRotationPredictiond("image", spatial_dims=dims)])
    if method == "multitask":  # views from the original image first, then the corruption overwrites "image"
        return Compose([views, genesis])
    raise ValueError(f"label_efficiency: no pretext transform for method {method!r}.")


def build_ssl(method: str, encoder, min_input_size: int | None):
    """The method module on ``encoder`` (rotation: 4 classes in 2D, 10 in 3D; multitask: genesis + simclr)."""
    if method == "multitask":
        args = {task: {**METHOD_ARGS.get(task, {}), "min_input_size": min_input_size} for task in MULTITASK}
        return build_multitask(MULTITASK, encoder, method_args=args)
    return build_method(method, encoder, min_input_size=min_input_size, **METHOD_ARGS.get(method, {}))


def pretrain(method: str, images: np.ndarray, profile: dict, out_dir: Path, device: str,
             handlers=(), seed: int = 0) -> tuple[Path, float]:
    """Pretrain ``method`` on ``images`` (N, 1, *spatial) without labels; return (encoder export, seconds).
    ``handlers``: further trainer handlers (the runtime estimate's clock); ``seed``: the weights' initialisation,
    the pretext transforms' draws and the batch order (``--init-seed``)."""
    dims, size = images.ndim - 2, images.shape[-1]
    torch.manual_seed(seed)
    encoder = build_encoder(profile["encoder"], dims, images.shape[1], **profile["encoder_kwargs"])
    min_input = 16 if encoder.feature_strides[-1] > size else None
    ssl = build_ssl(method, encoder, min_input)
    transform = pretext_transform(method, dims, size, profile["views_3d"], profile.get("rotation_rescale", True))
    transform.set_random_state(seed=seed)
    dataset = Dataset([{"image": image} for image in images], transform=transform)
    batch = min(profile["pretrain_batch"][dims], len(images))
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=profile["workers"] if device != "cpu" else 0, generator=generator)
    iterations = profile["pretrain_iterations"][dims]
    optimizer = build_optimizer("adamw", ssl.parameters(), lr=profile["pretrain_lr"], weight_decay=1e-4)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=iterations // 10, total_steps=iterations)
    metadata = {"patch_size": [size] * dims, "encoder_kwargs": profile["encoder_kwargs"], "method": method}
    trainer = build_trainer(ssl, loader, optimizer, out_dir, max_iterations=iterations, device=device,
                            scheduler=scheduler, checkpointing={"every": iterations, "resume": False},
                            monitoring={"log_every": iterations, "spread_key": None, "progress_bar": False},
                            export_metadata=metadata, handlers=handlers)
    start = time.perf_counter()
    trainer.run()
    return out_dir / "encoder.pt", time.perf_counter() - start


def pretraining_settings(method: str, images: np.ndarray, profile: dict, device: str, seed: int = 0) -> dict:
    """Everything that decides a pretraining run of ``pretrain``, the training images' SHA-1 included:
    ``--reuse-exports`` reuses an export only when its stamp holds exactly these. The seed and a false
    ``rotation_rescale`` enter only when not the default (0, true), so stamps written before they existed match."""
    dims = images.ndim - 2
    settings = {"method": method, "encoder": profile["encoder"], "encoder_kwargs": profile["encoder_kwargs"],
                "iterations": profile["pretrain_iterations"][dims],
                "batch": min(profile["pretrain_batch"][dims], len(images)), "lr": profile["pretrain_lr"],
                "workers": profile["workers"] if device != "cpu" else 0, "device": device,
                "images": list(images.shape), "images_sha1": hashlib.sha1(images.tobytes()).hexdigest()}
    if dims == 3 and method in VIEW_METHODS:
        settings["views_3d"] = profile["views_3d"]
    if method == "rotation" and not profile.get("rotation_rescale", True):
        settings["rotation_rescale"] = False
    if seed:
        settings["seed"] = seed
    return settings


def pretrained_export(method: str, images: np.ndarray, profile: dict, out_dir: Path, device: str,
                      reuse: bool, seed: int = 0) -> tuple[Path, float, bool]:
    """(export, pretraining seconds, reused?): with ``reuse``, the export in ``out_dir`` when its stamp
    ``pretraining.json`` matches ``pretraining_settings`` (the seconds are the stamped ones); else a new
    pretraining, stamped."""
    settings = pretraining_settings(method, images, profile, device, seed)
    stamp, export = out_dir / "pretraining.json", out_dir / "encoder.pt"
    if reuse and stamp.is_file() and export.is_file():
        stamped = json.loads(stamp.read_text())
        if stamped.get("settings") == settings:
            return export, stamped["seconds"], True
    export, seconds = pretrain(method, images, profile, out_dir, device, seed=seed)
    write_json_atomic({"settings": settings, "seconds": round(seconds, 1)}, stamp)
    return export, seconds, False


def random_init_export(images: np.ndarray, profile: dict, out_dir: Path, seed: int = 0) -> Path:
    """The scratch baseline: the same encoder, randomly initialised (``seed``), as an encoder export."""
    torch.manual_seed(seed)
    dims = images.ndim - 2
    encoder = build_encoder(profile["encoder"], dims, images.shape[1], **profile["encoder_kwargs"])
    return export_encoder(encoder, out_dir / "encoder.pt", patch_size=[images.shape[-1]] * dims,
                          encoder_kwargs=profile["encoder_kwargs"], method="random-init")


def finetune_augment(profile: dict, dims: int) -> SymmetryGroup:
    """The profile's fine-tuning augmentation, a random element of its symmetry group per sample: 2D left-right
    flips; 3D by ``augment_3d``, "flip" (every axis) or "symmetry" (the cube's 48 symmetries). The same group
    gives the test-time views (``SymmetryGroup.views``)."""
    return SymmetryGroup(dims, profile["augment_3d"])


def epochs_for(profile: dict, fraction: float, dims: int, n_labels: int) -> int:
    """Fine-tuning epochs at ``fraction`` (``n_labels`` images): the profile's entry for the largest listed
    fraction <= it, in epochs, or in samples turned into the fewest whole epochs covering them."""
    if "recipe" in profile:  # steps turned into the fewest whole epochs covering their draws
        steps, _, batch = recipe_steps(FineTuneRecipe.from_dict(profile["recipe"]), n_labels)
        return max(1, math.ceil(steps * batch / n_labels))
    table = profile["epochs"] if "epochs" in profile else profile["finetune_samples"][dims]
    listed = sorted(table)
    budget = table[max([f for f in listed if f <= fraction + 1e-9], default=listed[0])]
    return budget if "epochs" in profile else max(1, math.ceil(budget / n_labels))


def fine_tune(init: str, export: Path, train: tuple, val: tuple, profile: dict, fraction: float, seed: int,
              num_classes: int, device: str) -> tuple[torch.nn.Module, int, int]:
    """Fine-tune ``build_classifier(pretrained_encoder=export)`` on ``train`` = (images, labels) with the
    profile's protocol; return (model, epochs run, epoch kept), epochs counted from 1, or with a ``recipe``
    profile (model, the recipe's record) from :func:`fine_tune_recipe`. With
    ``val_evaluations`` > 0 the weights of the evaluated epoch with the best AUC on ``val`` are kept."""
    (x, y), (val_x, val_y) = train, val
    dims = x.ndim - 2
    if "recipe" in profile:
        return fine_tune_recipe(export, train, val, profile, seed, num_classes, device)
    epochs = epochs_for(profile, fraction, dims, len(y))
    torch.manual_seed(seed)  # the classification head's initialisation
    model = build_classifier(num_classes, pretrained_encoder=export, mode="full")
    every = max(1, epochs // profile["val_evaluations"]) if profile["val_evaluations"] else 0
    best = {"auc": -math.inf, "epoch": epochs, "state": None}

    def keep_best(epoch: int, _loss: float) -> None:
        if not every or ((epoch + 1) % every and epoch + 1 != epochs):
            return
        auc = classification_metrics(val_y, predict_proba(model, val_x, batch_size=256, device=device),
                                     num_classes)["auc"]
        model.train()  # predict_proba left it in eval mode
        if auc > best["auc"]:
            best.update(auc=auc, epoch=epoch + 1, state=copy.deepcopy(model.state_dict()))

    encoder_lr = None if init == "scratch" else profile["finetune_lr"] * profile["encoder_lr_scale"]
    model = fine_tune_classifier(model, x, y, epochs=epochs, batch_size=profile["finetune_batch"],
                                 lr=profile["finetune_lr"], encoder_lr=encoder_lr, seed=seed, device=device,
                                 augment=finetune_augment(profile, dims),
                                 class_balanced=profile["class_balanced"],
                                 on_epoch_end=keep_best)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return model.eval(), epochs, best["epoch"]


def fine_tune_recipe(export: Path, train: tuple, val: tuple, profile: dict, seed: int, num_classes: int,
                     device: str, monitor=None) -> tuple[torch.nn.Module, dict]:
    """Fine-tune ``build_classifier(pretrained_encoder=export)`` by the profile's ``recipe``
    (:func:`medssl3d.evaluation.fine_tune_with_recipe`: the same steps, grid and selection on ``val`` for every
    init; ``monitor`` is passed on); return (model, the recipe's record)."""
    recipe = FineTuneRecipe.from_dict(profile["recipe"])
    build = lambda mode: build_classifier(num_classes, pretrained_encoder=export, mode=mode,
                                          trainable_stages=recipe.trainable_stages,
                                          pooled_stages=recipe.pooled_stages,
                                          reset_last_stages=recipe.reset_last_stages)
    result = fine_tune_with_recipe(build, train, val, num_classes, recipe, seed=seed, device=device,
                                   augment=finetune_augment(profile, train[0].ndim - 2), monitor=monitor)
    return result.model, result.summary()


def evaluate_encoder(init: str, export: Path, splits: dict, profile: dict, fractions, seeds, device: str,
                     dataset: str, init_seed: int = 0) -> list[dict]:
    """kNN, linear probe and fine-tuning of one encoder export at every fraction and seed; test metrics. Records
    of an export made with a non-default ``--init-seed`` carry it as ``init_seed``."""
    (train_x, train_y), (test_x, test_y) = splits["training"], splits["test"]
    val = splits["validation"]
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    frozen = build_classifier(num_classes, pretrained_encoder=export).encoder
    as_items = lambda x, y: [{"image": image, "class": int(label)} for image, label in zip(x, y)]
    train_f, _ = extract_features(frozen, as_items(train_x, train_y), batch_size=256, device=device)
    test_f, _ = extract_features(frozen, as_items(test_x, test_y), batch_size=256, device=device)
    records = []

    def record(kind, fraction, seed, n, probs, seconds, **extra):
        metrics = classification_metrics(test_y, probs, num_classes)
        records.append({"dataset": dataset, "profile": profile["name"], "init": init,
                        **({"init_seed": init_seed} if init_seed else {}), "eval": kind, "fraction": fraction,
                        "seed": seed, "n_labels": int(n), **{m: metrics[m] for m in METRICS},
                        "seconds": round(seconds, 2), **extra})

    for seed in seeds:
        for fraction, index in nested_label_fractions(train_y, fractions, seed=seed).items():
            start = time.perf_counter()
            probs = knn_classify(train_f[index], train_y[index], test_f, k=200, num_classes=num_classes)
            record("knn", fraction, seed, len(index), probs, time.perf_counter() - start)
            start = time.perf_counter()
            probs = linear_probe(train_f[index], train_y[index], test_f, seed=seed, num_classes=num_classes)
            record("linear", fraction, seed, len(index), probs, time.perf_counter() - start)
            start = time.perf_counter()
            tuned = fine_tune(init, export, (train_x[index], train_y[index]), val, profile, fraction, seed,
                              num_classes, device)
            model, extra = (tuned[0], {"recipe": tuned[1]}) if len(tuned) == 2 else (
                tuned[0], {"epochs": tuned[1], "epoch_kept": tuned[2]})
            probs = predict_proba(model, test_x, batch_size=256, device=device)
            record("finetune", fraction, seed, len(index), probs, time.perf_counter() - start, **extra)
            if not profile.get("test_time_views", True):
                print(f"  {dataset} {init:>10} seed {seed} {fraction:>5.0%}: "
                      + "  ".join(f"{r['eval']} AUC {r['auc']:.3f}" for r in records[-3:]), flush=True)
                continue
            # the same model, its softmax averaged over the fine-tuning augmentation's group (test-time views)
            start = time.perf_counter()
            views = finetune_augment(profile, test_x.ndim - 2).views()
            probs = predict_proba(model, test_x, batch_size=256, device=device, views=views)
            record("finetune_tta", fraction, seed, len(index), probs, time.perf_counter() - start, views=len(views))
            print(f"  {dataset} {init:>10} seed {seed} {fraction:>5.0%}: "
                  + "  ".join(f"{r['eval']} AUC {r['auc']:.3f}" for r in records[-4:]), flush=True)
    return records


def base_name(dataset: str) -> str:
    """The MedMNIST name of a dataset key (``pneumoniamnist_546``, a ``--subset`` run, -> ``pneumoniamnist``)."""
    return dataset.rsplit("_", 1)[0] if dataset.rsplit("_", 1)[-1].isdigit() else dataset


def markdown(summary: list[dict], dataset: str) -> str:
    """One table: a row per (evaluation, init), AUC/ACC/F1 mean ± std per label fraction."""
    rows = []
    fractions = sorted({r["fraction"] for r in summary if r["dataset"] == dataset})
    cell = lambda r, m: f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}"
    keyed = {(r["eval"], r["init"], r["fraction"]): r for r in summary if r["dataset"] == dataset}
    for kind in EVALUATIONS:
        for init in dict.fromkeys(r["init"] for r in summary if r["dataset"] == dataset):
            if (kind, init) not in {(e, i) for e, i, _ in keyed}:
                continue  # JSONs written before test-time views have no "finetune_tta" rows
            row = {"evaluation": EVALUATIONS[kind], "init": init}
            for fraction in fractions:
                r = keyed.get((kind, init, fraction))
                for metric, name in zip(METRICS, ("AUC", "ACC", "F1")):
                    row[f"{fraction:.0%} {name}"] = cell(r, metric) if r else "n/a"
            rows.append(row)
    for name, auc, acc in BASELINES.get(base_name(dataset), []):
        row = {"evaluation": "published, supervised", "init": name}
        for fraction in fractions:
            for metric, value in zip(("AUC", "ACC", "F1"), (auc, acc, None)):
                row[f"{fraction:.0%} {metric}"] = f"{value:.3f}" if fraction == 1.0 and value is not None else ""
        rows.append(row)
    return markdown_table(rows)


def targets(summary: list[dict], dataset: str) -> dict:
    """The targets: the sanity bound (scratch fine-tuning at 100 % of the labels within ``SANITY_MARGIN`` AUC of
    the published supervised row: if not, the protocol is wrong, not the data), best SSL fine-tune/probe AUC at
    10 % vs that row, and SSL minus scratch AUC (best over evaluations of each) at 1 % and 10 %. The rows that
    need a published figure are left out for a dataset ``BASELINES`` does not list."""
    rows = [r for r in summary if r["dataset"] == dataset]
    ssl = [r for r in rows if r["init"] != "scratch"]
    out = {}
    reference = BASELINES[base_name(dataset)][0] if base_name(dataset) in BASELINES else None
    scratch_full = [r for r in rows if r["init"] == "scratch" and r["eval"] == "finetune" and r["fraction"] == 1.0]
    if reference and scratch_full:
        gap = scratch_full[0]["auc_mean"] - reference[1]
        out["scratch_at_100pct_vs_published"] = {"auc": scratch_full[0]["auc_mean"], "reference": reference[0],
                                                 "reference_auc": reference[1], "gap": gap,
                                                 "met": gap >= -SANITY_MARGIN}
    at10 = [r for r in ssl if r["fraction"] == 0.1]
    if reference and at10:
        best = max(at10, key=lambda r: r["auc_mean"])
        out["best_ssl_at_10pct"] = {"init": best["init"], "eval": best["eval"], "auc": best["auc_mean"],
                                    "accuracy": best["accuracy_mean"], "reference": reference[0],
                                    "reference_auc": reference[1], "reference_accuracy": reference[2],
                                    "met": best["auc_mean"] >= reference[1] and best["accuracy_mean"] >= reference[2]}
    for fraction in (0.01, 0.1):
        for kind in EVALUATIONS:
            scratch = [r for r in rows if r["init"] == "scratch" and r["fraction"] == fraction and r["eval"] == kind]
            others = [r for r in ssl if r["fraction"] == fraction and r["eval"] == kind]
            if scratch and others:
                best = max(others, key=lambda r: r["auc_mean"])
                gain = best["auc_mean"] - scratch[0]["auc_mean"]
                out[f"ssl_minus_scratch_auc_{fraction:.0%}_{kind}"] = {"init": best["init"], "gain": gain,
                                                                       "met": gain >= 0.03}
    return out


# ----------------------------------------------------------------------------------------------------------
# --estimate-runtime: a profile's runtime projected from step times measured on this machine


class StepClock:
    """Handler/callback stamping process CPU time and wall-clock at each call (after a CUDA synchronise); as an
    ignite handler it fires at ``ITERATION_COMPLETED``, attached after build_trainer's own handlers."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.wall: list[float] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, *_) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.cpu.append(time.process_time())
        self.wall.append(time.perf_counter())

    def step(self, steps: int) -> tuple[float, float]:
        """Median (CPU, wall) seconds of the ``steps`` gaps after the first stamp (the first call warms up)."""
        if len(self.cpu) < steps + 1:
            raise RuntimeError(f"label_efficiency: {len(self.cpu)} stamps, {steps + 1} needed for {steps} steps.")
        return (float(np.median(np.diff(self.cpu[: steps + 1]))), float(np.median(np.diff(self.wall[: steps + 1]))))


def timed(fn) -> tuple[float, float]:
    """(CPU, wall) seconds of one call of ``fn``."""
    clock = StepClock()
    clock()
    fn()
    clock()
    return clock.cpu[1] - clock.cpu[0], clock.wall[1] - clock.wall[0]


def finetune_batches(profile: dict, labels: np.ndarray) -> list[int]:
    """Batch sizes of one fine-tuning epoch on ``labels``, as ``fine_tune_classifier`` splits it."""
    if "recipe" in profile:  # an epoch of the recipe's draws: batches of its (minimum) batch size
        _, _, size = recipe_steps(FineTuneRecipe.from_dict(profile["recipe"]), len(labels))
        return [size] * max(1, math.ceil(len(labels) / size))
    draws = len(RepeatFactorSampler(labels)) if profile["class_balanced"] else len(labels)
    size = profile["finetune_batch"]
    batches = [size] * (draws // size) + ([draws % size] if draws % size else [])
    if len(batches) > 1 and batches[-1] == 1:  # merged into the previous batch, as fine_tune_classifier does
        batches[-2:] = [batches[-2] + 1]
    return batches


def estimate_runtime(profile: dict, data_dir: Path, datasets: list[str], fractions: list[float], seeds: list[int],
                     device: str, steps: int, work: Path) -> dict:
    """Time ``steps`` steps (after one warm-up) of every phase of ``profile`` with the script's own functions and
    multiply by the profile's counts: pretraining iterations per method, fine-tuning steps per batch size,
    feature extraction and test prediction per image, kNN and linear probe per call (on random features of the
    encoder's width). Fixed costs (loading, building models, checkpoints) are left out."""
    rows = []
    for dataset in datasets:
        splits = load_medmnist(data_dir / f"{dataset}.npz")
        (train_x, train_y), (test_x, test_y), val_x = splits["training"], splits["test"], splits["validation"][0]
        dims, methods = train_x.ndim - 2, profile["methods"][train_x.ndim - 2]
        runs = (1 + len(methods)) * len(seeds)  # evaluations per fraction: every init (scratch too) and seed
        # fine-tunings per run
        grid = len(FineTuneRecipe.from_dict(profile["recipe"]).grid) if "recipe" in profile else 1
        num_classes = int(max(train_y.max(), test_y.max())) + 1

        def add(phase: str, unit: str, seconds: tuple[float, float], count: int) -> None:
            rows.append({"dataset": dataset, "phase": phase, "unit": unit, "cpu_s": seconds[0], "wall_s": seconds[1],
                         "count": count, "cpu_h": seconds[0] * count / 3600, "wall_h": seconds[1] * count / 3600})
            print(f"  {dataset} {phase}: {seconds[0]:.3f} s CPU ({seconds[1]:.3f} s wall) per {unit} x {count}",
                  flush=True)

        iterations = profile["pretrain_iterations"][dims]
        for method in methods:  # steps + 2 iterations: the first warms up, the last writes the checkpoint
            clock = StepClock()
            pretrain(method, train_x, {**profile, "pretrain_iterations": {dims: steps + 2}},
                     work / dataset / method, device, handlers=[clock])
            batch = min(profile["pretrain_batch"][dims], len(train_x))
            add(f"pretrain {method}", f"iteration ({batch} images)", clock.step(steps), iterations)

        export = random_init_export(train_x, profile, work / dataset / "scratch")
        subset = min(len(train_x), len(test_x), 256 if dims == 2 else 32)
        encoder = build_classifier(num_classes, pretrained_encoder=export).encoder
        items = [{"image": image, "class": int(label)} for image, label in zip(train_x[:subset], train_y[:subset])]
        extract_features(encoder, items[:2], batch_size=256, device=device)  # warm-up
        seconds = timed(lambda: extract_features(encoder, items, batch_size=256, device=device))
        add("features (kNN, probe)", "image", tuple(s / subset for s in seconds),
            (1 + len(methods)) * (len(train_x) + len(test_x)))
        model = build_classifier(num_classes, pretrained_encoder=export, mode="full")
        predict_proba(model, test_x[:2], device=device)  # warm-up
        predicted = timed(lambda: predict_proba(model, test_x[:subset], batch_size=256, device=device))
        predicted = tuple(s / subset for s in predicted)
        add("fine-tune test prediction", "image", predicted, runs * len(fractions) * len(test_x))

        step_time = {}  # seconds per fine-tuning step, by batch size
        width = encoder.embedding_dim
        random = np.random.default_rng(0)
        for fraction, index in nested_label_fractions(train_y, fractions, seed=seeds[0]).items():
            batches = finetune_batches(profile, train_y[index])
            for size in sorted(set(batches) - set(step_time)):  # one step of `size` images per epoch
                clock = StepClock()
                fine_tune_classifier(build_classifier(num_classes, pretrained_encoder=export, mode="full"),
                                     train_x[:size], train_y[:size], epochs=steps + 1, batch_size=size,
                                     lr=profile.get("finetune_lr", 1e-3), device=device,
                                     augment=finetune_augment(profile, dims),
                                     on_epoch_end=clock)
                step_time[size] = clock.step(steps)
            if "recipe" in profile:  # the recipe counts steps (warm-up steps, cheaper, timed as full ones), at
                # most: every cycle the fit rule may add (a labelled set that is fit takes fewer)
                recipe = FineTuneRecipe.from_dict(profile["recipe"])
                total, warmup, _ = recipe_steps(recipe, len(index))
                longest = recipe_max_steps(recipe, len(index))
                add(f"fine-tune {fraction:.0%} ({len(index)} labels)", f"step ({batches[0]} images)",
                    step_time[batches[0]], runs * longest * grid)
                cycles = (longest - warmup) // max(1, total - warmup)
                evaluations = 1 + recipe.evaluations * cycles  # the warm-up's probe, then about `evaluations` a cycle
            else:
                epochs = epochs_for(profile, fraction, dims, len(index))
                per_epoch = tuple(sum(step_time[b][k] for b in batches) for k in (0, 1))
                add(f"fine-tune {fraction:.0%} ({len(index)} labels)", f"epoch ({len(batches)} steps)", per_epoch,
                    runs * epochs * grid)
                evaluations = profile["val_evaluations"]
                if evaluations:  # validation AUC of the epochs fine_tune's keep_best evaluates
                    every = max(1, epochs // evaluations)
                    evaluations = sum(1 for e in range(1, epochs + 1) if e % every == 0 or e == epochs)
            if evaluations:
                add(f"fine-tune {fraction:.0%} validation", "image", predicted,
                    runs * evaluations * len(val_x) * grid)
            train_f = random.standard_normal((len(index), width)).astype(np.float32)
            test_f = random.standard_normal((len(test_x), width)).astype(np.float32)
            knn = timed(lambda: knn_classify(train_f, train_y[index], test_f, k=200, num_classes=num_classes))
            probe = timed(lambda: linear_probe(train_f, train_y[index], test_f, num_classes=num_classes))
            add(f"kNN + linear probe {fraction:.0%}", "pair of calls", (knn[0] + probe[0], knn[1] + probe[1]), runs)

    total_cpu, total_wall = sum(r["cpu_h"] for r in rows), sum(r["wall_h"] for r in rows)
    table = markdown_table([{"dataset": r["dataset"], "phase": r["phase"], "timed unit": r["unit"],
                             "s per unit (CPU)": f"{r['cpu_s']:.3g}", "s per unit (wall)": f"{r['wall_s']:.3g}",
                             "units": r["count"], "projected h (CPU)": f"{r['cpu_h']:.2f}",
                             "projected h (wall)": f"{r['wall_h']:.2f}"} for r in rows])
    print(f"\nprofile {profile['name']}: projected from step times measured here ({steps} steps after a warm-up, "
          f"median; device {device}, {torch.get_num_threads()} torch threads)\n{table}\n"
          f"total: {total_cpu:.1f} h of CPU time ({total_cpu / 24:.1f} days), {total_wall:.1f} h wall-clock "
          "at the load during this measurement", flush=True)
    return {"profile": profile["name"], "device": device, "torch_threads": torch.get_num_threads(), "steps": steps,
            "load_average": [round(v, 2) for v in os.getloadavg()], "rows": rows, "table": table,
            "total_cpu_h": total_cpu, "total_wall_h": total_wall}


def subset_splits(splits: dict, n_train: int, n_val: int) -> dict:
    """``splits`` with stratified subsets of about ``n_train`` training and ``n_val`` validation images (each class
    in proportion, :func:`nested_label_fractions` with seed 0); the test split whole."""
    out = dict(splits)
    for split, n in (("training", n_train), ("validation", n_val)):
        images, labels = splits[split]
        if not 0 < n <= len(labels):
            raise SystemExit(f"label_efficiency: --subset asks for {n} {split} images; the split has {len(labels)}.")
        index = nested_label_fractions(labels, [n / len(labels)], seed=0)[n / len(labels)]
        out[split] = (images[index], labels[index])
    return out


def resolve_data_dir(data_dir: str | None) -> Path:
    if data_dir is not None:
        path = Path(data_dir)
    elif DEFAULT_DATA_DIR.is_dir():
        path = DEFAULT_DATA_DIR
    else:
        raise SystemExit(f"label_efficiency: no data folder given and the default {DEFAULT_DATA_DIR} does not "
                         "exist; pass --data-dir DIR, the folder holding pneumoniamnist.npz / adrenalmnist3d.npz.")
    if not path.is_dir():
        raise SystemExit(f"label_efficiency: --data-dir {path} is not a folder.")
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help=f"folder with <dataset>.npz (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--datasets", nargs="+",
                        help="MedMNIST files <name>.npz to run (default: the profile's 'datasets', else "
                        f"{' '.join(DATASETS)})")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--profile", default="full",
                       help=f"a profile of benchmarks/profiles/ ({', '.join(profile_names())}) or the path of a "
                       "YAML file with the same keys (default full)")
    group.add_argument("--quick", action="store_const", const="quick", dest="profile",
                       help="= --profile quick (PneumoniaMNIST by default, about 13 min on one CPU core)")
    group.add_argument("--smoke-size", action="store_const", const="smoke", dest="profile",
                       help="= --profile smoke (1-2 iterations, for the tests)")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--methods", nargs="+",
                        help="pretraining methods to run instead of the profile's (for every dataset of this run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="label draws and fine-tuning runs, one per seed (default 0 1 2)")
    parser.add_argument("--init-seed", type=int, default=0,
                        help="seed of every init before fine-tuning: the scratch weights, and for a pretrained init "
                        "its pretraining (initial weights, pretext draws, batch order); default 0. Runs with other "
                        "values measure how much a figure owes to one pretraining run; their records carry it")
    parser.add_argument("--inits", nargs="+",
                        help="evaluate only these inits ('scratch' and/or methods of the run; default all), e.g. to "
                        "split a long run into processes writing separate --out files")
    parser.add_argument("--subset", type=int, nargs=2, metavar=("TRAIN", "VAL"),
                        help="a small-set check: stratified subsets of TRAIN training and VAL validation images (seed "
                        "0; the test split whole), recorded as dataset '<name>_<TRAIN>'; pretraining sees only them")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine 2 threads ran 10x slower)")
    parser.add_argument("--work-dir", help="where encoder exports go (default: a temporary folder)")
    parser.add_argument("--reuse-exports", action="store_true",
                        help="with --work-dir: reuse an encoder export there whose pretraining stamp matches this "
                        "run's settings and data exactly, instead of pretraining again (recorded in the JSON)")
    parser.add_argument("--estimate-runtime", action="store_true",
                        help="instead of running the profile, time a few steps of each of its phases here and print "
                        "the projected runtime (per phase and total)")
    parser.add_argument("--estimate-steps", type=int, default=2, help="timed steps per phase (after one warm-up)")
    parser.add_argument("--out", help="result JSON (default benchmarks/label_efficiency.json for the full and "
                        "quick profiles, benchmarks/label_efficiency_<profile>.json otherwise)")
    args = parser.parse_args(argv)
    if args.reuse_exports and not args.work_dir:
        parser.error("--reuse-exports needs --work-dir (the folder holding the exports to reuse)")
    if not 0 <= args.init_seed < 2**32:
        parser.error(f"--init-seed must be an integer in [0, 2**32) (a numpy seed); got {args.init_seed}")
    try:
        profile = load_profile(args.profile)
    except InputError as error:
        parser.error(str(error))
    profile_name = profile["name"]
    datasets = args.datasets or list(profile.get("datasets", DATASETS))
    if args.methods:
        unknown = sorted(set(args.methods) - set(METHODS))
        if unknown:
            parser.error(f"--methods: no pretext transform for {unknown} in this benchmark")
        profile = {**profile, "methods": {2: tuple(args.methods), 3: tuple(args.methods)}}
    torch.set_num_threads(args.threads)
    data_dir = resolve_data_dir(args.data_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fractions = sorted(set(args.fractions))
    name = "label_efficiency" + ("" if profile_name in ("full", "quick") else f"_{profile_name}")
    out = Path(args.out) if args.out else REPO / "benchmarks" / f"{name}.json"
    run_info = {"profile": profile_name, "settings": profile, "fractions": fractions, "seeds": args.seeds,
                "command": "python benchmarks/label_efficiency.py " + " ".join(sys.argv[1:] if argv is None else argv),
                "init_seed": args.init_seed, "device": device, "torch_threads": torch.get_num_threads(),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "cpu": cpu_name()}
    if args.estimate_runtime:
        with tempfile.TemporaryDirectory(prefix="label_efficiency_estimate_") as tmp:
            return estimate_runtime(profile, data_dir, datasets, fractions, args.seeds, device,
                                    args.estimate_steps, Path(args.work_dir) if args.work_dir else Path(tmp))
    result: dict = {}
    records_done, runs_done = [], {}  # this run's records and timings, of the datasets finished so far
    with tempfile.TemporaryDirectory(prefix="label_efficiency_") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        for dataset in datasets:
            started = time.perf_counter()
            path = data_dir / f"{dataset}.npz"
            if not path.is_file():
                raise SystemExit(f"label_efficiency: {path} not found; --data-dir must hold {dataset}.npz.")
            splits = load_medmnist(path)
            if args.subset:
                splits, dataset = subset_splits(splits, *args.subset), f"{dataset}_{args.subset[0]}"
            train_x = splits["training"][0]
            dims = train_x.ndim - 2
            inits = args.inits or ["scratch", *profile["methods"][dims]]
            unknown = sorted(set(inits) - {"scratch", *profile["methods"][dims]})
            if unknown:
                raise SystemExit(f"label_efficiency: --inits {unknown} are neither 'scratch' nor methods of this run "
                                 f"({list(profile['methods'][dims])}).")
            folder = lambda init: work / dataset / (f"{init}_seed{args.init_seed}" if args.init_seed else init)
            exports = {"scratch": random_init_export(train_x, profile, folder("scratch"), args.init_seed)}
            exports = {k: v for k, v in exports.items() if k in inits}
            pretrain_seconds, reused = {}, []
            for method in [m for m in profile["methods"][dims] if m in inits]:
                print(f"{dataset}: pretraining {method}", flush=True)
                exports[method], pretrain_seconds[method], was_reused = pretrained_export(
                    method, train_x, profile, folder(method), device, args.reuse_exports, args.init_seed)
                reused += [method] * was_reused
                print(f"{dataset}: {method} {'reused, pretrained earlier' if was_reused else 'pretrained'} in "
                      f"{pretrain_seconds[method]:.0f} s", flush=True)
            records = []
            for init, export in exports.items():
                records += evaluate_encoder(init, export, splits, profile, fractions, args.seeds, device, dataset,
                                            args.init_seed)
            records_done += records
            runs_done[dataset] = {**run_info, "seconds": round(time.perf_counter() - started, 1),
                                  "pretrain_seconds": {k: round(v, 1) for k, v in pretrain_seconds.items()},
                                  "reused_exports": reused,
                                  "load_average_at_end": [round(v, 1) for v in os.getloadavg()]}
            # re-read --out now: another process may have written other datasets meanwhile; keep those
            previous = json.loads(out.read_text()) if out.is_file() else {}
            result["records"] = [r for r in previous.get("records", []) if r["dataset"] not in datasets]
            result["records"] += records_done
            result["runs"] = {d: v for d, v in previous.get("runs", {}).items() if d not in datasets}
            result["runs"].update(runs_done)
            summary = summarize_runs(result["records"], ["dataset", "init", "eval", "fraction"], METRICS)
            result["summary"] = summary
            result["tables"] = {d: markdown(summary, d) for d in dict.fromkeys(r["dataset"] for r in summary)}
            result["targets"] = {d: targets(summary, d) for d in result["tables"]}
            write_json_atomic(result, out)  # after each dataset, so a long run keeps what it finished
            print(f"{dataset}: done in {result['runs'][dataset]['seconds']:.0f} s\n{result['tables'][dataset]}",
                  flush=True)
            bound = result["targets"][dataset].get("scratch_at_100pct_vs_published")
            if bound:
                print(f"{dataset}: sanity bound {'met' if bound['met'] else 'NOT met'}: scratch fine-tuning at "
                      f"100 % {bound['auc']:.3f} AUC against {bound['reference_auc']:.3f} published for "
                      f"{bound['reference']} (must be within {SANITY_MARGIN})", flush=True)
    return result


if __name__ == "__main__":
    main()

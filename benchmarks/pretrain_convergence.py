"""Pretraining convergence on synthetic CT: does every method's loss fall, and does its encoder not collapse?

    python benchmarks/pretrain_convergence.py [--iterations 120] [--methods genesis simclr ...]
                                              [--out benchmarks/pretrain_convergence.json]

One synthetic CT cohort (``medssl3d.data.synthetic.synthesize_cohort``, 12 cases of 96x96x48 voxels) goes
through the CT deterministic chain of ``bundles/genesis_ct`` once (Orientation RAS, Spacing 1x1x2 mm,
CropForeground on HU > -500, window [-1000, 1000] HU -> [0, 1], pad) and is cached in memory (MONAI
``CacheDataset``); 10 cases train, 2 are held out. Then, for every method of ``medssl3d.methods.METHODS`` and
the multitask combination genesis + rotation + simclr (``build_multitask``): the method's random chain (crops
+ its pretext transform, as in the bundles), a fresh ResNet-10 (3D, 1 channel, seed 0), AdamW (lr 1e-3,
weight decay 1e-5) with a 10-iteration linear warm-up and cosine decay, trained by
``medssl3d.engine.build_trainer`` for ``--iterations`` iterations (a handler records every iteration's loss).

Reported per method: mean loss of the first 10 and last 10 iterations and their ratio ("falls": last < first);
the collapse statistic ``medssl3d.engine.embedding_spread`` (per-dimension std of L2-normalised embeddings,
0 for a collapsed encoder, about 1/sqrt(512) = 0.044 for embeddings spread over the sphere) of the trained
encoder and of the same encoder at random initialisation, on one fixed batch of 16 crops of the held-out
cases ("collapse": trained spread below a tenth of the random-init spread); seconds per iteration.

Sizes (why): 2 CPU cores shared with other jobs, so small inputs. Batch of 8 crops = 2 volumes x 4 crops (the
bundles' 2 x 4; scan matching needs several crops of one scan for positive pairs). Whole-crop methods see
32x32x16 crops (32 mm cubes at 1x1x2 mm) with ``min_input_size=16``; rotation and the multitask run need cubic
voxel crops (a quarter turn must keep the shape), 24x24x24; the puzzle methods cut the crop into patches of at
least 8 voxels (``min_input_size=8``): jigsaw and relative location a 36^3 crop in a 3x3x3 grid with jitter 2
(10^3 patches), Rubik's cube a 32^3 crop in 2x2x2 cubes with jitter 3 (13^3). Jigsaw and Rubik's cube use 24
permutation classes instead of the papers' 100: a run of ~100 iterations (~1,000 samples) cannot learn 100
orderings. Masking and patch swapping use 8x8x4 patches (4 mm x 4 mm x 8 mm would be too fine; 16x16x8 leaves
only 8 patches in a 32x32x16 crop).

MoCo is scaled to the run: the paper's queue (65,536 keys at batch 256) spans 256 of ~10^6 iterations; here
``--moco-queue`` 64 keys span 16 iterations of batch 4, and the queue is filled with momentum-encoder keys of
real crops before the first step (``MoCo.fill_queue``), so every measured loss is against real negatives
(chance ``log(K + 1)``, recorded as ``chance_loss``): random unit keys are easy negatives and made the loss
rise as real keys replaced them. ``--moco-momentum`` 0.99 instead of 0.999: the key encoder keeps ``m^N`` of
its random initialisation after N iterations (0.999^100 = 0.90, 0.99^100 = 0.37), and over the 16 iterations
the queue spans it changes by 1 - 0.99^16 = 15 %, about as much as in the paper (1 - 0.999^256 = 23 %).
"""

from __future__ import annotations

import argparse
import fcntl
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
from ignite.engine import Events
from monai.data import CacheDataset, DataLoader, load_decathlon_datalist
from monai.transforms import (
    Compose,
    CopyItemsd,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    RandSpatialCropSamplesd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)
from monai.utils import set_determinism

from medssl3d.data.synthetic import synthesize_cohort
from medssl3d.engine import (
    build_optimizer,
    build_trainer,
    embedding_spread,
    warmup_cosine_schedule,
)
from medssl3d.methods import METHODS, build_method
from medssl3d.methods.multitask import build_multitask
from medssl3d.networks import build_encoder
from medssl3d.transforms import (
    MultiViewd,
    RandGenesisCorruptiond,
    RandJigsawd,
    RandMaskedPatchesd,
    RandPatchSwapd,
    RandPositionCropd,
    RandRelativePatchLocationd,
    RandRotationPredictiond,
    RandRubikCubed,
    ScanTagd,
    ct_mri_views_3d,
)

MULTITASK = "multitask"
MULTITASK_TASKS = ("genesis", "rotation", "simclr")
ALL_METHODS = (*METHODS, MULTITASK)
CROP = (32, 32, 16)  # whole-crop methods
CUBE = (24, 24, 24)  # rotation and multitask (quarter turns need equal sides)
PUZZLE_CROP = {"jigsaw": (36, 36, 36), "relative_location": (36, 36, 36), "rubik": (32, 32, 32)}
PAD = (36, 36, 36)  # every cached volume holds the largest crop
PIXDIM, WINDOW, FOREGROUND_HU = (1.0, 1.0, 2.0), (-1000.0, 1000.0), -500
NUM_PERMUTATIONS = 24
TRAIN_CASES, HELD_OUT_CASES = 10, 2


def deterministic_chain() -> Compose:
    """The CT chain of bundles/genesis_ct (plus a scan id for scan matching), cached once."""
    return Compose([
        LoadImaged(keys="image", image_only=True),
        EnsureChannelFirstd(keys="image"),
        ScanTagd(keys="image", modality="CT"),
        Orientationd(keys="image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys="image", pixdim=PIXDIM, mode="bilinear"),
        CropForegroundd(keys="image", source_key="image", select_fn=lambda x: x > FOREGROUND_HU, margin=2,
                        allow_smaller=True),
        ScaleIntensityRanged(keys="image", a_min=WINDOW[0], a_max=WINDOW[1], b_min=0.0, b_max=1.0, clip=True),
        SpatialPadd(keys="image", spatial_size=PAD),
        EnsureTyped(keys="image", dtype=torch.float32),
    ])


def _crops(size, crops_per_volume: int) -> RandSpatialCropSamplesd:
    return RandSpatialCropSamplesd(keys="image", roi_size=size, num_samples=crops_per_volume, random_size=False)


def _genesis(key: str = "image", target_key: str = "target") -> RandGenesisCorruptiond:
    return RandGenesisCorruptiond(keys=key, target_key=target_key, flip_prob=0.4, shuffle_prob=0.5,
                                  nonlinear_prob=0.9, paint_prob=0.9, inpaint_prob=0.2)


def _views(size) -> MultiViewd:
    return MultiViewd(keys="image", view_transform=ct_mri_views_3d(size, (0.2, 1.0), elastic=False), num_views=2)


def recipe(name: str, crops_per_volume: int) -> tuple[list, dict, tuple[int, ...]]:
    """``(random transforms, method kwargs, crop size)`` of method ``name``, after the bundles' train.yaml."""
    crops = _crops(CROP, crops_per_volume)
    if name == "genesis":
        return [crops, _genesis()], {"min_input_size": 16}, CROP
    if name == "masked":
        masking = RandMaskedPatchesd(keys="image", target_key="target", mask_key="mask", patch_size=(8, 8, 4),
                                     mask_ratio=0.6)
        return [crops, masking], {"min_input_size": 16}, CROP
    if name == "patch_swap":
        return [crops, RandPatchSwapd(keys="image", patch_size=(8, 8, 4), num_swaps=10)], {"min_input_size": 16}, CROP
    if name == "position":  # one crop per volume: the position is relative to that volume
        return [RandPositionCropd(keys="image", roi_size=CROP)], {"min_input_size": 16}, CROP
    if name == "scan_matching":
        return [crops], {"min_input_size": 16}, CROP
    if name in ("simclr", "dcl", "moco", "simsiam", "vicreg", "byol"):
        return [crops, _views(CROP)], {"min_input_size": 16}, CROP
    if name == "rotation":
        rotation = RandRotationPredictiond(keys="image", label_key="rotation_label", spatial_dims=3, num_classes=10)
        return [_crops(CUBE, crops_per_volume), rotation], {"num_classes": 10, "min_input_size": 16}, CUBE
    size = PUZZLE_CROP.get(name)
    if name == "jigsaw":
        jigsaw = RandJigsawd(keys="image", num_permutations=NUM_PERMUTATIONS, jitter=2)
        kwargs = {"num_permutations": NUM_PERMUTATIONS, "min_input_size": 8}
        return [_crops(size, crops_per_volume), jigsaw], kwargs, size
    if name == "relative_location":
        relative = RandRelativePatchLocationd(keys="image", jitter=2)
        return [_crops(size, crops_per_volume), relative], {"min_input_size": 8}, size
    if name == "rubik":  # the crop stays in `image`; the cubes are cut from a copy, as in bundles/rubik_ct
        rubik = RandRubikCubed(keys="cubes", num_permutations=NUM_PERMUTATIONS, jitter=3, rotate=True, mask_prob=0.5)
        kwargs = {"num_permutations": NUM_PERMUTATIONS, "image_key": "cubes", "min_input_size": 8}
        return [_crops(size, crops_per_volume), CopyItemsd(keys="image", names="cubes"), rubik], kwargs, size
    if name == MULTITASK:  # as bundles/multitask_ct: every task on its own copy of the crop
        chain = [
            _crops(CUBE, crops_per_volume),
            CopyItemsd(keys="image", names="genesis_image"), _genesis("genesis_image", "genesis_target"),
            CopyItemsd(keys="image", names="rotation_image"),
            RandRotationPredictiond(keys="rotation_image", label_key="rotation_label", spatial_dims=3, num_classes=10),
            _views(CUBE),
        ]
        args = {
            "genesis": {"image_key": "genesis_image", "target_key": "genesis_target", "min_input_size": 16},
            "rotation": {"image_key": "rotation_image", "num_classes": 10, "min_input_size": 16},
            "simclr": {"min_input_size": 16},
        }
        return chain, {"method_args": args}, CUBE
    raise ValueError(f"pretrain_convergence: no recipe for method {name!r}; known: {', '.join(ALL_METHODS)}.")


def held_out_batch(volumes: list[dict], n_per_volume: int, seed: int = 1234) -> torch.Tensor:
    """Fixed 32x32x16 crops ``(N, 1, *CROP)`` of the held-out volumes for the collapse statistic."""
    cropper = _crops(CROP, n_per_volume)
    cropper.set_random_state(seed)
    crops = [crop["image"].as_tensor() for volume in volumes for crop in cropper(volume)]
    return torch.stack(crops).float()


def spread(encoder: torch.nn.Module, batch: torch.Tensor) -> float:
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        value = embedding_spread(encoder.embed(batch))
    encoder.train(was_training)
    return value


def fill_queue(method: torch.nn.Module, loader: DataLoader, batches: int) -> None:
    """MoCo's warm start: the momentum-encoder keys of ``batches`` training batches enter the queue."""
    method.train()
    while batches > 0:
        for batch in loader:
            method.fill_queue(batch)
            batches -= 1
            if batches == 0:
                return


def run_method(name: str, train_data: list[dict], probe: torch.Tensor, args, workdir: Path) -> dict:
    """Train ``name`` for ``args.iterations`` iterations; its loss curve and collapse statistics."""
    set_determinism(seed=0)
    transforms, kwargs, crop = recipe(name, args.crops_per_volume)
    # position cuts one crop per volume, so its batch holds --batch volumes (at most all training volumes)
    per_batch = min(args.batch, len(train_data)) if name == "position" else args.batch // args.crops_per_volume
    dataset = CacheDataset(train_data, transform=Compose(transforms), cache_rate=0.0, progress=False)
    dataset.transform.set_random_state(seed=0)
    loader = DataLoader(dataset, batch_size=per_batch, shuffle=True, drop_last=True, num_workers=0,
                        generator=torch.Generator().manual_seed(0))
    encoder = build_encoder("resnet10", spatial_dims=3, in_channels=1)
    if name == "moco":
        kwargs.update(queue_size=args.moco_queue, momentum=args.moco_momentum)
    if name == MULTITASK:
        method = build_multitask(MULTITASK_TASKS, encoder, **kwargs)
    else:
        method = build_method(name, encoder, **kwargs)
    random_spread = spread(encoder, probe)
    if name == "moco":
        fill_queue(method, loader, math.ceil(args.moco_queue / args.batch))
    optimizer = build_optimizer("adamw", method.parameters(), args.lr, 1e-5)
    scheduler = warmup_cosine_schedule(optimizer, min(args.warmup, args.iterations), args.iterations)
    trainer = build_trainer(method, loader, optimizer, workdir / name, max_iterations=args.iterations,
                            scheduler=scheduler, checkpointing={"every": 10**9, "resume": False},
                            monitoring={"log_every": 10**9, "spread_key": None, "progress_bar": False})
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: losses.append(engine.state.output["loss"]))
    start = time.perf_counter()
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=10), lambda engine: print(
        f"{name}: iteration {engine.state.iteration}, loss {np.mean(losses[-10:]):.4f} (last 10), "
        f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True))
    trainer.run()
    seconds = time.perf_counter() - start
    trained_spread = spread(encoder, probe)
    window = min(10, max(1, len(losses) // 2))
    first, last = float(np.mean(losses[:window])), float(np.mean(losses[-window:]))
    return {
        "method_kwargs": kwargs,
        **({"chance_loss": math.log(args.moco_queue + 1)} if name == "moco" else {}),
        "crop_size": list(crop),
        "batch": args.batch,
        "iterations": len(losses),
        "losses": losses,
        "loss_first10": first,
        "loss_last10": last,
        "ratio": last / first if min(losses) > 0 else None,  # None for a loss that goes negative (SimSiam's -cos)
        "falls": bool(last < first),
        "embedding_std_trained": trained_spread,
        "embedding_std_random_init": random_spread,
        "collapse": bool(trained_spread < 0.1 * random_spread),
        "seconds_per_iteration": seconds / max(1, len(losses)),
        "finite": bool(all(math.isfinite(v) for v in losses)),
    }


def markdown(results: dict) -> str:
    rows = [
        "| method | crop | first-10 loss | last-10 loss | last/first | emb. std trained | emb. std random init | s/iter "
        + "| falls | collapse |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, r in results.items():
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"
        rows.append(
            f"| {name} | {'x'.join(map(str, r['crop_size']))} | {r['loss_first10']:.4f} | {r['loss_last10']:.4f} | "
            f"{ratio} | {r['embedding_std_trained']:.4f} | {r['embedding_std_random_init']:.4f} | "
            f"{r['seconds_per_iteration']:.2f} | {'yes' if r['falls'] else 'no'} | {'yes' if r['collapse'] else 'no'} |"
        )
    return "\n".join(rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=list(ALL_METHODS))
    parser.add_argument("--out", default="benchmarks/pretrain_convergence.json")
    parser.add_argument("--data-dir", default=None, help="where the synthetic cohort goes (default: a temp dir)")
    parser.add_argument("--cases", type=int, default=TRAIN_CASES + HELD_OUT_CASES)
    parser.add_argument("--size", type=int, nargs=3, default=(96, 96, 48), help="synthetic volume size (voxels)")
    parser.add_argument("--batch", type=int, default=8, help="crops per batch (a multiple of --crops-per-volume)")
    parser.add_argument("--crops-per-volume", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--moco-queue", type=int, default=64, help="MoCo's queue size K (keys)")
    parser.add_argument("--moco-momentum", type=float, default=0.99, help="MoCo's key-encoder momentum m")
    args = parser.parse_args(argv)
    if args.batch % args.crops_per_volume:
        parser.error(f"--batch {args.batch} is not a multiple of --crops-per-volume {args.crops_per_volume}.")
    if args.cases < 2 + HELD_OUT_CASES // 2:
        parser.error(f"--cases must be at least 3 (training cases + 1 held out), got {args.cases}.")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="pretrain_convergence_") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "ct"
        datalist_path = data_dir / "datalist.json"
        if not datalist_path.exists():
            synthesize_cohort("ct", args.cases, data_dir, size=tuple(args.size), progress=False)
        items = load_decathlon_datalist(str(datalist_path), True, "training", base_dir=str(data_dir))
        items += load_decathlon_datalist(str(datalist_path), True, "validation", base_dir=str(data_dir))
        items += load_decathlon_datalist(str(datalist_path), True, "test", base_dir=str(data_dir))
        items = [{"image": item["image"]} for item in items][: args.cases]
        held = max(1, min(HELD_OUT_CASES, len(items) - 2))
        start = time.perf_counter()
        cache = CacheDataset(items, transform=deterministic_chain(), cache_rate=1.0, num_workers=0, progress=False)
        volumes = [cache[i] for i in range(len(items))]
        cache_seconds = time.perf_counter() - start
        train_data, probe = volumes[:-held], held_out_batch(volumes[-held:], 16 // held)
        results = {}
        for name in args.methods:
            results[name] = run_method(name, train_data, probe, args, Path(tmp) / "runs")
            r = results[name]
            r["load_average"] = list(os.getloadavg())
            print(f"{name}: loss {r['loss_first10']:.4f} -> {r['loss_last10']:.4f}, embedding std "
                  f"{r['embedding_std_random_init']:.4f} -> {r['embedding_std_trained']:.4f}, "
                  f"{r['seconds_per_iteration']:.2f} s/iter", flush=True)
            report = {
                "command": " ".join(["python", "benchmarks/pretrain_convergence.py",
                                     *(sys.argv[1:] if argv is None else argv)]),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                           f"{args.threads} threads",
                "load_average": list(os.getloadavg()),
                "settings": {key: (list(value) if isinstance(value, tuple) else value)
                             for key, value in vars(args).items() if key not in ("out", "data_dir", "methods")},
                "cache_seconds": cache_seconds,
                "train_cases": len(train_data),
                "held_out_crops": int(probe.shape[0]),
            }
            report = write_report(Path(args.out), report, results)  # after every method: partial runs count
    print(report["table"])
    return report


def write_report(out: Path, report: dict, results: dict) -> dict:
    """Write ``report`` with ``results`` merged into the records already in ``out`` (methods not run now are
    kept, so runs may be split over several processes; a lock file serialises their writes)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kept = json.loads(out.read_text()).get("results", {}) if out.exists() else {}
        merged = {**kept, **results}
        merged = {name: merged[name] for name in ALL_METHODS if name in merged}
        report = {**report, "results": merged, "table": markdown(merged)}
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, out)
    return report

if __name__ == "__main__":
    main()

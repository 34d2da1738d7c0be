"""Speed benchmarks of medssl3d, each figure a ratio or a share measured in one run on one machine.

    python benchmarks/speed.py [--quick] [--out benchmarks/speed.json] [--skip SECTION ...]

Sections (``--skip`` takes their names):

* ``transforms``: ms per call of every array transform exported by ``medssl3d.transforms`` (its defaults),
  one thread, on a windowed synthetic CT of 64x64x32 and of 96^3 (the 2D ones on 224x224 and 64x64).
* ``genesis``: the full Models Genesis corruption against ``reference_genesis`` below, a plain per-window
  Python implementation of the published algorithm written for this benchmark (the speed reference), with
  the mean |corrupted - original| of both over the same cube as a check that the statistics match.
* ``step``: one training iteration of ``medssl3d.engine.build_trainer`` (progress bar off, TensorBoard at
  the default ``log_every=10``, no checkpoint inside the timed iterations) against a bare PyTorch loop on the
  same Models Genesis method (resnet18), batches (4 x 1 x 64x64x32) and AdamW.
* ``pipeline``: share of the iteration time spent waiting in ``next(iterator)`` for the ``genesis_ct``
  bundle's data loader (CacheDataset of the deterministic chain, 2 workers) on a synthetic CT cohort.
* ``bundles``: peak RSS and seconds per iteration of ``python -m monai.bundle run`` for every pretraining
  bundle found (``bundles/*/configs/train.yaml`` whose trainer is ``medssl3d.engine.build_trainer``), at its
  default crop and batch, on a tiny synthetic cohort, in a fresh subprocess each.
* ``gpu``: AMP and channels-last speed-ups, batched GPU corruption against CPU workers; skipped without CUDA.

One-thread figures (transforms, genesis) are CPU time of the process, so other jobs on the machine inflate
them only through shared caches; the others are wall-clock. Timings of different code are interleaved in
rounds and summarised by their median, so a second job slows both sides of a ratio alike.
"""

from __future__ import annotations

import argparse
import glob
import inspect
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from math import comb
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("transforms", "genesis", "step", "pipeline", "bundles", "gpu")


def median_ms(fn, calls: int, rounds: int, clock=time.process_time) -> float:
    """Median over ``rounds`` of the mean ms per call of ``calls`` calls (after one warm-up call).

    The default clock is the process's CPU time: for one-thread code it is the time the work took, whatever
    else runs on the machine (other jobs still slow it through shared caches and memory bandwidth).
    """
    fn()
    means = []
    for _ in range(rounds):
        start = clock()
        for _ in range(calls):
            fn()
        means.append((clock() - start) / calls * 1e3)
    return float(np.median(means))


def ct_array(shape: tuple[int, ...]) -> np.ndarray:
    """A synthetic CT windowed to [0, 1] (Models Genesis window, HU -1000..1000), shape ``(1, *shape)``."""
    from medssl3d.data.synthetic import synth_ct

    big = tuple(max(s, m) for s, m in zip(shape, (64, 64, 32)))
    hu = synth_ct(big, rng=np.random.default_rng(0)).image[: shape[0], : shape[1], : shape[2]]
    return np.clip((hu.astype(np.float32) + 1000) / 2000, 0, 1)[None].copy()


# ----------------------------------------------------------------------------------------------------------
# pretext transforms


def transform_inputs(name: str) -> list[tuple[str, torch.Tensor]]:
    """The (label, image) pairs a transform is timed on: 3D cubes, or 2D images for the 2D-only ones."""
    if name == "RandHEDJitter":  # RGB histology
        rgb = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
        return [("3x224x224", rgb), ("3x64x64", rgb[:, :64, :64].contiguous())]
    if name == "CLAHE":  # slice-wise 2D histogram equalisation; timed on radiograph-sized images
        image = torch.from_numpy(ct_array((224, 224, 1))[..., 0])
        return [("1x224x224", image), ("1x64x64", image[:, :64, :64].contiguous())]
    if name == "RandRotationPrediction":  # rotations need equal sides on the rotated planes
        return [("1x64x64x64", torch.from_numpy(ct_array((64, 64, 64)))), ("1x96x96x96", torch.from_numpy(ct_array((96,) * 3)))]
    return [("1x64x64x32", torch.from_numpy(ct_array((64, 64, 32)))), ("1x96x96x96", torch.from_numpy(ct_array((96,) * 3)))]


def transform_args(name: str, image: torch.Tensor) -> dict:
    """Arguments a transform cannot do without (everything else stays at its default)."""
    if name == "RandPositionCrop":
        return {"roi_size": [s // 2 for s in image.shape[1:]]}
    return {}


def bench_transforms(quick: bool) -> list[dict]:
    import medssl3d.transforms as transforms
    from monai.transforms import MapTransform, Transform

    rows = []
    names = sorted(
        n for n, obj in vars(transforms).items()
        if inspect.isclass(obj) and issubclass(obj, Transform) and not issubclass(obj, MapTransform)
    )
    for name in names:
        for label, image in transform_inputs(name):
            try:
                transform = getattr(transforms, name)(**transform_args(name, image))
                if hasattr(transform, "set_random_state"):
                    transform.set_random_state(0)
                ms = median_ms(lambda: transform(image.clone()), 5 if quick else 20, 3 if quick else 5)
                rows.append({"transform": name, "input": label, "ms": round(ms, 3)})
            except Exception as error:  # reported, not fatal: one transform's failure must not hide the others
                rows.append({"transform": name, "input": label, "ms": None, "error": f"{type(error).__name__}: {error}"})
            print(f"  {name:28s} {label:12s} {rows[-1]['ms'] if rows[-1]['ms'] is not None else rows[-1]['error']}")
    return rows


# ----------------------------------------------------------------------------------------------------------
# Models Genesis: library against a plain per-window reference


def reference_genesis(image: np.ndarray, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """REFERENCE ONLY (speed and statistics baseline, not library code): the published Models Genesis
    corruption written plainly, one window / one box / one Bernstein polynomial at a time in Python.

    Same distributions as ``RandGenesisCorruption`` at its defaults: up to 3 flips (p 0.4 each) of a random
    spatial axis on input and target; local pixel shuffling (p 0.5) of 10,000 windows with sides
    U[1, dim // 10], each refilled from the original image; a cubic Bezier intensity curve (p 0.9;
    100,000 curve samples, inverted in half of the cases); painting (p 0.9): in-painting (share 0.2) of up
    to 5 noise boxes of side U[dim // 6, dim // 3], or out-painting (noise everywhere, then 1 + up to 4
    boxes of side dim - U[3 dim // 7, 4 dim // 7] restored), further boxes with probability 0.95.
    """
    x = image
    spatial = image.shape[1:]
    flips = 3
    while flips > 0 and rng.random() < 0.4:
        x = np.flip(x, axis=1 + rng.randrange(len(spatial)))
        flips -= 1
    target = x.copy()
    x = target.copy()
    if rng.random() < 0.5:  # local pixel shuffling
        original, np_rng = x.copy(), np.random.default_rng(rng.getrandbits(64))
        for _ in range(10000):
            sizes = [rng.randint(1, max(1, d // 10)) for d in spatial]
            starts = [rng.randint(0, d - s) for d, s in zip(spatial, sizes)]
            box = (slice(None),) + tuple(slice(a, a + s) for a, s in zip(starts, sizes))
            window = original[box]
            x[box] = np_rng.permutation(window.reshape(window.shape[0], -1).T).T.reshape(window.shape)
    if rng.random() < 0.9:  # Bezier intensity curve
        points = [(0.0, 0.0), (rng.random(), rng.random()), (rng.random(), rng.random()), (1.0, 1.0)]
        t = np.linspace(0.0, 1.0, 100000)
        curve_x, curve_y = np.zeros_like(t), np.zeros_like(t)
        for i, (px, py) in enumerate(points):  # Bernstein polynomial of each control point
            weight = comb(3, i) * t**i * (1 - t) ** (3 - i)
            curve_x += px * weight
            curve_y += py * weight
        order = np.argsort(curve_x)
        curve_y = curve_y[order][::-1] if rng.random() < 0.5 else curve_y[order]
        x = np.interp(x, curve_x[order], curve_y).astype(image.dtype)
    if rng.random() < 0.9:  # painting
        np_rng = np.random.default_rng(rng.getrandbits(64))
        if rng.random() < 0.2:  # in-painting
            for _ in range(5):
                if rng.random() >= 0.95:
                    break
                sizes = [rng.randint(max(1, d // 6), max(1, d // 3)) for d in spatial]
                starts = [rng.randint(min(3, (d - s) // 2), d - s - min(3, (d - s) // 2)) for d, s in zip(spatial, sizes)]
                box = (slice(None),) + tuple(slice(a, a + s) for a, s in zip(starts, sizes))
                x[box] = np_rng.random(x[box].shape, dtype=np.float32)
        else:  # out-painting
            kept, x = x, np_rng.random(x.shape, dtype=np.float32)
            for box_index in range(5):
                if box_index and rng.random() >= 0.95:
                    break
                sizes = [d - rng.randint(3 * d // 7, 4 * d // 7) for d in spatial]
                starts = [rng.randint(min(3, (d - s) // 2), d - s - min(3, (d - s) // 2)) for d, s in zip(spatial, sizes)]
                box = (slice(None),) + tuple(slice(a, a + s) for a, s in zip(starts, sizes))
                x[box] = kept[box]
    return x, target


def bench_genesis(quick: bool) -> dict:
    from medssl3d.transforms import RandGenesisCorruption

    cube = ct_array((64, 64, 32))
    library = RandGenesisCorruption().set_random_state(0)
    rng = random.Random(0)
    rounds = 5 if quick else 9
    lib_ms, ref_ms = [], []
    for _ in range(rounds):  # interleaved rounds: the ratio is robust to other jobs on the machine
        lib_ms.append(median_ms(lambda: library(cube), 40, 1))
        ref_ms.append(median_ms(lambda: reference_genesis(cube, rng), 4, 1))
    draws = 200  # enough for a standard error of ~3.5 % of the mean change
    lib_err = np.array([np.abs(c - t).mean() for c, t in (library(cube) for _ in range(draws))])
    ref_err = np.array([np.abs(c - t).mean() for c, t in (reference_genesis(cube, rng) for _ in range(draws))])
    result = {
        "cube": "1x64x64x32 float32, one thread",
        "library_ms": round(float(np.median(lib_ms)), 3),
        "reference_ms": round(float(np.median(ref_ms)), 2),
        "speedup": round(float(np.median(ref_ms) / np.median(lib_ms)), 1),
        "target_speedup": 25,
        "library_ms_target": 2.0,
        "draws": draws,
        "mean_abs_change_library": round(float(lib_err.mean()), 5),
        "mean_abs_change_reference": round(float(ref_err.mean()), 5),
        "standard_error_library": round(float(lib_err.std(ddof=1) / np.sqrt(draws)), 5),
        "standard_error_reference": round(float(ref_err.std(ddof=1) / np.sqrt(draws)), 5),
    }
    result["relative_difference"] = round(float(abs(lib_err.mean() - ref_err.mean()) / ref_err.mean()), 4)
    print(f"  library {result['library_ms']} ms, reference {result['reference_ms']} ms: {result['speedup']}x")
    print(f"  mean |corrupted - original|: library {result['mean_abs_change_library']} "
          f"+- {result['standard_error_library']}, reference {result['mean_abs_change_reference']} "
          f"+- {result['standard_error_reference']} ({100 * result['relative_difference']:.1f} % apart)")
    return result


# ----------------------------------------------------------------------------------------------------------
# training step: workflow against a bare loop


def genesis_setup(seed: int = 0):
    from medssl3d.methods import build_method
    from medssl3d.networks import build_encoder

    torch.manual_seed(seed)
    method = build_method("genesis", build_encoder("resnet18", spatial_dims=3, in_channels=1))
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3, weight_decay=1e-5)
    return method, optimizer


def bench_step(quick: bool) -> dict:
    from ignite.engine import Events

    from medssl3d.engine import build_trainer

    iterations, rounds = (3, 2) if quick else (8, 3)
    gen = torch.Generator().manual_seed(0)
    batches = [
        {"image": torch.rand(4, 1, 64, 64, 32, generator=gen), "target": torch.rand(4, 1, 64, 64, 32, generator=gen)}
        for _ in range(iterations + 1)
    ]
    workflow_s, bare_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(rounds):
            method, optimizer = genesis_setup()
            trainer = build_trainer(
                method, batches, optimizer, Path(tmp) / f"run{round_index}", max_epochs=1, resume=False,
                progress_bar=False, checkpoint_every=10**6,
            )
            stamps = []
            trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: stamps.append(time.perf_counter()))
            trainer.run()
            workflow_s.extend(np.diff(stamps))  # iteration-to-iteration: step, data and every handler
            method, optimizer = genesis_setup()
            method.train()
            stamps = []
            for batch in batches:
                optimizer.zero_grad(set_to_none=True)
                method(batch)["loss"].backward()
                optimizer.step()
                stamps.append(time.perf_counter())
            bare_s.extend(np.diff(stamps))
    result = {
        "setup": "genesis, resnet18, batch 4 x 1 x 64x64x32, AdamW, CPU, "
        f"{torch.get_num_threads()} threads; build_trainer with progress_bar=False, log_every=10 (default)",
        "iterations_timed": len(workflow_s),
        "workflow_s_per_iteration": round(float(np.median(workflow_s)), 4),
        "bare_loop_s_per_iteration": round(float(np.median(bare_s)), 4),
    }
    result["ratio"] = round(result["workflow_s_per_iteration"] / result["bare_loop_s_per_iteration"], 3)
    result["target_ratio"] = 1.05
    print(f"  workflow {result['workflow_s_per_iteration']} s/it, bare loop {result['bare_loop_s_per_iteration']} "
          f"s/it: ratio {result['ratio']}")
    return result


# ----------------------------------------------------------------------------------------------------------
# data pipeline: time waiting for batches


def bench_pipeline(quick: bool) -> dict:
    from monai.bundle import ConfigParser

    from medssl3d.data.synthetic import split_counts, synthesize_cohort

    n = 6 if quick else 20
    epochs = 2 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        synthesize_cohort("ct", n, Path(tmp) / "ct", progress=False)
        parser = ConfigParser()
        parser.read_config(str(ROOT / "bundles/genesis_ct/configs/train.yaml"))
        parser.update({"dataset_dir": str(Path(tmp) / "ct"), "num_workers": 2, "bundle_root": tmp})
        loader = parser.get_parsed_content("train#dataloader")
        method = parser.get_parsed_content("ssl_method")
        optimizer = parser.get_parsed_content("train#optimizer")
        waits, totals, first_waits = [], [], []
        method.train()
        for _ in range(epochs):
            iterator = iter(loader)
            first = True
            while True:
                start = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                fetched = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                method(batch)["loss"].backward()
                optimizer.step()
                (first_waits if first else waits).append(fetched - start)
                totals.append(time.perf_counter() - start)
                first = False
    batch_crops = parser["batch_size"] * parser["crops_per_volume"]
    result = {
        "setup": f"genesis_ct bundle loader: CacheDataset (cache_rate 1) + 2 workers, {split_counts(n)[0]} training "
        f"CTs of 96x96x48, batch {parser['batch_size']} volumes x {parser['crops_per_volume']} crops = {batch_crops} "
        f"crops of 64x64x32, {epochs} epochs, resnet18 Genesis step in the main process ({torch.get_num_threads()} threads)",
        "iterations": len(totals),
        "wait_share": round((sum(waits) + sum(first_waits)) / sum(totals), 4),
        "wait_share_after_first_batch_of_epoch": round(sum(waits) / (sum(totals) - sum(first_waits)), 4),
        "first_batch_wait_s": round(float(np.mean(first_waits)), 3),
        "s_per_iteration": round(sum(totals) / len(totals), 3),
        "target_wait_share": 0.05,
    }
    print(f"  waiting share {100 * result['wait_share']:.1f} % (after each epoch's first batch "
          f"{100 * result['wait_share_after_first_batch_of_epoch']:.1f} %), {result['s_per_iteration']} s/it")
    return result


# ----------------------------------------------------------------------------------------------------------
# pretraining bundles: peak memory and seconds per iteration


def pretraining_bundles() -> list[Path]:
    """``bundles/*/configs/train.yaml`` whose trainer is medssl3d's SSL trainer."""
    return [
        Path(p) for p in sorted(glob.glob(str(ROOT / "bundles/*/configs/train.yaml")))
        if "medssl3d.engine.build_trainer" in Path(p).read_text()
    ]


_RSS_WRAPPER = (
    "import resource, subprocess, sys, time; start = time.perf_counter(); "
    "code = subprocess.run(sys.argv[1:]).returncode; "
    "print('RESULT', code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - start)"
)


def iteration_seconds(tensorboard_dir: Path) -> float | None:
    """Median wall-clock gap between consecutive per-iteration TensorBoard scalars of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tensorboard_dir))
    accumulator.Reload()
    tags = accumulator.Tags().get("scalars", [])
    tag = next((t for t in tags if t.endswith("loss")), tags[0] if tags else None)
    if tag is None:
        return None
    walls = [event.wall_time for event in accumulator.Scalars(tag)]
    return float(np.median(np.diff(walls))) if len(walls) > 1 else None


def bench_bundles(quick: bool) -> list[dict]:
    from medssl3d.data.synthetic import MODALITIES, split_counts, synthesize_cohort

    rows = []
    iterations = 2 if quick else 6
    with tempfile.TemporaryDirectory() as tmp:
        for config in pretraining_bundles():
            settings = yaml.safe_load(config.read_text())
            name, modality = config.parents[1].name, Path(str(settings["dataset_dir"])).name
            if modality not in MODALITIES:
                rows.append({"bundle": name, "error": f"dataset_dir {settings['dataset_dir']!r} names no modality"})
                continue
            per_batch = int(settings["batch_size"])
            n = next(k for k in range(2, 10**4) if split_counts(k)[0] >= per_batch * iterations)
            size = {"xray": [64, 64]}.get(modality)  # resized to the bundle's image_size by its own chain
            data = Path(tmp) / f"{modality}_{n}"
            if not data.exists():
                synthesize_cohort(modality, n, data, size=size, progress=False)
            root = Path(tmp) / name
            command = [
                sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config),
                "--dataset_dir", str(data), "--bundle_root", str(root), "--epochs", "1", "--num_workers", "0",
                "--log_every", "1", "--resume", "False",
            ]
            done = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *command], capture_output=True, text=True)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")), "RESULT 1 0 0")
            code, rss_kb, wall = line.split()[1:]
            row = {
                "bundle": name, "modality": modality, "batch_size": per_batch, "iterations": iterations,
                "crop": settings.get("crop_size") or settings.get("image_size") or settings.get("tile_size"),
                "peak_rss_mb": round(int(rss_kb) / 1024), "wall_s": round(float(wall), 1),
            }
            if code != "0":
                row["error"] = (done.stderr or done.stdout).strip().splitlines()[-1][:300]
            else:
                row["s_per_iteration"] = iteration_seconds(root / "models" / "tensorboard")
            rows.append(row)
            print(f"  {name:22s} {row}")
    return rows


# ----------------------------------------------------------------------------------------------------------
# GPU


def bench_gpu(quick: bool) -> dict:
    if not torch.cuda.is_available():
        reason = "skipped: torch.cuda.is_available() is False (no GPU on this machine)"
        print(f"  {reason}")
        return {"skipped": reason}
    from medssl3d.transforms import RandGenesisCorruption, mask_patches

    device = torch.device("cuda")
    result = {"device": torch.cuda.get_device_name()}

    def cuda_ms(fn, calls=10):
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / calls * 1e3

    method, optimizer = genesis_setup()
    method.to(device)
    batch = {"image": torch.rand(8, 1, 64, 64, 32, device=device), "target": torch.rand(8, 1, 64, 64, 32, device=device)}
    scaler = torch.amp.GradScaler("cuda")

    def step(amp: bool):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = method(batch)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    fp32, amp = cuda_ms(lambda: step(False)), cuda_ms(lambda: step(True))
    method.to(memory_format=torch.channels_last_3d)
    batch = {k: v.contiguous(memory_format=torch.channels_last_3d) for k, v in batch.items()}
    amp_cl = cuda_ms(lambda: step(True))
    result.update(step_fp32_ms=fp32, step_amp_ms=amp, amp_speedup=fp32 / amp, channels_last_amp_ms=amp_cl,
                  channels_last_speedup=amp / amp_cl)
    corruption = RandGenesisCorruption().set_random_state(0)
    cubes = torch.from_numpy(np.stack([ct_array((64, 64, 32))] * 32))
    gpu_cubes = cubes.to(device)
    result["corrupt_batch_gpu_ms_per_cube"] = cuda_ms(lambda: corruption.corrupt_batch(gpu_cubes), 5) / len(cubes)
    result["corruption_cpu_ms_per_cube_one_worker"] = median_ms(lambda: corruption(cubes[0].numpy()), 20, 3)
    result["mask_patches_gpu_ms_per_cube"] = cuda_ms(lambda: mask_patches(gpu_cubes, 8, 0.6), 5) / len(cubes)
    print(f"  {result}")
    return result


# ----------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller cohorts (<= 10 min on 2 cores)")
    parser.add_argument("--out", default="benchmarks/speed.json", help="where the results are written as JSON")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections not to run")
    args = parser.parse_args()
    start = time.perf_counter()
    results = {
        "command": " ".join(["python", "benchmarks/speed.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, numpy {np.__version__}",
        "load_average_at_start": os.getloadavg(),
    }
    threads = torch.get_num_threads()
    for section in SECTIONS:
        if section in args.skip:
            continue
        print(f"[{section}]", flush=True)
        one_thread = section in ("transforms", "genesis")
        torch.set_num_threads(1 if one_thread else threads)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1 if one_thread else None):
            results[section] = globals()[f"bench_{section}"](args.quick)
    results["load_average_at_end"] = os.getloadavg()
    results["runtime_s"] = round(time.perf_counter() - start, 1)
    Path(args.out).write_text(json.dumps(results, indent=1, default=float))  # numpy scalars as floats
    print(f"total {results['runtime_s']} s; results in {args.out}")


if __name__ == "__main__":
    main()

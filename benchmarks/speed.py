"""Speed benchmarks of medssl3d, each figure a ratio or a share measured in one run on one machine.

    python benchmarks/speed.py [--quick] [--out benchmarks/speed.json] [--skip SECTION ... | --only SECTION ...]

Sections (``--skip`` takes their names):

* ``transforms``: ms per call of every array transform exported by ``medssl3d.transforms`` (its defaults),
  one thread, on a windowed synthetic CT of 64x64x32 and of 96^3 (the 2D ones on 224x224 and 64x64).
* ``genesis``: the full Models Genesis corruption against ``reference_genesis`` below, a plain per-window
  Python implementation of the published algorithm written for this benchmark (the speed reference), with
  the mean |corrupted - original| of both over the same cube as a check that the statistics match.
* ``step``: one training iteration of ``medssl3d.engine.build_trainer`` as the bundles call it (progress bar,
  TensorBoard every 10 iterations, embedding spread every 100, warm-up cosine schedule; checkpoints only after
  the timed iterations) against a bare ``zero_grad / forward / backward / step / scheduler.step`` loop on the
  same Models Genesis method (resnet18, same seed), batches and AdamW: process CPU time on one thread over 100
  iterations per round, in interleaved rounds (workflow, bare, bare, workflow, ...). The step is small (2 crops of
  32^3), so the per-iteration overhead weighs more than at a bundle's default batch.
* ``pipeline``: share of the iteration time spent waiting in ``next(iterator)`` for the ``genesis_ct``
  bundle's data loader (CacheDataset of the deterministic chain, 2 workers) on a synthetic CT cohort.
* ``bundles``: peak RSS and seconds per iteration of ``python -m monai.bundle run`` for every pretraining
  bundle found (``bundles/*/configs/train.yaml`` whose trainer is ``medssl3d.engine.build_trainer``), at its
  default crop and batch, on a tiny synthetic cohort (2 epochs of 3 or 4 iterations), in a fresh subprocess
  each; per iteration both wall-clock and the bundle process's CPU time, stamped by :class:`IterationClock`.
* ``gpu``: AMP and channels-last speed-ups, GPU patch masking and batched Genesis corruption (a bundle's
  ``corruption_on: batch``, batches of 8) against the CPU corruption; skipped without CUDA.

One-thread figures (transforms, genesis, step) are CPU time of the process, so other jobs on the machine inflate
them only through shared caches; the others are wall-clock (bundles: CPU time too). Timings of different code
are interleaved in rounds and summarised by their median, so a second job slows both sides of a ratio alike.
``--only`` runs some sections; the others are kept from an existing ``--out`` file, and ``section_runs``
records when, by which command and under which load average each section ran.
"""

from __future__ import annotations

import argparse
import contextlib
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


STEP_EPOCH = 20  # batches per epoch: the workflow's per-epoch work (RNG snapshot, new iterator) is timed too


def _step_loader(batch: int, crop: tuple[int, ...]):
    """A DataLoader over ``STEP_EPOCH`` ready batch dicts (no collation)."""
    gen = torch.Generator().manual_seed(0)
    batches = [{key: torch.rand(batch, 1, *crop, generator=gen) for key in ("image", "target")}
               for _ in range(STEP_EPOCH)]
    return torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)


class BareLoopBeside:
    """Ignite handler attached after all of ``build_trainer``'s own: after each workflow iteration it runs one
    iteration of a bare ``zero_grad / forward / backward / step / scheduler.step`` loop on a second model (same
    seed, same batch), so the two alternate iteration by iteration and drifts in the machine's speed hit both
    alike. ``workflow[i]``: process CPU time from the end of the previous bare iteration to the end of workflow
    iteration ``i`` (data, step and every handler); ``bare[i]``: CPU time of bare iteration ``i``."""

    def __init__(self, total: int) -> None:
        from medssl3d.engine import warmup_cosine_schedule

        self.method, self.optimizer = genesis_setup()
        self.scheduler = warmup_cosine_schedule(self.optimizer, min(500, total), total)  # as the workflow's
        self.method.train()
        self.workflow: list[float] = []
        self.bare: list[float] = []
        self.last = None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def start(self, _engine) -> None:
        self.last = time.process_time()

    def __call__(self, engine) -> None:
        start = time.process_time()
        self.workflow.append(start - self.last)
        self.optimizer.zero_grad(set_to_none=True)
        self.method(engine.state.batch)["loss"].backward()
        self.optimizer.step()
        self.scheduler.step()
        self.last = time.process_time()
        self.bare.append(self.last - start)


def bench_step(quick: bool) -> dict:
    """Workflow (``build_trainer`` as the bundles call it) against a bare loop run beside it (see
    :class:`BareLoopBeside`), process CPU time on one thread, in blocks of 100 iterations (10 TensorBoard
    writes and one embedding-spread pass each) after ``warmup`` iterations."""
    from medssl3d.engine import build_trainer, warmup_cosine_schedule

    batch, crop = 2, (32, 32, 32)
    block, blocks, warmup = 100, (1 if quick else 3), 5
    total = warmup + block * blocks
    method, optimizer = genesis_setup()
    beside = BareLoopBeside(total)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(  # bundle defaults otherwise: log_every 10, spread every 100, progress bar
            method, _step_loader(batch, crop), optimizer, tmp, max_iterations=total, checkpointing={"resume": False},
            scheduler=warmup_cosine_schedule(optimizer, min(500, total), total), handlers=[beside],
        )
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):  # the progress bar still renders
            trainer.run()
    workflow = np.reshape(beside.workflow[warmup:], (blocks, block))
    bare = np.reshape(beside.bare[warmup:], (blocks, block))
    per_block = workflow.sum(axis=1) / bare.sum(axis=1)
    result = {
        "setup": f"genesis, resnet18, batch {batch} x 1 x {'x'.join(map(str, crop))}, AdamW + warm-up cosine "
        f"schedule, CPU, {torch.get_num_threads()} torch thread; build_trainer as in the bundles (progress bar, "
        f"TensorBoard every 10, embedding spread every 100, checkpoints only after the timed iterations), "
        f"epochs of {STEP_EPOCH} batches; bare loop alternating iteration by iteration; process CPU time",
        "warmup_iterations": warmup, "timed_iterations": int(workflow.size), "block": block,
        "workflow_s_per_iteration": round(float(workflow.mean()), 4),
        "bare_loop_s_per_iteration": round(float(bare.mean()), 4),
        "overhead_ms_per_iteration": round(float((workflow - bare).mean()) * 1e3, 2),
        "ratio": round(float(workflow.sum() / bare.sum()), 4),
        "ratio_per_block": [round(float(r), 4) for r in per_block],
        "ratio_median_of_iterations": round(float(np.median(workflow / bare)), 4),
        "ratio_iterations_quartiles": [round(float(q), 4) for q in np.quantile(workflow / bare, [0.25, 0.75])],
        "target_ratio": 1.05,
    }
    print(f"  workflow {result['workflow_s_per_iteration']} s/it, bare loop {result['bare_loop_s_per_iteration']} "
          f"s/it (CPU): ratio {result['ratio']} (blocks {result['ratio_per_block']}, per-iteration median "
          f"{result['ratio_median_of_iterations']}), overhead {result['overhead_ms_per_iteration']} ms/it")
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


class IterationClock:
    """Ignite handler, the bundle run's side of the ``bundles`` section: process CPU time and wall-clock at every
    ``ITERATION_COMPLETED``, written as JSON to ``path`` when the run completes. A bundle run gets it through
    ``--train#handlers "$[__import__('speed').IterationClock(path)]"`` with ``benchmarks/`` on ``PYTHONPATH``."""

    def __init__(self, path: str) -> None:
        self.path, self.cpu, self.wall = Path(path), [], []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: (self.cpu.append(time.process_time()),
                                                                         self.wall.append(time.perf_counter())))
        engine.add_event_handler(Events.COMPLETED, lambda _: self.path.write_text(json.dumps(
            {"cpu": self.cpu, "wall": self.wall, "threads": torch.get_num_threads()})))


def bench_bundles(quick: bool) -> list[dict]:
    from medssl3d.data.synthetic import MODALITIES, split_counts, synthesize_cohort

    rows = []
    per_epoch, epochs = (3, 2) if quick else (4, 2)  # iterations per epoch (cohort size) and epochs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as tmp:
        for config in pretraining_bundles():
            settings = yaml.safe_load(config.read_text())
            name, modality = config.parents[1].name, Path(str(settings["dataset_dir"])).name
            if modality not in MODALITIES:
                rows.append({"bundle": name, "error": f"dataset_dir {settings['dataset_dir']!r} names no modality"})
                continue
            per_batch = int(settings["batch_size"])
            n = next(k for k in range(2, 10**4) if split_counts(k)[0] >= per_batch * per_epoch)
            size = {"xray": [64, 64]}.get(modality)  # resized to the bundle's image_size by its own chain
            data = Path(tmp) / f"{modality}_{n}"
            if not data.exists():
                synthesize_cohort(modality, n, data, size=size, progress=False)
            root, clock = Path(tmp) / name, Path(tmp) / f"{name}_clock.json"
            command = [
                sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config),
                "--dataset_dir", str(data), "--bundle_root", str(root), "--epochs", str(epochs), "--num_workers", "0",
                "--resume", "False", "--train#handlers", f"$[__import__('speed').IterationClock({str(clock)!r})]",
            ]
            load = os.getloadavg()
            done = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *command], capture_output=True, text=True,
                                  env=env)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")), "RESULT 1 0 0")
            code, rss_kb, wall = line.split()[1:]
            row = {
                "bundle": name, "modality": modality, "batch_size": per_batch,
                "crop": settings.get("crop_size") or settings.get("image_size") or settings.get("tile_size"),
                "peak_rss_mb": round(int(rss_kb) / 1024), "wall_s": round(float(wall), 1),
                "load_average_at_start": [round(v, 2) for v in load],
            }
            if code != "0" or not clock.is_file():
                row["error"] = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1][:300]
            else:  # the first iteration (set-up, first batch) is left out
                stamps = json.loads(clock.read_text())
                cpu, wall_gaps = np.diff(stamps["cpu"]), np.diff(stamps["wall"])
                row.update(
                    iterations=len(stamps["cpu"]), timed_iterations=len(cpu), torch_threads=stamps["threads"],
                    s_per_iteration=round(float(np.median(wall_gaps)), 2),
                    s_per_iteration_min_max=[round(float(wall_gaps.min()), 2), round(float(wall_gaps.max()), 2)],
                    cpu_s_per_iteration=round(float(np.median(cpu)), 2),
                    cpu_s_per_iteration_min_max=[round(float(cpu.min()), 2), round(float(cpu.max()), 2)],
                )
            rows.append(row)
            print(f"  {name:22s} {row}", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------------------
# GPU


def bench_gpu(quick: bool) -> dict:
    if not torch.cuda.is_available():
        reason = "skipped: torch.cuda.is_available() is False (no GPU on this machine)"
        print(f"  {reason}")
        return {"skipped": reason}
    from medssl3d.transforms import BatchGenesisCorruption, RandGenesisCorruption, mask_patches

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
    result["corruption_cpu_ms_per_cube_one_worker"] = median_ms(lambda: corruption(cubes[0].numpy()), 20, 3)
    result["mask_patches_gpu_ms_per_cube"] = cuda_ms(lambda: mask_patches(gpu_cubes, 8, 0.6), 5) / len(cubes)
    batched = BatchGenesisCorruption()  # corruption_on: batch
    result["batch_genesis_gpu_ms_per_cube"] = cuda_ms(lambda: batched(gpu_cubes[:8]), 5) / 8
    print(f"  {result}")
    return result


# ----------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller cohorts (<= 10 min on 2 cores)")
    parser.add_argument("--out", default="benchmarks/speed.json",
                        help="JSON results; the sections not run now are kept from an existing file")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections not to run")
    group.add_argument("--only", nargs="+", choices=SECTIONS, help="the sections to run (default: all)")
    args = parser.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    command = " ".join(["python", "benchmarks/speed.py", *sys.argv[1:]])
    results["machine"] = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                          f"torch {torch.__version__}, numpy {np.__version__}")
    runs = results.setdefault("section_runs", {})  # when, by which command and under which load each ran
    threads = torch.get_num_threads()
    from threadpoolctl import threadpool_limits

    for section in args.only or [s for s in SECTIONS if s not in args.skip]:
        print(f"[{section}]", flush=True)
        one_thread = section in ("transforms", "genesis", "step")
        torch.set_num_threads(1 if one_thread else threads)
        start, load, started = time.perf_counter(), os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with threadpool_limits(1 if one_thread else None):
            results[section] = globals()[f"bench_{section}"](args.quick)
        runs[section] = {"command": command, "started": started,
                         "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         "load_average_at_start": [round(v, 2) for v in load],
                         "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
                         "runtime_s": round(time.perf_counter() - start, 1)}
        out.write_text(json.dumps(results, indent=1, default=float))  # after each section; numpy scalars as floats
    print(f"results in {args.out}")

if __name__ == "__main__":
    main()

"""Speed of the Models Genesis corruptions on one CPU thread, in ms per cube (default 1x64x64x32).

    python benchmarks/genesis_speed.py [--shape 64 64 32] [--repeats 200] [--baseline OLD_genesis.py]
    python benchmarks/genesis_speed.py --paths [--shape 64 64 32] [--batch 8] [--repeats 10]

CPU time of the process (one thread), so other jobs inflate it only through shared caches. Each
operation is timed at probability 1, the full corruption at the published probabilities
(mean over ``--repeats`` cubes, best of 5 rounds), next to a plain per-window loop of local pixel shuffling (the
published algorithm) for comparison. ``--baseline`` times another version of ``genesis.py`` (e.g. ``git show
HEAD:medssl3d/transforms/genesis.py``; loaded inside ``medssl3d.transforms``, so its relative imports find the
installed kernels) round by round alongside the current one, so that a before/after ratio survives other jobs on
the machine.

``--paths`` compares the two places a bundle can corrupt its crops (its ``corruption_on`` key), per batch of
``--batch`` crops (default: genesis_ct's 2 volumes x 4 crops of 64x64x32): ``loader``, the per-sample dictionary
transforms (``RandGenesisCorruptiond``, ``RandMaskedPatchesd`` with masked_ct's 16x16x8 patches) once per crop,
as the data-loader workers run them, against ``batch``, the batch transforms (``BatchGenesisCorruptiond``,
``BatchMaskedPatchesd``) on the whole batch tensor, here on the CPU (one thread, CPU time; the batch path is meant
for a GPU, where ``speed.py``'s GPU section times it).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import importlib.util  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from medssl3d.transforms import (  # noqa: E402
    BatchGenesisCorruptiond,
    BatchMaskedPatchesd,
    RandGenesisCorruptiond,
    RandMaskedPatchesd,
)
from medssl3d.transforms.genesis import RandGenesisCorruption  # noqa: E402


def per_window_shuffle(image: np.ndarray, rng: np.random.Generator, num_windows: int = 10000) -> np.ndarray:
    """Local pixel shuffling one window at a time, as in the published code (the speed reference)."""
    out = image.copy()
    spatial = image.shape[1:]
    for _ in range(num_windows):
        sizes = [int(rng.integers(1, d // 10 + 1)) for d in spatial]
        starts = [int(rng.integers(0, d - s + 1)) for d, s in zip(spatial, sizes)]
        box = (0,) + tuple(slice(a, a + s) for a, s in zip(starts, sizes))
        out[box] = rng.permutation(image[box].ravel()).reshape(sizes)
    return out


def ms_per_call(fn, repeats: int, rounds: int = 5) -> float:
    """Mean CPU ms per call over ``repeats`` calls, best of ``rounds`` rounds (robust to other processes)."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(repeats):
            fn()
        best = min(best, (time.process_time() - start) / repeats * 1e3)
    return best


def operations(module) -> dict:
    """The timed operations, built from a genesis module (the current one or a baseline)."""
    return {
        "local pixel shuffling (p=1)": module.RandLocalPixelShuffle(prob=1.0),
        "Bezier intensity (p=1)": module.RandBezierIntensity(prob=1.0),
        "in-painting (p=1)": module.RandPainting(prob=1.0, inpaint_prob=1.0),
        "out-painting (p=1)": module.RandPainting(prob=1.0, inpaint_prob=0.0),
        "full corruption (published p)": module.RandGenesisCorruption(),
    }


def compare(cube: np.ndarray, baseline_path: str, repeats: int, rounds: int = 9) -> None:
    """Current against baseline, alternating every round; prints the medians and their ratio."""
    spec = importlib.util.spec_from_file_location("medssl3d.transforms.genesis_baseline", baseline_path)
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    current = sys.modules[RandGenesisCorruption.__module__]
    pairs = {name: (op, operations(baseline)[name]) for name, op in operations(current).items()}
    print(f"current vs {baseline_path}: median of {rounds} alternating rounds, ms per cube")
    for name, (new, old) in pairs.items():
        new.set_random_state(0), old.set_random_state(0)
        times = [[ms_per_call(lambda op=op: op(cube), repeats, 1) for op in (new, old)] for _ in range(rounds)]
        new_ms, old_ms = np.median(times, axis=0)
        print(f"  {name:34s} {new_ms:8.3f} {old_ms:8.3f}   ratio {new_ms / old_ms:.3f}")


def compare_paths(shape: list[int], batch: int, repeats: int, rounds: int = 5) -> None:
    """Per batch: the per-sample transforms on each crop (loader path) against the batch transforms (batch path)."""
    crops = torch.from_numpy(np.random.default_rng(0).random((batch, 1, *shape), dtype=np.float32))
    patch = [max(1, s // 4) for s in shape]  # masked_ct: 16x16x8 on 64x64x32
    pairs = {
        "Genesis corruption": (
            RandGenesisCorruptiond(keys="image", target_key="target").set_random_state(0),
            BatchGenesisCorruptiond(keys="image", target_key="target", generator=torch.Generator().manual_seed(0)),
        ),
        f"patch masking {'x'.join(map(str, patch))}": (
            RandMaskedPatchesd(keys="image", patch_size=patch).set_random_state(0),
            BatchMaskedPatchesd(keys="image", patch_size=patch, generator=torch.Generator().manual_seed(0)),
        ),
    }
    print(f"batch of {batch} crops 1x{'x'.join(map(str, shape))} float32, 1 CPU thread, ms per batch "
          f"(best of {rounds} rounds of the mean over {repeats} batches)")
    print(f"  {'':24s} {'loader path':>12s} {'batch path':>12s} {'batch/loader':>13s}")
    for name, (per_sample, batched) in pairs.items():
        loader_ms = ms_per_call(lambda t=per_sample: [t({"image": crop}) for crop in crops], repeats, rounds)
        batch_ms = ms_per_call(lambda t=batched: t({"image": crops}), repeats, rounds)
        print(f"  {name:24s} {loader_ms:12.2f} {batch_ms:12.2f} {batch_ms / loader_ms:12.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 64, 32], help="spatial shape of the cube")
    parser.add_argument("--repeats", type=int, default=200, help="cubes per timing")
    parser.add_argument("--baseline", help="another genesis.py to time alongside the current one")
    parser.add_argument("--paths", action="store_true", help="loader path against batch path, per batch")
    parser.add_argument("--batch", type=int, default=8, help="crops per batch for --paths")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.paths:
        compare_paths(args.shape, args.batch, args.repeats)
        return
    cube = np.random.default_rng(0).random((1, *args.shape), dtype=np.float32)
    if args.baseline:
        compare(cube, args.baseline, args.repeats)
        return
    ops = operations(sys.modules[RandGenesisCorruption.__module__])
    print(f"cube {cube.shape} float32, 1 CPU thread, ms per cube")
    for name, op in ops.items():
        op.set_random_state(0)
        print(f"  {name:34s} {ms_per_call(lambda op=op: op(cube), args.repeats):8.3f}")
    rng = np.random.default_rng(0)
    print(f"  {'per-window shuffle loop (reference)':34s} {ms_per_call(lambda: per_window_shuffle(cube, rng), 3):8.3f}")


if __name__ == "__main__":
    main()

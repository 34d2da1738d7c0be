"""Milliseconds per 1x64x64x32 cube on one CPU thread for every pretext transform (dictionary form).

Run: ``python benchmarks/transform_speed.py [--calls 100]``. Each transform is seeded, warmed up once, then
timed over ``--calls`` calls on a fresh copy of a preprocessed synthetic CT crop in [0, 1]; the figure is
the mean wall time per call. Rotation needs equal sides on the rotated planes, so it runs on 64^3.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

torch.set_num_threads(1)

from medssl3d.data.synthetic import synth_ct  # noqa: E402
from medssl3d.transforms import (  # noqa: E402
    MultiViewd,
    RandGenesisCorruptiond,
    RandIntensityJitterd,
    RandJigsawd,
    RandMaskedPatchesd,
    RandPatchSwapd,
    RandPositionCropd,
    RandRelativePatchLocationd,
    RandRotationPredictiond,
    RandRubikCubed,
    RandSliceDropoutd,
    ct_mri_views_3d,
)


def ct_cube(shape):
    """A synthetic CT, windowed to [0, 1] (Models Genesis window), as a (1, *shape) float32 tensor."""
    hu = synth_ct((max(shape[0], 64), max(shape[1], 64), max(shape[2], 32)), rng=np.random.default_rng(0)).image
    window = np.clip((hu[: shape[0], : shape[1], : shape[2]].astype(np.float32) + 1000) / 2000, 0, 1)
    return torch.from_numpy(window[None].copy())


CASES = [
    ("Models Genesis corruption (published p)", lambda: RandGenesisCorruptiond("image"), (64, 64, 32)),
    ("Rubik's cube (2x2x2, 100 permutations)", lambda: RandRubikCubed("image"), (64, 64, 32)),
    ("Rubik's cube+ (mask_prob 0.5)", lambda: RandRubikCubed("image", mask_prob=0.5), (64, 64, 32)),
    ("rotation, 10 classes", lambda: RandRotationPredictiond("image"), (64, 64, 64)),
    ("rotation, 24 classes", lambda: RandRotationPredictiond("image", num_classes=24), (64, 64, 64)),
    ("jigsaw 3x3x3, 100 permutations", lambda: RandJigsawd("image"), (64, 64, 32)),
    ("relative patch location (26-way)", lambda: RandRelativePatchLocationd("image"), (64, 64, 32)),
    ("patch swapping (8^3 patches, 10 pairs)", lambda: RandPatchSwapd("image"), (64, 64, 32)),
    ("slice dropout (p 0.1 per slice)", lambda: RandSliceDropoutd("image"), (64, 64, 32)),
    ("masked patches (8^3, ratio 0.6)", lambda: RandMaskedPatchesd("image"), (64, 64, 32)),
    ("intensity jitter", lambda: RandIntensityJitterd("image"), (64, 64, 32)),
    ("anatomical position crop (32x32x16)", lambda: RandPositionCropd("image", roi_size=(32, 32, 16), n_bins=4), (64, 64, 32)),
    (
        "2 views, CT chain without elastic",
        lambda: MultiViewd("image", ct_mri_views_3d((64, 64, 32), elastic=False)),
        (64, 64, 32),
    ),
    ("2 views, CT chain with elastic (p 0.3)", lambda: MultiViewd("image", ct_mri_views_3d((64, 64, 32))), (64, 64, 32)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    print(f"{'transform':<44} {'input':<10} ms per call (mean of {args.calls}, 1 thread)")
    for name, make, shape in CASES:
        transform = make()
        transform.set_random_state(0)
        cube = ct_cube(shape)
        transform({"image": cube.clone()})
        inputs = [{"image": cube.clone()} for _ in range(args.calls)]
        start = time.perf_counter()
        for sample in inputs:
            transform(sample)
        milliseconds = (time.perf_counter() - start) / args.calls * 1000
        print(f"{name:<44} {'x'.join(map(str, shape)):<10} {milliseconds:8.2f}")


if __name__ == "__main__":
    main()

"""The ``medssl3d`` command: ``synth``, ``preprocess`` and ``demo``.

Errors a user can fix (bad arguments, unwritable folders, sizes too small) print one line and exit with
status 2; ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main"]

DEMO_CT_SIZE = (96, 96, 48)
DEMO_CASES = 4


def _add_synth(subparsers) -> None:
    from .data.synthetic import DEFAULT_SIZES, DEFAULT_SPACINGS, MODALITIES

    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic CT/MRI/X-ray/histology cohort with masks and a datalist",
        description="Write a synthetic cohort: images, masks, a Decathlon-style datalist.json and, for CT, "
        "a LUNA16-style nodules.csv. Deterministic per --seed.",
    )
    parser.add_argument("--modality", required=True, choices=MODALITIES)
    parser.add_argument("--n", type=int, default=8, help="number of cases (default 8)")
    parser.add_argument(
        "--size", type=int, nargs="+", default=None,
        help="voxels/pixels per axis, one value for all axes or one per axis; defaults: "
        + ", ".join(f"{m} {'x'.join(map(str, s))}" for m, s in DEFAULT_SIZES.items()),
    )
    parser.add_argument(
        "--spacing", type=float, nargs=3, default=None,
        help="voxel size in mm (3D only); defaults: "
        + ", ".join(f"{m} {'x'.join(map(str, s))}" for m, s in DEFAULT_SPACINGS.items()),
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path, help="output folder (must be empty or absent)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.set_defaults(run=_run_synth)


def _run_synth(args) -> None:
    from .data.synthetic import synthesize_cohort

    start = time.perf_counter()
    datalist = synthesize_cohort(
        args.modality, args.n, args.out, args.size, args.spacing, args.seed, args.overwrite, progress=True
    )
    seconds = time.perf_counter() - start
    print(f"wrote {args.n} {args.modality} cases to {datalist.parent} ({seconds / args.n:.2f} s per case)")
    print(f"datalist: {datalist}")


def _add_preprocess(subparsers) -> None:
    from .preprocessing import CHAINS

    parser = subparsers.add_parser(
        "preprocess",
        help="run a reference preprocessing chain over a datalist and save the results",
        description="Run configs/preprocessing/<chain>.yaml (or any chain YAML) over every item of a "
        "Decathlon-style datalist and save each key as NIfTI.",
    )
    parser.add_argument("--chain", required=True, help=f"one of {', '.join(CHAINS)}, or a YAML file")
    parser.add_argument("--datalist", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--keys", nargs="+", default=["image"], help="datalist keys to process (default: image)")
    parser.set_defaults(run=_run_preprocess)


def _print_cases(cases) -> None:
    print(f"{'case':<12} {'shape':<18} {'spacing (mm)':<20} {'axes':<5} {'range':<14} files")
    for case in cases:
        shape = "x".join(map(str, case.shapes["image"]))
        spacing = "x".join(f"{s:.2f}" for s in case.spacing)
        value_range = f"[{case.value_range[0]:.2f}, {case.value_range[1]:.2f}]"
        files = ", ".join(str(p) for p in case.outputs.values())
        print(f"{case.name:<12} {shape:<18} {spacing:<20} {case.orientation:<5} {value_range:<14} {files}")


def _run_preprocess(args) -> None:
    from .preprocessing import preprocess_datalist

    if not args.datalist.is_file():
        raise FileNotFoundError(f"datalist '{args.datalist}' does not exist.")
    _print_cases(preprocess_datalist(args.chain, args.datalist, args.out, keys=args.keys))


def _add_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the built-in default job: synthesize a small CT cohort and run the CT preprocessing chain",
        description="Synthesize a small chest-CT cohort (int16 HU, LPS, anisotropic spacing) and pass it "
        "through the reference CT preprocessing chain (configs/preprocessing/ct.yaml).",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default demo_output)")
    parser.add_argument("--n", type=int, default=DEMO_CASES, help=f"number of CT cases (default {DEMO_CASES})")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_run_demo)


def _run_demo(args) -> None:
    from .data.synthetic import synthesize_cohort
    from .preprocessing import preprocess_datalist

    start = time.perf_counter()
    datalist = synthesize_cohort("ct", args.n, args.out / "synthetic_ct", DEMO_CT_SIZE, seed=args.seed, overwrite=True)
    print(f"1/2 synthesized {args.n} chest CTs ({'x'.join(map(str, DEMO_CT_SIZE))} voxels, 0.7x0.7x2.5 mm, "
          f"LPS, int16 HU) and {datalist}")
    cases = preprocess_datalist("ct", datalist, args.out / "preprocessed_ct", keys=("image", "label"))
    print("2/2 CT preprocessing chain (RAS, 1x1x2 mm, body crop, Models-Genesis window [-1000, 1000] HU -> [0, 1]):")
    _print_cases(cases)
    print(f"done in {time.perf_counter() - start:.1f} s. Self-supervised pretraining on these volumes is the "
          "next step of medssl3d and is not part of this demo yet.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medssl3d", description="Self-supervised pretraining of medical image encoders with MONAI."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_synth(subparsers)
    _add_preprocess(subparsers)
    _add_demo(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, PermissionError, OSError) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"medssl3d {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

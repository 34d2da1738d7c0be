"""The ``medssl3d`` command: ``synth``, ``preprocess``, ``demo``, ``evaluate`` and ``sweep``.

Errors a user can fix (bad arguments, unwritable folders, sizes too small) print one line and exit with
status 2; ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main"]

def _add_synth(subparsers) -> None:
    from .data.synthetic import DEFAULT_SIZES, DEFAULT_SPACINGS, MODALITIES

    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic CT/MRI/X-ray/histology cohort with masks and a datalist",
        description="Write a synthetic cohort: images, masks, a Decathlon-style datalist.json and, for CT, "
        "a LUNA16-style nodules.csv (with diameters), for X-ray a boxes.csv of nodule boxes. Deterministic per --seed.",
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
    parser.add_argument("--nodule-scale", type=float, default=1.0,
                        help="CT: multiplies every nodule radius (default 1; 2 gives detectable nodules on small phantoms)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (must be empty or absent)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.set_defaults(run=_run_synth)


def _run_synth(args) -> None:
    from .data.synthetic import synthesize_cohort

    start = time.perf_counter()
    if args.nodule_scale != 1.0 and args.modality != "ct":
        raise ValueError(f"--nodule-scale applies to --modality ct, not to {args.modality}.")
    if args.nodule_scale <= 0:
        raise ValueError(f"--nodule-scale must be positive, got {args.nodule_scale}.")
    datalist = synthesize_cohort(
        args.modality, args.n, args.out, args.size, args.spacing, args.seed, args.overwrite, progress=True,
        nodule_scale=args.nodule_scale,
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
    from .demo import add_parser

    add_parser(subparsers)


def _add_evaluate(subparsers) -> None:
    from .evaluation.command import add_parser

    add_parser(subparsers)


def _add_sweep(subparsers) -> None:
    from .evaluation.sweep import add_parser

    add_parser(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medssl3d", description="Self-supervised pretraining of medical image encoders with MONAI."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_synth(subparsers)
    _add_preprocess(subparsers)
    _add_demo(subparsers)
    _add_evaluate(subparsers)
    _add_sweep(subparsers)
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

"""The ``medssl3d`` command: ``synth``, ``preprocess``, ``demo``, ``evaluate``, ``sweep`` and the data
preparation commands (``dicom-to-nifti``, ``make-datalist`` …).

Errors a user can fix (bad arguments, unwritable folders, sizes too small) print one line and exit with
status 2; ``--debug`` shows the full traceback instead. A data preparation command runs the script of the
same name in the clone's ``data_prep/`` folder, with that script's own options and exit status.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

__all__ = ["DATA_PREP_COMMANDS", "main"]

# data preparation (offline, files -> files): command -> what it does; `medssl3d <command>` runs data_prep/<file>.py
DATA_PREP_COMMANDS = {
    "dicom-to-nifti": "DICOM series -> NIfTI in HU with a sidecar free of patient identifiers",
    "xray-to-png": "radiographs (DICOM/PNG/NIfTI) -> 16-bit PNG, optional CLAHE",
    "tile-histology": "histology slides -> tiles, optional Macenko stain normalisation",
    "medmnist": "a MedMNIST .npz -> images + datalist with the official splits",
    "resample": "images (linear/B-spline) and label maps (nearest) -> a target spacing",
    "extract-nodule-patches": "CT volumes + a LUNA16-style candidate CSV -> nodule patches + datalist",
    "make-datalist": "a folder of images -> datalist JSON with patient-level splits and label fractions",
    "check-dataset": "a datalist -> report of unreadable, non-finite, non-HU or mismatched files",
}

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


def _data_prep_script(command: str) -> Path:
    path = Path(__file__).resolve().parents[1] / "data_prep" / f"{command.replace('-', '_')}.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"'{path}' was not found; install medssl3d from a clone with 'pip install -e .' so that data_prep/ "
            "sits beside the package."
        )
    return path


def run_data_prep(command: str, argv: list[str]) -> int:
    """Run ``data_prep/<command>.py`` with ``argv`` (its own options); return its exit status."""
    path = _data_prep_script(command)
    spec = importlib.util.spec_from_file_location(f"medssl3d_data_prep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    program, sys.argv[0] = sys.argv[0], f"medssl3d {command}"  # the usage line names the command
    try:
        return module.main(argv)
    finally:
        sys.argv[0] = program


def _add_data_prep(subparsers) -> None:
    for command, summary in DATA_PREP_COMMANDS.items():  # listed in --help; main() hands their arguments over
        subparsers.add_parser(command, help=f"data preparation: {summary}", add_help=False)


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
    _add_data_prep(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = argv[:1] == ["--debug"]
    if argv[debug:debug + 1] and argv[debug] in DATA_PREP_COMMANDS:
        try:
            script = _data_prep_script(argv[debug])
        except FileNotFoundError as err:
            print(f"medssl3d {argv[debug]}: error: {err}", file=sys.stderr)
            return 2
        return run_data_prep(script.stem.replace("_", "-"), argv[debug + 1:] + (["--debug"] if debug else []))
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

"""``medssl3d sweep``: pretrain one bundle over a grid of config values, evaluate every run's encoder export
with frozen-feature probes, and compare the runs in one table.

Each combination of the grid is one ``python -m monai.bundle run`` in a subprocess, with its own folder
``OUT/<run>/``: ``args.yaml`` (the ``--args_file`` of the run: config files, ``output_dir``, every override),
``train.log`` and ``models/`` (checkpoints, ``encoder.pt``). A run whose ``models/encoder.pt`` exists is not
trained again, and its evaluation is reused while ``evaluation.json`` is newer and was made with the same
options, so a killed sweep resumes where it stopped (a run killed mid-training resumes from its last
checkpoint through the bundle's ``resume`` key). Then each export is evaluated as ``medssl3d evaluate`` does
(:func:`medssl3d.evaluation.command.probe_export`) and ``OUT/comparison.md`` + ``OUT/comparison.json`` are
written atomically: one row per run and probe with the metrics' mean ± std over seeds/folds and, where a
reference run is set, ``delta_<metric>``: the row's mean minus the reference run's (same probe, same values of
the other keys).

Sweep file (YAML; relative paths are relative to the folder the command runs in, the repository root for the
examples in ``configs/sweeps/``)::

    config_file: bundles/genesis_ct/configs/train.yaml   # one file or a list, merged in order
    overrides:                         # fixed for every run; any config key ("corruption#flip_prob" nests)
      dataset_dir: /workspace/data/ct
      epochs: 20
    grid:                              # every combination of these values is one run
      batch_size: [16, 32, 64]
      crop_size: [[64, 64, 32], [96, 96, 48]]
    reference: {batch_size: 32}        # optional: delta column against the run(s) with these values
    metric: accuracy                   # the metric of the delta column (default accuracy)
    env: {OMP_NUM_THREADS: 4}          # optional environment variables of the training subprocesses
    evaluation:                        # medssl3d evaluate options (dashes or underscores), less encoder/out
      datalist: /workspace/data/ct/datalist.json
      chain: ct
      probes: [knn_weighted, linear_probe]
      folds: 5

Multi-task drop-one ablation (:func:`drop_one_grid`): ``drop_one: {key: tasks, values: [genesis, rotation,
simclr]}`` adds the runs with all tasks and with each task left out (``values`` defaults to the config's own
list), combined with any ``grid``; the all-tasks run is the reference and each row names its ``dropped`` task.
Every key is checked against the merged bundle config (``monai.bundle.ConfigParser``), and the evaluation
options and datalist are checked, before anything runs.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["SweepRun", "add_parser", "drop_one_grid", "load_sweep", "run", "run_sweep"]

SWEEP_KEYS = ("config_file", "overrides", "grid", "drop_one", "reference", "metric", "env", "evaluation")
RESERVED = ("output_dir",)  # set by the sweep for each run
NO_TASK = "none"


def drop_one_grid(tasks) -> list[list[str]]:
    """The drop-one ablation of a multi-task list: all tasks first, then each task left out once.

    ``drop_one_grid(["genesis", "rotation", "simclr"])`` -> ``[[genesis, rotation, simclr], [rotation,
    simclr], [genesis, simclr], [genesis, rotation]]``. Needs at least two distinct task names.
    """
    tasks = list(tasks) if isinstance(tasks, (list, tuple)) else tasks
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"drop_one_grid: tasks must be a list of method names, got {tasks!r}.")
    if len(tasks) < 2 or len(set(tasks)) != len(tasks):
        raise ValueError(f"drop_one_grid: needs at least two distinct tasks, got {tasks}.")
    return [tasks] + [[t for t in tasks if t != left_out] for left_out in tasks]


@dataclass
class SweepRun:
    """One combination: its folder name, the config values it sets and, in a drop-one sweep, the task left out
    (``"none"`` for the all-tasks run)."""

    name: str
    params: dict
    dropped: str | None = None


def _slug(value) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(_slug(v) for v in value)
    if isinstance(value, dict):
        return "+".join(f"{k}-{_slug(v)}" for k, v in value.items())
    return str(value)


def _run_name(params: dict, dropped: str | None, drop_key: str | None) -> str:
    parts = [f"drop-{dropped}"] if dropped is not None else []
    parts += [f"{key.split('#')[-1]}={_slug(value)}" for key, value in params.items() if key != drop_key]
    name = re.sub(r"[^A-Za-z0-9_.=+-]", "_", "_".join(parts))
    if len(name) > 80:
        digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        name = f"{name[:71]}-{digest}"
    return name


def _error(path: Path, message: str) -> ValueError:
    return ValueError(f"sweep file '{path}': {message}")


def _config_parser(path: Path, config_files: list[Path]):
    from monai.bundle import ConfigParser

    missing = [str(f) for f in config_files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"sweep file '{path}': config file(s) {', '.join(missing)} do not exist.")
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files])
    return parser


def _check_keys(path: Path, parser, section: str, keys, config_files: list[Path]) -> None:
    for key in keys:
        if key in RESERVED:
            raise _error(path, f"{section} sets '{key}', which the sweep sets for each run (OUT/<run>/models).")
        if key not in parser:
            close = difflib.get_close_matches(key, [k for k in parser.get("", {}) if isinstance(k, str)], 3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise _error(path, f"{section} key '{key}' is not in the config "
                         f"{', '.join(str(f) for f in config_files)}{hint}")


def _section(path: Path, sweep: dict, key: str, kind: type, default):
    value = sweep.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, kind):
        raise _error(path, f"'{key}' must be a {kind.__name__}, got {value!r}.")
    return value


def _grid_runs(path: Path, parser, grid: dict, drop_one: dict | None) -> tuple[list[SweepRun], str | None]:
    """Every combination (the grid's Cartesian product, then the drop-one lists) and the drop-one key."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise _error(path, f"grid key '{key}' needs a non-empty list of values, got {values!r}.")
    axes = [[(key, value, None) for value in values] for key, values in grid.items()]
    drop_key = None
    if drop_one is not None:
        unknown = sorted(set(drop_one) - {"key", "values"})
        if unknown or "key" not in drop_one:
            raise _error(path, f"drop_one takes 'key' (e.g. tasks) and optional 'values', got {drop_one!r}.")
        drop_key = drop_one["key"]
        if drop_key in grid:
            raise _error(path, f"'{drop_key}' is both a grid key and the drop_one key.")
        tasks = drop_one.get("values")
        if tasks is None:
            _check_keys(path, parser, "drop_one", [drop_key], [])
            tasks = parser[drop_key]
        lists = drop_one_grid(tasks)
        axes.append([(drop_key, value, left) for value, left in zip(lists, [NO_TASK, *tasks])])
    if not axes:
        raise _error(path, "the grid is empty: give 'grid: {key: [values]}' and/or 'drop_one: {key: tasks}'.")
    runs = []
    for combination in itertools.product(*axes):
        params = {key: value for key, value, _ in combination}
        dropped = next((left for _, _, left in combination if left is not None), None)
        runs.append(SweepRun(_run_name(params, dropped, drop_key), params, dropped))
    names = [r.name for r in runs]
    for r in runs:  # names that collide after sanitising get a digest of their values
        if names.count(r.name) > 1:
            r.name += "-" + hashlib.sha1(json.dumps(r.params, sort_keys=True).encode()).hexdigest()[:8]
    return runs, drop_key


def _evaluation_options(path: Path, evaluation: dict) -> list[str]:
    """The evaluation section as ``medssl3d evaluate`` command-line options."""
    options = []
    for key, value in evaluation.items():
        flag = "--" + str(key).replace("_", "-")
        if flag in ("--encoder", "--scratch", "--out", "--compare-scratch"):
            raise _error(path, f"evaluation sets '{key}'; the sweep evaluates each run's own encoder export.")
        if value is True:
            options.append(flag)
        elif value is not False and value is not None:
            options += [flag, *map(str, value if isinstance(value, list) else [value])]
    return options


def load_sweep(path: str | os.PathLike) -> dict:
    """Read and check a sweep file (module docstring) against its bundle config; nothing runs. Returns
    ``{"path", "config_files", "overrides", "runs" (list of SweepRun), "drop_key", "reference", "metric", "env",
    "evaluation" (medssl3d evaluate options)}``."""
    from .command import METRICS, evaluation_args

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file '{path}' does not exist.")
    sweep = yaml.safe_load(path.read_text()) or {}
    if not isinstance(sweep, dict):
        raise _error(path, f"expected a mapping with keys {', '.join(SWEEP_KEYS)}.")
    unknown = sorted(set(sweep) - set(SWEEP_KEYS))
    if unknown:
        raise _error(path, f"unknown key(s) {unknown}; a sweep file has {', '.join(SWEEP_KEYS)}.")
    files = sweep.get("config_file")
    files = [files] if isinstance(files, str) else files
    if not files or not isinstance(files, list):
        raise _error(path, "'config_file' must name the bundle config file (or a list of them).")
    config_files = [Path(f).absolute() for f in files]
    parser = _config_parser(path, config_files)
    overrides = _section(path, sweep, "overrides", dict, {})
    grid = _section(path, sweep, "grid", dict, {})
    _check_keys(path, parser, "overrides", overrides, config_files)
    _check_keys(path, parser, "grid", grid, config_files)
    drop_one = _section(path, sweep, "drop_one", dict, {}) or None
    runs, drop_key = _grid_runs(path, parser, grid, drop_one)
    if drop_key is not None:
        _check_keys(path, parser, "drop_one", [drop_key], config_files)
    reference = dict(_section(path, sweep, "reference", dict, {}))
    swept = {key: {json.dumps(r.params[key]) for r in runs} for key in runs[0].params}
    for key, value in reference.items():
        if json.dumps(value) not in swept.get(key, ()):
            raise _error(path, f"reference {key}: {value!r} is not one of the swept values of '{key}'.")
    if drop_key is not None:  # the all-tasks list (drop_one_grid puts it first)
        reference[drop_key] = runs[0].params[drop_key]
    metric = sweep.get("metric", "accuracy")
    if metric not in METRICS:
        raise _error(path, f"metric '{metric}' is not one of {', '.join(METRICS)}.")
    evaluation = _section(path, sweep, "evaluation", dict, {})
    if not evaluation:
        raise _error(path, "'evaluation' is missing: give at least datalist and chain (medssl3d evaluate options).")
    options = _evaluation_options(path, evaluation)
    try:
        evaluation_args(["--scratch", *options])
    except ValueError as err:
        raise _error(path, f"evaluation: {err}") from err
    env = {str(k): str(v) for k, v in _section(path, sweep, "env", dict, {}).items()}
    return {"path": path, "config_files": config_files, "overrides": overrides, "runs": runs, "drop_key": drop_key,
            "reference": reference, "metric": metric, "env": env, "evaluation": options}


def _train(sweep: dict, run: SweepRun, folder: Path) -> str:
    """Train ``run`` unless its export exists; returns its status: ``trained``, ``reused`` or ``failed``."""
    from medssl3d.atomic import atomic_path

    if (folder / "models" / "encoder.pt").is_file():
        return "reused"
    folder.mkdir(parents=True, exist_ok=True)
    arguments = {"config_file": [str(f) for f in sweep["config_files"]], "output_dir": str(folder / "models"),
                 **sweep["overrides"], **run.params}
    with atomic_path(folder / "args.yaml") as temporary:
        temporary.write_text(yaml.safe_dump(arguments, sort_keys=False))
    command = [sys.executable, "-m", "monai.bundle", "run", "--args_file", str(folder / "args.yaml")]
    with open(folder / "train.log", "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **sweep["env"]})
    return "trained" if code == 0 and (folder / "models" / "encoder.pt").is_file() else "failed"


def _evaluate(sweep: dict, folder: Path, data) -> list[dict]:
    """Probe rows of ``folder/models/encoder.pt``, cached in ``folder/evaluation.json``."""
    from medssl3d.atomic import write_json_atomic

    from .command import evaluation_args, probe_export
    from .report import _json_safe

    export, cache = folder / "models" / "encoder.pt", folder / "evaluation.json"
    if cache.is_file() and cache.stat().st_mtime >= export.stat().st_mtime:
        saved = json.loads(cache.read_text())
        if saved.get("options") == sweep["evaluation"]:  # NaN was written as null
            return [{k: float("nan") if v is None else v for k, v in row.items()} for row in saved["runs"]]
    rows = probe_export(evaluation_args(["--encoder", str(export), *sweep["evaluation"]]), data)
    write_json_atomic(_json_safe({"options": sweep["evaluation"], "runs": rows}), cache)
    return rows


def _display(value) -> str | int | float:
    return value if isinstance(value, (int, float, str)) else _slug(value).replace("+", ", ")


def _comparison(sweep: dict, results: dict[str, tuple[SweepRun, str, list[dict]]]) -> list[dict]:
    """One row per run and probe (mean ± std over seeds/folds), with the delta column where a reference is set."""
    from .command import METRICS
    from .summary import summarize_runs

    metric, reference = sweep["metric"], sweep["reference"]
    rows = []
    for name, (run, status, records) in results.items():
        head = {"run": name, **({"dropped": run.dropped} if run.dropped is not None else {})}
        head.update({key: _display(value) for key, value in run.params.items()})
        summaries = summarize_runs(records, ["method"], METRICS) if records else [{"method": "-"}]
        rows += [{**head, **summary, "status": status, "_params": run.params} for summary in summaries]
    for row in rows:
        if reference and f"{metric}_mean" in row:
            wanted = {**row["_params"], **reference}
            match = next((r for r in rows if r["_params"] == wanted and r["method"] == row["method"]
                          and f"{metric}_mean" in r), None)
            row[f"delta_{metric}"] = row[f"{metric}_mean"] - match[f"{metric}_mean"] if match else float("nan")
    return [{k: v for k, v in row.items() if k != "_params"} for row in rows]


def _write_comparison(sweep: dict, out: Path, rows: list[dict]) -> Path:
    from medssl3d.atomic import atomic_path, write_json_atomic

    from .report import _json_safe, markdown_table

    reference = ", ".join(f"{k} = {_display(v)}" for k, v in sweep["reference"].items()) or "none"
    write_json_atomic(_json_safe({"sweep": str(sweep["path"]), "metric": sweep["metric"], "reference":
                                  sweep["reference"], "evaluation": sweep["evaluation"], "rows": rows}),
                      out / "comparison.json")
    lines = [f"# medssl3d sweep: {sweep['path'].name}", "",
             (f"Bundle config: {', '.join(str(f) for f in sweep['config_files'])}; evaluation: "
              f"`medssl3d evaluate {' '.join(sweep['evaluation'])}`. Metrics: mean ± std over seeds/folds on the "
              f"test items; delta_{sweep['metric']}: the row's mean minus the reference run's ({reference})."), "",
             markdown_table(rows), ""]
    with atomic_path(out / "comparison.md") as temporary:
        temporary.write_text("\n".join(lines))
    return out / "comparison.md"


def run_sweep(sweep_file: str | os.PathLike, out: str | os.PathLike, dry_run: bool = False) -> list[dict]:
    """Check, train, evaluate and compare (module docstring); returns the comparison rows. A run that fails to
    train is listed with status ``failed`` and raises a ChildProcessError after the table is written."""
    from medssl3d.preprocessing import load_chain

    from .command import evaluation_args, labelled_data

    sweep, out = load_sweep(sweep_file), Path(out)
    args = evaluation_args(["--scratch", *sweep["evaluation"]])
    data = labelled_data(args)
    load_chain(args.chain)
    for index, run in enumerate(sweep["runs"], 1):
        state = "done" if (out / run.name / "models" / "encoder.pt").is_file() else "to train"
        print(f"[{index}/{len(sweep['runs'])}] {run.name}: {state}")
    if dry_run:
        return []
    results = {}
    for index, run in enumerate(sweep["runs"], 1):
        folder = out / run.name
        start = time.perf_counter()
        status = _train(sweep, run, folder)
        print(f"[{index}/{len(sweep['runs'])}] {run.name}: {status} ({time.perf_counter() - start:.0f} s)"
              + (f"; log: {folder / 'train.log'}" if status == "failed" else ""))
        results[run.name] = (run, status, _evaluate(sweep, folder, data) if status != "failed" else [])
    rows = _comparison(sweep, results)
    table = _write_comparison(sweep, out, rows)
    print(f"comparison: {table}")
    failed = [name for name, (_, status, _) in results.items() if status == "failed"]
    if failed:
        raise ChildProcessError(f"{len(failed)} of {len(results)} sweep runs failed ({', '.join(failed)}); see "
                                f"their train.log under {out}; {table} compares the others.")
    return rows


def add_parser(subparsers) -> None:
    """Register the ``sweep`` subcommand on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "sweep",
        help="pretrain a bundle over a grid of config values (or a multi-task drop-one ablation) and compare "
        "the encoders with kNN/linear probes",
        description="Run every combination of a sweep file's grid with 'python -m monai.bundle run' (one folder "
        "per run under OUT; finished runs are skipped, so a killed sweep resumes), evaluate each encoder export "
        "as 'medssl3d evaluate' does and write OUT/comparison.md and OUT/comparison.json. The sweep file format "
        "is in the docstring of medssl3d.evaluation.sweep; examples in configs/sweeps/.",
    )
    parser.add_argument("sweep", type=Path, help="sweep file (YAML)")
    parser.add_argument("--out", required=True, type=Path, help="sweep folder: one subfolder per run + comparison")
    parser.add_argument("--dry-run", action="store_true", help="check the sweep file and list the runs; run nothing")
    parser.set_defaults(run=run)


def run(args) -> None:
    """Run ``medssl3d sweep`` with parsed ``args``."""
    run_sweep(args.sweep, args.out, args.dry_run)

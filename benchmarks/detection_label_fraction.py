"""Label-fraction study of detection: pretrain one encoder, fine-tune RetinaNet at several label fractions,
pretrained vs scratch, several seeds; FROC and COCO tables, a curve, and a random-detector baseline.

    python benchmarks/detection_label_fraction.py --profile quick --work-dir WORK
    python benchmarks/detection_label_fraction.py --profile study --work-dir WORK --jobs 2
    python benchmarks/detection_label_fraction.py --profile full --data /data/luna16_like --work-dir runs/det

Without ``--data`` a synthetic cohort is written (settings: ``benchmarks/detection_label_fraction.yaml``). With
``--data`` the folder must hold ``datalist.json`` (training/validation/test lists) and the box table
(``nodules.csv`` for CT, LUNA16's columns; ``boxes.csv`` for X-ray). Nested fractions ``training_<p>pct`` are
added to a copy of the datalist in the work folder (one seeded order of the training list, so 20 % ⊂ 40 % ⊂ ...).
The pretraining bundle (``genesis_ct`` / ``contrastive_xray``) runs once on the training list without labels; every
fine-tuning run is ``bundles/detection_<modality>`` with its ``evaluate.yaml`` on ``test``. The random baseline
scores, per test image, 100 boxes of the training boxes' median size at uniform random places and scores.
Fine-tuning runs go in the order of the profile's ``fractions``, every seed and arm of one fraction before the next
(the study profile starts with 100 % and 20 %: the 100 % runs tell early whether the detector learns at all, and an
interrupted study has all seeds at both ends; a re-run resumes unfinished runs from their checkpoints); ``--jobs``
runs that many at once, each on one torch thread. A profile with ``iterations`` gives every run the same
number of training iterations whatever its fraction (``epochs`` x ``epoch_length``), so that small fractions are
not also trained shorter. Each run records its wall seconds, its seconds per training iteration (median over the
epochs without validation) and the load average. Writes ``<work-dir>/results.json``, ``results.md`` and
``curve.png``; a re-run skips the runs whose test metrics exist.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medssl3d.data.synthetic import synthesize_cohort  # noqa: E402
from medssl3d.detection.boxes import load_detection_datalist  # noqa: E402
from medssl3d.detection.metrics import detection_metrics  # noqa: E402
from medssl3d.prep.datalist import fraction_key  # noqa: E402

BUNDLES = {"ct": ("genesis_ct", "detection_ct", "nodules.csv", 3), "xray": ("contrastive_xray", "detection_xray", "boxes.csv", 2)}
REPORTED = ("froc", "sensitivity_at_1fp", "mAP", "mAR")


def _args(overrides: dict) -> list[str]:
    out = []
    for key, value in overrides.items():
        out += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return out


def _bundle(configs: list[str], overrides: dict, log: Path) -> float:
    """Run ``python -m monai.bundle run`` (one torch thread); return its wall seconds. Raises with the log's tail."""
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(configs), *_args(overrides)]
    start = time.perf_counter()
    with open(log, "a") as handle:  # a run resumed after an interruption continues its log
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    if code:
        raise RuntimeError(f"{' '.join(command[:6])} failed; see {log}:\n{log.read_text()[-2000:]}")
    return time.perf_counter() - start


def seconds_per_iteration(log: Path, epoch_length: int, val_interval: int) -> float | None:
    """Median wall seconds per training iteration from a train log: ignite's epoch times of the epochs that ran no
    validation, divided by the iterations per epoch."""
    pattern = re.compile(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete. Time taken: (\d+):(\d+):([\d.]+)")
    times = [(int(h) * 3600 + int(m) * 60 + float(s)) / epoch_length
             for epoch, h, m, s in pattern.findall(log.read_text()) if int(epoch) % val_interval]
    return float(np.median(times)) if times else None


def nested_fractions(datalist: Path, out: Path, fractions, seed: int = 0) -> Path:
    """Copy ``datalist`` to ``out`` with nested ``training_<p>pct`` lists (one seeded order of ``training``)."""
    content = json.loads(datalist.read_text())
    order = np.random.default_rng(seed).permutation(len(content["training"]))
    for fraction in fractions:
        if fraction < 1:
            count = max(1, int(round(fraction * len(order))))
            content[fraction_key("training", fraction)] = [content["training"][i] for i in sorted(order[:count])]
    out.write_text(json.dumps(content, indent=2))
    return out


def random_baseline(datalist: Path, data: Path, table: Path, dims: int, per_image: int = 100, seed: int = 0) -> dict:
    """Metrics of uniformly placed boxes (training boxes' median size) with random scores, on the test list, in the
    boxes' own coordinates (pixels; world mm for CT)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    train = load_detection_datalist(datalist, "training", data, table, dims)
    boxes = np.concatenate([i["box"] for i in train if len(i["box"])])
    sides = np.median(boxes[:, dims:] if dims == 3 else boxes[:, 2:] - boxes[:, :2], axis=0)
    predictions, references = [], []
    for item in load_detection_datalist(datalist, "test", data, table, dims):
        image = sitk.ReadImage(str(item["image"]))
        size = np.array(image.GetSize(), dtype=float)
        if dims == 3:  # world LPS corners of the scan (any direction), centres uniform inside their bounding box
            corners = np.array([image.TransformContinuousIndexToPhysicalPoint([c * (s - 1) for c, s in zip(k, size)])
                                for k in np.ndindex(2, 2, 2)])
            low, high = corners.min(0), corners.max(0)
            ref = np.concatenate([item["box"][:, :3] - item["box"][:, 3:] / 2, item["box"][:, :3] + item["box"][:, 3:] / 2], 1)
        else:
            low, high, ref = np.zeros(2), size, item["box"]
        centres = rng.uniform(low, high, (per_image, dims))
        predictions.append({"box": np.concatenate([centres - sides / 2, centres + sides / 2], 1),
                            "label": np.zeros(per_image, int), "label_scores": rng.uniform(size=per_image)})
        references.append({"box": ref.reshape(-1, 2 * dims), "label": item["box_label"]})
    return detection_metrics(predictions, references, ["nodule"], *((0.1, 0.5, 0.05), (0.1,)) if dims == 3 else ())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "benchmarks" / "detection_label_fraction.yaml")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--data", type=Path, default=None, help="folder with datalist.json and the box table")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=1, help="fine-tuning runs at once (one torch thread each)")
    parser.add_argument("--report-only", action="store_true",
                        help="tables and curve from the runs that finished (test metrics written); start none")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    settings = yaml.safe_load(args.config.read_text())
    profile, modality = settings["profiles"][args.profile], settings["modality"]
    pretrain_bundle, detect_bundle, table_name, dims = BUNDLES[modality]
    work = args.work_dir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = work / "data"
        if not (data / "datalist.json").is_file():
            synth = profile["synthetic"]
            synthesize_cohort(modality, synth["n"], data, synth["size"], synth.get("spacing"), synth["seed"],
                              progress=False, nodule_scale=synth.get("nodule_scale", 1.0))
    data = data.absolute()
    datalist = nested_fractions(data / "datalist.json", work / "datalist.json", profile["fractions"])
    table = data / table_name
    results = {"profile": args.profile, "modality": modality, "data": str(data), "settings": profile, "runs": []}

    encoder = work / "pretrain" / "encoder.pt"
    if not encoder.is_file() and not args.report_only:
        seconds = _bundle([str(ROOT / "bundles" / pretrain_bundle / "configs" / "train.yaml")],
                          {"dataset_dir": str(data), "datalist": str(datalist), "output_dir": str(work / "pretrain"),
                           **profile["pretrain_overrides"]}, work / "pretrain.log")
        results["pretrain_seconds"] = seconds
    configs = [str(ROOT / "bundles" / detect_bundle / "configs" / name) for name in ("train.yaml", "evaluate.yaml")]
    overrides = dict(profile["detect_overrides"])
    jobs = [(fraction, arm, seed) for fraction in profile["fractions"] for seed in profile["seeds"]
            for arm in ("pretrained", "scratch")]
    training = json.loads(datalist.read_text())

    def run(job):
        fraction, arm, seed = job
        out = work / "runs" / f"{arm}_{round(100 * fraction)}pct_seed{seed}"
        common = {"dataset_dir": str(data), "datalist": str(datalist), "boxes_csv": str(table),
                  "output_dir": str(out), "seed": seed, **overrides}
        if "iterations" in profile:  # the same iteration budget at every fraction
            common.update(epochs=profile["iterations"] // profile["epoch_length"], epoch_length=profile["epoch_length"])
        if arm == "pretrained":
            common.update(pretrained_encoder=str(encoder), encoder_lr=profile["encoder_lr_pretrained"])
        metrics_file = out / "metrics_test.json"
        if args.report_only and not metrics_file.is_file():
            return None
        record = {"fraction": fraction, "arm": arm, "seed": seed,
                  "training_images": len(training["training" if fraction >= 1 else fraction_key("training", fraction)])}
        timing = out / "benchmark_timing.json"
        if timing.is_file():  # trained by an earlier call
            record.update(json.loads(timing.read_text()))
        if not (out / "model_final.pt").is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            record["load_start"] = os.getloadavg()[0]
            record["train_seconds"] = _bundle(configs[:1], {**common, "label_fraction": fraction},
                                              out.with_suffix(".train.log"))
            record["load_end"] = os.getloadavg()[0]
            timing.write_text(json.dumps(record))
        if not metrics_file.is_file():
            checkpoint = str(out / profile.get("evaluate_checkpoint", "model.pt"))
            _bundle(configs, {**common, "eval_key": "test", "checkpoint": checkpoint}, out.with_suffix(".eval.log"))
        if out.with_suffix(".train.log").is_file() and "epoch_length" in common:
            record["seconds_per_iteration"] = seconds_per_iteration(
                out.with_suffix(".train.log"), common["epoch_length"], common.get("val_interval", 5))
        metrics = json.loads(metrics_file.read_text())
        record.update({k: metrics[k] for k in REPORTED})
        print(f"{arm:10s} {fraction:4.0%} seed {seed}: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in REPORTED),
              flush=True)
        return record

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results["runs"] = [record for record in pool.map(run, jobs) if record is not None]
    if not args.report_only:
        results["wall_seconds"] = time.perf_counter() - started
    results["random_baseline"] = {k: v for k, v in random_baseline(datalist, data, table, dims).items() if k in REPORTED}
    (work / "results.json").write_text(json.dumps(results, indent=2))
    (work / "results.md").write_text(markdown(results))
    plot(results, work / "curve.png")
    print(markdown(results))


def _summary(results: dict) -> dict:
    table = {}
    for run in results["runs"]:
        table.setdefault((run["fraction"], run["arm"]), []).append(run)
    return table


def markdown(results: dict) -> str:
    """One row per fraction and arm: mean ± std (ddof 1) over the seeds, and the random-box baseline."""
    rows = ["| label fraction | labelled images | arm | " + " | ".join(REPORTED) + " | seeds |",
            "|---|---|---|" + "---|" * len(REPORTED) + "---|"]
    for (fraction, arm), runs in sorted(_summary(results).items()):
        cells = []
        for key in REPORTED:
            values = np.array([r[key] for r in runs])
            cells.append(f"{values.mean():.3f}" + (f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""))
        images = runs[0].get("training_images", "–")
        rows.append(f"| {fraction:.0%} | {images} | {arm} | " + " | ".join(cells) + f" | {len(runs)} |")
    baseline = results["random_baseline"]
    rows.append("| – | – | random boxes | " + " | ".join(f"{baseline[k]:.3f}" for k in REPORTED) + " | – |")
    return "\n".join(rows) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, key in zip(axes, ("froc", "mAP")):
        for arm, colour in (("pretrained", "tab:blue"), ("scratch", "tab:orange")):
            points = sorted((f, [r[key] for r in runs]) for (f, a), runs in _summary(results).items() if a == arm)
            axis.errorbar([100 * f for f, _ in points], [np.mean(v) for _, v in points], capsize=3, color=colour,
                          yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for _, v in points], fmt="o-", label=arm)
        axis.axhline(results["random_baseline"][key], color="grey", linestyle="--", label="random boxes")
        axis.set_xlabel("labelled training images (%)")
        axis.set_ylabel(key)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

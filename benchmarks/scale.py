#!/usr/bin/env python
"""LUNA16 scale: memory, disk cache and throughput of a pretraining bundle on real-size CTs, projected to 888.

Writes ``--n`` CT volumes of LUNA16's size (512 x 512 x 200-300 int16 HU, in-plane spacing 0.6-0.8 mm, slice
spacing 1.0-2.5 mm, -1024 or -2048 outside the circular field of view, uncompressed like LUNA16's .mhd/.raw),
then runs a pretraining bundle over them (``genesis_ct`` by default) with its default caching policy and
``--workers`` data-loader processes, while sampling the memory of the whole process tree from ``/proc``. The
run is timed by an ignite handler inside the bundle process (:class:`DataClock`): per iteration the wait for
the batch (``GET_BATCH_STARTED`` -> ``GET_BATCH_COMPLETED``) and the whole iteration (batch + step + handlers).

    python benchmarks/scale.py --n 40 --epochs 2 --workers 2 --out OUT
    python benchmarks/scale.py --n 40 --cache_ram_gb 1 --out OUT          # the policy 888 volumes get

Reports peak RSS and PSS of the tree, the disk cache size, s/iteration and the data-wait share for the first
epoch (the cache is filled) and the later ones (it is read), and projects them to ``--project`` volumes:
the disk cache and an epoch's duration grow linearly with the volume count (the measured mean per volume or
per iteration times the count); s/iteration and the wait share do not depend on it; peak RSS does not either
when the cache is on disk, and grows by the measured cached size per volume when it is in RAM. Writes
``<out>/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAD_VALUES = (-1024, -2048)


def write_ct(path: Path, index: int, seed: int = 0) -> dict:
    """One LUNA16-size chest CT (body, two lungs tapering to the apices and bases, noise) as int16 NIfTI with an
    LPS-stored (x, y negated) anisotropic affine. Returns its shape and spacing."""
    import nibabel as nib

    rng = np.random.default_rng([seed, index])
    nz = int(rng.integers(200, 301))
    shape, spacing = (512, 512, nz), (float(rng.uniform(0.6, 0.8)),) * 2 + (float(rng.choice([1.0, 1.25, 2.0, 2.5])),)
    pad = int(PAD_VALUES[index % 2])
    x, y = np.meshgrid(np.linspace(-1, 1, 512, dtype=np.float32), np.linspace(-1, 1, 512, dtype=np.float32),
                       indexing="ij")
    fov, body = x**2 + y**2 > 1.0, (x / 0.85) ** 2 + (y / 0.62) ** 2 <= 1.0
    volume = np.empty(shape, np.int16)
    for z in range(nz):
        taper = np.sin(np.pi * (z + 0.5) / nz) ** 0.5  # lungs narrow towards the apex and the base
        lungs = (((np.abs(x) - 0.35) / (0.26 * taper)) ** 2 + (y / (0.42 * taper)) ** 2) <= 1.0
        plane = np.where(body, np.int16(40), np.int16(-1000))
        plane[lungs] = -850
        plane[fov] = pad
        volume[..., z] = plane
    noise = rng.integers(-25, 26, size=shape, dtype=np.int16)
    volume += np.where(volume > pad, noise, np.int16(0))
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    nib.save(nib.Nifti1Image(volume, affine), str(path))
    return {"shape": list(shape), "spacing": list(spacing), "pad": pad}


def write_cohort(out: Path, n: int) -> Path:
    """``n`` volumes under ``out/imagesTr`` and ``out/datalist.json`` (all in ``training``); kept between runs."""
    datalist = out / "datalist.json"
    if datalist.is_file() and len(json.loads(datalist.read_text())["training"]) == n:
        return datalist
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        name = f"imagesTr/ct_{i:04d}.nii"
        info = write_ct(out / name, i)
        items.append({"image": name})
        print(f"wrote {name} {info}", flush=True)
    datalist.write_text(json.dumps({"training": items}, indent=1))
    return datalist


class DataClock:
    """Ignite handler inside the bundle run: wall-clock stamps of the run's start (after set-up and any RAM cache
    fill) and of every batch fetch and iteration end, with the epoch, written as JSON to ``path`` when the run
    completes. A bundle run gets it through ``--train#handlers "$[__import__('scale').DataClock(path)]"`` with
    ``benchmarks/`` on ``PYTHONPATH``."""

    def __init__(self, path: str) -> None:
        self.path, self.rows, self.fetch, self.started = Path(path), [], 0.0, 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        def started(_):
            self.fetch = time.perf_counter()

        def fetched(e):
            self.rows.append({"epoch": e.state.epoch, "start": self.fetch, "fetched": time.perf_counter()})

        def done(_):
            self.rows[-1]["end"] = time.perf_counter()

        engine.add_event_handler(Events.GET_BATCH_STARTED, started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, fetched)
        engine.add_event_handler(Events.ITERATION_COMPLETED, done)
        engine.add_event_handler(Events.STARTED, lambda _: setattr(self, "started", time.time()))
        engine.add_event_handler(Events.COMPLETED, lambda _: self.path.write_text(json.dumps(
            {"started": self.started, "rows": self.rows})))


def _epoch_summary(rows: list[dict]) -> dict:
    """Median s/iteration (fetch start -> iteration end) and the share of the epoch spent waiting for data."""
    total = np.array([r["end"] - r["start"] for r in rows])
    wait = np.array([r["fetched"] - r["start"] for r in rows])
    return {"iterations": len(rows), "s_per_iteration": round(float(np.median(total)), 2),
            "s_per_iteration_mean": round(float(total.mean()), 2), "epoch_s": round(float(total.sum()), 1),
            "data_wait_share": round(float(wait.sum() / total.sum()), 3),
            "data_wait_s_median": round(float(np.median(wait)), 2)}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="real-size volumes written and trained on (40)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs: the first fills the cache (2)")
    parser.add_argument("--workers", type=int, default=2, help="data-loader processes (2)")
    parser.add_argument("--bundle", default="genesis_ct", help="pretraining bundle (genesis_ct)")
    parser.add_argument("--cache_ram_gb", type=float, default=None, help="the bundle's RAM budget (default: its own)")
    parser.add_argument("--project", type=int, default=888, help="volumes to project to (888, LUNA16)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    parser.add_argument("--out", type=Path, default=Path("scale_out"))
    parser.add_argument("--cohort", type=Path, default=None, help="where the volumes are written (<out>/cohort)")
    parser.add_argument("--bundle-args", nargs=argparse.REMAINDER, default=[],
                        help="more bundle overrides, e.g. --bundle-args --encoder resnet10")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from load_memory import sample_tree

    started = time.perf_counter()
    datalist = write_cohort(args.cohort or args.out / "cohort", args.n)
    synth_s = time.perf_counter() - started
    run_dir, clock = args.out / "run", args.out / "clock.json"
    if run_dir.exists():
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    clock.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(ROOT / "bundles" / args.bundle / "configs" / "train.yaml"),
        "--dataset_dir", str(datalist.parent), "--output_dir", str(run_dir), "--epochs", str(args.epochs),
        "--num_workers", str(args.workers), "--resume", "False", "--checkpoint_every", "100000",
        "--train#handlers", f"$[__import__('scale').DataClock({str(clock)!r})]",
        *(["--cache_ram_gb", str(args.cache_ram_gb)] if args.cache_ram_gb is not None else []), *args.bundle_args,
    ]
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "bundle.log").open("w")
    start, start_wall = time.perf_counter(), time.time()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
    samples: list[dict] = []
    while process.poll() is None:
        sample = sample_tree(process.pid)
        if sample["rss_mib"]:
            samples.append({"t_s": round(time.perf_counter() - start, 1), **sample})
        time.sleep(args.interval)
    run_s = time.perf_counter() - start
    log.close()
    text = (args.out / "bundle.log").read_text()
    if process.returncode or not clock.is_file():
        print(text[-3000:])
        print(f"bundle run failed (exit {process.returncode})")
        return 1
    stamps = json.loads(clock.read_text())
    rows, setup_s = stamps["rows"], stamps["started"] - start_wall
    epochs = {e: _epoch_summary([r for r in rows if r["epoch"] == e]) for e in sorted({r["epoch"] for r in rows})}
    later = _epoch_summary([r for r in rows if r["epoch"] > 1]) if args.epochs > 1 else epochs[1]
    policy = next((ln for ln in text.splitlines() if ln.startswith("medssl3d: training:")), "")
    cache_bytes = _du(run_dir / "cache")
    peak = max(samples, key=lambda s: s["rss_mib"])
    peak_pss = max(s["pss_mib"] for s in samples)
    phases = {  # set-up (with a RAM cache fill) and training; forked workers share pages: PSS counts them once
        phase: {"peak_rss_gib": round(max(s["rss_mib"] for s in part) / 1024, 2),
                "peak_pss_gib": round(max(s["pss_mib"] for s in part) / 1024, 2)}
        for phase, part in (("setup", [s for s in samples if s["t_s"] < setup_s]),
                            ("training", [s for s in samples if s["t_s"] >= setup_s])) if part}
    on_disk = "on disk" in policy
    scale = args.project / args.n
    projected = {
        "volumes": args.project,
        "disk_cache_gb": round(cache_bytes * scale / 1024**3, 1),
        "peak_rss_gib": round(peak["rss_mib"] / 1024, 2) if on_disk else None,  # RAM caching: see the note
        "first_epoch_h": round((epochs[1]["epoch_s"] + (setup_s if not on_disk else 0)) * scale / 3600, 2),
        "later_epoch_h": round(later["epoch_s"] / max(1, len(epochs) - 1) * scale / 3600, 2),
        "s_per_iteration": later["s_per_iteration"], "data_wait_share": later["data_wait_share"],
        "how": "disk cache and epoch time (the first with the RAM cache fill) x (project / n); s/iteration, "
               "data-wait share and (disk cache) peak RSS do not depend on the volume count",
    }
    result = {
        "command": " ".join(["python", "benchmarks/scale.py", *(argv if argv is not None else sys.argv[1:])]),
        "n": args.n, "workers": args.workers, "bundle": args.bundle, "epochs": args.epochs,
        "cpu_count": os.cpu_count(), "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "synthesize_s": round(synth_s, 1), "run_s": round(run_s, 1), "policy": policy,
        "setup_s": round(setup_s, 1),  # start-up, model, and the RAM cache fill (a disk cache fills in epoch 1)
        "peak_rss_gib": round(peak["rss_mib"] / 1024, 2), "peak_pss_gib": round(peak_pss / 1024, 2),
        "processes_at_peak": peak["processes"], "phases": phases, "disk_cache_gb": round(cache_bytes / 1024**3, 2),
        "epochs_summary": epochs, "later_epochs": later, "projected": projected, "samples": samples,
    }
    (args.out / "scale.json").write_text(json.dumps(result, indent=1))
    print(policy)
    print(f"{args.n} volumes, {args.workers} workers: peak RSS {result['peak_rss_gib']} GiB "
          f"(PSS {result['peak_pss_gib']} GiB, {peak['processes']} processes), disk cache "
          f"{result['disk_cache_gb']} GB")
    print(f"peaks by phase: {phases}")
    print(f"set-up before the first iteration (imports, model, RAM cache fill): {setup_s:.0f} s")
    for epoch, summary in epochs.items():
        print(f"epoch {epoch}: {summary['iterations']} iterations, {summary['s_per_iteration']} s/iteration "
              f"(median), data wait {summary['data_wait_share']:.0%} of the epoch")
    print(f"projected to {args.project} volumes: {projected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

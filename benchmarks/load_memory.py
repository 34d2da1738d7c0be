#!/usr/bin/env python
"""Memory under load: does a long pretraining run's memory stay flat after warm-up?

Synthesizes ``--n`` small CT volumes, runs the ``genesis_ct`` bundle over all of them with
``python -m monai.bundle run`` and ``--workers`` data-loader processes, and samples the memory of the whole
process tree (the bundle process and its workers) every ``--interval`` seconds from ``/proc``: the sum of RSS
and the sum of PSS (``smaps_rollup``; shared pages split between the processes, so forked workers are not
counted twice). The bundle checkpoints once per epoch here, so each sample knows its epoch. Warm-up is epoch 1
(worker start, allocator and page-cache growth); "after warm-up" is the peak RSS of the tree during epoch 2,
"at the end" its peak during the last epoch; the run passes when the second exceeds the first by at most
``--max-growth``.

    python benchmarks/load_memory.py --n 200 --epochs 3 --workers 2 --out load_memory_run

Writes ``<out>/memory.json`` (settings, timings, every sample) and prints a summary; exit status 1 on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from medssl3d.data.synthetic import synthesize_cohort

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "genesis_ct" / "configs" / "train.yaml"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc/<pid>/task/<tid>/children)."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{parent}/task/{task}/children").read_text()
            except OSError:
                continue
            for child in map(int, text.split()):
                found.append(child)
                queue.append(child)
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) once it has gone."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
        pss = next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            if line.startswith("Pss:")
        )
    except (OSError, StopIteration, ValueError, IndexError):
        return 0, 0
    return rss, pss


def sample_tree(pid: int) -> dict:
    """Memory of ``pid`` and its descendants: process count, summed RSS and PSS in MiB."""
    pids = [pid, *_children(pid)]
    sizes = [_memory_kb(p) for p in pids]
    return {
        "processes": sum(1 for rss, _ in sizes if rss),
        "rss_mib": sum(rss for rss, _ in sizes) / 1024,
        "pss_mib": sum(pss for _, pss in sizes) / 1024,
    }


def _write_pool_datalist(cohort: Path) -> Path:
    """A datalist whose ``training`` list holds every case of the cohort (all splits), for pretraining."""
    content = json.loads((cohort / "datalist.json").read_text())
    items = [
        {"image": item["image"]} for split in ("training", "validation", "test") for item in content.get(split, [])
    ]
    path = cohort / "pretrain_all.json"
    path.write_text(json.dumps({"training": items}, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="synthetic CT volumes (default 200)")
    parser.add_argument("--size", type=int, nargs=3, default=(64, 64, 32), help="voxels per axis (default 64 64 32)")
    parser.add_argument("--workers", type=int, default=2, help="data-loader processes (default 2)")
    parser.add_argument("--epochs", type=int, default=3, help="at least 3: warm-up, reference, last (default 3)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process (default 1)")
    parser.add_argument("--cache-rate", type=float, default=0.0,
                        help="bundle cache_rate; 0 (default) makes the workers load every volume every epoch")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth after warm-up (0.10)")
    parser.add_argument("--out", type=Path, default=Path("load_memory_output"))
    args = parser.parse_args(argv)
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (warm-up, reference and last epoch).")

    if args.out.exists():
        shutil.rmtree(args.out)
    start = time.perf_counter()
    synthesize_cohort("ct", args.n, args.out / "ct", size=args.size, progress=False)
    synth_s = time.perf_counter() - start
    datalist = _write_pool_datalist(args.out / "ct")
    models = args.out / "models"
    epoch_length = -(-args.n // args.batch_size)
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE),
        "--dataset_dir", str(args.out / "ct"), "--datalist", str(datalist), "--output_dir", str(models),
        "--epochs", str(args.epochs), "--batch_size", str(args.batch_size), "--crops_per_volume", "1",
        "--num_workers", str(args.workers), "--cache_rate", str(args.cache_rate),
        "--checkpoint_every", str(epoch_length), "--log_every", "10", "--encoder", "resnet10",
        "--crop_size", "[32,32,16]", "--min_input_size", "16", "--warmup_iterations", "10",
    ]
    print(f"synthesized {args.n} CT volumes {'x'.join(map(str, args.size))} in {synth_s:.1f} s; running\n  "
          + " ".join(command), flush=True)
    began = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    checkpoints = [models / "checkpoints" / f"checkpoint_{epoch_length * e:08d}.pt" for e in range(1, args.epochs)]
    samples = []
    with open(args.out / "bundle.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            epoch = 1 + sum(path.exists() for path in checkpoints)
            sample = {"t_s": round(time.perf_counter() - began, 2), "epoch": epoch, **sample_tree(process.pid)}
            if sample["rss_mib"]:
                samples.append(sample)
            time.sleep(args.interval)
    run_s = time.perf_counter() - began
    if process.returncode != 0:
        print(f"bundle run failed (exit {process.returncode}); see {args.out / 'bundle.log'}", file=sys.stderr)
        return 1
    window = {e: [s for s in samples if s["epoch"] == e] for e in (2, args.epochs)}
    warm, end = (max(window[e], key=lambda s: s["rss_mib"]) for e in (2, args.epochs))
    growth = end["rss_mib"] / warm["rss_mib"] - 1
    peak = max(s["rss_mib"] for s in samples)
    passed = growth <= args.max_growth
    result = {
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "epoch_length": epoch_length, "command": command},
        "synthesize_s": synth_s, "run_s": run_s, "after_warm_up": warm, "end": end, "peak_rss_mib": peak,
        "rss_growth": growth, "pss_growth": end["pss_mib"] / warm["pss_mib"] - 1, "passed": passed,
        "samples": samples,
    }
    (args.out / "memory.json").write_text(json.dumps(result, indent=1))
    print(f"run {run_s:.0f} s ({args.epochs} epochs of {epoch_length} iterations), {len(samples)} samples")
    for label, sample in (("after warm-up (peak of epoch 2)", warm), (f"at the end (peak of epoch {args.epochs})", end)):
        print(f"{label}: t={sample['t_s']:.0f} s, {sample['processes']} processes, RSS {sample['rss_mib']:.0f} MiB, "
              f"PSS {sample['pss_mib']:.0f} MiB")
    print(f"peak RSS of the run {peak:.0f} MiB; RSS growth {growth * 100:+.1f} % (PSS {result['pss_growth'] * 100:+.1f} %): "
          f"{'PASS' if passed else 'FAIL'} (limit {args.max_growth * 100:g} %)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

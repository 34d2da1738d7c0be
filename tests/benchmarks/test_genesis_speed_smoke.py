"""benchmarks/genesis_speed.py --paths: the loader-path / batch-path comparison runs and prints both figures."""

from __future__ import annotations

import re

from ._scripts import load_benchmark


def test_paths_comparison_prints_both_paths_per_batch(capsys):
    load_benchmark("genesis_speed").compare_paths([16, 16, 8], batch=2, repeats=1, rounds=1)
    out = capsys.readouterr().out
    assert "batch of 2 crops 1x16x16x8" in out
    for name in ("Genesis corruption", "patch masking 4x4x2"):
        (row,) = [line for line in out.splitlines() if line.strip().startswith(name)]
        loader, batch, ratio = (float(v) for v in re.findall(r"\d+\.\d+", row))
        assert loader > 0 and batch > 0
        # times and ratio are printed rounded to 2 decimals: the ratio lies within what the rounded times allow
        low, high = (batch - 0.005) / (loader + 0.005), (batch + 0.005) / max(loader - 0.005, 1e-9)
        assert low - 0.005 <= ratio <= high + 0.005

"""The evaluation report: ``metrics.json`` (every number) and ``report.md`` (tables and figures), written
atomically so a reader never sees half a report."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from medssl3d.atomic import atomic_path, write_json_atomic

__all__ = ["markdown_table", "write_report"]


def _json_safe(value):
    """NaN/inf become ``null`` (strict JSON has no NaN); numpy scalars become Python numbers, paths strings."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _merge_mean_std(row: dict) -> dict:
    """``{m_mean: a, m_std: b}`` (as :func:`summarize_runs` writes) -> ``{m: "a ± b"}``, in place of ``m_mean``."""
    merged = {}
    for key, value in row.items():
        stem = key[: -len("_mean")]
        if key.endswith("_mean") and f"{stem}_std" in row:
            merged[stem] = f"{_cell(value)} ± {_cell(row[f'{stem}_std'])}"
        elif not (key.endswith("_std") and f"{key[: -len('_std')]}_mean" in row):
            merged[key] = value
    return merged


def markdown_table(rows: Sequence[dict]) -> str:
    """A markdown table of ``rows`` (dicts); columns in order of first appearance, floats to 4 significant
    digits, NaN as ``n/a``, ``m_mean``/``m_std`` pairs as one column ``m`` reading ``mean ± std``."""
    rows = [_merge_mean_std(row) for row in rows]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def _scalar(value) -> bool:
    return not isinstance(value, (dict, list, tuple))


def _metrics_section(metrics: dict) -> list[str]:
    """Top-level scalars in one table; a dict of scalars as a key/value table, a dict of dicts as one row per
    key, a list of dicts as a table; anything else (e.g. confusion matrices) only in metrics.json."""
    scalars = [{"metric": key, "value": value} for key, value in metrics.items() if _scalar(value)]
    lines = [markdown_table(scalars), ""] if scalars else []
    for key, value in metrics.items():
        if isinstance(value, dict) and value and all(_scalar(v) for v in value.values()):
            rows = [{"key": k, "value": v} for k, v in value.items()]
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            rows = [{"": k, **{name: x for name, x in v.items() if _scalar(x)}} for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
            rows = value
        else:
            continue
        lines += [f"### {key}", "", markdown_table(rows), ""]
    return lines


def write_report(
    out_dir: str | os.PathLike,
    metrics: dict,
    tables: dict[str, list[dict]],
    figures: Sequence[str | os.PathLike],
    title: str = "medssl3d evaluation",
) -> Path:
    """Write ``out_dir/metrics.json`` (``{"metrics": metrics, "tables": tables}``, NaN as ``null``) and
    ``out_dir/report.md`` (metrics and each table as markdown tables, each figure as an image link relative
    to ``out_dir``); return the path of ``report.md``."""
    out_dir = Path(out_dir)
    write_json_atomic(_json_safe({"metrics": metrics, "tables": tables}), out_dir / "metrics.json")
    lines = [f"# {title}", "", "## Metrics", "", *_metrics_section(metrics)]
    for name, rows in tables.items():
        lines += [f"## {name}", "", markdown_table(rows) if rows else "(no rows)", ""]
    if figures:
        lines += ["## Figures", ""]
        for figure in figures:
            figure = Path(figure)
            link = os.path.relpath(figure.absolute(), out_dir.absolute())
            lines += [f"![{figure.stem}]({Path(link).as_posix()})", ""]
    report = out_dir / "report.md"
    with atomic_path(report) as temporary:
        temporary.write_text("\n".join(lines) + "\n")
    return report

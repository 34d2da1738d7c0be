#!/usr/bin/env python
"""Copy each modality's shared block from ``configs/modality/<m>.yaml`` into every config that carries it.

A block is the text between two marker lines (``# ---- CT block: ...`` and ``# ---- end of CT block ----``).
The source file holds it once; every bundle config of that modality, and the reference chain of
``configs/preprocessing/``, holds a verbatim copy between the same markers, so each bundle folder stays
complete (copy it and run it) while a modality's settings and steps are edited in one place.

    python configs/sync_blocks.py            # rewrite every copy that differs from its source
    python configs/sync_blocks.py --check    # list the copies that differ and exit 1; write nothing

``tests/bundles/test_shared_blocks.py`` fails while a copy differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {"CT": "ct", "MRI": "mri", "X-ray": "xray", "histology": "histology"}  # block name -> its source, configs/modality/<file>.yaml


def begin_marker(name: str) -> str:
    return f"# ---- {name} block: a copy of configs/modality/{BLOCKS[name]}.yaml; edit there, then run configs/sync_blocks.py"


def end_marker(name: str) -> str:
    return f"# ---- end of {name} block ----"


def _span(text: str, name: str, path: Path) -> tuple[int, int] | None:
    """Character span of the block's body (the lines between the markers), or None without a begin marker."""
    begin, end = begin_marker(name), end_marker(name)
    if text.count(begin) > 1:
        raise ValueError(f"'{path}': the {name} block appears more than once; keep one.")
    start = text.find(begin)
    if start < 0:
        return None
    body = text.index("\n", start) + 1
    stop = text.find(end, body)
    if stop < 0:
        raise ValueError(f"'{path}': the {name} block has no end line '{end}'; add it after the block.")
    return body, stop


def source_block(name: str, root: Path = ROOT) -> str:
    """The block's body as its source file ``configs/modality/<m>.yaml`` holds it."""
    path = root / "configs" / "modality" / f"{BLOCKS[name]}.yaml"
    text = path.read_text()
    span = _span(text, name, path)
    if span is None:
        raise ValueError(f"'{path}': no line '{begin_marker(name)}'; the source must hold its block.")
    return text[span[0]:span[1]]


def copies(root: Path = ROOT) -> dict[Path, list[str]]:
    """Every config under ``bundles/*/configs`` and ``configs/`` holding a copy, with the blocks it holds."""
    found = {}
    for path in sorted([*root.glob("bundles/*/configs/*.yaml"), *root.glob("configs/**/*.yaml")]):
        if path.parent.name == "modality" and path.stem in BLOCKS.values():
            continue  # a source
        text = path.read_text()
        names = [name for name in BLOCKS if begin_marker(name) in text]
        if names:
            found[path] = names
    return found


def sync(root: Path = ROOT, check: bool = False) -> list[Path]:
    """Make every copy equal to its source (``check``: only compare); return the paths that differed."""
    sources = {name: source_block(name, root) for name in BLOCKS}
    differing = []
    for path, names in copies(root).items():
        text = path.read_text()
        updated = text
        for name in names:
            body, stop = _span(updated, name, path)
            updated = updated[:body] + sources[name] + updated[stop:]
        if updated != text:
            differing.append(path)
            if not check:
                path.write_text(updated)
    return differing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only list the copies that differ (exit 1 if any)")
    args = parser.parse_args(argv)
    try:
        differing = sync(check=args.check)
    except (OSError, ValueError) as error:
        print(f"sync_blocks: error: {error}", file=sys.stderr)
        return 1
    for path in differing:
        print(f"{'differs' if args.check else 'updated'}: {path.relative_to(ROOT)}")
    if not differing:
        print("every copy equals its source")
    return 1 if args.check and differing else 0


if __name__ == "__main__":
    sys.exit(main())

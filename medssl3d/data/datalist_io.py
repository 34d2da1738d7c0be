"""Reading a Decathlon-style datalist for training, with one-line errors naming the file, key and item.

:func:`load_datalist` is ``monai.data.load_decathlon_datalist`` (same path joining, same result) plus the checks
it lacks: a missing file or invalid JSON, a key that is absent, not a list or empty, an item without
``image``, and image/label files that do not exist — so a bundle stops before caching or training starts, not
at the first batch that reaches the bad item.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from monai.data import load_decathlon_datalist

__all__ = ["load_datalist", "read_datalist"]

FILE_KEYS = ("image", "label")


def read_datalist(path: str | os.PathLike) -> dict:
    """The datalist JSON object of ``path``; ``ValueError`` naming the file when it is missing or not an object."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"datalist '{path}' does not exist" + (" (it is a folder)." if path.is_dir() else "."))
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"datalist '{path}' is not valid JSON: {error.msg} at line {error.lineno} column "
                         f"{error.colno}.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"datalist '{path}' cannot be read: {error}.") from None
    if not isinstance(content, dict):
        raise ValueError(f"datalist '{path}' holds a JSON {type(content).__name__}; expected an object with "
                         "lists such as 'training'.")
    return content


def _missing_files(item: dict) -> list[tuple[str, str]]:
    """(key, path) of every image/label path of a resolved item that does not exist."""
    missing = []
    for key in FILE_KEYS:
        value = item.get(key)
        for name in value if isinstance(value, list) else [value] if value is not None else []:
            if not Path(name).is_file():
                missing.append((key, str(name)))
    return missing


def load_datalist(
    path: str | os.PathLike, key: str = "training", base_dir: str | os.PathLike | None = None
) -> list[dict]:
    """Items of list ``key`` of the datalist at ``path`` with paths joined to ``base_dir`` (default: its folder).

    Raises ``ValueError`` (one line naming the file, the key and the item) for a missing or invalid file, an
    absent, non-list or empty ``key``, an item without ``image`` and image/label files that do not exist.

    Bundle YAML::

        datalist: "$medssl3d.data.load_datalist(@datalist, @datalist_key, @dataset_dir)"
    """
    content = read_datalist(path)
    if key not in content:
        lists = [k for k, v in content.items() if isinstance(v, list) and all(isinstance(i, dict) for i in v)]
        raise ValueError(f"datalist '{path}' has no list '{key}'; its lists: {', '.join(lists) or 'none'}.")
    items = content[key]
    if not isinstance(items, list):
        raise ValueError(f"datalist '{path}': '{key}' is a {type(items).__name__}, not a list of items.")
    if not items:
        raise ValueError(f"datalist '{path}': list '{key}' is empty; there is nothing to load.")
    strings = key == "test" and not isinstance(items[0], dict)  # MONAI's convention: test may list bare paths
    for index, item in enumerate(items):
        if strings:
            continue
        if not isinstance(item, dict) or "image" not in item:
            raise ValueError(f"datalist '{path}': '{key}' item {index} has no 'image': {str(item)[:120]}.")
    resolved = load_decathlon_datalist(path, True, key, base_dir=base_dir)
    missing = [(index, found) for index, item in enumerate(resolved) for found in _missing_files(item)]
    if missing:
        index, (file_key, name) = missing[0]
        more = f" ({len(missing)} missing files in all)" if len(missing) > 1 else ""
        raise ValueError(f"datalist '{path}': '{key}' item {index}: {file_key} file '{name}' does not exist{more}.")
    return resolved

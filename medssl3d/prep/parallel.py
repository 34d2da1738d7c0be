"""Run one function over many inputs, in a process pool, with a progress bar; collect failures per input.

The ``data_prep`` commands convert, resample or check thousands of independent files: one bad file must
not stop the others, and the user wants to see every failure at the end. ``workers <= 1`` runs in this
process, so a debugger or a traceback shows the real frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from tqdm import tqdm

__all__ = ["map_progress"]


def map_progress(
    function: Callable[[Any], Any],
    items: Sequence[Any],
    workers: int = 1,
    desc: str | None = None,
    progress: bool = True,
) -> list[Any]:
    """Return ``[function(item) for item in items]`` in input order, where a failing call gives its exception.

    ``function`` must be picklable (a module-level function or a ``functools.partial`` of one) when
    ``workers > 1``. Only ``Exception`` is caught; ``KeyboardInterrupt`` stops the run.
    """
    outcomes: list[Any] = [None] * len(items)
    with tqdm(total=len(items), desc=desc, disable=not progress or not items, unit="item") as bar:
        if workers <= 1 or len(items) <= 1:
            for index, item in enumerate(items):
                try:
                    outcomes[index] = function(item)
                except Exception as error:  # reported per item by the caller
                    outcomes[index] = error
                bar.update()
            return outcomes
        with ProcessPoolExecutor(max_workers=min(workers, len(items))) as pool:
            futures = {pool.submit(function, item): index for index, item in enumerate(items)}
            for future in as_completed(futures):
                error = future.exception()
                outcomes[futures[future]] = error if error is not None else future.result()
                bar.update()
    return outcomes

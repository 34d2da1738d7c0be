"""Where a pretraining bundle corrupts its crops: the bundle key ``corruption_on``.

``loader`` (the default): each crop is corrupted by the per-sample transform (e.g.
:class:`~medssl3d.transforms.RandGenesisCorruptiond`) in the data-loader workers, on the CPU. ``batch``: the
loader yields the clean crops and the trainer hands each batch, once it is on the training device, to the batch
transform (:class:`~medssl3d.transforms.BatchGenesisCorruptiond`,
:class:`~medssl3d.transforms.BatchMaskedPatchesd`) before the forward pass -- the GPU path, which frees the
workers of the corruption. Both draw from the same distributions.
"""

from __future__ import annotations

from medssl3d.errors import InputError

__all__ = ["CORRUPTION_SITES", "corruption_site"]

CORRUPTION_SITES = ("loader", "batch")


def corruption_site(value: str, key: str = "corruption_on") -> str:
    """``value`` after checking it names a site; an :class:`~medssl3d.errors.InputError` naming ``key`` if not."""
    if value not in CORRUPTION_SITES:
        raise InputError(
            f"{key} is {value!r}; expected 'loader' (each crop corrupted in the data-loader workers, CPU) or "
            "'batch' (the whole batch corrupted on the training device before the forward pass: the GPU path)."
        )
    return value

"""Models Genesis corruption of a whole batch on its own device: the GPU path of the corruption.

Zhou et al., "Models Genesis", Medical Image Analysis 67 (2021) 101840 (MICCAI 2019). The same four
corruptions, probabilities and parameters as :class:`medssl3d.transforms.RandGenesisCorruption`, drawn
independently for every sample of a ``(B, C, H, W[, D])`` tensor with pure torch operations on the tensor's
device (no per-window loop, no host round trip but one range check):

1. flip, up to ``max_flips`` draws of a spatial axis while ``U < flip_prob``; an axis drawn an odd number of
   times is flipped, in the input and in the restoration target;
2. local pixel shuffling (``shuffle_prob``): ``num_windows`` windows ``W_k`` with sides ``s ~ U{1..dim //
   max_side_divisor}`` at uniform positions; in drawing order ``x'[W_k] = pi_k(x[W_k])``, ``pi_k`` a uniform
   permutation of the *original* voxels of the window, later windows overwriting earlier ones;
3. non-linear intensity (``nonlinear_prob``): ``x' = B(x)`` with the cubic Bezier curve
   ``B(t) = (1-t)^3 P0 + 3 t (1-t)^2 P1 + 3 t^2 (1-t) P2 + t^3 P3``, ``P0 = (0, 0)``, ``P3 = (1, 1)``,
   ``P1, P2 ~ U[0, 1]^2``, read as a mapping ``x -> y``; inverted (``y`` reversed) with ``invert_prob``;
4. painting (``paint_prob``): in-painting (``inpaint_prob``) fills up to ``max_boxes`` boxes with
   ``U[0, 1)`` noise, out-painting fills everything with noise and keeps 1 + up to ``max_boxes - 1`` boxes of
   the image; each further box with ``box_continue_prob``.

How the batch does it: a window's permutation is the ``argsort`` of random keys over the window's voxel
offsets, windows of one voxel count at a time (no padding), and "the last window wins" is ``scatter_reduce(amax)``
of ``(window index, source voxel)`` keys onto the destination voxels (at most ``chunk_elements`` per call).
The Bezier look-up table is built per sample (``searchsorted``) and read with linear interpolation, as the
array path does; painting builds each sample's union of boxes as a boolean mask. Draws come from a
``torch.Generator`` (or the device's default generator, which the trainer's checkpoints store), so results
are reproducible but not equal voxel for voxel to the array path: ``tests/transforms/test_genesis_batch.py``
shows the two are equal in distribution.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.utils import convert_to_dst_type

from .genesis import _BEZIER_POINTS, _RANGE_TOL, RandGenesisCorruption
from .genesis_kernels import window_offsets

__all__ = ["BatchGenesisCorruption", "BatchGenesisCorruptiond"]

_CHUNK_ELEMENTS = 2**23  # window voxels per shuffling step: its int64 tensors stay below 64 MiB each


class BatchGenesisCorruption:
    """The full Models Genesis corruption of a batch ``(B, C, H, W[, D])`` in ``[0, 1]`` on its device.

    Arguments as :class:`~medssl3d.transforms.RandGenesisCorruption` (published defaults; checked by it).
    ``__call__(images, generator=None)`` returns ``(corrupted, target)`` of the images' shape, dtype (floating;
    integers become float32), device and tensor type; ``target`` is flipped like the input, otherwise
    untouched. ``generator``: a ``torch.Generator`` on the images' device; ``None`` draws from the device's
    default generator. Example::

        corrupted, target = BatchGenesisCorruption()(batch.cuda(), torch.Generator("cuda").manual_seed(0))
    """

    def __init__(self, chunk_elements: int = _CHUNK_ELEMENTS, **corruption_args) -> None:
        self.params = RandGenesisCorruption(**corruption_args)  # checks the arguments, holds the size rules
        self.chunk_elements = int(chunk_elements)

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None, name: str = "BatchGenesisCorruption"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(images, torch.Tensor) or images.ndim not in (4, 5):
            raise ValueError(
                f"{name}: expected a batch tensor (B, C, H, W) or (B, C, H, W, D), got "
                f"{type(images).__name__} of shape {tuple(getattr(images, 'shape', ()))}."
            )
        x = images.as_subclass(torch.Tensor)
        if not x.is_floating_point():
            x = x.float()
        low, high = (float(v) for v in torch.aminmax(x))
        if low < -_RANGE_TOL or high > 1 + _RANGE_TOL:
            raise ValueError(
                f"{name}: expected values in [0, 1], found [{low:.4g}, {high:.4g}]; "
                "scale the image first (e.g. ScaleIntensityRanged with clip=True)."
            )
        p, draw = self.params, _Draws(x.device, generator)
        x = _flip(x, p.flip_prob, p.max_flips, draw)
        target = x.clone()
        for op, corrupt in (
            (p.shuffle, lambda v: _shuffle(v, p.shuffle, draw, self.chunk_elements)),
            (p.intensity, lambda v: _bezier(v, p.intensity.invert_prob, draw)),
            (p.painting, lambda v: _paint(v, p.painting, draw)),
        ):
            chosen = draw.uniform(x.shape[0]) < op.prob
            if bool(chosen.all()):
                x = corrupt(x)
            elif bool(chosen.any()):
                x = x.index_put((chosen,), corrupt(x[chosen]))  # out of place: x may be the caller's tensor
        if x is images or x.data_ptr() == images.data_ptr():
            x = target.clone()
        return tuple(convert_to_dst_type(v, dst=images, dtype=v.dtype)[0] for v in (x, target))


class _Draws:
    """Random numbers on one device from one generator (``None``: the device's default)."""

    def __init__(self, device: torch.device, generator: torch.Generator | None) -> None:
        if generator is not None and torch.device(generator.device).type != device.type:
            raise ValueError(f"the generator is on {generator.device}, the images on {device}; use one on {device}.")
        self.device, self.generator = device, generator

    def uniform(self, *shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, device=self.device, dtype=dtype)

    def integers(self, high: int, *shape: int) -> torch.Tensor:
        return torch.randint(high, shape, generator=self.generator, device=self.device)


def _per_sample(mask: torch.Tensor, ndim: int) -> torch.Tensor:
    return mask.view(mask.shape[0], *([1] * (ndim - 1)))


def _flip(x: torch.Tensor, flip_prob: float, max_flips: int, draw: _Draws) -> torch.Tensor:
    """Draw ``k`` of up to ``max_flips`` axes (each further draw while ``U < flip_prob``); flip the odd ones."""
    if max_flips < 1:
        return x
    batch, nd = x.shape[0], x.ndim - 2
    goes_on = torch.cumprod((draw.uniform(batch, max_flips) < flip_prob).long(), dim=1)
    axes = draw.integers(nd, batch, max_flips)
    counts = torch.zeros(batch, nd, dtype=torch.long, device=x.device).scatter_add_(1, axes, goes_on)
    for axis in range(nd):
        x = torch.where(_per_sample(counts[:, axis] % 2 == 1, x.ndim), x.flip(axis + 2), x)
    return x


def _shuffle(x: torch.Tensor, shuffle, draw: _Draws, chunk_elements: int) -> torch.Tensor:
    """Local pixel shuffling of every sample of ``x``: windows and permutations as the array path draws them.

    Windows are processed in groups of one volume (one voxel count), so no tensor is padded: per group, each
    window's permutation is the ``argsort`` of i.i.d. uniform keys, and ``scatter_reduce(amax)`` of ``(window
    index, source voxel)`` keys onto the destination voxels lets the last window drawn win, across groups too.
    """
    batch, channels, spatial = x.shape[0], x.shape[1], tuple(int(s) for s in x.shape[2:])
    dev, nd, num = x.device, len(spatial), shuffle.num_windows
    max_sides = shuffle.max_sides(spatial)
    volume = int(np.prod(spatial))
    total = batch * volume
    index_bits = total.bit_length()
    if index_bits + int(num).bit_length() > 62:
        raise ValueError(f"local pixel shuffling: {num} windows on {total} voxels overflow the 64-bit keys.")
    offsets, first = window_offsets(spatial, max_sides)
    counts = np.diff(np.append(first, len(offsets)))
    padded = np.full((len(first), counts.max()), -1, dtype=np.int64)  # one row per window shape, raster offsets
    padded[np.arange(counts.max()) < counts[:, None]] = offsets
    table_rows = torch.as_tensor(padded, device=dev)
    strides = torch.tensor([int(np.prod(spatial[d + 1 :])) for d in range(nd)], device=dev)
    side_strides = torch.tensor([int(np.prod(max_sides[d + 1 :])) for d in range(nd)], device=dev)
    sizes = (draw.uniform(batch, num, nd) * torch.tensor(max_sides, device=dev)).long() + 1
    starts = (draw.uniform(batch, num, nd) * (torch.tensor(spatial, device=dev) - sizes + 1)).long()
    sample_base = torch.arange(batch, device=dev)[:, None] * volume
    # every window of the batch, flat: its shape (row of table_rows), first voxel, drawing index and voxel count
    shape_id = ((sizes - 1) * side_strides).sum(-1).flatten()
    base = ((starts * strides).sum(-1) + sample_base).flatten()
    window = torch.arange(1, num + 1, device=dev).repeat(batch) << index_bits
    volumes, order = sizes.prod(-1).flatten().sort()
    owner = torch.zeros(total, dtype=torch.long, device=dev)  # window index << index_bits | source voxel
    lo = 0
    for count_v, group in enumerate(torch.bincount(volumes).tolist()):  # count_v voxels in each of `group` windows
        members, lo = order[lo : lo + group], lo + group
        for part in members.split(max(1, chunk_elements // max(1, count_v))) if group else ():
            table = table_rows[shape_id[part], :count_v]  # (windows, count_v) raster offsets
            permuted = table.gather(1, draw.uniform(len(part), count_v).argsort(dim=1))
            source = window[part, None] | (permuted + base[part, None])
            owner.scatter_reduce_(0, (table + base[part, None]).flatten(), source.flatten(), "amax")
    source = torch.where(owner == 0, torch.arange(total, device=dev), owner & ((1 << index_bits) - 1))
    source = (source.view(batch, volume) - sample_base).view(batch, 1, volume).expand(batch, channels, volume)
    return x.reshape(batch, channels, volume).gather(2, source).view_as(x)


def _bezier(x: torch.Tensor, invert_prob: float, draw: _Draws) -> torch.Tensor:
    """Each sample through its own random cubic Bezier mapping (4097-entry table, linear interpolation)."""
    batch, dev, points = x.shape[0], x.device, _BEZIER_POINTS
    control = draw.uniform(batch, 2, 2)  # [[x1, y1], [x2, y2]] per sample
    inverted = draw.uniform(batch) < invert_prob
    t = torch.linspace(0.0, 1.0, points, device=dev, dtype=torch.float64)
    b1, b2, b3 = 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3
    xs = b1 * control[:, 0, :1] + b2 * control[:, 1, :1] + b3  # (B, points), non-decreasing
    ys = b1 * control[:, 0, 1:] + b2 * control[:, 1, 1:] + b3
    ys = torch.where(inverted[:, None], ys.flip(-1), ys)
    grid = t.expand(batch, -1).contiguous()
    right = torch.searchsorted(xs, grid).clamp(1, points - 1)  # as np.interp: x0 < g <= x1
    x0, x1 = xs.gather(1, right - 1), xs.gather(1, right)
    y0, y1 = ys.gather(1, right - 1), ys.gather(1, right)
    weight = torch.where(x1 > x0, (grid - x0) / (x1 - x0).clamp(min=1e-300), torch.ones_like(grid)).clamp(0, 1)
    lut = (y0 + weight * (y1 - y0)).to(x.dtype)
    scaled = x.reshape(batch, -1).clamp(0, 1) * (points - 1)
    index = scaled.long().clamp(max=points - 2)
    low = lut.gather(1, index)
    return (low + (scaled - index) * (lut.gather(1, index + 1) - low)).view_as(x)


def _paint(x: torch.Tensor, paint, draw: _Draws) -> torch.Tensor:
    """In- or out-painting of every sample: the union of its boxes as a mask, uniform noise in or around it."""
    batch, spatial, dev = x.shape[0], tuple(x.shape[2:]), x.device
    boxes = paint.max_boxes
    inpaint = draw.uniform(batch) < paint.inpaint_prob
    goes_on = draw.uniform(batch, boxes) < paint.box_continue_prob
    active_in = torch.cumprod(goes_on.long(), dim=1).bool()  # in-painting: even the first box with the prob
    always = torch.ones_like(goes_on[:, :1])
    active_out = torch.cat([always, torch.cumprod(goes_on[:, 1:].long(), 1).bool()], 1)
    active = torch.where(inpaint[:, None], active_in, active_out)  # (B, K)
    region = active.view(batch, boxes, *[1] * len(spatial))
    for axis, dim in enumerate(spatial):
        lo_in, hi_in = paint.size_range(dim, True)
        lo_out, hi_out = paint.size_range(dim, False)
        u = draw.uniform(batch, boxes)
        size = torch.where(
            inpaint[:, None], lo_in + (u * (hi_in - lo_in + 1)).long(), lo_out + (u * (hi_out - lo_out + 1)).long()
        )
        margin = ((dim - size) // 2).clamp(max=paint.border)
        start = margin + (draw.uniform(batch, boxes) * (dim - size - 2 * margin + 1)).long()
        coord = torch.arange(dim, device=dev)
        inside = (coord >= start[..., None]) & (coord < (start + size)[..., None])  # (B, K, dim)
        region = region & inside.view(batch, boxes, *[dim if a == axis else 1 for a in range(len(spatial))])
    region = region.any(1, keepdim=True)  # (B, 1, *spatial)
    noise = draw.uniform(*x.shape, dtype=x.dtype)
    inside_noise = _per_sample(inpaint, x.ndim) == region  # in-painting: noise in the boxes; out-: around them
    return torch.where(inside_noise, noise, x)


class BatchGenesisCorruptiond:
    """:class:`BatchGenesisCorruption` on a batch dictionary, on the device of its tensors.

    For each of ``keys`` (clean images ``(B, C, *spatial)``) writes the corrupted batch to the matching
    ``output_key`` (default: the key itself) and the restoration target to ``target_key`` (one name, or one per
    key), the keys :class:`~medssl3d.transforms.RandGenesisCorruptiond` writes per sample. Other entries pass
    unchanged. Runs without gradients. ``generator``: as :class:`BatchGenesisCorruption`. Example (a bundle's
    ``corruption_on: batch``, run by the trainer after the batch is on the device)::

        BatchGenesisCorruptiond(keys="image", target_key="target", flip_prob=0.4)
    """

    def __init__(
        self,
        keys: KeysCollection,
        target_key: str | Sequence[str] = "target",
        output_key: str | Sequence[str] | None = None,
        generator: torch.Generator | None = None,
        allow_missing_keys: bool = False,
        **corruption_args,
    ) -> None:
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.target_keys = _one_per_key("target_key", target_key, self.keys)
        self.output_keys = self.keys if output_key is None else _one_per_key("output_key", output_key, self.keys)
        self.generator = generator
        self.allow_missing_keys = allow_missing_keys
        self.corruption = BatchGenesisCorruption(**corruption_args)

    def __call__(self, batch: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(batch)
        with torch.no_grad():
            for key, out_key, target_key in zip(self.keys, self.output_keys, self.target_keys):
                if key not in d:
                    if self.allow_missing_keys:
                        continue
                    raise KeyError(f"{type(self).__name__}: the batch lacks key '{key}'; it has {sorted(map(str, d))}.")
                name = f"{type(self).__name__}, key '{key}'"
                d[out_key], d[target_key] = self.corruption(d[key], self.generator, name)
        return d


def _one_per_key(what: str, names: str | Sequence[str], keys: list) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != len(keys):
        raise ValueError(f"need one {what} per key, got {names} for keys {keys}.")
    return names

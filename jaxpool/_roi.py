"""Region pooling for detection: RoI pooling and RoI Align, torchvision's.

Each region of interest (RoI) is a box ``[batch_index, x1, y1, x2, y2]`` in
input coordinates, scaled by ``spatial_scale`` onto the feature map and split
into ``output_size`` bins. RoI pooling (Fast R-CNN) takes the maximum of the
integer cells of each bin; RoI Align (Mask R-CNN) averages bilinear samples
on a regular grid in each bin. The position-sensitive forms (R-FCN) read
each bin from its own group of channels; the multi-scale form (FPN) pools
each box from the pyramid level that its size maps to.

Every RoI and bin is one vectorised gather: the taps of each bin (the
bilinear corners of RoI Align's samples, the cells of a position-sensitive
bin) are enumerated up to a static bound and masked beyond the bin's own
count, so the shapes are static under ``jit`` and no Python loop runs over
RoIs. RoI pooling reads each bin's maximum from tables of the map's block
maxima instead, a few lookups per bin. Bounds are derived from the feature
map's size and are exact for every box that lies within the map; see each
function for what happens past them.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool import _lowering, _plan_table
from jaxpool._pooling import accumulation_dtype
from jaxpool._sharding import partitioned
from jaxpool._spec import int_tuple, is_symbolic

#: Boxes: a ``(K, 5)`` array of ``[batch_index, x1, y1, x2, y2]``, or one
#: ``(L, 4)`` array of ``[x1, y1, x2, y2]`` per image.
BoxesLike = Union[ArrayLike, Sequence[ArrayLike]]

# Gathers hold at most this many elements at once; more RoIs are pooled in
# groups under lax.map.
_GATHER_BUDGET = 1 << 24


# ---------------------------------------------------------------------------
# Arguments.


def _layout(x: jax.Array, channels_first: bool) -> jax.Array:
  """``x`` as ``(N, H, W, C)``."""
  if not isinstance(channels_first, (bool, np.bool_)):
    raise TypeError(f"channels_first must be a bool, got {channels_first!r}.")
  if x.ndim != 4:
    layout = "(N, C, H, W)" if channels_first else "(N, H, W, C)"
    raise ValueError(f"x must be {layout}, got shape {x.shape}.")
  if any(is_symbolic(d) for d in x.shape[1:3]):
    raise ValueError(
        f"x must have concrete spatial sizes, got {x.shape}: the static "
        "bound on the taps of a bin is derived from them. A symbolic batch "
        "size is fine.")
  if 0 in x.shape[1:3] if not channels_first else 0 in x.shape[2:4]:
    raise ValueError(f"x must have non-empty spatial dims, got {x.shape}.")
  if channels_first:
    x = jnp.moveaxis(x, 1, -1)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"x must be floating, got dtype {x.dtype}.")
  return x


def _scale(spatial_scale: Any) -> float:
  if isinstance(spatial_scale, (bool, np.bool_)) or not isinstance(
      spatial_scale, numbers.Real):
    raise TypeError(
        f"spatial_scale must be a real number, got {spatial_scale!r}.")
  if not (math.isfinite(spatial_scale) and float(spatial_scale) > 0):
    raise ValueError(
        f"spatial_scale must be finite and > 0, got {spatial_scale!r}.")
  return float(spatial_scale)


def _sampling(sampling_ratio: Any) -> int:
  if isinstance(sampling_ratio, (bool, np.bool_)) or not isinstance(
      sampling_ratio, numbers.Integral):
    raise TypeError(
        f"sampling_ratio must be an int, got {sampling_ratio!r}.")
  if sampling_ratio == 0 or sampling_ratio < -1:
    raise ValueError(
        f"sampling_ratio must be > 0, or -1 (adaptive), got "
        f"{sampling_ratio!r}.")
  return int(sampling_ratio)


def rois(boxes: BoxesLike, batch: Any, dtype) -> jax.Array:
  """``boxes`` as one ``(K, 5)`` array ``[batch_index, x1, y1, x2, y2]``.

  A list of per-image ``(L, 4)`` arrays gets its batch indices from the
  list's order, as torchvision's ``convert_boxes_to_roi_format``. Concrete
  batch indices are checked against ``batch``.
  """
  if isinstance(boxes, (list, tuple)):
    parts = []
    for i, b in enumerate(boxes):
      b = jnp.asarray(b)
      if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(
            f"boxes: a list of boxes holds one (L, 4) array per image, got "
            f"shape {b.shape} for image {i}.")
      parts.append(jnp.concatenate(
          [jnp.full((b.shape[0], 1), i, dtype), b.astype(dtype)], axis=1))
    if not parts:
      raise ValueError("boxes must not be an empty list.")
    if not is_symbolic(batch) and len(parts) > batch:
      raise ValueError(
          f"boxes: {len(parts)} lists of boxes for a batch of {batch} "
          "images.")
    return jnp.concatenate(parts, axis=0)
  out = jnp.asarray(boxes)
  if out.ndim != 2 or out.shape[1] != 5:
    raise ValueError(
        "boxes must be a (K, 5) array of [batch_index, x1, y1, x2, y2] or a "
        f"list of (L, 4) arrays, got shape {out.shape}.")
  if not isinstance(out, jax.core.Tracer) and not is_symbolic(batch):
    index = np.asarray(out)[:, 0]
    if index.size and (np.any(index < 0) or np.any(index >= batch) or
                       np.any(index != np.floor(index))):
      raise ValueError(
          f"boxes: batch indices (column 0) must be integers in [0, "
          f"{batch}), got {np.unique(index)}.")
  return out.astype(dtype)


def _over_rois(fn, boxes: jax.Array, per_roi: int) -> jax.Array:
  """``fn(boxes)``, for groups of RoIs at a time if one gather would hold
  more than ``_GATHER_BUDGET`` elements."""
  k = boxes.shape[0]
  group = max(1, _GATHER_BUDGET // max(per_roi, 1))
  if k <= group:
    return fn(boxes)
  groups = -(-k // group)
  padded = jnp.pad(boxes, ((0, groups * group - k), (0, 0)))
  out = lax.map(fn, padded.reshape(groups, group, 5))
  return out.reshape(groups * group, *out.shape[2:])[:k]


def _div(a: jax.Array, n: Any) -> jax.Array:
  """``a / n``, a division (XLA would multiply by the reciprocal of a
  constant ``n``, which rounds further from the kernels' division)."""
  return a / lax.optimization_barrier(jnp.asarray(n, a.dtype))


def _output(out: jax.Array, channels_first: bool) -> jax.Array:
  return jnp.moveaxis(out, -1, 1) if channels_first else out


# ---------------------------------------------------------------------------
# Bilinear sampling (RoI Align).


def _axis_taps(start, bin_size, grid, samples: int, pooled: int, size: int,
               dtype):
  """Rows (or columns) and weights of the bilinear corners along one axis.

  Args:
    start: ``(K,)`` RoI start.
    bin_size: ``(K,)`` bin size.
    grid: ``(K,)`` samples per bin (an int array), or an int.
    samples: the static number of samples enumerated per bin.
    pooled: bins along the axis.
    size: the map's size along the axis.
    dtype: the computation's dtype.

  Returns:
    ``(index, weight, valid)``: ``(K, pooled, samples, 2)`` corner indices
    and weights (0 for masked samples), and ``(K, pooled, samples)`` whether
    the sample lies in ``[-1, size]`` (torchvision's test, done on each axis;
    a sample counts only if it passes on both).
  """
  p = jnp.arange(pooled, dtype=dtype)[None, :, None]
  i = jnp.arange(samples, dtype=dtype)[None, None, :]
  g = jnp.asarray(grid)
  gf = jnp.maximum(g, 1).astype(dtype)
  gf = gf[:, None, None] if gf.ndim else gf
  pos = (start[:, None, None] + p * bin_size[:, None, None]
         + _div((i + 0.5) * bin_size[:, None, None], gf))
  valid = (pos >= -1.0) & (pos <= size)
  if g.ndim:
    valid &= jnp.arange(samples)[None, None, :] < g[:, None, None]
  pos = jnp.maximum(pos, 0)
  low = jnp.floor(jnp.where(valid, pos, 0)).astype(jnp.int32)
  last = low >= size - 1
  low = jnp.where(last, size - 1, low)
  high = jnp.where(last, size - 1, low + 1)
  pos = jnp.where(last, low.astype(dtype), pos)
  frac = pos - low.astype(dtype)
  weight = jnp.stack([1.0 - frac, frac], axis=-1)
  weight = jnp.where(valid[..., None], weight, 0).astype(dtype)
  return jnp.stack([low, high], axis=-1), weight


def _align(x: jax.Array, boxes: jax.Array, out_hw: tuple[int, int],
           scale: float, sampling_ratio: int, aligned: bool,
           position_sensitive: bool) -> jax.Array:
  """RoI Align of ``(N, H, W, C)`` maps; ``(K, ph, pw, C')`` out."""
  n, h, w, c = x.shape
  ph, pw = out_hw
  acc, out_dtype = accumulation_dtype(x.dtype)
  if position_sensitive:
    if c % (ph * pw):
      raise ValueError(
          f"x: position-sensitive pooling to {out_hw} needs channels that "
          f"are a multiple of {ph * pw}, got {c}.")
    co = c // (ph * pw)
    # torchvision's channel order: input channel (co * ph + i) * pw + j
    # feeds bin (i, j) of output channel co; each bin gathers its own.
    table = x.reshape(n, h, w, co, ph * pw)
  else:
    co = c
    table = x
  if sampling_ratio > 0:
    sy = sx = sampling_ratio
  else:
    # Exact for every box within the map: its height is at most h, so
    # ceil(height / ph) <= ceil(h / ph).
    sy, sx = -(-h // ph), -(-w // pw)

  def pool(boxes):
    boxes = lax.stop_gradient(boxes.astype(acc))
    b = boxes[:, 0].astype(jnp.int32)
    offset = 0.5 if aligned else 0.0
    start_w = boxes[:, 1] * scale - offset
    start_h = boxes[:, 2] * scale - offset
    rw = boxes[:, 3] * scale - offset - start_w
    rh = boxes[:, 4] * scale - offset - start_h
    if not aligned:
      rw, rh = jnp.maximum(rw, 1.0), jnp.maximum(rh, 1.0)
    bin_h, bin_w = _div(rh, ph), _div(rw, pw)
    gh: Any
    gw: Any
    if sampling_ratio > 0:
      gh = gw = sampling_ratio
      count = jnp.asarray(sampling_ratio * sampling_ratio, acc)
    else:
      gh = jnp.clip(jnp.ceil(_div(rh, ph)), 0, sy).astype(jnp.int32)
      gw = jnp.clip(jnp.ceil(_div(rw, pw)), 0, sx).astype(jnp.int32)
      count = jnp.maximum(gh * gw, 1).astype(acc)[:, None, None, None]
    rows, wy = _axis_taps(start_h, bin_h, gh, sy, ph, h, acc)
    cols, wx = _axis_taps(start_w, bin_w, gw, sx, pw, w, acc)
    # (K, ph, sy, 2, pw, sx, 2) corners, each indexing (image, row, column)
    # of the map itself: no flattened copy, so that a map split over its
    # batch (or rows) is gathered where it lies, each shard contributing
    # the corners in its part.
    image = b[:, None, None, None, None, None, None]
    row = rows[:, :, :, :, None, None, None]
    col = cols[:, None, None, None, :, :, :]
    if position_sensitive:
      bins = jnp.arange(ph)[:, None] * pw + jnp.arange(pw)[None, :]
      values = table[image, row, col, :,
                     bins[None, :, None, None, :, None, None]]
    else:
      values = table[image, row, col]
    values = values.astype(acc)
    weight = (wy[:, :, :, :, None, None, None]
              * wx[:, None, None, None, :, :, :])
    out = jnp.einsum("kpyaqxb,kpyaqxbc->kpqc", weight, values,
                     precision=lax.Precision.HIGHEST)
    return out / count

  per_roi = ph * pw * sy * sx * 4 * co
  return _over_rois(pool, boxes, per_roi).astype(out_dtype)


# ---------------------------------------------------------------------------
# Integer bins (RoI pooling).


def _round(v: jax.Array) -> jax.Array:
  """``std::round``: halves away from zero."""
  return (jnp.sign(v) * jnp.floor(jnp.abs(v) + 0.5)).astype(jnp.int32)


def _int_bins(start, length, pooled: int, taps: int, hi: int, size: int):
  """Cells of torchvision's integer bins along one axis.

  Returns ``(index, valid)``, each ``(K, pooled, taps)``: the cells
  ``hstart + t`` of each bin (bin ends clipped to ``[0, hi]``, cells
  beyond the bin to the map of ``size``), and whether
  ``t < hend - hstart``.
  """
  first, end = _bin_ends(start, length, pooled, hi)
  index = first[..., None] + jnp.arange(taps)[None, None, :]
  valid = index < end[..., None]
  return jnp.clip(index, 0, size - 1), valid


def _bin_ends(start, length, pooled: int, hi: int):
  """torchvision's integer bins along one axis: ``(first, end)``, each
  ``(K, pooled)``, clipped to ``[0, hi]``."""
  # floor(p * L / n) and ceil((p + 1) * L / n) in integers: exact, where
  # the kernel's float32 products are exact but for rare ties (and XLA's
  # vectorised float32 division is not correctly rounded, so a float form
  # here would miss more often).
  p = jnp.arange(pooled, dtype=jnp.int32)[None, :]
  first = (p * length[:, None]) // pooled
  end = -((-(p + 1) * length[:, None]) // pooled)
  return (jnp.clip(first + start[:, None], 0, hi),
          jnp.clip(end + start[:, None], 0, hi))


def _block_options(bound: int):
  """Ways to cover a bin of 1 to ``bound`` cells along one axis with
  blocks: ``(sizes, lookups)``, blocks of ``sizes`` (1, s, s**2, ...) of
  which a bin reads ``lookups`` (overlapping) of the largest size that
  fits in it."""
  yield (1,), bound
  for s in range(2, bound + 1):
    sizes = [1]
    while sizes[-1] * s <= bound:
      sizes.append(sizes[-1] * s)
      # From one size to the next a bin needs up to s - 1 single cells,
      # then up to s blocks; the largest covers the bound.
      lookups = max(s - 1 if len(sizes) == 2 else s, -(-bound // sizes[-1]))
      yield tuple(sizes), lookups


def _block_plan(bounds: tuple[int, int], table: int, lookup: int,
                weight: int):
  """The block sizes and lookups per axis with the least work: each level
  of the tables costs ``table`` elements, each lookup ``lookup`` elements
  at ``weight`` percent of a table element."""
  def cost(option):
    (sy, my), (sx, mx) = option
    return 100 * len(sy) * len(sx) * table + weight * my * mx * lookup
  return min(((y, x) for y in _block_options(bounds[0])
              for x in _block_options(bounds[1])), key=cost)


def _blocks(key: jax.Array, cell: jax.Array, sizes: tuple[int, ...],
            axis: int) -> list[tuple[jax.Array, jax.Array]]:
  """Block maxima of ``key`` along ``axis``, one ``(key, cell)`` pair per
  size: at each place, the largest key of the block of that size from it
  and ``cell`` at its first place with that key, each block the union of
  the previous size's. A block of size ``s`` needs ``s - 1`` places after
  it: the pair is ``s - 1`` shorter along ``axis``."""
  def part(v, start, length):
    return lax.slice_in_dim(v, start, start + length, axis=axis)

  levels = [(key, cell)]
  for step, size in zip(sizes, sizes[1:]):
    prev_key, prev_cell = levels[-1]
    length = key.shape[axis] - size + 1
    block_key, block_cell = part(prev_key, 0, length), part(prev_cell, 0, length)
    for t in range(1, size // step):
      # A later block's cells follow the earlier's in row-major order (the
      # blocks are one row high, or later rows): on a tie the earlier's.
      later = part(prev_key, t * step, length)
      take = later > block_key
      block_key = jnp.where(take, later, block_key)
      block_cell = jnp.where(take, part(prev_cell, t * step, length),
                             block_cell)
    levels.append((block_key, block_cell))
  return levels


def _block_tables(key: jax.Array, sizes_y: tuple[int, ...],
                  sizes_x: tuple[int, ...], with_cells: bool):
  """Tables of ``key``'s block maxima, ``(N, levels, H, W, C)``: level ``i
  * len(sizes_x) + j`` holds, at each cell, the largest key of the
  ``sizes_y[i]`` by ``sizes_x[j]`` block from it; with ``with_cells``, also
  (a second table) ``row << 16 | col`` (ordered as row-major indices) of
  each block's first cell with that key."""
  n, h, w, c = key.shape
  # Blocks are slices of the map with a border of -inf after it (padded
  # once: shifts padded each time cost 4x more).
  key = lax.pad(key, np.asarray(-np.inf, key.dtype),
                ((0, 0, 0), (0, max(sizes_y) - 1, 0),
                 (0, max(sizes_x) - 1, 0), (0, 0, 0)))
  cell = (lax.broadcasted_iota(jnp.int32, key.shape, 1) << 16
          | lax.broadcasted_iota(jnp.int32, key.shape, 2))
  shape = (n, len(sizes_y) * len(sizes_x), h, w, c)
  # Written level by level in place: a stack of the levels is one loop
  # that XLA emits 2x slower.
  keys = jnp.zeros(shape, key.dtype)
  cells = jnp.zeros(shape, jnp.int32)  # Dropped by XLA unless written.
  for j, (row_key, row_cell) in enumerate(_blocks(key, cell, sizes_x, 2)):
    for i, (block_key, block_cell) in enumerate(
        _blocks(row_key, row_cell, sizes_y, 1)):
      level = i * len(sizes_x) + j
      keys = keys.at[:, level].set(block_key[:, :h, :w])
      if with_cells:
        cells = cells.at[:, level].set(block_cell[:, :h, :w])
  return (keys, cells) if with_cells else keys


def _lookups(start, end, sizes: tuple[int, ...], lookups: int, hi: int):
  """Per bin ``[start, end)`` of one axis (each ``(K, n)``, non-empty but
  for clipped bins), the level of its blocks and their ``lookups``
  starts ``(K, n, lookups)``: the largest size that fits in the bin,
  blocks from its start, the last one ending at its end."""
  length = jnp.maximum(end - start, 1)
  level = sum(((length >= s).astype(jnp.int32) for s in sizes[1:]),
              jnp.zeros_like(length))
  size = jnp.asarray(sizes, jnp.int32)[level]
  steps = jnp.arange(lookups, dtype=jnp.int32)[None, None, :]
  at = jnp.minimum(start[..., None] + steps * size[..., None],
                   (start + length - size)[..., None])
  return level, jnp.clip(at, 0, hi - 1)


#: The shift of ``dy << shift | dx`` in each dtype that records a cell in
#: its bin (see :func:`_offsets`).
_OFFSET_SHIFTS = {np.dtype(np.uint16): 8, np.dtype(np.uint32): 16}


def _offsets(bounds: tuple[int, int]) -> tuple[np.dtype, int]:
  """How a cell is recorded in its bin of at most ``bounds`` cells: the
  dtype and the shift of ``dy << shift | dx``, all ones for none (half the
  memory of int32 cells where the bins allow)."""
  dtype = np.dtype(np.uint16 if bounds[0] < 255 and bounds[1] <= 256
                   else np.uint32)
  return dtype, _OFFSET_SHIFTS[dtype]


def _gradient_index_dtype(shape: tuple[int, ...]) -> np.dtype:
  """The dtype of the gradient's index into a map of ``shape`` (``(N, H,
  W, C)``; image, row, and column times channels): uint16 where it holds
  them (half the memory of int32: the scatter reads millions), else int32
  (and for symbolic sizes)."""
  n, h, w, c = shape
  if any(is_symbolic(d) for d in shape):
    return np.dtype(np.int32)
  return np.dtype(np.uint16 if max(n, h, w * c) <= 1 << 16 else np.int32)


@jax.custom_jvp
def _at_maximum(x: jax.Array, value: jax.Array, image: jax.Array,
                y0: jax.Array, x0: jax.Array, offset: jax.Array) -> jax.Array:
  """``value``, the pooled bins (``(K, ph, pw, C)``), each found in
  ``image`` (``(K,)``) at ``offset`` (see :func:`_offsets`; in its own
  channel) from its bin's first row and column ``y0`` (``(K, ph)``) and
  ``x0`` (``(K, pw)``), with the derivative of reading ``x`` there: the
  gradient reaches only that element. The value itself is not read
  again."""
  del x, image, y0, x0, offset
  return value


@_at_maximum.defjvp
def _at_maximum_jvp(primals, tangents):
  x, value, image, y0, x0, offset = primals
  shift = _OFFSET_SHIFTS[np.dtype(offset.dtype)]
  nowhere = offset == np.asarray(np.iinfo(offset.dtype).max, offset.dtype)
  # A bin with no cell reads its first (or, past the map, none: XLA's
  # gather clamps and its scatter drops), and its tangent is zeroed below.
  wide = jnp.where(nowhere, 0, offset.astype(jnp.int32))
  channel = lax.broadcasted_iota(jnp.int32, offset.shape, offset.ndim - 1)
  n, h, w, c = x.shape
  index_dtype = _gradient_index_dtype(x.shape)
  # An index per spatial dim (one into the flat map is 1.3x faster): XLA
  # splits those over devices, never a flattened map. Width and channels
  # as one dim, split as the width.
  at = jnp.stack(
      [jnp.broadcast_to(image[:, None, None, None], wide.shape),
       y0[:, :, None, None] + (wide >> shift),
       (x0[:, None, :, None] + (wide & ((1 << shift) - 1))) * c + channel],
      axis=-1).astype(index_dtype)
  # Every dim of the map collapsed, and bins with no cell zeroed by a
  # select rather than sent out of bounds: a uint16 index has no value
  # past every image to spare.
  dnums = lax.GatherDimensionNumbers(offset_dims=(), collapsed_slice_dims=(
      0, 1, 2), start_index_map=(0, 1, 2))
  t = lax.gather(tangents[0].reshape(n, h, w * c), at.reshape(-1, 3), dnums,
                 (1, 1, 1), mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS
                 ).reshape(offset.shape)
  t = jnp.where(nowhere, jnp.zeros((), t.dtype), t)
  # The primal goes through the rule again, so that higher orders see it.
  return _at_maximum(x, value, image, y0, x0, offset), t


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _first_maxima(search, shape, x: jax.Array, *bins: jax.Array) -> jax.Array:
  """``search(key, *bins)``: the pooled bins, of ``shape``, with the
  derivative of each bin's first maximum in row-major order (the search's
  offset of it in its bin; ``bins`` start with the image, ``y0`` and
  ``x0``). The primal finds the maxima alone."""
  return _ungrouped(search(_keys(x), *bins, with_index=False), shape)


@_first_maxima.defjvp
def _first_maxima_jvp(search, shape, primals, tangents):
  x, *bins = primals
  image, y0, _, x0, _, _ = bins
  key = _keys(x)
  # The maxima as the primal finds them, the cells by their own search: a
  # search for both would keep its lookups (XLA copies those that two
  # loops share). The cells in the output's layout: XLA transposes the
  # other way (the cotangent's) 10x slower.
  value = search(key, *bins, with_index=False)
  offset = search(key, *bins, with_index=True)
  return _at_maximum_jvp(
      (x, _ungrouped(value, shape), image, y0, x0, _ungrouped(offset, shape)),
      (tangents[0],) + (None,) * 5)


def _ungrouped(v: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """``(G, M, g)`` groups of channels (``G * g >= C``) as one array of
  ``shape``, ``(..., C)``."""
  v = jnp.moveaxis(v, 0, 1).reshape(*shape[:-1], -1)
  return v[..., :shape[-1]]


def _keys(x: jax.Array) -> jax.Array:
  """What the kernel's scan compares: it starts from -FLT_MAX and takes a
  cell only if it is greater, so NaN, -inf and -FLT_MAX itself (here
  -inf) are never taken."""
  value = lax.stop_gradient(x)
  lowest = np.asarray(-np.finfo(np.float32).max, x.dtype)
  return jnp.where(value > lowest, value, np.asarray(-np.inf, x.dtype))


def _bin_values(best, empty):
  """The kernel's output from each bin's largest key ``best`` (``(M,
  g)``): 0 for an ``empty`` bin (``(M,)``), -FLT_MAX for one of only NaN,
  -inf or -FLT_MAX."""
  lowest = np.asarray(-np.finfo(np.float32).max, best.dtype)
  return jnp.where(empty[:, None], jnp.zeros((), best.dtype),
                   jnp.where(best == -np.inf, lowest, best))


def _bin_cells(best, cell, empty, y0, x0, bounds):
  """Each bin's first maximum ``cell`` (``row << 16 | col``; ``(M, g)``
  for the ``M = K * ph * pw`` bins), as its offset from the bin's first row
  ``y0`` (``(K, ph)``) and column ``x0`` (``(K, pw)``; see
  :func:`_offsets`), all ones where the kernel passes no gradient (see
  :func:`_bin_values`)."""
  dtype, shift = _offsets(bounds)
  bins = (y0.shape[0], y0.shape[1], x0.shape[1])
  y0 = jnp.broadcast_to(y0[:, :, None], bins).reshape(-1, 1)
  x0 = jnp.broadcast_to(x0[:, None, :], bins).reshape(-1, 1)
  offset = ((cell >> 16) - y0) << shift | ((cell & 0xFFFF) - x0)
  return jnp.where(empty[:, None] | (best == -np.inf),
                   np.asarray(np.iinfo(dtype).max, dtype), offset.astype(dtype))


def _table_search(key: jax.Array, b, y0, y1, x0, x1, empty, *, plan,
                  bounds: tuple[int, int], with_index: bool):
  """The pooled bins ``[y0, y1) x [x0, x1)`` of image ``b`` (each ``(K,
  ph)`` or ``(K, pw)``, bins of at least one cell but where ``empty``,
  ``(K, ph, pw)``), and with ``with_index`` the cell of each one's first
  maximum (see :func:`_bin_cells`): lookups in tables of block maxima with
  ``plan``'s block sizes and lookups per axis, ``g`` channels at a time.
  ``(C / g, K * ph * pw, g)``."""
  ((sizes_y, my), (sizes_x, mx)), group = plan
  _, h, w, c = key.shape
  level_y, rows = _lookups(y0, y1, sizes_y, my, h)
  level_x, cols = _lookups(x0, x1, sizes_x, mx, w)
  level = level_y[:, :, None] * len(sizes_x) + level_x[:, None, :]
  # (K * ph * pw,) each per lookup: a block's image and level, row and
  # column. An index per spatial dim: XLA splits those over devices, never
  # a flattened map.
  levels = len(sizes_y) * len(sizes_x)
  flat = lambda v: jnp.broadcast_to(v, level.shape).reshape(-1)
  at = [(flat(b[:, None, None] * levels + level), flat(rows[:, :, None, i]),
         flat(cols[:, None, :, j])) for i in range(my) for j in range(mx)]
  empty = empty.reshape(-1)
  # With the index, ``group`` channels at a time: the tables of a group
  # stay in cache (2x faster at 32 channels than 256); the maxima alone
  # are fastest at once (3x). The cells' loop runs at least twice: XLA
  # inlines a loop of one trip and then fuses the search into each part
  # of the gradient's index (10x slower); a lone group has a copy of
  # -inf after it, as are the channels past a multiple of the group.
  if with_index:
    groups = max(2, -(-c // group))
  else:
    group, groups = c, 1
  key = jnp.pad(key, ((0, 0),) * 3 + ((0, groups * group - c),),
                constant_values=-np.inf)
  chunks = jnp.moveaxis(key.reshape(*key.shape[:3], groups, group), 3, 0)

  def search(_, chunk):
    if not with_index:
      keys = _block_tables(chunk, sizes_y, sizes_x, False)
      keys = keys.reshape(-1, *keys.shape[2:])
      best = functools.reduce(jnp.maximum, [
          keys.at[a].get(mode="clip") for a in at])
      return None, _bin_values(best, empty)
    # The first cell in row-major order of each bin's maximum: the first
    # of those of the blocks that hold it.
    keys, cells = _block_tables(chunk, sizes_y, sizes_x, True)
    keys = keys.reshape(-1, *keys.shape[2:])
    cells = cells.reshape(-1, *cells.shape[2:])

    def read(a):
      return keys.at[a].get(mode="clip"), cells.at[a].get(mode="clip")

    first, cell = read(at[0])
    for a in at[1:]:
      key_a, cell_a = read(a)
      take = (key_a > first) | ((key_a == first) & (cell_a < cell))
      first = jnp.where(take, key_a, first)
      cell = jnp.where(take, cell_a, cell)
    return None, _bin_cells(first, cell, empty, y0, x0, bounds)

  return lax.scan(search, None, chunks)[1]


def _cell_search(key: jax.Array, b, y0, y1, x0, x1, empty, *, bounds,
                 with_index: bool):
  """:func:`_table_search` by a scan of each bin's first ``bounds`` cells
  (a gather of them all), all channels at once."""
  _, h, w, c = key.shape
  ty, tx = bounds
  k, ph, pw = b.shape[0], y0.shape[1], x0.shape[1]
  # (K, ph, pw, ty * tx) cells in torchvision's scan order (rows outer).
  row_cells = y0[..., None] + jnp.arange(ty)[None, None, :]
  col_cells = x0[..., None] + jnp.arange(tx)[None, None, :]
  valid = ((row_cells < y1[..., None])[:, :, None, :, None]
           & (col_cells < x1[..., None])[:, None, :, None, :])
  row_cells = jnp.clip(row_cells, 0, h - 1)
  col_cells = jnp.clip(col_cells, 0, w - 1)
  cells = key[b[:, None, None, None, None],
              row_cells[:, :, None, :, None],
              col_cells[:, None, :, None, :]]
  cells = jnp.where(valid[..., None], cells, -np.inf).reshape(
      k, ph, pw, ty * tx, c)
  best = jnp.max(cells, axis=3).reshape(-1, c)
  empty = empty.reshape(-1)
  if not with_index:
    return _bin_values(best, empty)[None]
  first = jnp.argmax(cells, axis=3)
  row = jnp.take_along_axis(row_cells[:, :, None, :, None],
                            (first // tx)[:, :, :, None, :], axis=3)
  col = jnp.take_along_axis(col_cells[:, None, :, :, None],
                            (first % tx)[:, :, :, None, :], axis=3)
  cell = row[:, :, :, 0] << 16 | col[:, :, :, 0]
  return _bin_cells(best, cell.reshape(-1, c), empty, y0, x0, bounds)[None]


def _max_pool_bins(x: jax.Array, boxes: jax.Array, out_hw: tuple[int, int],
                   scale: float) -> jax.Array:
  n, h, w, c = x.shape
  ph, pw = out_hw
  # Exact for every box within the map: rounded corners in [0, h] make a
  # RoI of at most h + 1 cells, so a bin spans at most ceil((h+1)/ph) + 1.
  ty = min(h, -(-(h + 1) // ph) + 1)
  tx = min(w, -(-(w + 1) // pw) + 1)
  # Per image where the batch is symbolic (jax.export).
  images = 1 if is_symbolic(n) else n

  def tuned(platform):
    table = _plan_table.parameters(platform)
    k = 1 if is_symbolic(boxes.shape[0]) else boxes.shape[0]
    (sizes_y, _), (sizes_x, _) = blocks = _block_plan(
        (ty, tx), images * h * w * c, k * ph * pw * c,
        table["roi_lookup_percent"])
    levels = len(sizes_y) * len(sizes_x)
    # (Cells are row << 16 | col in int32.)
    if (levels * images * h * w * c > 1 << table["roi_table_log2"]
        or h + ty > 1 << 15 or w + tx > 1 << 16):
      return None
    # The channels searched at a time for the gradient's index: their
    # tables hold at most 2**roi_group_log2 elements, but at least
    # roi_group_min channels (fewer ran 3-10x slower on the CPU).
    fits = (1 << table["roi_group_log2"]) // (levels * images * h * w)
    return blocks, _channel_group(c, fits, table["roi_group_min"])

  return _lowering.per_platform(
      tuned, lambda plan: functools.partial(
          _max_pool_search, out_hw=out_hw, scale=scale, bounds=(ty, tx),
          plan=plan), x, boxes)


def _max_pool_search(x: jax.Array, boxes: jax.Array, *,
                     out_hw: tuple[int, int], scale: float,
                     bounds: tuple[int, int], plan) -> jax.Array:
  """:func:`_max_pool_bins` with bins of at most ``bounds`` cells, read
  from tables of block maxima (``plan``: the block sizes and lookups per
  axis) or (no plan) by a scan of their cells."""
  _, h, w, c = x.shape
  ph, pw = out_hw
  ty, tx = bounds
  acc, _ = accumulation_dtype(x.dtype)
  if plan:
    search = functools.partial(_table_search, plan=plan, bounds=bounds)
  else:
    search = functools.partial(_cell_search, bounds=bounds)

  def pool(boxes):
    boxes = lax.stop_gradient(boxes)
    b = boxes[:, 0].astype(jnp.int32)
    corner = _round(boxes[:, 1:].astype(acc) * scale)
    rw = jnp.maximum(corner[:, 2] - corner[:, 0] + 1, 1)
    rh = jnp.maximum(corner[:, 3] - corner[:, 1] + 1, 1)
    y0, y1 = _bin_ends(corner[:, 1], rh, ph, h)
    x0, x1 = _bin_ends(corner[:, 0], rw, pw, w)
    empty = (y1 <= y0)[:, :, None] | (x1 <= x0)[:, None, :]
    # A longer bin (of a box past the map) keeps its first cells.
    return _first_maxima(search, (b.shape[0], ph, pw, c), x, b, y0,
                         jnp.minimum(y1, y0 + ty), x0,
                         jnp.minimum(x1, x0 + tx), empty)

  # A scan holds every cell of its bins at once; the tables' lookups are
  # fused into their loops (grouped under lax.map, 2x slower).
  per_roi = 1 if plan else ph * pw * c * ty * tx
  return _over_rois(pool, boxes, per_roi)


def _channel_group(c: int, fits: int, least: int) -> int:
  """How many of ``c`` channels to search at a time: the largest divisor
  of ``c`` from ``least`` to ``fits`` that leaves two groups or more, else
  ``max(fits, least)`` (the channels padded to a multiple), at most
  ``c``."""
  fits = max(fits, least, 1)
  divisors = [d for d in range(max(least, 1), min(fits, c // 2) + 1)
              if c % d == 0]
  return max(divisors) if divisors else min(fits, c)


def _avg_pool_bins(x: jax.Array, boxes: jax.Array, out_hw: tuple[int, int],
                   scale: float) -> jax.Array:
  """torchvision's ps_roi_pool: position-sensitive bin averages."""
  n, h, w, c = x.shape
  ph, pw = out_hw
  if c % (ph * pw):
    raise ValueError(
        f"x: position-sensitive pooling to {out_hw} needs channels that are "
        f"a multiple of {ph * pw}, got {c}.")
  co = c // (ph * pw)
  acc, out_dtype = accumulation_dtype(x.dtype)
  table = x.reshape(n, h, w, co, ph * pw)
  # Bins of a RoI of at most h cells (no + 1 here), clipped to [0, h - 1].
  ty = min(h, -(-h // ph) + 1)
  tx = min(w, -(-w // pw) + 1)

  def pool(boxes):
    boxes = lax.stop_gradient(boxes)
    b = boxes[:, 0].astype(jnp.int32)
    corner = _round(boxes[:, 1:].astype(acc) * scale)
    rw = jnp.maximum(corner[:, 2] - corner[:, 0], 1)
    rh = jnp.maximum(corner[:, 3] - corner[:, 1], 1)
    # The forward kernel clips bin ends to h - 1 (its backward to h): the
    # last row and column are never read.
    rows, vy = _int_bins(corner[:, 1], rh, ph, ty, h - 1, h)
    cols, vx = _int_bins(corner[:, 0], rw, pw, tx, w - 1, w)
    bins = jnp.arange(ph)[:, None] * pw + jnp.arange(pw)[None, :]
    weight = (vy[:, :, None, :, None] & vx[:, None, :, None, :]).astype(acc)
    # (K, ph, pw, ty, tx) cells of the map itself (see _align).
    values = table[b[:, None, None, None, None],
                   rows[:, :, None, :, None], cols[:, None, :, None, :], :,
                   bins[None, :, :, None, None]].astype(acc)
    total = jnp.einsum("kpqyx,kpqyxc->kpqc", weight, values,
                       precision=lax.Precision.HIGHEST)
    area = jnp.sum(weight, axis=(3, 4))[..., None]
    return jnp.where(area > 0, total / jnp.maximum(area, 1), 0)

  return _over_rois(pool, boxes, ph * pw * ty * tx * co).astype(out_dtype)


# ---------------------------------------------------------------------------
# Public functions.


def _prepare(x, boxes, output_size, spatial_scale, channels_first):
  y = _layout(jnp.asarray(x), channels_first)
  out_hw = int_tuple(output_size, 2, "output_size")
  scale = _scale(spatial_scale)
  r = rois(boxes, y.shape[0], accumulation_dtype(y.dtype)[0])
  return y, r, out_hw, scale


@partitioned(arrays=2)
def roi_pool(x: ArrayLike, boxes: BoxesLike, output_size: Any,
             spatial_scale: float = 1.0, *,
             channels_first: bool = False) -> jax.Array:
  """RoI max pooling (Fast R-CNN), as ``torchvision.ops.roi_pool``.

  Each box's corners are scaled by ``spatial_scale`` and rounded (halves
  away from zero); the RoI of ``x2 - x1 + 1`` by ``y2 - y1 + 1`` cells (at
  least 1) is split into ``output_size`` bins from ``floor(i * size / n)``
  to ``ceil((i + 1) * size / n)``, clipped to the map; each output is the
  maximum of its bin, 0 for an empty bin. The gradient goes to the first
  maximum in row-major order, as torchvision's kernel.

  Each bin is a few lookups in tables of the map's block maxima (blocks
  of 1 and ``s`` cells per axis, say, read ``s`` or fewer at a time,
  overlapping), whatever its size: the work grows with the number of
  boxes, not their area; the sizes are those of least work for the map
  and the number of boxes. Bins span at most ``B = min(H, ceil((H + 1) /
  ph) + 1)`` rows, and likewise columns, for every box within the map
  (corners in ``[0, W]`` by ``[0, H]`` after scaling): exact for those; a
  bin of a larger box keeps only its first ``B`` rows and columns. For
  maps whose tables would hold more than 2**27 elements (one image's, with
  a symbolic batch), each bin's cells are scanned instead, to the same
  bound.

  Shapes: ``x`` is ``(N, H, W, C)`` (``(N, C, H, W)`` with
  ``channels_first``); the output is ``(K, ph, pw, C)`` (``(K, C, ph,
  pw)``) for ``K`` boxes.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.arange(16.).reshape(1, 4, 4, 1)
    >>> boxes = jnp.array([[0., 0., 0., 3., 3.]])
    >>> jaxpool.roi_pool(x, boxes, 2)[0, :, :, 0]
    Array([[ 5.,  7.],
           [13., 15.]], dtype=float32)

  Args:
    x: the feature maps.
    boxes: a ``(K, 5)`` array ``[batch_index, x1, y1, x2, y2]``, or a list
      with one ``(L, 4)`` array ``[x1, y1, x2, y2]`` per image.
    output_size: bins per RoI, an int or ``(ph, pw)``.
    spatial_scale: the map's size over the boxes' frame (1/16 for stride
      16).
    channels_first: the layout is ``(N, C, H, W)``.

  Returns:
    the pooled RoIs, of ``x``'s dtype.

  Raises:
    ValueError: for boxes of the wrong shape, a concrete batch index out of
      range, a non-positive output size or scale, or ``x`` not 4-D.
    TypeError: for arguments of the wrong type.

  References:
    Girshick 2015, "Fast R-CNN" (ICCV).
  """
  y, r, out_hw, scale = _prepare(x, boxes, output_size, spatial_scale,
                                 channels_first)
  return _output(_max_pool_bins(y, r, out_hw, scale), channels_first)


@partitioned(arrays=2)
def roi_align(x: ArrayLike, boxes: BoxesLike, output_size: Any,
              spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False, *,
              channels_first: bool = False) -> jax.Array:
  """RoI Align (Mask R-CNN), as ``torchvision.ops.roi_align``.

  Each box, scaled by ``spatial_scale`` (and shifted by half a pixel with
  ``aligned=True``), is split into ``output_size`` bins; each output is the
  mean of bilinear samples of ``x`` on a ``grid_h`` by ``grid_w`` grid in its
  bin: ``sampling_ratio`` per axis, or with ``-1`` the adaptive
  ``ceil(roi_size / output_size)``. Without ``aligned`` a RoI is at least
  1x1; with it a box of zero or negative size has no samples and gives 0.
  Samples beyond ``[-1, size]`` count as 0; those within are clamped to the
  map. The gradient is the bilinear weights', as torchvision's.

  With ``sampling_ratio=-1`` the grid is enumerated up to the static bound
  ``ceil(H / ph)`` by ``ceil(W / pw)`` (masked per RoI), exact for every
  box within the map; a larger box is sampled on a grid clamped to that
  bound (the bin's mean estimated with fewer, evenly spread samples).

  Shapes: ``x`` is ``(N, H, W, C)`` (``(N, C, H, W)`` with
  ``channels_first``); the output is ``(K, ph, pw, C)`` (``(K, C, ph,
  pw)``) for ``K`` boxes.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.arange(16.).reshape(1, 4, 4, 1)
    >>> boxes = [jnp.array([[0., 0., 2., 2.]])]  # one list per image
    >>> jaxpool.roi_align(x, boxes, 2, aligned=True)[0, :, :, 0]
    Array([[0., 1.],
           [4., 5.]], dtype=float32)

  Args:
    x: the feature maps.
    boxes: a ``(K, 5)`` array ``[batch_index, x1, y1, x2, y2]``, or a list
      with one ``(L, 4)`` array ``[x1, y1, x2, y2]`` per image.
    output_size: bins per RoI, an int or ``(ph, pw)``.
    spatial_scale: the map's size over the boxes' frame.
    sampling_ratio: samples per bin along each axis, or -1 (adaptive).
    aligned: shift boxes by -0.5 pixel (Detectron2's ``ROIAlignV2``).
    channels_first: the layout is ``(N, C, H, W)``.

  Returns:
    the pooled RoIs, of ``x``'s dtype.

  Raises:
    ValueError: for boxes of the wrong shape, a concrete batch index out of
      range, a non-positive output size or scale, a sampling ratio of 0 or
      below -1, or ``x`` not 4-D.
    TypeError: for arguments of the wrong type.

  References:
    He et al. 2017, "Mask R-CNN" (ICCV).
  """
  if not isinstance(aligned, (bool, np.bool_)):
    raise TypeError(f"aligned must be a bool, got {aligned!r}.")
  ratio = _sampling(sampling_ratio)
  y, r, out_hw, scale = _prepare(x, boxes, output_size, spatial_scale,
                                 channels_first)
  return _output(_align(y, r, out_hw, scale, ratio, bool(aligned), False),
                 channels_first)


@partitioned(arrays=2)
def ps_roi_pool(x: ArrayLike, boxes: BoxesLike, output_size: Any,
                spatial_scale: float = 1.0, *,
                channels_first: bool = False) -> jax.Array:
  """Position-sensitive RoI pooling (R-FCN), as
  ``torchvision.ops.ps_roi_pool``.

  Bin ``(i, j)`` of output channel ``c`` is the mean of input channel
  ``(c * ph + i) * pw + j`` over the bin's cells: rounded, scaled corners,
  a RoI of ``x2 - x1`` by ``y2 - y1`` cells (at least 1), bins clipped as
  torchvision's forward kernel clips them, to ``H - 1`` and ``W - 1`` (so
  the map's last row and column are never read); an empty bin gives 0. The
  gradient is that of these values (torchvision's backward kernel clips to
  ``H`` and ``W`` instead, so it differs on bins that reach the last row or
  column).

  Bins hold at most ``min(H, ceil(H / ph) + 1)`` rows and likewise columns:
  exact for boxes within the map; a larger box's bins keep their first rows
  and columns up to that bound.

  Shapes: ``x`` is ``(N, H, W, C)`` with ``C = C' * ph * pw``; the output
  is ``(K, ph, pw, C')`` (with ``channels_first``: ``(N, C, H, W)`` in,
  ``(K, C', ph, pw)`` out).

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.ones((1, 8, 8, 2 * 3 * 3))
    >>> jaxpool.ps_roi_pool(x, jnp.array([[0., 0., 0., 6., 6.]]), 3).shape
    (1, 3, 3, 2)

  Args:
    x: the feature maps.
    boxes: a ``(K, 5)`` array ``[batch_index, x1, y1, x2, y2]``, or a list
      with one ``(L, 4)`` array ``[x1, y1, x2, y2]`` per image.
    output_size: bins per RoI, an int or ``(ph, pw)``.
    spatial_scale: the map's size over the boxes' frame.
    channels_first: the layout is ``(N, C, H, W)``.

  Returns:
    the pooled RoIs, of ``x``'s dtype.

  Raises:
    ValueError: as :func:`roi_pool`, and for channels not a multiple of
      ``ph * pw``.
    TypeError: for arguments of the wrong type.

  References:
    Dai et al. 2016, "R-FCN: Object Detection via Region-based Fully
    Convolutional Networks" (NeurIPS).
  """
  y, r, out_hw, scale = _prepare(x, boxes, output_size, spatial_scale,
                                 channels_first)
  return _output(_avg_pool_bins(y, r, out_hw, scale), channels_first)


@partitioned(arrays=2)
def ps_roi_align(x: ArrayLike, boxes: BoxesLike, output_size: Any,
                 spatial_scale: float = 1.0, sampling_ratio: int = -1, *,
                 channels_first: bool = False) -> jax.Array:
  """Position-sensitive RoI Align, as ``torchvision.ops.ps_roi_align``.

  :func:`roi_align` with ``aligned=True`` (torchvision's kernel always
  shifts by half a pixel) where bin ``(i, j)`` of output channel ``c``
  samples input channel ``(c * ph + i) * pw + j``. A box of zero or negative
  size gives 0 (torchvision's kernel divides 0 by 0 there when the adaptive
  grid is empty). The adaptive grid's bound is :func:`roi_align`'s.

  Shapes: ``x`` is ``(N, H, W, C)`` with ``C = C' * ph * pw``; the output
  is ``(K, ph, pw, C')`` (with ``channels_first``: ``(N, C, H, W)`` in,
  ``(K, C', ph, pw)`` out).

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.ones((1, 8, 8, 2 * 3 * 3))
    >>> boxes = jnp.array([[0., 0., 0., 6., 6.]])
    >>> jaxpool.ps_roi_align(x, boxes, 3, sampling_ratio=2).shape
    (1, 3, 3, 2)

  Args:
    x: the feature maps.
    boxes: a ``(K, 5)`` array ``[batch_index, x1, y1, x2, y2]``, or a list
      with one ``(L, 4)`` array ``[x1, y1, x2, y2]`` per image.
    output_size: bins per RoI, an int or ``(ph, pw)``.
    spatial_scale: the map's size over the boxes' frame.
    sampling_ratio: samples per bin along each axis, or -1 (adaptive).
    channels_first: the layout is ``(N, C, H, W)``.

  Returns:
    the pooled RoIs, of ``x``'s dtype.

  Raises:
    ValueError: as :func:`roi_align`, and for channels not a multiple of
      ``ph * pw``.
    TypeError: for arguments of the wrong type.

  References:
    Dai et al. 2016, "R-FCN: Object Detection via Region-based Fully
    Convolutional Networks" (NeurIPS).
  """
  ratio = _sampling(sampling_ratio)
  y, r, out_hw, scale = _prepare(x, boxes, output_size, spatial_scale,
                                 channels_first)
  return _output(_align(y, r, out_hw, scale, ratio, True, True),
                 channels_first)


def _level_scale(size: tuple[int, int], image: tuple[int, int]) -> float:
  """torchvision's ``_infer_scale``: the power of two nearest to the map's
  height over the image's."""
  return float(2.0 ** round(math.log2(float(size[0]) / float(image[0]))))


def multi_scale_roi_align(features: Sequence[ArrayLike], boxes: BoxesLike,
                          image_shapes: Sequence[Sequence[int]],
                          output_size: Any, sampling_ratio: int = -1, *,
                          canonical_scale: float = 224,
                          canonical_level: int = 4, eps: float = 1e-6,
                          channels_first: bool = False) -> jax.Array:
  """Multi-scale RoI Align (FPN), as torchvision's ``MultiScaleRoIAlign``.

  Each box is pooled by :func:`roi_align` (``aligned=False``) from one
  level of the pyramid ``features``: level ``floor(canonical_level +
  log2(sqrt(area) / canonical_scale) + eps)``, clamped to the levels
  present, where a level's scale is the power of two nearest to its height
  over the largest image height in ``image_shapes`` and level ``k`` has
  scale ``2 ** -k``. With one level, every box is pooled from it.

  Every box is pooled from every level and the right one kept (the levels
  differ in size, so one gather cannot serve them all): the work is that
  of one :func:`roi_align` per level.

  Shapes: each level is ``(N, H_l, W_l, C)`` (``(N, C, H_l, W_l)`` with
  ``channels_first``), finest first; the output is ``(K, ph, pw, C)``
  (``(K, C, ph, pw)``).

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> features = [jnp.ones((1, 64, 64, 8)), jnp.ones((1, 32, 32, 8))]
    >>> boxes = [jnp.array([[0., 0., 40., 40.], [0., 0., 250., 250.]])]
    >>> jaxpool.multi_scale_roi_align(features, boxes, [(256, 256)], 7,
    ...                               2).shape
    (2, 7, 7, 8)

  Args:
    features: the pyramid's maps, finest first.
    boxes: a ``(K, 5)`` array ``[batch_index, x1, y1, x2, y2]``, or a list
      with one ``(L, 4)`` array ``[x1, y1, x2, y2]`` per image, in image
      coordinates.
    image_shapes: each image's ``(height, width)`` before padding.
    output_size: bins per RoI, an int or ``(ph, pw)``.
    sampling_ratio: samples per bin along each axis, or -1 (adaptive).
    canonical_scale: the box size that maps to ``canonical_level``.
    canonical_level: the level of a box of ``canonical_scale``.
    eps: added before the floor, as torchvision's ``LevelMapper``.
    channels_first: the layout is ``(N, C, H, W)``.

  Returns:
    the pooled RoIs, of the levels' dtype.

  Raises:
    ValueError: for no levels or image shapes, levels of different batch,
      channels or dtype, and as :func:`roi_align`.
    TypeError: for arguments of the wrong type.

  References:
    Lin et al. 2017, "Feature Pyramid Networks for Object Detection"
    (CVPR).
  """
  if not isinstance(features, Sequence) or not features:
    raise ValueError("features must be a non-empty sequence of maps.")
  if not isinstance(image_shapes, Sequence) or not image_shapes:
    raise ValueError("image_shapes must be a non-empty sequence of "
                     "(height, width).")
  for name, v in (("canonical_scale", canonical_scale), ("eps", eps)):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
      raise TypeError(f"{name} must be a real number, got {v!r}.")
  if not canonical_scale > 0:
    raise ValueError(
        f"canonical_scale must be > 0, got {canonical_scale!r}.")
  if isinstance(canonical_level, (bool, np.bool_)) or not isinstance(
      canonical_level, numbers.Integral):
    raise TypeError(
        f"canonical_level must be an int, got {canonical_level!r}.")
  ratio = _sampling(sampling_ratio)
  features = [jnp.asarray(f) for f in features]
  image = (max(int(s[0]) for s in image_shapes),
           max(int(s[1]) for s in image_shapes))
  out_hw = int_tuple(output_size, 2, "output_size")
  is_list = isinstance(boxes, (list, tuple))
  box_arrays = list(boxes) if is_list else [boxes]

  def pool(*arrays):
    maps = [_layout(f, channels_first) for f in arrays[:len(features)]]
    if len({(m.shape[0], m.shape[3], m.dtype) for m in maps}) != 1:
      raise ValueError(
          "features: every level must have the same batch, channels and "
          f"dtype, got {[(m.shape, m.dtype) for m in maps]}.")
    scales = [_level_scale(m.shape[1:3], image) for m in maps]
    acc, _ = accumulation_dtype(maps[0].dtype)
    given = list(arrays[len(features):])
    r = rois(given if is_list else given[0], maps[0].shape[0], acc)
    pooled = [_align(m, r, out_hw, s, ratio, False, False)
              for m, s in zip(maps, scales)]
    if len(maps) == 1:
      return _output(pooled[0], channels_first)
    k_min = int(-math.log2(scales[0]))
    k_max = int(-math.log2(scales[-1]))
    area = (r[:, 3] - r[:, 1]) * (r[:, 4] - r[:, 2])
    target = jnp.floor(canonical_level + jnp.log2(
        jnp.sqrt(area) / jnp.asarray(canonical_scale, acc)) + jnp.asarray(
            eps, acc))
    level = (jnp.clip(target, k_min, k_max) - k_min).astype(jnp.int32)
    out = jnp.zeros_like(pooled[0])
    for i, p in enumerate(pooled):
      out = jnp.where((level == i)[:, None, None, None], p, out)
    return _output(out, channels_first)

  # The levels and boxes are all arrays of the call, so that levels split
  # over explicit mesh axes pool as roi_align's maps do.
  return partitioned(pool, arrays=len(features) + len(box_arrays))(
      *features, *box_arrays)


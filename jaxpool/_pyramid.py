"""Spatial pyramid pooling: SPPNet's fixed-length vector, YOLO's SPP, SPPF."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool import _lowering, _plan_table
from jaxpool._adaptive import Bins, bin_pool, spatial_rank, spatial_sizes
from jaxpool._indices import max_with_indices
from jaxpool._pooling import accumulation_dtype, max_pool
from jaxpool._sharding import partitioned
from jaxpool._spec import (MAX_SIZE, check_plane, int_tuple, is_symbolic,
                           layout_axes, window_spec)

#: A pyramid level or a window: an int (the same on every spatial dim) or
#: one int per spatial dim.
LevelLike = Union[int, Sequence[int]]

_METHODS = ("max", "avg")
_BIN_RULES = ("adaptive", "sppnet")


def _entries(value: Any, name: str) -> tuple[Any, ...]:
  """A non-empty sequence of levels (or window sizes)."""
  if not isinstance(value, Sequence) or isinstance(value, str):
    raise TypeError(
        f"{name} must be a sequence of ints or of tuples of ints, got "
        f"{value!r}.")
  if not value:
    raise ValueError(f"{name} must not be empty.")
  return tuple(value)


def _choice(value: Any, choices: tuple[str, ...], name: str) -> str:
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
  return value


def _sppnet_bins(a: int, n: int, dim: int) -> Bins:
  """SPPNet's bins: windows of ``ceil(a / n)``, ``floor(a / n)`` apart."""
  if is_symbolic(a):
    if n == 1:  # One window of the whole dim, for any size.
      return Bins(a, (0,), (a,))
    raise ValueError(
        f"bins='sppnet' needs a concrete size of spatial dim {dim}, got the "
        f"symbolic size {a}: the SPPNet rule (windows of ceil(a / {n}), "
        f"floor(a / {n}) apart) gives {n} bins for some sizes a only, so no "
        f"output shape holds for every {a}; use bins='adaptive', which "
        f"gives {n} bins for any size.")
  window, stride = -(-a // n), a // n
  count = 0 if stride == 0 else (a - window) // stride + 1
  if count != n:
    raise ValueError(
        f"levels: the SPPNet rule (window ceil({a}/{n}) = {window}, stride "
        f"floor({a}/{n}) = {stride}) does not give {n} bins for input size "
        f"{a} of spatial dim {dim} (it gives {count}); use bins='adaptive'.")
  return Bins.strided(a, window, stride, n)


@partitioned
def spatial_pyramid_pool(x: ArrayLike, levels: Sequence[LevelLike] = (1, 2, 4),
                         *, method: str = "max", bins: str = "adaptive",
                         channels_first: bool = False) -> jax.Array:
  """Spatial pyramid pooling: a fixed-length vector from any input size.

  Each level pools the input to a fixed grid of bins; the result is the
  concatenation, level by level, of each level's pooled map flattened in the
  input's own layout. For 2-D channels-last input it equals
  ``jnp.concatenate([adaptive_max_pool(x, (l, l)).reshape(n, -1)
  for l in levels], axis=1)``.

  Bins: ``"adaptive"`` uses PyTorch's adaptive bins (see
  :func:`adaptive_max_pool`), defined for any input size. ``"sppnet"`` uses
  the paper's rule, windows of ``ceil(a / n)`` elements ``floor(a / n)``
  apart for ``n`` bins over ``a`` elements, which gives ``n`` bins only for
  some sizes (13 into 3, 2 or 1, as in the paper, but not 7 into 4).

  Max levels whose bins are unions of a finer level's bins, when those are
  windows (adaptive 13 into 2 and 1 from 13 into 4: 4 x 4 windows 3 apart),
  are pooled from that level's maxima: the input is read, and the gradient
  written, once for them all. Values and gradients are each level's own,
  PyTorch's element of each bin (the first maximum in row-major order, the
  last NaN); the plan table's ``pyramid_nested`` turns it off.

  Shapes: ``x`` is ``(*batch, *spatial, C)``, or ``(*batch, C, *spatial)``
  with ``channels_first=True``. A tuple level gives the spatial rank, with
  any number of batch dims (none included); with only int levels ``x`` is
  taken to have one batch dim, so the rank is ``x.ndim - 2``. Every batch
  dim is kept: the output is ``(*batch, C * B)`` where ``B`` is the total
  number of bins, ``sum(prod(level))``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> y = jaxpool.spatial_pyramid_pool(jnp.ones((8, 13, 13, 256)))
    >>> y.shape  # 256 * (1 + 4 + 16)
    (8, 5376)

  Args:
    x: the input.
    levels: the bins per spatial dim of each level: an int (the same on
      every dim) or one int per dim.
    method: ``"max"`` or ``"avg"``.
    bins: ``"adaptive"`` or ``"sppnet"``.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the pooled vector, of ``x``'s dtype (avg of integers: the default
    float).

  Raises:
    ValueError: for empty levels, a zero or negative level, levels of
      different ranks, an unknown method or bin rule, a size the SPPNet rule
      cannot split, or ``x`` with too few dims.

  References:
    He et al. 2014, "Spatial Pyramid Pooling in Deep Convolutional Networks
    for Visual Recognition".
  """
  x = jnp.asarray(x)
  levels = _entries(levels, "levels")
  method = _choice(method, _METHODS, "method")
  bins = _choice(bins, _BIN_RULES, "bins")
  rank = spatial_rank(x.shape, levels, "levels")
  in_sizes = spatial_sizes(x, rank, channels_first)
  grids = [int_tuple(level, rank, "levels") for level in levels]
  for grid in grids:
    check_plane(grid, "levels", "a level's grid of bins")
  level_bins = []
  for grid in grids:
    if bins == "adaptive":
      level_bins.append([Bins.adaptive(a, n) for a, n in zip(in_sizes, grid)])
    else:
      level_bins.append([_sppnet_bins(a, n, dim)
                         for dim, (a, n) in enumerate(zip(in_sizes, grid))])
  if method == "max" and jnp.issubdtype(x.dtype, jnp.floating) and not any(
      is_symbolic(a) for a in in_sizes):
    pooled = _lowering.per_platform(
        lambda p: _plan_table.parameters(p)["pyramid_nested"] > 0,
        lambda nested: functools.partial(
            _max_levels, level_bins=level_bins,
            channels_first=channels_first, nested=nested), x)
  else:
    pooled = [bin_pool(x, b, method, channels_first) for b in level_bins]
  # The flat size spelled out: -1 cannot be inferred for an empty batch.
  return jnp.concatenate([
      p.reshape(p.shape[:-(rank + 1)] + (math.prod(p.shape[-(rank + 1):]),))
      for p in pooled], axis=-1)


def _nesting(fine: Bins, coarse: Bins) -> tuple[tuple[int, int], ...] | None:
  """For each ``coarse`` bin, the run ``[a, b)`` of ``fine`` bins whose
  union it is, or None if some coarse bin is no such union."""
  runs = []
  for start, end in zip(coarse.starts, coarse.ends):
    inside = [i for i, (s, e) in enumerate(zip(fine.starts, fine.ends))
              if s >= start and e <= end]
    if not inside or inside != list(range(inside[0], inside[-1] + 1)):
      return None
    a, b = inside[0], inside[-1] + 1
    reach = start
    for s, e in zip(fine.starts[a:b], fine.ends[a:b]):
      if s > reach:
        return None
      reach = max(reach, e)
    if fine.starts[a] != start or reach != end:
      return None
    runs.append((a, b))
  return tuple(runs)


def _finest_windows(level_bins: Sequence[Sequence[Bins]]) -> int | None:
  """The level of most bins among those whose bins are windows on every
  dim (its maxima and their positions are one windowed selection), if any
  other level's bins are unions of its bins."""
  windowed = [i for i, bins in enumerate(level_bins)
              if all(b.window_stride is not None for b in bins)]
  for i in sorted(windowed, key=lambda i: -math.prod(
      b.count for b in level_bins[i])):
    if any(j != i and all(_nesting(f, c) is not None for f, c in zip(
        level_bins[i], bins)) for j, bins in enumerate(level_bins)):
      return i
  return None


def _max_levels(x: jax.Array, *, level_bins: Sequence[Sequence[Bins]],
                channels_first: bool, nested: bool) -> list[jax.Array]:
  """The max over every level's bins. With ``nested``, a level whose bins
  are unions of the finest windowed level's bins is the max over those:
  the input is read (and the gradient written) once for all of them."""
  fine = _finest_windows(level_bins) if nested else None
  if fine is None:
    return [bin_pool(x, b, "max", channels_first) for b in level_bins]
  axes, _ = layout_axes(x.shape, len(level_bins[fine]), channels_first)
  windows = [b.window_stride for b in level_bins[fine]]
  assert all(ws is not None for ws in windows)  # _finest_windows' choice.
  spec = window_spec(x.shape, [ws[0] for ws in windows if ws],
                     [ws[1] for ws in windows if ws],
                     channels_first=channels_first)
  # Its bins are windows: the same maxima and derivative as bin_pool's,
  # as one reduce_window where the table says (the other levels read it;
  # not in half precision, where XLA:CPU's reduce_window is 3x slower).
  # Where each maximum is, for the derivative (dropped without one).
  wide, _ = accumulation_dtype(x.dtype)
  values, positions = max_with_indices(
      x, spec,
      shared=lambda p: _plan_table.parameters(p)["pyramid_nested"] == 2
      and wide == x.dtype)
  pooled = []
  for i, bins in enumerate(level_bins):
    runs = tuple(_nesting(f, c) for f, c in zip(level_bins[fine], bins))
    if i == fine:
      pooled.append(values)
    elif all(r is not None for r in runs):
      # Half precision compared in float32 (exact; XLA:CPU's loops are
      # several times slower on bfloat16).
      pooled.append(_nested_max(values.astype(wide), positions, tuple(axes),
                                runs).astype(x.dtype))
    else:
      pooled.append(bin_pool(x, bins, "max", channels_first))
  return pooled


def _runs_of(v: jax.Array, axis: int, runs) -> list[list[jax.Array]]:
  """Per run ``[a, b)``, the slices ``a`` to ``b - 1`` of ``v`` along
  ``axis``."""
  return [[lax.slice_in_dim(v, i, i + 1, axis=axis) for i in range(a, b)]
          for a, b in runs]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _nested_max(values: jax.Array, positions: jax.Array,
                axes: tuple[int, ...], runs) -> jax.Array:
  """The max over each run of ``values``' bins (``runs[d]`` along
  ``axes[d]``), NaN-propagating; differentiated at PyTorch's element of
  the union (see :func:`_nested_max_jvp`), found from the bins'
  ``positions`` in the input plane."""
  del positions
  for axis, dim_runs in zip(axes, runs):
    values = jnp.concatenate([functools.reduce(jnp.maximum, parts)
                              for parts in _runs_of(values, axis, dim_runs)],
                             axis=axis)
  return values


@_nested_max.defjvp
def _nested_max_jvp(axes, runs, primals, tangents):
  # PyTorch's element of a bin (the last NaN, else the first maximum in
  # row-major order) is the best (value, position) pair by _lowering.beats,
  # a total order: the best of a union is the best of its parts' bests,
  # dim by dim; the tangent is the chosen part's.
  values, positions = primals
  v, p, t = values, positions, tangents[0]
  for axis, dim_runs in zip(axes, runs):
    chosen = []
    for vs, ps, ts in zip(*(_runs_of(a, axis, dim_runs) for a in (v, p, t))):
      bv, bp, bt = vs[0], ps[0], ts[0]
      for pv, pp, pt in zip(vs[1:], ps[1:], ts[1:]):
        take = _lowering.beats((pv, pp), (bv, bp), "max")
        bv, bp, bt = (jnp.where(take, pv, bv), jnp.where(take, pp, bp),
                      jnp.where(take, pt, bt))
      chosen.append((bv, bp, bt))
    v, p, t = (jnp.concatenate(parts, axis=axis) for parts in zip(*chosen))
  return _nested_max(values, positions, axes, runs), t


def _same_max_pool(x: jax.Array, window: tuple[int, ...],
                   channels_first: bool) -> jax.Array:
  return max_pool(x, window, 1, "SAME", channels_first=channels_first)


@partitioned
def spp_yolo(x: ArrayLike, window_sizes: Sequence[LevelLike] = (5, 9, 13), *,
             channels_first: bool = False) -> jax.Array:
  """YOLO's spatial pyramid pooling: the input and its max pools, stacked.

  Each window gives a stride-1 ``"SAME"`` max pool (padding never wins), so
  the spatial size is kept; the result is ``[x, pool_1(x), pool_2(x), ...]``
  concatenated on the channel axis, as YOLOv5's ``SPP``. For odd windows
  ``"SAME"`` is PyTorch's ``padding=k // 2``; an even window pads one more
  element after than before.

  Shapes: ``x`` is ``(*batch, *spatial, C)``, or ``(*batch, C, *spatial)``
  with ``channels_first=True``. A tuple window gives the spatial rank, with
  any number of batch dims; with only int windows ``x`` is taken to have one
  batch dim, so the rank is ``x.ndim - 2``. The output has
  ``C * (1 + len(window_sizes))`` channels.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> jaxpool.spp_yolo(jnp.ones((8, 20, 20, 256))).shape
    (8, 20, 20, 1024)

  Args:
    x: the input.
    window_sizes: the window of each pool: an int (the same on every
      spatial dim) or one int per dim.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the stacked maps, of ``x``'s dtype.

  Raises:
    ValueError: for empty ``window_sizes``, a zero or negative window,
      windows of different ranks, or ``x`` with too few dims.

  References:
    He et al. 2014, "Spatial Pyramid Pooling in Deep Convolutional Networks
    for Visual Recognition"; its stride-1 form is YOLOv3-SPP's and
    YOLOv5's.
  """
  x = jnp.asarray(x)
  entries = _entries(window_sizes, "window_sizes")
  rank = spatial_rank(x.shape, entries, "window_sizes")
  _, channel_axis = layout_axes(x.shape, rank, channels_first)
  windows = [int_tuple(w, rank, "window_sizes") for w in entries]
  return jnp.concatenate(
      [x] + [_same_max_pool(x, w, channels_first) for w in windows],
      axis=channel_axis)


@partitioned
def sppf(x: ArrayLike, window_size: LevelLike = 5, repeats: int = 3, *,
         channels_first: bool = False) -> jax.Array:
  """YOLOv5's SPPF: ``repeats`` chained max pools, stacked with the input.

  ``y_1 = pool(x)``, ``y_2 = pool(y_1)``, ...; the result is
  ``[x, y_1, ..., y_repeats]`` on the channel axis, each ``pool`` a stride-1
  ``"SAME"`` max pool of ``window_size``. Chained pools of ``k`` equal one
  pool of ``r * (k - 1) + 1``, so ``sppf(x, 5, 3)`` equals
  ``spp_yolo(x, (5, 9, 13))`` in value, and faster. Its gradient is the
  chain's, as in PyTorch: with unique values it equals SPP's; among tied
  maxima it may pick a different one than a single pool would.

  Shapes: ``x`` is ``(*batch, *spatial, C)``, or ``(*batch, C, *spatial)``
  with ``channels_first=True``. A tuple ``window_size`` gives the spatial
  rank, with any number of batch dims; an int means one batch dim, so the
  rank is ``x.ndim - 2``. The output has ``C * (1 + repeats)`` channels.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> jaxpool.sppf(jnp.ones((8, 20, 20, 256))).shape
    (8, 20, 20, 1024)

  Args:
    x: the input.
    window_size: the window of each pool: an int or one int per dim.
    repeats: the number of chained pools, at least 1.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the stacked maps, of ``x``'s dtype.

  Raises:
    ValueError: for a zero or negative window or ``repeats``, or ``x`` with
      too few dims.

  References:
    Jocher et al., YOLOv5 (2020), ``models/common.py: SPPF``.
  """
  x = jnp.asarray(x)
  rank = spatial_rank(x.shape, (window_size,), "window_size")
  _, channel_axis = layout_axes(x.shape, rank, channels_first)
  window = int_tuple(window_size, rank, "window_size")
  if isinstance(repeats, Sequence) or isinstance(repeats, np.ndarray):
    raise TypeError(f"repeats must be an int, got {repeats!r}.")
  repeats = int_tuple(repeats, 1, "repeats")[0]
  channels = x.shape[channel_axis]
  if channels * (1 + repeats) > MAX_SIZE:
    # Each repeat is traced on its own: bound the loop by the output it
    # builds before running it.
    raise ValueError(
        f"repeats: the output would have {channels} * (1 + {repeats}) "
        f"channels, more than 2**31 - 1 = {MAX_SIZE}.")
  outputs = [x]
  for _ in range(repeats):
    outputs.append(_same_max_pool(outputs[-1], window, channels_first))
  return jnp.concatenate(outputs, axis=channel_axis)

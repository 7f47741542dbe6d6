"""Adaptive and global pooling: a fixed output size from any input size.

PyTorch's adaptive pools split a spatial dim of size ``n`` into ``o`` bins,
bin ``i`` covering ``[floor(i * n / o), ceil((i + 1) * n / o))``. Bins of one
dim are described by :class:`Bins`, and every pooling over bins (adaptive,
global, and the spatial pyramid's) goes through :func:`bin_pool`:

* dims whose bins are a regular window (every bin as long, starting a fixed
  stride apart: ``n % o == 0`` for adaptive bins) are reduced together by the
  core's windowed reduction;
* every other dim is reduced on its own: sums as a product with the 0/1
  matrix of bin membership; maxima as a running maximum over windows of
  each bin length (at most two lengths, ``ceil(n / o)`` and one more: taps
  folded one by one, or one ``reduce_window`` for long bins), read at each
  bin's start.

Nothing is emitted per bin, so compile time does not grow with the sizes.
The maximum's derivative is a ``jax.custom_jvp`` that finds PyTorch's
element of each bin in a gathered ``(o, L)`` table of the bins' elements and
writes the tangent as a scatter-add into the bins, whose transpose (what
``jax.grad`` runs) is a gather: no XLA scatter in reverse mode.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool import _lowering
from jaxpool import _plan_table
from jaxpool._pooling import accumulation_dtype, lowest
from jaxpool._sharding import partitioned
from jaxpool._spec import (WindowSpec, check_plane, int_rank, int_tuple,
                           is_symbolic, layout_axes, spread_mask,
                           window_spec)
from jaxpool._typing import OutputSizeLike

_INDEX = np.int32
_A = TypeVar("_A", np.ndarray, jax.Array)
#: Where the gradient of tied maxima goes in :func:`global_max_pool`.
_TIE_RULES = ("first", "split")


@dataclasses.dataclass(frozen=True)
class Bins:
  """The bins of one spatial dim of size ``size``: ``[starts[i], ends[i])``.

  Every bin is non-empty and inside ``[0, size)``; bins may overlap.
  """

  size: int
  starts: tuple[int, ...]
  ends: tuple[int, ...]

  @classmethod
  def adaptive(cls, n: int, o: int) -> Bins:
    """PyTorch's adaptive bins of ``n`` elements into ``o`` bins.

    ``o`` and ``n`` are at most ``MAX_SIZE``, checked by the caller, so the
    products fit in int64.
    """
    if is_symbolic(n):
      # Edges as dimension expressions (jax.export).
      return cls(n, tuple(i * n // o for i in range(o)),
                 tuple(-(-(i + 1) * n // o) for i in range(o)))
    i = np.arange(o, dtype=np.int64)
    return cls(n, tuple((i * n // o).tolist()),
               tuple((-(-(i + 1) * n // o)).tolist()))

  @classmethod
  def strided(cls, n: int, window: int, stride: int, count: int) -> Bins:
    """``count`` windows of ``window`` elements, ``stride`` apart."""
    return cls(n, tuple(i * stride for i in range(count)),
               tuple(i * stride + window for i in range(count)))

  @property
  def count(self) -> int:
    return len(self.starts)

  @functools.cached_property
  def lengths(self) -> np.ndarray:
    return np.subtract(self.ends, self.starts)

  @functools.cached_property
  def runs(self) -> tuple[tuple[int, int, int, int], ...]:
    """The bins as runs of windows: ``(first element, count, window,
    stride)`` for each maximal run of consecutive bins of one length whose
    starts are equally spaced (64 -> 31: three runs, of 15, 1 and 15)."""
    runs = []
    k = 0
    while k < self.count:
      j, stride = k + 1, 1
      if (j < self.count and self.lengths[j] == self.lengths[k]
          and self.starts[j] > self.starts[k]):
        stride = self.starts[j] - self.starts[k]
        while (j < self.count and self.lengths[j] == self.lengths[k]
               and self.starts[j] - self.starts[j - 1] == stride):
          j += 1
      runs.append((self.starts[k], j - k, int(self.lengths[k]), stride))
      k = j
    return tuple(runs)

  @property
  def identity(self) -> bool:
    """Whether every element is a bin of its own: nothing to reduce."""
    return self.count == self.size and bool(np.all(self.lengths == 1))

  @functools.cached_property
  def window_stride(self) -> tuple[int, int] | None:
    """``(window, stride)`` if the bins are exactly a VALID windowing."""
    window = int(self.lengths[0])
    if self.starts[0] != 0 or np.any(self.lengths != window):
      return None
    if self.count == 1:
      # A stride of n admits exactly one window, whatever the window is.
      return window, self.size
    stride = self.starts[1]
    if stride < 1 or self.starts != tuple(
        i * stride for i in range(self.count)):
      return None
    if (self.size - window) // stride + 1 != self.count:
      return None
    return window, stride

  @property
  def blocks(self) -> bool:
    """Whether the bins are non-overlapping windows: a reshape gives them."""
    ws = self.window_stride
    return ws is not None and (ws[0] == ws[1] or self.count == 1)

  @functools.cached_property
  def table(self) -> np.ndarray:
    """``(count, L)`` element indices of each bin; ``size`` pads short bins."""
    index = np.asarray(self.starts)[:, None] + np.arange(self.lengths.max())
    return np.where(index < np.asarray(self.ends)[:, None], index,
                    self.size).astype(_INDEX)

  @functools.cached_property
  def membership(self) -> np.ndarray:
    """``(count, size)``: 1 where an element is in a bin, else 0."""
    index = np.arange(self.size)
    return ((index >= np.asarray(self.starts)[:, None])
            & (index < np.asarray(self.ends)[:, None])).astype(np.float32)

  @functools.cached_property
  def members(self) -> np.ndarray:
    """``(size, C)`` bins each element is in; ``count`` pads the rows."""
    table = self.table
    bins = np.broadcast_to(np.arange(self.count)[:, None], table.shape)
    inside = table < self.size
    element, owner = table[inside], bins[inside]
    order = np.lexsort((owner, element))
    element, owner = element[order], owner[order]
    counts = np.bincount(element, minlength=self.size)
    rank = np.arange(element.size) - np.repeat(
        np.cumsum(counts) - counts, counts)
    result = np.full((self.size, counts.max()), self.count, _INDEX)
    result[element, rank] = owner
    return result


# ---------------------------------------------------------------------------
# One dim of irregular bins.


def _along(values: _A, axis: int, ndim: int) -> _A:
  """``values`` laid along ``axis`` (and the axes after it) of an ndim array."""
  shape = [1] * ndim
  shape[axis:axis + values.ndim] = values.shape
  return values.reshape(shape)


def _take(x: jax.Array, axis: int, table: np.ndarray) -> jax.Array:
  """``x`` indexed along ``axis`` by a static in-bounds ``table``."""
  index = (slice(None),) * axis + (table,)
  return x.at[index].get(mode="promise_in_bounds",
                         wrap_negative_indices=False)


def _pad_one(x: jax.Array, axis: int, value) -> jax.Array:
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (0, 1, 0)
  return lax.pad(x, jnp.asarray(value, x.dtype), config)


def _blocks(x: jax.Array, axis: int, bins: Bins) -> jax.Array:
  """Non-overlapping bins side by side: ``(..., n, ...)`` to
  ``(..., o, L, ...)``, by a reshape."""
  window = int(bins.lengths[0])
  x = lax.slice_in_dim(x, 0, bins.count * window, axis=axis)
  return x.reshape(x.shape[:axis] + (bins.count, window) + x.shape[axis + 1:])


def _scatter_into_bins(u: jax.Array, axis: int, bins: Bins) -> jax.Array:
  """Sums ``u`` of shape ``(..., n, C, ...)`` into ``(..., o, ...)``.

  Entry ``(m, c)`` goes to bin ``members[m, c]``; padding entries are
  dropped. Its transpose is a gather, so ``jax.grad`` of a tangent written
  with it emits no scatter.
  """
  shape = u.shape[:axis] + (bins.count,) + u.shape[axis + 2:]
  index = (slice(None),) * axis + (bins.members,)
  return jnp.zeros(shape, u.dtype).at[index].add(
      u, mode="drop", wrap_negative_indices=False)


def _first_max(xg: jax.Array, axis: int, unroll: int) -> jax.Array:
  """PyTorch's choice along ``axis``: the last NaN if any, else the first max.

  This is PyTorch's loop, ``if (val > best || isnan(val))``, run over the
  elements of each bin. Unrolled for short bins; a ``fori_loop`` keeps long
  ones (global pooling) cheap to compile; ``unroll`` (the plan table's
  ``adaptive_unroll``) is the longest bin unrolled. ``jnp.argmax`` (a variadic
  reduction) and comparing with the broadcast maximum both run several
  times slower on XLA:CPU.
  """
  length = xg.shape[axis]
  inexact = jnp.issubdtype(xg.dtype, jnp.inexact)

  def step(j, carry):
    best, index = carry
    value = lax.dynamic_index_in_dim(xg, j, axis, keepdims=False)
    take = value > best
    if inexact:
      take = take | jnp.isnan(value)
    return jnp.where(take, value, best), jnp.where(take, j, index)

  best = lax.index_in_dim(xg, 0, axis, keepdims=False)
  carry = (best, jnp.zeros(best.shape, _INDEX))
  if length <= unroll:
    for j in range(1, length):
      carry = step(_INDEX(j), carry)
    return carry[1]
  return lax.fori_loop(_INDEX(1), _INDEX(length), step, carry)[1]


def _running_max(x: jax.Array, axis: int, lengths: Sequence[int],
                 sliced: int) -> dict[int, jax.Array]:
  """The maximum over every window of each length along ``axis``, stride 1.

  For each ``l`` in ``lengths`` (ascending) the result has ``n - l + 1``
  entries along ``axis``, entry ``s`` the maximum of ``[s, s + l)``. The
  shortest windows take their taps one by one up to ``sliced`` long (the
  plan table's ``adaptive_sliced``), which
  XLA fuses into one pass over ``x``, and are one ``reduce_window`` beyond
  (a slice per tap would be a halo exchange per tap when ``axis`` is split
  over devices: 55 exchanges and 300x slower for 256 -> 7 over 4); each
  longer length adds its extra taps to the previous one (adaptive bins
  differ by one). Both propagate NaN.
  """
  n = x.shape[axis]

  def cut(a, start, count):
    return lax.slice_in_dim(a, start, start + count, axis=axis)

  first = lengths[0]
  count = n - first + 1
  if first > sliced:
    window = [1] * x.ndim
    window[axis] = first
    acc = lax.reduce_window(x, _lowering.identity(x.dtype, "max"), lax.max,
                            window, [1] * x.ndim, "VALID")
  else:
    acc = functools.reduce(jnp.maximum,
                           [cut(x, j, count) for j in range(first)])
  result = {first: acc}
  for done, l in zip(lengths, lengths[1:]):
    count = n - l + 1
    acc = functools.reduce(jnp.maximum, [cut(acc, 0, count)] + [
        cut(x, j, count) for j in range(done, l)])
    result[l] = acc
  return result


def _irregular_max(x: jax.Array, axis: int, bins: Bins,
                   sliced: int) -> jax.Array:
  """The maximum of each bin: of the running maximum of the bin's length,
  the entry at the bin's start. Not differentiated (see :func:`_bin_max`)."""
  out = None
  running = _running_max(x, axis, sorted(set(int(l) for l in bins.lengths)),
                         sliced)
  for l, r in running.items():
    starts = np.minimum(bins.starts, bins.size - l).astype(_INDEX)
    taken = _take(r, axis, starts)
    out = taken if out is None else jnp.where(
        _along(bins.lengths == l, axis, r.ndim), taken, out)
  assert out is not None  # Every bin has a length: one entry at least.
  return out


def _gather(x: jax.Array, axis: int, bins: Bins, fill) -> jax.Array:
  """The elements of each bin: ``(..., n, ...)`` to ``(..., o, L, ...)``.

  Bins shorter than ``L`` are padded with ``fill`` at their end.
  """
  if bins.blocks:
    return _blocks(x, axis, bins)
  if np.any(bins.lengths != bins.table.shape[1]):
    x = _pad_one(x, axis, fill)
  return _take(x, axis, bins.table)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _max_stage(x: jax.Array, axis: int, bins: Bins, unroll: int) -> jax.Array:
  # Differentiated: from the same gathered table as its JVP's search, which
  # XLA then gathers once; reduced, not folded, since the next stage gathers
  # from this one and XLA would fuse a fold into that gather, redoing it for
  # every element.
  fill = _lowering.identity(x.dtype, "max")
  return _lowering.reduce_extremum(_gather(x, axis, bins, fill), (axis + 1,),
                                  "max", fold_up_to=0)


@_max_stage.defjvp
def _max_stage_jvp(axis, bins, unroll, primals, tangents):
  (x,), (t,) = primals, tangents
  # The choice of element is piecewise constant in x. It is searched in a
  # gathered (o, L) table of the bins: searching running windows instead
  # (as the undifferentiated forward does) lets XLA fuse the search into
  # the gathers below, redoing it for every element of every bin (15x
  # slower for 256 -> 7).
  xg = _gather(lax.stop_gradient(x), axis, bins, -np.inf)
  k = _first_max(xg, axis + 1, unroll)
  zero = np.zeros((), t.dtype)
  if bins.blocks:
    chosen = lax.broadcasted_iota(_INDEX, xg.shape, axis + 1) == (
        jnp.expand_dims(k, axis + 1))
    t_out = jnp.sum(jnp.where(chosen, _blocks(t, axis, bins), zero),
                    axis=axis + 1)
  else:
    chosen = k + _along(np.asarray(bins.starts, _INDEX), axis, k.ndim)
    owner_choice = _take(_pad_one(chosen, axis, -1), axis, bins.members)
    element = _along(np.arange(bins.size, dtype=_INDEX)[:, None], axis,
                     owner_choice.ndim)
    t_out = _scatter_into_bins(
        jnp.where(owner_choice == element, jnp.expand_dims(t, axis + 1),
                  zero), axis, bins)
  return _max_stage(x, axis, bins, unroll), t_out


def _sum_stage(x: jax.Array, axis: int, bins: Bins) -> jax.Array:
  """The sum over each bin along ``axis``: a product with the 0/1 matrix of
  bin membership, whose transpose (the gradient) is a product too.

  Matrix units run it far faster than gathers, and at full float32
  precision (``HIGHEST``: no TF32 or bfloat16 passes on accelerators) the
  sums are exact to rounding.
  """
  # As a batched ``(count, size) @ (size, rest)`` product over the dims
  # before ``axis``, so that no operand is transposed in memory.
  batch = math.prod(x.shape[:axis])
  rest = math.prod(x.shape[axis + 1:])
  matrix = jnp.broadcast_to(jnp.asarray(bins.membership, x.dtype),
                            (batch,) + bins.membership.shape)
  y = lax.dot_general(matrix, x.reshape(batch, bins.size, rest),
                      (((2,), (1,)), ((0,), (0,))),
                      precision=lax.Precision.HIGHEST)
  return y.reshape(x.shape[:axis] + (bins.count,) + x.shape[axis + 1:])


# ---------------------------------------------------------------------------
# Every spatial dim.


@dataclasses.dataclass(frozen=True)
class _Plan:
  """How a pooling over bins is computed.

  Attributes:
    spec: the windowed reduction over every regular dim at once, or None.
    irregular: ``(axis, bins)`` of the dims the spec leaves to per-dim stages.
    stages: ``(axis, bins)`` of every dim to reduce, last spatial dim first:
      reducing them one at a time in that order keeps PyTorch's row-major
      first-maximum rule (the first maximum of each row, then the first row
      holding the overall maximum).
    unroll: the plan table's ``adaptive_unroll`` for the platform.
    sliced: the plan table's ``adaptive_sliced`` for the platform.
    segments: the plan table's ``adaptive_segments`` for the platform.
    axes: the spatial axes.
    channels_first: the layout.
  """

  spec: WindowSpec | None
  irregular: tuple[tuple[int, Bins], ...]
  stages: tuple[tuple[int, Bins], ...]
  unroll: int = 16
  sliced: int = 16
  segments: int = 0
  axes: tuple[int, ...] = ()
  channels_first: bool = False


def _plan(shape: tuple[int, ...], bins: Sequence[Bins],
          channels_first: bool) -> _Plan:
  axes, _ = layout_axes(shape, len(bins), channels_first)
  window, strides, irregular = [], [], []
  for axis, b in zip(axes, bins):
    ws = None if b.identity else b.window_stride
    window.append(1 if ws is None else ws[0])
    strides.append(1 if ws is None else ws[1])
    if ws is None and not b.identity:
      irregular.append((axis, b))
  spec = None
  if any(w > 1 or s > 1 for w, s in zip(window, strides)):
    spec = window_spec(shape, window, strides, channels_first=channels_first)
  stages = tuple((a, b) for a, b in reversed(tuple(zip(axes, bins)))
                 if not b.identity)
  return _Plan(spec, tuple(irregular), stages, axes=tuple(axes),
               channels_first=channels_first)


def _max_forward(x: jax.Array, plan: _Plan) -> jax.Array:
  if plan.spec is not None:
    x = _lowering.window_reduce(x, plan.spec, "max")
  # Last spatial dim first: XLA:CPU's running maxima along it are several
  # times faster than along an outer dim, and the outer one then runs on
  # the pooled, smaller array.
  for axis, bins in reversed(plan.irregular):
    x = _irregular_max(x, axis, bins, plan.sliced)
  return x


def _max_staged(x: jax.Array, plan: _Plan) -> jax.Array:
  for axis, bins in plan.stages:
    x = _max_stage(x, axis, bins, plan.unroll)
  return x


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _bin_max(x: jax.Array, plan: _Plan) -> jax.Array:
  return _max_forward(x, plan)


@_bin_max.defjvp
def _bin_max_jvp(plan, primals, tangents):
  # The forward reduces all regular dims in one windowed op and the others
  # by running maxima; derivatives go dim by dim over gathered tables of the
  # bins, so that each picks its element without unrolling the window.
  # Half precision is differentiated in float32 (wide_derivative's reason):
  # stages of overlapping bins would each round their sums.
  staged = functools.partial(_max_staged, plan=plan)
  return jax.jvp(functools.partial(_lowering.wide_derivative, fn=staged),
                 primals, tangents)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _global_max(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  return _lowering.reduce_extremum(x, axes, "max", keepdims=True,
                                  fold_up_to=0)


@_global_max.defjvp
def _global_max_jvp(axes, primals, tangents):
  # PyTorch's element (the last NaN if any, else the first maximum in
  # row-major order) found by reductions over the whole plane, not a loop
  # over its elements: split over devices, each is one small all-reduce.
  (x,), (t,) = primals, tangents
  y = _global_max(x, axes)
  position = jnp.zeros((1,) * x.ndim, _INDEX)
  for axis in axes:
    dims = [1] * x.ndim
    dims[axis] = x.shape[axis]
    # The size as a value: symbolic under jax.export.
    position = position * _lowering.size_value(
        x.shape[axis], _INDEX) + lax.broadcasted_iota(_INDEX, dims, axis)
  # One reduction finds both: a NaN at p scores plane + p (the last NaN
  # scores highest), a maximum at p scores plane - 1 - p (the first scores
  # highest), anything else -1 (1.5x faster than a min and a max).
  plane = _lowering.size_value(math.prod(x.shape[a] for a in axes), _INDEX)
  score = jnp.where(x != x, plane + position,
                    jnp.where(x == y, plane - 1 - position, _INDEX(-1)))
  best = jnp.max(score, axis=axes, keepdims=True)
  chosen = jnp.where(best >= plane, best - plane, plane - 1 - best)
  t_out = jnp.sum(jnp.where(position == chosen, t, np.zeros((), t.dtype)),
                  axis=axes, keepdims=True)
  return y, t_out


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _global_max_split(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  return _lowering.reduce_extremum(x, axes, "max", keepdims=True,
                                  fold_up_to=0)


@_global_max_split.defjvp
def _global_max_split_jvp(axes, primals, tangents):
  # torch.amax's and jnp.max's rule: the tangent averaged over the tied
  # maxima. A product, not a select, so that a plane holding NaN (no
  # element equals its NaN maximum) gets 0/0 = NaN everywhere, as there.
  (x,), (t,) = primals, tangents
  y = _global_max_split(x, axes)
  acc, _ = accumulation_dtype(t.dtype)
  tied = (x == y).astype(acc)
  t_out = jnp.sum(t.astype(acc) * tied, axis=axes, keepdims=True) / jnp.sum(
      tied, axis=axes, keepdims=True)
  return y, t_out.astype(t.dtype)


def _segmented_max(x: jax.Array, plan: _Plan) -> jax.Array:
  """The max over bins as windowed maxima: per spatial dim, last first
  (PyTorch's row-major first maximum, as :func:`_max_staged`), each run of
  equally spaced bins of one length (:attr:`Bins.runs`) one windowed max
  of its own span, with that max's own exact derivative."""
  for axis, bins in plan.stages:
    dim = plan.axes.index(axis)
    ones = [1] * len(plan.axes)
    parts = []
    for first, count, window, stride in bins.runs:
      span = lax.slice_in_dim(x, first, first + (count - 1) * stride + window,
                              axis=axis)
      spec = window_spec(span.shape, ones[:dim] + [window] + ones[dim + 1:],
                         ones[:dim] + [stride] + ones[dim + 1:],
                         channels_first=plan.channels_first)
      parts.append(_lowering.window_reduce(span, spec, "max"))
    x = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis)
  return x


def _planned_max(x: jax.Array, *, plan: _Plan) -> jax.Array:
  """The max over bins, computed with ``plan``'s parameters."""
  if not jnp.issubdtype(x.dtype, jnp.inexact) or not plan.irregular:
    # Regular bins are windows: the windowed max and its own derivative,
    # which picks the same element.
    return _max_forward(x, plan)
  if all(len(b.runs) <= plan.segments for _, b in plan.irregular):
    return _segmented_max(x, plan)
  return _bin_max(x, plan)


def bin_pool(x: jax.Array, bins: Sequence[Bins | None], method: str,
             channels_first: bool) -> jax.Array:
  """The max or mean over each bin of every spatial dim.

  Max picks PyTorch's element for its gradient; means of half precision
  accumulate in float32.

  Args:
    x: the input, laid out as ``channels_first`` says.
    bins: the bins of each spatial dim; ``len(bins)`` is the spatial rank.
    method: ``"max"`` or ``"avg"``.
    channels_first: the layout.

  Returns:
    the pooled array, with ``bins[i].count`` along spatial dim ``i``, of
    ``x``'s dtype (means of integers: the default float dtype).
  """
  if any(b is None or is_symbolic(b.size) for b in bins):
    # Symbolic spatial sizes (jax.export): bins as masks built in the graph.
    return _symbolic_bin_pool(x, bins, method, channels_first)
  return _concrete_bin_pool(x, [b for b in bins if b is not None], method,
                            channels_first)


def _concrete_bin_pool(x: jax.Array, bins: Sequence[Bins], method: str,
                       channels_first: bool) -> jax.Array:
  """:func:`bin_pool` for concrete spatial sizes."""
  plan = _plan(x.shape, bins, channels_first)
  if method == "max":
    if all(b.count == 1 and b.lengths[0] == b.size for b in bins) and (
        jnp.issubdtype(x.dtype, jnp.inexact)):
      axes, _ = layout_axes(x.shape, len(bins), channels_first)
      return _global_max(x, tuple(axes))

    def tuned(platform):
      found = _plan_table.parameters(platform)
      return (found["adaptive_unroll"], found["adaptive_sliced"],
              found["adaptive_segments"])

    return _lowering.per_platform(
        tuned, lambda params: functools.partial(
            _planned_max, plan=dataclasses.replace(
                plan, unroll=params[0], sliced=params[1],
                segments=params[2])), x)
  acc, out = accumulation_dtype(x.dtype)
  total = x.astype(acc)
  if plan.spec is not None:
    total = _lowering.window_reduce(total, plan.spec, "sum")
  for axis, b in plan.irregular:
    total = _sum_stage(total, axis, b)
  counts = functools.reduce(np.multiply.outer, [b.lengths for b in bins],
                            np.ones((), np.int64))
  axes, _ = layout_axes(x.shape, len(bins), channels_first)
  counts = _along(counts.astype(acc), axes[0], x.ndim)
  return (total / counts).astype(out)


def _bin_argmax(x: jax.Array, bins: Sequence[Bins],
                channels_first: bool) -> jax.Array:
  """The flat plane index of PyTorch's element of every bin, int32.

  PyTorch's rule over a bin's elements in row-major order: the last NaN if
  any, else the first maximum. The bins of every dim are gathered side by
  side, ``(..., o_1, L_1, ..., o_n, L_n, ...)``, with the flat position of
  each element beside them (short bins padded with ``-inf`` at a position
  past every real one); then the chosen position is a minimum (first
  maximum) and a maximum (last NaN) over the ``L`` axes: reductions, no
  loop over the bins or their elements. A position order is row-major
  window order, as each bin is a box.
  """
  axes, _ = layout_axes(x.shape, len(bins), channels_first)
  fill = _lowering.identity(x.dtype, "max")
  nowhere = _INDEX(np.iinfo(_INDEX).max)
  xg = x
  for axis, b in reversed(tuple(zip(axes, bins))):
    xg = _gather(xg, axis, b, fill)
  # Spatial axis i now sits at axes[i] + i, its bin's elements after it.
  window_axes = tuple(a + i + 1 for i, a in enumerate(axes))
  # Small per-dim tables, broadcast: one table of the whole gathered shape
  # would be a constant as large as the gathered input.
  position = jnp.zeros((1,) * xg.ndim, _INDEX)
  outside = jnp.zeros((1,) * xg.ndim, bool)
  for i, (a, b) in enumerate(zip(axes, bins)):
    dims = [1] * xg.ndim
    dims[a + i], dims[a + i + 1] = b.table.shape
    table = jnp.asarray(b.table.reshape(dims))
    position = position * _INDEX(b.size) + table
    outside = outside | (table >= b.size)
  position = jnp.where(outside, nowhere, position)
  best = _lowering.reduce_extremum(xg, window_axes, "max", keepdims=True,
                                   fold_up_to=0)
  index = jnp.min(jnp.where(xg == best, position, nowhere), axis=window_axes)
  if jnp.issubdtype(x.dtype, jnp.inexact):
    last_nan = jnp.max(jnp.where(xg != xg, position, _INDEX(-1)),
                       axis=window_axes)
    index = jnp.where(last_nan >= 0, last_nan, index)
  return index


# ---------------------------------------------------------------------------
# Symbolic spatial sizes.
#
# Under jax.export with symbolic sizes the bins' edges are dimension
# expressions: nothing can be tabled in NumPy or unrolled per bin. Each dim
# is pooled as a product (sums) or a masked reduction (maxima) with the
# ``(o, n)`` mask of bin membership, built in the graph from the edges; the
# output size ``o`` stays static. Maxima take their dims last first, which
# keeps PyTorch's row-major first-maximum rule.


def _edges(values: Sequence[Any]) -> jax.Array:
  """Bin edges, perhaps symbolic, as an int32 vector."""
  return jnp.stack([jnp.asarray(_lowering.size_value(v, _INDEX))
                    for v in values])


def _membership(axis: int, ndim: int, bins: Bins) -> tuple[jax.Array,
                                                          jax.Array]:
  """The mask of ``bins`` along ``axis`` of an array of rank ``ndim``, with
  bins at ``axis`` and elements at ``axis + 1`` (rank ``ndim + 1``), and the
  elements' indices along ``axis + 1``."""
  shape = [1] * (ndim + 1)
  shape[axis + 1] = bins.size
  element = lax.broadcasted_iota(_INDEX, shape, axis + 1)
  starts = _along(_edges(bins.starts)[:, None], axis, ndim + 1)
  ends = _along(_edges(bins.ends)[:, None], axis, ndim + 1)
  return (element >= starts) & (element < ends), element


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _masked_max_stage(x: jax.Array, axis: int, bins: Bins) -> jax.Array:
  mask, _ = _membership(axis, x.ndim, bins)
  fill = _lowering.identity(x.dtype, "max")
  return _lowering.reduce_extremum(
      jnp.where(mask, jnp.expand_dims(x, axis), fill), (axis + 1,), "max",
      fold_up_to=0)


def _masked_choice(x: jax.Array, y: jax.Array, axis: int,
                   bins: Bins) -> tuple[jax.Array, jax.Array]:
  """PyTorch's element of each bin along ``axis`` (the last NaN if any,
  else the first maximum ``y``), found by reductions over the masked bins:
  its index along ``axis``, int32, and the elements' indices."""
  mask, element = _membership(axis, x.ndim, bins)
  xe = jnp.expand_dims(x, axis)
  none = _INDEX(np.iinfo(_INDEX).max)
  first = jnp.min(jnp.where(mask & (xe == jnp.expand_dims(y, axis + 1)),
                            element, none), axis=axis + 1)
  last_nan = jnp.max(jnp.where(mask & (xe != xe), element, _INDEX(-1)),
                     axis=axis + 1)
  return jnp.where(last_nan >= 0, last_nan, first), element


@_masked_max_stage.defjvp
def _masked_max_stage_jvp(axis, bins, primals, tangents):
  (x,), (t,) = primals, tangents
  y = _masked_max_stage(x, axis, bins)
  chosen, element = _masked_choice(x, y, axis, bins)
  t_out = jnp.sum(jnp.where(element == jnp.expand_dims(chosen, axis + 1),
                            jnp.expand_dims(t, axis), np.zeros((), t.dtype)),
                  axis=axis + 1)
  return y, t_out


def _masked_sum_stage(x: jax.Array, axis: int, bins: Bins) -> jax.Array:
  """The sum over each bin along ``axis``: a product with the mask."""
  mask, _ = _membership(0, 1, bins)
  y = lax.dot_general(x, mask.astype(x.dtype),
                      (((axis,), (1,)), ((), ())),
                      precision=lax.Precision.HIGHEST)
  return jnp.moveaxis(y, -1, axis)


def _symbolic_bin_pool(x: jax.Array, bins: Sequence[Bins | None],
                       method: str, channels_first: bool) -> jax.Array:
  """:func:`bin_pool` for symbolic sizes; a None bin keeps its dim."""
  axes, _ = layout_axes(x.shape, len(bins), channels_first)
  staged = [(a, b) for a, b in zip(axes, bins) if b is not None]
  if method == "max":
    if jnp.issubdtype(x.dtype, jnp.inexact) and all(
        b is not None and b.starts == (0,) and b.ends == (b.size,)
        for b in bins):
      return _global_max(x, tuple(axes))
    for axis, b in reversed(staged):
      x = _masked_max_stage(x, axis, b)
    return x
  acc, out = accumulation_dtype(x.dtype)
  total = x.astype(acc)
  counts = jnp.ones((1,) * x.ndim, acc)
  for axis, b in staged:
    total = _masked_sum_stage(total, axis, b)
    lengths = _edges(b.ends) - _edges(b.starts)
    counts = counts * _along(lengths.astype(acc), axis, x.ndim)
  return (total / counts).astype(out)


def _symbolic_bin_argmax(x: jax.Array, bins: Sequence[Bins | None],
                         channels_first: bool) -> jax.Array:
  """:func:`_bin_argmax` for symbolic sizes; a None bin keeps its dim.

  Dims are reduced last first, each keeping its element's index and the
  flat index, within the later dims, that the element carries: the first
  maximum of a stage of first maxima is the row-major first maximum, and
  the last NaN of a stage of last NaNs the row-major last NaN.
  """
  axes, _ = layout_axes(x.shape, len(bins), channels_first)
  index = None
  stride: Any = 1
  for axis, b in reversed(tuple(zip(axes, bins))):
    if b is None:
      size = x.shape[axis]
      chosen = lax.broadcasted_iota(_INDEX, x.shape, axis)
      picked = index
    else:
      size = b.size
      y = _masked_max_stage(x, axis, b)
      chosen, element = _masked_choice(x, y, axis, b)
      picked = None if index is None else jnp.sum(jnp.where(
          element == jnp.expand_dims(chosen, axis + 1),
          jnp.expand_dims(index, axis), _INDEX(0)), axis=axis + 1)
      x = y
    scaled = chosen * _lowering.size_value(stride, _INDEX)
    index = scaled if picked is None else scaled + picked
    stride = stride * size
  assert index is not None
  return index


# ---------------------------------------------------------------------------
# Argument checking.


def spatial_rank(shape: Sequence[int], entries: Sequence[Any],
                 name: str) -> int:
  """The spatial rank implied by per-level (or per-window) sizes.

  A sequence entry names one size per spatial dim, so its length is the
  rank (all such entries must agree). With only ints the input is taken to
  be ``(N, *spatial, C)`` (or ``(N, C, *spatial)``): one batch dim, so the
  rank is ``x.ndim - 2``.
  """
  ranks = {len(e) for e in entries
           if isinstance(e, Sequence) and not isinstance(e, str)}
  if len(ranks) > 1:
    raise ValueError(
        f"{name} must all have the same number of spatial dims, got "
        f"{tuple(entries)!r}.")
  if ranks:
    rank = ranks.pop()
    if rank == 0:
      raise ValueError(f"{name} must not hold an empty size, got {entries!r}.")
    return rank
  return int_rank(shape, name)


def spatial_sizes(x: jax.Array, rank: int,
                  channels_first: bool) -> tuple[int, ...]:
  """The sizes of the spatial dims of ``x``; raises if any is empty."""
  axes, _ = layout_axes(x.shape, rank, channels_first)
  result = tuple(x.shape[a] for a in axes)
  if 0 in result:
    raise ValueError(
        f"x must have non-empty spatial dims, got shape {x.shape} (spatial "
        f"{result}).")
  return result


def _adaptive_bins(x: jax.Array, output_size: OutputSizeLike,
                   channels_first: bool) -> list[Bins | None]:
  # A symbolic dim kept at its size (None) has no bins to list: None.
  if isinstance(output_size, Sequence) and not isinstance(output_size, str):
    entries = tuple(output_size)
    if not entries:
      raise ValueError("output_size must not be empty.")
  else:
    entries = (output_size,) * spatial_rank(x.shape, (), "output_size")
  in_sizes = spatial_sizes(x, len(entries), channels_first)
  out_sizes = [n if o is None else int_tuple(o, 1, "output_size")[0]
               for n, o in zip(in_sizes, entries)]
  check_plane(out_sizes, "output_size", "the output's spatial plane")
  return [None if o is None and is_symbolic(n) else Bins.adaptive(n, size)
          for n, o, size in zip(in_sizes, entries, out_sizes)]


def _global_bins(x: jax.Array, spatial_dims: int | None,
                 channels_first: bool) -> list[Bins]:
  if spatial_dims is None:
    rank = spatial_rank(x.shape, (), "spatial_dims")
  else:
    rank = int_tuple(spatial_dims, 1, "spatial_dims")[0]
  return [Bins(n, (0,), (n,)) for n in spatial_sizes(x, rank, channels_first)]


def _squeeze_spatial(y: jax.Array, rank: int, keepdims: bool,
                     channels_first: bool) -> jax.Array:
  if not isinstance(keepdims, (bool, np.bool_)):
    raise TypeError(f"keepdims must be a bool, got {keepdims!r}.")
  if keepdims:
    return y
  axes, _ = layout_axes(y.shape, rank, channels_first)
  return lax.squeeze(y, axes)


# ---------------------------------------------------------------------------
# Public functions.

_BINS_DOC = """Bins: a spatial dim of size ``n`` pooled to ``o`` has bin ``i``
  covering input indices ``floor(i * n / o)`` to ``ceil((i + 1) * n / o)``
  (exclusive), PyTorch's rule: ``n`` divisible by ``o`` gives ``o``
  windows of ``n / o``; otherwise neighbouring bins may share an element
  (10 to 4: ``[0, 3), [2, 5), [5, 8), [7, 10)``); ``o > n`` repeats
  elements."""

_RANK_DOC = """Shapes: ``x`` is ``(*batch, *spatial, C)``, or
  ``(*batch, C, *spatial)`` with ``channels_first=True``. A sequence
  ``output_size`` gives the spatial rank, with any number of batch dims
  (none included); an int ``output_size`` means one batch dim,
  ``(N, *spatial, C)``, so the rank is ``x.ndim - 2``. The output has
  ``output_size`` in place of the spatial sizes."""

_GLOBAL_DOC = """Shapes: the spatial dims are the ``spatial_dims`` dims before
  the channel dim (after it with ``channels_first``); every dim before them
  is a batch dim. By default ``spatial_dims = x.ndim - 2``: ``x`` is
  ``(N, *spatial, C)`` (or ``(N, C, *spatial)``) with one batch dim. The
  output is ``(*batch, C)``, or ``(*batch, 1, ..., 1, C)`` with
  ``keepdims``."""


def _documented(fn):
  """Puts the shared bin and shape rules into ``fn``'s docstring."""
  for key, text in (("{bins}", _BINS_DOC), ("{rank}", _RANK_DOC),
                    ("{global}", _GLOBAL_DOC)):
    fn.__doc__ = fn.__doc__.replace(key, text)
  return fn


@partitioned
@_documented
def adaptive_avg_pool(x: ArrayLike, output_size: OutputSizeLike, *,
                      channels_first: bool = False,
                      mask: ArrayLike | None = None) -> jax.Array:
  """Adaptive average pooling: the mean of each of PyTorch's bins.

  Equals ``torch.nn.functional.adaptive_avg_pool{1,2,3}d`` in values and
  gradients, for any rank. Half precision accumulates in float32. With
  ``mask``, each bin's mean of its unmasked elements; 0 (and zero gradient)
  for a bin with none.

  {bins}

  {rank}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> jaxpool.adaptive_avg_pool(jnp.ones((8, 10, 10, 3)), (4, 4)).shape
    (8, 4, 4, 3)
    >>> x = jnp.arange(10.0).reshape(1, 10, 1)  # (batch, length, channels)
    >>> jaxpool.adaptive_avg_pool(x, 4).ravel().tolist()
    [1.0, 3.0, 6.0, 8.0]

  Args:
    x: the input.
    output_size: an int for every spatial dim, or one entry per spatial dim,
      ``None`` keeping that dim's size.
    channels_first: the layout is ``(*batch, C, *spatial)``.
    mask: bool, broadcastable to ``x``'s shape without its channel dim;
      ``False`` leaves an element out.

  Returns:
    the pooled array, of ``x``'s dtype (the default float for integers).

  Raises:
    ValueError: for an empty, zero or negative ``output_size``, an empty
      spatial dim, ``x`` with too few dims, or a ``mask`` that does not
      broadcast.
    TypeError: for a ``mask`` that is not bool or integer.
  """
  x = jnp.asarray(x)
  bins = _adaptive_bins(x, output_size, channels_first)
  if mask is None:
    return bin_pool(x, bins, "avg", channels_first)
  keep = spread_mask(mask, x.shape, layout_axes(
      x.shape, len(bins), channels_first)[1])
  acc, out = accumulation_dtype(x.dtype)
  zero = np.zeros((), acc)
  # Means over the same bins: their ratio is that of the sums.
  total = bin_pool(jnp.where(keep, x.astype(acc), zero), bins, "avg",
                   channels_first)
  count = bin_pool(keep.astype(acc), bins, "avg", channels_first)
  some = count > 0
  return jnp.where(some, total / jnp.where(some, count, np.ones((), acc)),
                   zero).astype(out)


@partitioned
@_documented
def adaptive_max_pool(x: ArrayLike, output_size: OutputSizeLike, *,
                      channels_first: bool = False,
                      mask: ArrayLike | None = None) -> jax.Array:
  """Adaptive max pooling: the maximum of each of PyTorch's bins.

  Equals ``torch.nn.functional.adaptive_max_pool{1,2,3}d`` in values and
  gradients, for any rank: the gradient of each bin goes to its first
  maximum in row-major order, or to its last NaN if it holds any (the NaN
  is the value). With ``mask``, masked elements never win nor get gradient,
  and a bin with no unmasked element gives 0.

  {bins}

  {rank}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> jaxpool.adaptive_max_pool(jnp.ones((8, 13, 13, 3)), 6).shape
    (8, 6, 6, 3)
    >>> x = jnp.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3]).reshape(1, 10, 1)
    >>> jaxpool.adaptive_max_pool(x, 4).ravel().tolist()
    [4, 5, 9, 6]

  Args:
    x: the input, float, integer or bool.
    output_size: an int for every spatial dim, or one entry per spatial dim,
      ``None`` keeping that dim's size.
    channels_first: the layout is ``(*batch, C, *spatial)``.
    mask: bool, broadcastable to ``x``'s shape without its channel dim;
      ``False`` leaves an element out.

  Returns:
    the pooled array, of ``x``'s dtype.

  Raises:
    ValueError: for an empty, zero or negative ``output_size``, an empty
      spatial dim, ``x`` with too few dims, or a ``mask`` that does not
      broadcast.
    TypeError: for a ``mask`` that is not bool or integer.
  """
  x = jnp.asarray(x)
  bins = _adaptive_bins(x, output_size, channels_first)
  if mask is None:
    return bin_pool(x, bins, "max", channels_first)
  keep = spread_mask(mask, x.shape, layout_axes(
      x.shape, len(bins), channels_first)[1])
  y = bin_pool(jnp.where(keep, x, lowest(x.dtype)), bins, "max",
               channels_first)
  # Counted, not compared with the fill: an unmasked -inf still counts.
  kept = bin_pool(keep.astype(np.float32), bins, "max", channels_first)
  return jnp.where(kept > 0, y, np.zeros((), y.dtype))


@partitioned
@_documented
def adaptive_max_pool_with_indices(
    x: ArrayLike, output_size: OutputSizeLike, *,
    channels_first: bool = False) -> tuple[jax.Array, jax.Array]:
  """Adaptive max pooling that also returns where each maximum is.

  The values are :func:`adaptive_max_pool`'s (and so are their gradients).
  Each index is the flat, row-major position of the chosen element in its
  channel's spatial plane of the input, as PyTorch's
  ``adaptive_max_pool{1,2,3}d(..., return_indices=True)`` and
  :func:`max_pool_with_indices`: the first maximum of the bin in row-major
  order, or its last NaN if it holds any. The indices feed
  :func:`max_unpool` with the input's spatial shape.

  {bins}

  {rank}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.arange(25.0).reshape(1, 5, 5, 1)
    >>> y, i = jaxpool.adaptive_max_pool_with_indices(x, (2, 2))
    >>> i[0, :, :, 0].tolist()
    [[12, 14], [22, 24]]

  Args:
    x: the input, float, integer or bool.
    output_size: an int for every spatial dim, or one entry per spatial dim,
      ``None`` keeping that dim's size.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    ``(values, indices)``: the maxima, of ``x``'s dtype, and their int32
    flat indices (not differentiable), both of the output's shape.

  Raises:
    ValueError: for an empty, zero, negative or too large ``output_size``,
      an empty spatial dim, a spatial plane of more than ``2**31 - 1``
      elements, or ``x`` with too few dims.
  """
  x = jnp.asarray(x)
  bins = _adaptive_bins(x, output_size, channels_first)
  concrete = [b for b in bins if b is not None and not is_symbolic(b.size)]
  if len(concrete) < len(bins):
    # Symbolic spatial sizes (jax.export): bins as masks built in the graph.
    return (bin_pool(x, bins, "max", channels_first),
            _symbolic_bin_argmax(lax.stop_gradient(x), bins, channels_first))
  check_plane([b.size for b in concrete], "x", "the input's spatial plane")
  values = bin_pool(x, concrete, "max", channels_first)
  index = _bin_argmax(lax.stop_gradient(x), concrete, channels_first)
  return values, index


@partitioned
@_documented
def global_avg_pool(x: ArrayLike, *, keepdims: bool = False,
                    spatial_dims: int | None = None,
                    channels_first: bool = False,
                    mask: ArrayLike | None = None) -> jax.Array:
  """The mean over every spatial dim, accumulated in float32 for halves.

  With ``mask``, the mean of the unmasked elements, as Keras's
  ``GlobalAveragePooling1D()(x, mask)`` (and its 2D/3D forms, which take no
  mask there); an example with none gives 0 and zero gradient (Keras: NaN).

  {global}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> jaxpool.global_avg_pool(jnp.ones((8, 7, 7, 512))).shape
    (8, 512)
    >>> jaxpool.global_avg_pool(jnp.ones((8, 7, 7, 512)), keepdims=True).shape
    (8, 1, 1, 512)
    >>> x = jnp.array([[[1.0], [3.0], [9.0]], [[2.0], [9.0], [9.0]]])
    >>> keep = jnp.array([[True, True, False], [True, False, False]])
    >>> jaxpool.global_avg_pool(x, mask=keep).ravel().tolist()
    [2.0, 2.0]

  Args:
    x: the input.
    keepdims: keep the spatial dims, of size 1.
    spatial_dims: the number of spatial dims; default ``x.ndim - 2``.
    channels_first: the layout is ``(*batch, C, *spatial)``.
    mask: bool, broadcastable to ``x``'s shape without its channel dim
      (``(N, T)`` for ``(N, T, C)``); ``False`` leaves an element out.

  Returns:
    the means, of ``x``'s dtype (the default float for integers).

  Raises:
    ValueError: for ``spatial_dims < 1``, an empty spatial dim, ``x``
      with too few dims, or a ``mask`` that does not broadcast.
    TypeError: for a ``mask`` that is not bool or integer.
  """
  x = jnp.asarray(x)
  bins = _global_bins(x, spatial_dims, channels_first)
  axes, channel_axis = layout_axes(x.shape, len(bins), channels_first)
  acc, out = accumulation_dtype(x.dtype)
  if mask is None:
    y = jnp.mean(x.astype(acc), axis=axes, keepdims=True).astype(out)
  else:
    keep = spread_mask(mask, x.shape, channel_axis)
    zero = np.zeros((), acc)
    total = jnp.sum(jnp.where(keep, x.astype(acc), zero), axis=axes,
                    keepdims=True)
    count = jnp.sum(keep.astype(acc), axis=axes, keepdims=True)
    # Double where: an example with nothing kept is 0/0.
    some = count > 0
    y = jnp.where(some, total / jnp.where(some, count, np.ones((), acc)),
                  zero).astype(out)
  return _squeeze_spatial(y, len(bins), keepdims, channels_first)


@partitioned
@_documented
def global_max_pool(x: ArrayLike, *, keepdims: bool = False,
                    spatial_dims: int | None = None,
                    channels_first: bool = False,
                    tie_rule: str = "first",
                    mask: ArrayLike | None = None) -> jax.Array:
  """The maximum over every spatial dim, with PyTorch's gradient.

  Values are the same under both tie rules (NaN if the plane holds one).
  The gradient of each channel's plane goes, with ``tie_rule="first"`` (the
  default), all to one element: the first maximum in row-major order (the
  last NaN if any), as ``adaptive_max_pool(x, 1)`` and PyTorch's
  ``adaptive_max_pool2d`` / ``nn.AdaptiveMaxPool2d(1)`` (torchvision,
  timm's ``"max"`` pool type). With ``tie_rule="split"`` it is shared
  equally among the tied maxima, as ``torch.amax`` (timm's ``"fastmax"``
  pool types, ``x.amax((2, 3))``) and ``jnp.max``: a plane holding NaN then
  gets NaN gradients, as there. The two differ only where maxima tie (ReLU
  zeros, saturated or quantised maps).

  With ``mask``, masked elements never win nor get gradient (tied maxima
  are those among the unmasked), and an example with none gives 0 and zero
  gradient. (Keras's ``GlobalMaxPooling*`` take no mask.)

  {global}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.ones((8, 512, 7, 7))
    >>> jaxpool.global_max_pool(x, channels_first=True).shape
    (8, 512)

  Args:
    x: the input, float, integer or bool.
    keepdims: keep the spatial dims, of size 1.
    spatial_dims: the number of spatial dims; default ``x.ndim - 2``.
    channels_first: the layout is ``(*batch, C, *spatial)``.
    tie_rule: ``"first"`` (PyTorch's ``adaptive_max_pool``) or ``"split"``
      (``torch.amax``, ``jnp.max``): where the gradient of tied maxima goes.
    mask: bool, broadcastable to ``x``'s shape without its channel dim
      (``(N, T)`` for ``(N, T, C)``); ``False`` leaves an element out.

  Returns:
    the maxima, of ``x``'s dtype.

  Raises:
    ValueError: for ``spatial_dims < 1``, an empty spatial dim, ``x`` with
      too few dims, an unknown ``tie_rule``, or a ``mask`` that does not
      broadcast.
    TypeError: for a ``mask`` that is not bool or integer.
  """
  x = jnp.asarray(x)
  if tie_rule not in _TIE_RULES:
    raise ValueError(
        f"tie_rule must be one of {_TIE_RULES}, got {tie_rule!r}.")
  bins = _global_bins(x, spatial_dims, channels_first)
  axes, channel_axis = layout_axes(x.shape, len(bins), channels_first)
  keep = None
  if mask is not None:
    keep = spread_mask(mask, x.shape, channel_axis)
    x = jnp.where(keep, x, lowest(x.dtype))
  if tie_rule == "split" and jnp.issubdtype(x.dtype, jnp.inexact):
    y = _global_max_split(x, tuple(axes))
  else:
    y = bin_pool(x, bins, "max", channels_first)
  if keep is not None:
    y = jnp.where(jnp.any(keep, axis=axes, keepdims=True), y,
                  np.zeros((), y.dtype))
  return _squeeze_spatial(y, len(bins), keepdims, channels_first)


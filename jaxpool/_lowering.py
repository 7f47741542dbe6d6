"""How a windowed reduction is lowered: the one place that decides it.

Three lowerings compute the same windowed sum, max or min:

* ``PLAIN``: one ``lax.reduce_window``, differentiated by JAX itself. This is
  what ``flax.linen.max_pool`` does; its gradient for max/min is XLA's
  select-and-scatter, which is slow and, with dilation, not implemented.
* ``RESHAPE``: non-overlapping windows (stride == window, no dilation) are a
  reshape that gives every window its own axes, then a reduction over them.
* ``SLICES``: small overlapping windows are an elementwise reduction over
  the window's taps, one strided slice of the padded input per tap.

Windows with many taps are split into one 1-D reduction per spatial dim
(box windows are separable for sum, max and min), each lowered as above.

Max and min carry a custom JVP on every fast lowering: it picks, per window,
the tap PyTorch picks (the first maximum in row-major window order, the last
NaN if any, the first in-bounds tap if all are ``-inf``) and routes the
tangent through ``lax.select_n``. Its transpose is a sum of padded slices, so
no select-and-scatter is ever emitted, dilation included, and forward-mode,
reverse-mode and higher-order derivatives all work.

:func:`force_plain_lowering` (or ``JAXPOOL_FORCE_PLAIN=1``) makes every op
take ``PLAIN``; it is read at trace time.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import threading
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool._spec import WindowSpec


class Lowering(enum.Enum):
  PLAIN = "plain"
  RESHAPE = "reshape"
  SLICES = "slices"
  SEPARABLE = "separable"


# Past this many taps a window is reduced one spatial dim at a time: k1 + k2
# elementwise ops instead of k1 * k2.
MAX_TAPS = 16
# A 1-D window wider than this overlaps too much for a tap per slice to pay.
MAX_TAPS_1D = 64

_state = threading.local()


def _plain_forced() -> bool:
  forced = getattr(_state, "force_plain", None)
  if forced is None:
    return os.environ.get("JAXPOOL_FORCE_PLAIN", "") not in ("", "0")
  return forced


@contextlib.contextmanager
def force_plain_lowering(enabled: bool = True) -> Iterator[None]:
  """Makes every pooling inside the block lower to plain ``reduce_window``.

  The choice is made at trace time: functions already traced (and cached by
  ``jax.jit``) keep the lowering they were traced with. Setting the
  environment variable ``JAXPOOL_FORCE_PLAIN=1`` does the same globally.

  Example:
    >>> with jaxpool.force_plain_lowering():
    ...   y = jaxpool.max_pool(x, (2, 2))

  Args:
    enabled: whether to force the plain path inside the block.

  Yields:
    nothing.
  """
  previous = getattr(_state, "force_plain", None)
  _state.force_plain = bool(enabled)
  try:
    yield
  finally:
    _state.force_plain = previous


def plan(spec: WindowSpec) -> Lowering:
  """Chooses how to lower a windowed reduction of ``spec``."""
  if _plain_forced():
    return Lowering.PLAIN
  if spec.window_size == 1 or (spec.strides == spec.window
                               and all(d == 1 for d in spec.dilation)):
    return Lowering.RESHAPE
  if spec.window_size <= MAX_TAPS:
    return Lowering.SLICES
  if sum(k > 1 for k in spec.window) > 1:
    return Lowering.SEPARABLE
  if spec.window_size <= MAX_TAPS_1D:
    return Lowering.SLICES
  return Lowering.PLAIN


def stages(spec: WindowSpec) -> list[WindowSpec]:
  """Splits ``spec`` into one 1-D reduction per spatial dim, last dim first.

  Reducing the last dim first keeps PyTorch's row-major tie rule: the first
  maximum of each row, then the first row holding the overall maximum.
  """
  result = []
  in_shape = list(spec.in_shape)
  n = spec.nspatial
  for i in reversed(range(n)):
    if spec.window[i] == 1 and spec.strides[i] == 1 and spec.padding[i] == (
        0, 0) and spec.extra[i] == 0:
      continue
    one = lambda v, default: tuple(v if j == i else default for j in range(n))
    out_shape = list(in_shape)
    out_shape[i] = spec.out_shape[i]
    result.append(WindowSpec(
        ndim=spec.ndim, spatial_axes=spec.spatial_axes,
        channel_axis=spec.channel_axis, in_shape=tuple(in_shape),
        window=one(spec.window[i], 1), strides=one(spec.strides[i], 1),
        dilation=one(spec.dilation[i], 1),
        padding=one(spec.padding[i], (0, 0)), extra=one(spec.extra[i], 0),
        out_shape=tuple(out_shape)))
    in_shape = out_shape
  return result


# ---------------------------------------------------------------------------
# Building blocks.


def identity(dtype: jnp.dtype, op: str) -> jax.Array:
  """The padding value that never wins a ``op`` reduction in ``dtype``."""
  dtype = np.dtype(dtype)
  if op == "sum":
    return np.array(0, dtype)
  if dtype == np.bool_:
    return np.array(op == "min", dtype)
  if jnp.issubdtype(dtype, jnp.integer):
    info = jnp.iinfo(dtype)
    return np.array(info.min if op == "max" else info.max, dtype)
  return np.array(-np.inf if op == "max" else np.inf, dtype)


def pad(x: jax.Array, spec: WindowSpec, value) -> jax.Array:
  """Pads the spatial dims of ``x`` by the user's and ``ceil_mode``'s pads."""
  config = spec.full([(lo, hi, 0) for lo, hi in spec.total_padding],
                     (0, 0, 0))
  if all(c == (0, 0, 0) for c in config):
    return x
  return lax.pad(x, jnp.asarray(value, x.dtype), config)


def taps(xp: jax.Array, spec: WindowSpec) -> list[jax.Array]:
  """One strided slice of the padded input per window tap, row-major."""
  result = []
  for offsets in np.ndindex(*spec.window):
    start = [0] * spec.ndim
    limit = list(xp.shape)
    step = [1] * spec.ndim
    for axis, k, s, d, o in zip(spec.spatial_axes, offsets, spec.strides,
                                spec.dilation, spec.out_shape):
      start[axis] = k * d
      limit[axis] = k * d + (o - 1) * s + 1
      step[axis] = s
    result.append(lax.slice(xp, start, limit, step))
  return result


def _blocks(xp: jax.Array, spec: WindowSpec) -> tuple[jax.Array, tuple]:
  """Reshapes non-overlapping windows onto axes of their own."""
  crop = [slice(None)] * spec.ndim
  shape = []
  window_axes = []
  for axis in range(spec.ndim):
    if axis in spec.spatial_axes:
      i = spec.spatial_axes.index(axis)
      o, k = spec.out_shape[i], spec.window[i]
      crop[axis] = slice(0, o * k)
      shape += [o, k]
      window_axes.append(len(shape) - 1)
    else:
      shape.append(xp.shape[axis])
  return xp[tuple(crop)].reshape(shape), tuple(window_axes)


def _reduce_window(x: jax.Array, spec: WindowSpec, op: str) -> jax.Array:
  computation = {"sum": lax.add, "max": lax.max, "min": lax.min}[op]
  return lax.reduce_window(
      x, jnp.asarray(identity(x.dtype, op), x.dtype), computation,
      spec.full(spec.window, 1), spec.full(spec.strides, 1),
      spec.full(spec.total_padding, (0, 0)),
      window_dilation=spec.full(spec.dilation, 1))


def _combine(op: str):
  return {"sum": lax.add, "max": lax.max, "min": lax.min}[op]


def _forward(x: jax.Array, spec: WindowSpec, op: str,
             lowering: Lowering) -> jax.Array:
  """The windowed ``op`` of ``x`` (already in its accumulation dtype)."""
  if lowering is Lowering.PLAIN:
    return _reduce_window(x, spec, op)
  xp = pad(x, spec, identity(x.dtype, op))
  if lowering is Lowering.RESHAPE:
    blocks, axes = _blocks(xp, spec)
    reduce = {"sum": jnp.sum, "max": jnp.max, "min": jnp.min}[op]
    return reduce(blocks, axis=axes)
  return functools.reduce(_combine(op), taps(xp, spec))


# ---------------------------------------------------------------------------
# Max and min with PyTorch's choice of element.


def selected_tap(x: jax.Array, spec: WindowSpec,
                  op: str) -> tuple[jax.Array, jax.Array]:
  """The max/min of each window and the index of the tap PyTorch picks.

  This is PyTorch's loop, ``if (val > best || isnan(val)) best = val``,
  started at the first in-bounds tap: ties keep the first tap, a NaN is
  always taken (so the last NaN wins), padding never wins.
  """
  better = lax.gt if op == "max" else lax.lt
  xp = pad(x, spec, identity(x.dtype, op))
  out_shape = spec.output_shape(x.shape)
  best = jnp.full(out_shape, identity(x.dtype, op), x.dtype)
  first = spec.first_valid_tap()
  if first.any():
    first = first.reshape(spec.full(first.shape, 1) if first.ndim else ())
    index = jnp.broadcast_to(jnp.asarray(first), out_shape)
  else:
    index = jnp.zeros(out_shape, np.int32)
  inexact = jnp.issubdtype(x.dtype, jnp.inexact)
  for k, tap in enumerate(taps(xp, spec)):
    take = better(tap, best)
    if inexact:
      take = take | jnp.isnan(tap)
    best = jnp.where(take, tap, best)
    index = jnp.where(take, np.int32(k), index)
  return best, index


def _gather_taps(t: jax.Array, spec: WindowSpec, index: jax.Array):
  tp = pad(t, spec, 0)
  cases = taps(tp, spec)
  if len(cases) == 1:
    return cases[0]
  return lax.select_n(index, *cases)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _extremum(x: jax.Array, spec: WindowSpec, op: str,
              lowering: Lowering) -> jax.Array:
  return _forward(x, spec, op, lowering)


@_extremum.defjvp
def _extremum_jvp(spec, op, lowering, primals, tangents):
  del lowering  # The selection needs every tap, whatever the forward used.
  (x,), (t,) = primals, tangents
  y, index = selected_tap(x, spec, op)
  return y, _gather_taps(t, spec, index)


# ---------------------------------------------------------------------------
# Entry points.


def window_reduce(x: jax.Array, spec: WindowSpec, op: str) -> jax.Array:
  """The windowed ``op`` ("sum", "max" or "min") of ``x`` over ``spec``.

  ``x`` is already in the dtype to accumulate in.
  """
  lowering = plan(spec)
  if lowering is Lowering.SEPARABLE:
    for stage in stages(spec):
      x = window_reduce(x, stage, op)
    return x
  if op == "sum" or not jnp.issubdtype(x.dtype, jnp.inexact):
    # Sums are linear, and integers and bools have no tangent: JAX's own
    # derivative of these ops is already the right one.
    return _forward(x, spec, op, lowering)
  if lowering is Lowering.PLAIN and all(d == 1 for d in spec.dilation):
    return _forward(x, spec, op, lowering)
  # JAX has no VJP for dilated max/min reduce_window (NotImplementedError);
  # the plain path keeps reduce_window for the value and takes our rule.
  return _extremum(x, spec, op, lowering)

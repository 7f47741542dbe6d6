"""Max pooling that returns where each maximum is, and its inverse."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool import _lowering
from jaxpool._pooling import documented
from jaxpool._sharding import partitioned
from jaxpool._spec import (WindowSpec, check_plane, int_tuple, is_symbolic,
                           layout_axes, window_spec, window_tuple)
from jaxpool._typing import IntOrSequence, PaddingLike, Shape

_INDEX = np.int32


def _row_major_strides(shape: Sequence[int]) -> list[int]:
  return [math.prod(shape[i + 1:]) for i in range(len(shape))]


def _flat_index(tap: jax.Array, spec: WindowSpec) -> jax.Array:
  """Turns the tap PyTorch picks into its flat index in the input plane.

  Along spatial dim ``d`` the tap's input coordinate is ``o * stride - low
  + t * dilation`` for output position ``o`` and tap coordinate ``t``; the
  part from ``o`` is a constant, the part from ``t`` is integer arithmetic
  on the tap index, so no gather is needed.
  """
  plane = _row_major_strides(spec.in_shape)
  window = _row_major_strides(spec.window)
  base = np.zeros((), np.int64)
  inside = np.ones((), bool)
  for n, k, s, d, (lo, _), o, step in zip(
      spec.in_shape, spec.window, spec.strides, spec.dilation, spec.padding,
      spec.out_shape, plane):
    start = np.arange(o, dtype=np.int64) * s - lo
    base = np.add.outer(base, start * step)
    # Some tap j in [0, k) reads start + j * d in [0, n): the first that
    # reaches 0 is not past the last below n.
    first = np.maximum(-(start // d), 0)
    last = np.minimum((n - 1 - start) // d, k - 1)
    inside = np.multiply.outer(inside, first <= last)
  index = jnp.broadcast_to(
      base.reshape(spec.full(base.shape, 1)).astype(_INDEX), tap.shape)
  for k, d, step, w in zip(spec.window, spec.dilation, plane, window):
    if k > 1:
      coordinate = lax.rem(lax.div(tap, _INDEX(w)), _INDEX(k))
      index = index + coordinate * _INDEX(d * step)
  if not inside.all():
    # A window wholly in the padding (PyTorch rejects such padding) has no
    # element to point at.
    index = jnp.where(inside.reshape(spec.full(inside.shape, 1)), index,
                      _INDEX(-1))
  return index


def _traced_flat_index(tap: jax.Array, spec: WindowSpec) -> jax.Array:
  """:func:`_flat_index` computed in the graph, for symbolic sizes."""
  index = jnp.zeros((1,) * spec.ndim, _INDEX)
  inside = jnp.ones((1,) * spec.ndim, bool)
  window = _row_major_strides(spec.window)
  for i, (n, k, s, d, (lo, _), o, w) in enumerate(zip(
      spec.in_shape, spec.window, spec.strides, spec.dilation, spec.padding,
      spec.out_shape, window)):
    shape = [1] * spec.ndim
    shape[spec.spatial_axes[i]] = o
    start = lax.broadcasted_iota(_INDEX, shape, spec.spatial_axes[i]) * (
        _INDEX(s)) - _lowering.size_value(lo, _INDEX)
    size = _lowering.size_value(n, _INDEX)
    coordinate = start + lax.rem(lax.div(tap, _INDEX(w)), _INDEX(k)) * (
        _INDEX(d))
    # Row-major: each dim's coordinate scales what came before.
    index = index * size + coordinate
    inside = inside & functools.reduce(operator.or_, [
        (start + _INDEX(t * d) >= 0) & (start + _INDEX(t * d) < size)
        for t in range(k)])
  return jnp.where(inside, index, _INDEX(-1))


@partitioned
@documented
def max_pool_with_indices(
    x: ArrayLike, window_shape: IntOrSequence,
    strides: IntOrSequence | None = None, padding: PaddingLike = "VALID", *,
    dilation: IntOrSequence = 1, ceil_mode: bool = False,
    channels_first: bool = False) -> tuple[jax.Array, jax.Array]:
  """Max pooling that also returns where each maximum is.

  The values are :func:`jaxpool.max_pool`'s (and so are their gradients).
  Each index is the flat, row-major position of the chosen element in its
  channel's spatial plane of the unpadded input, as PyTorch's
  ``max_pool{1,2,3}d(..., return_indices=True)``: the first maximum in
  row-major window order, the last NaN if any, and the first element inside
  the input if all are ``-inf``. A window wholly in the padding (PyTorch
  rejects such padding) gets index -1.

  Shapes: as :func:`jaxpool.max_pool`; both outputs have its output shape.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.array([1.0, 5.0, 2.0, 8.0, 7.0, 0.0]).reshape(1, 6, 1)
    >>> y, i = jaxpool.max_pool_with_indices(x, (2,))
    >>> y.ravel().tolist(), i.ravel().tolist()
    ([5.0, 8.0, 7.0], [1, 3, 4])

  Args:
    x: the input, float, integer or bool.
    {window_args}

  Returns:
    ``(values, indices)``: the maxima, of ``x``'s dtype, and their int32
    flat indices (not differentiable).

  Raises:
    ValueError: as :func:`jaxpool.max_pool`.
  """
  x = jnp.asarray(x)
  spec = window_spec(x.shape, window_shape, strides, padding,
                     dilation=dilation, ceil_mode=ceil_mode,
                     channels_first=channels_first)
  check_plane(spec.in_shape, "x", "the input's spatial plane")
  return max_with_indices(x, spec)


def max_with_indices(
    x: jax.Array, spec: WindowSpec, *,
    shared: Callable[[str | None], bool] | None = None
) -> tuple[jax.Array, jax.Array]:
  """:func:`max_pool_with_indices` over a resolved ``spec``: the maxima
  (``window_reduce``'s, ``shared`` as there) and their int32 flat plane
  indices, not differentiated (``jit`` drops them when unused)."""
  values = _lowering.window_reduce(x, spec, "max", shared=shared)
  _, tap = _lowering.selected_tap(lax.stop_gradient(x), spec, "max")
  tap = jnp.broadcast_to(tap.astype(_INDEX), values.shape)
  if spec.symbolic:
    return values, _traced_flat_index(tap, spec)
  return values, _flat_index(tap, spec)


# ---------------------------------------------------------------------------
# Unpooling.


def _per_plane(fn):
  """``fn`` of one ``(S,)`` plane, mapped over dims 0 and 2 of ``(P, S, Q)``.

  Mapped, the scatters and gathers carry those dims as batching dims, which
  XLA partitions shard by shard: a batch split needs no collective.
  """
  return jax.vmap(jax.vmap(fn, in_axes=1, out_axes=1), in_axes=0, out_axes=0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _unpool(x: jax.Array, index: jax.Array, size: int) -> jax.Array:
  """``(P, S, Q)`` values into ``(P, size, Q)`` at ``index`` along dim 1.

  Where indices collide the element latest in the plane wins, as in
  PyTorch's CPU loop; XLA's own scatter leaves that order unspecified, so
  the winner is found first with an integer scatter-max.
  """

  def plane(x, index):
    winner = jnp.full((size,), -1, _INDEX).at[index].max(
        lax.iota(_INDEX, x.shape[0]), mode="drop",
        wrap_negative_indices=False)
    values = jnp.take(x, jnp.maximum(winner, 0), mode="clip")
    return jnp.where(winner >= 0, values, np.zeros((), x.dtype))

  return _per_plane(plane)(x, index)


@_unpool.defjvp
def _unpool_jvp(size, primals, tangents):
  # Written as a scatter-add, the tangent's transpose is a gather: each
  # input's gradient is the output cotangent at its index, as PyTorch's
  # backward, colliding indices included.
  (x, index), (t, _) = primals, tangents
  scatter = lambda t, index: jnp.zeros((size,), t.dtype).at[index].add(
      t, mode="drop", wrap_negative_indices=False)
  return _unpool(x, index, size), _per_plane(scatter)(t, index)


def _check_indices(x: jax.Array, indices: jax.Array, size: int) -> None:
  if indices.shape != x.shape:
    raise ValueError(
        f"indices must have the shape of x, {x.shape}, got {indices.shape}.")
  if not jnp.issubdtype(indices.dtype, jnp.integer):
    raise ValueError(f"indices must be integers, got dtype {indices.dtype}.")
  if isinstance(indices, jax.core.Tracer) or indices.size == 0:
    return
  # Concrete, so checked on the host: jnp would stage it when under jit.
  concrete = np.asarray(indices)
  low, high = int(concrete.min()), int(concrete.max())
  if low < 0 or high >= size:
    raise ValueError(
        f"indices must lie in [0, {size}) (the size of the output's spatial "
        f"plane), got values from {low} to {high}.")


def _torch_unpool_shape(x_shape: Sequence[int], window_shape: Any,
                        strides: Any, padding: Any, output_size: Any,
                        channels_first: bool) -> tuple[int, ...]:
  """PyTorch's ``_unpool_output_size``: the output's spatial shape.

  The default is ``(in - 1) * stride - 2 * padding + window`` per dim; a
  given ``output_size`` (spatial sizes, or a full shape in ``x``'s layout)
  must lie strictly within one stride of it. The errors are PyTorch's.
  """
  window = window_tuple(window_shape)
  n = len(window)
  strides = window if strides is None else int_tuple(strides, n, "strides")
  if isinstance(padding, Sequence) and any(
      isinstance(p, Sequence) for p in padding):
    raise TypeError(
        f"padding must be an int or one int per spatial dim (PyTorch's "
        f"symmetric padding), got {padding!r}.")
  padding = int_tuple(padding, n, "padding", minimum=0)
  axes, _ = layout_axes(x_shape, n, channels_first)
  default = [(x_shape[a] - 1) * s + k - 2 * p
             for a, k, s, p in zip(axes, window, strides, padding)]
  if output_size is None:
    sizes = default
  else:
    if not isinstance(output_size, Sequence) or isinstance(output_size, str):
      raise TypeError(
          f"output_size must be a sequence of ints, got {output_size!r}.")
    if len(output_size) == len(x_shape) and len(x_shape) != n:
      # A full output shape in x's layout: its spatial sizes.
      output_size = type(output_size)(output_size[a] for a in axes) if (
          isinstance(output_size, (tuple, list))) else tuple(
              output_size[a] for a in axes)
    if len(output_size) != n:
      raise ValueError(
          "output_size should be a sequence containing "
          f"{n} or {len(x_shape)} elements, but it has a length of "
          f"'{len(output_size)}'")
    for d in range(n):
      min_size = default[d] - strides[d]
      max_size = default[d] + strides[d]
      if not min_size < output_size[d] < max_size:
        raise ValueError(
            f'invalid output_size "{output_size}" (dim {d} must be between '
            f"{min_size} and {max_size})")
    sizes = list(output_size)
  for d, size in enumerate(sizes):
    if size < 0:
      raise ValueError(
          "max_unpooling: output_size must contain non-negative spatial "
          f"dimensions, but got output_size[{d}]={size}")
  return int_tuple(sizes, n, "output_size")


@partitioned(arrays=2)
def max_unpool(x: ArrayLike, indices: ArrayLike,
               spatial_shape: Shape | None = None, *,
               window_shape: Shape | None = None,
               strides: IntOrSequence | None = None,
               padding: IntOrSequence = 0,
               output_size: Sequence[int] | None = None,
               channels_first: bool = False) -> jax.Array:
  """Max unpooling: puts each value at its index, zeros elsewhere.

  The inverse of :func:`max_pool_with_indices` (and of
  :func:`adaptive_max_pool_with_indices`), as PyTorch's
  ``max_unpool{1,2,3}d``: ``indices`` are flat positions in each channel's
  output plane. Where indices collide the value latest in the input plane
  wins (PyTorch's CPU result). The gradient with respect to ``x`` is the
  output's cotangent at each index, as PyTorch's (so colliding values all
  get it); ``indices`` have none. Under ``jit``, out-of-range indices are
  dropped; outside it they raise.

  The output's spatial shape is either given, ``spatial_shape``, or
  computed as PyTorch's ``max_unpool{1,2,3}d(x, indices, kernel_size,
  stride=None, padding=0, output_size=None)`` does from ``window_shape``
  (its ``kernel_size``), ``strides`` (default: the window) and ``padding``:
  ``(in - 1) * stride - 2 * padding + window`` per dim, or ``output_size``
  if given, which must lie strictly between that size minus and plus the
  stride (PyTorch's rule and error messages).

  Shapes: ``x`` and ``indices`` are ``(*batch, *spatial, C)``, or
  ``(*batch, C, *spatial)`` with ``channels_first=True``, where the number
  of spatial dims is ``len(spatial_shape)`` (or ``len(window_shape)``); any
  number of batch dims. The output is ``(*batch, *out_spatial, C)`` (or
  ``(*batch, C, *out_spatial)``). ``spatial_shape`` may hold symbolic sizes
  (``jax.export``), e.g. those of the pooled input's shape.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> y, i = jaxpool.max_pool_with_indices(x, (2, 2))
    >>> jaxpool.max_unpool(y, i, x.shape[1:3]).shape
    (1, 4, 4, 1)
    >>> jaxpool.max_unpool(y, i, window_shape=(2, 2), output_size=(5, 5)).shape
    (1, 5, 5, 1)

  Args:
    x: the values.
    indices: integer flat indices, of ``x``'s shape.
    spatial_shape: the output's spatial sizes; or leave it out and give
      ``window_shape``.
    window_shape: PyTorch's ``kernel_size``: the pooling window whose
      indices these are, one size per spatial dim.
    strides: PyTorch's ``stride``: an int or one per dim; default the window.
    padding: PyTorch's ``padding``: an int or one per dim.
    output_size: PyTorch's ``output_size``: the spatial sizes, or a full
      shape in ``x``'s layout; default ``(in - 1) * stride - 2 * padding +
      window``.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the unpooled array, of ``x``'s dtype.

  Raises:
    ValueError: for ``indices`` not integers or not of ``x``'s shape, or
      out of range (outside ``jit``), an empty, non-positive or too large
      output shape (a plane of more than ``2**31 - 1`` elements), both
      ``spatial_shape`` and ``window_shape`` (or neither), an
      ``output_size`` outside PyTorch's rule, or ``x`` with too few dims.
    TypeError: for arguments of the wrong type.
  """
  x = jnp.asarray(x)
  indices = jnp.asarray(indices)
  torch_form = (window_shape is not None or strides is not None or
                output_size is not None or
                not (isinstance(padding, int) and padding == 0))
  if spatial_shape is not None and torch_form:
    raise ValueError(
        "max_unpool takes either spatial_shape or PyTorch's window_shape, "
        "strides, padding and output_size, not both.")
  if spatial_shape is None:
    if window_shape is None:
      raise ValueError(
          "max_unpool needs spatial_shape, or window_shape (PyTorch's "
          "kernel_size) to compute it from.")
    spatial_shape = _torch_unpool_shape(x.shape, window_shape, strides,
                                        padding, output_size, channels_first)
    name = "output_size"
  else:
    if not isinstance(spatial_shape, Sequence) or isinstance(
        spatial_shape, str):
      raise TypeError(
          f"spatial_shape must be a sequence of ints, got {spatial_shape!r}.")
    if not spatial_shape:
      raise ValueError("spatial_shape must not be empty.")
    # Symbolic sizes (jax.export: an input's symbolic shape) stay as they are.
    spatial_shape = tuple(
        v if is_symbolic(v) else int_tuple(v, 1, "spatial_shape")[0]
        for v in spatial_shape)
    name = "spatial_shape"
  axes, channel_axis = layout_axes(x.shape, len(spatial_shape),
                                   channels_first)
  size = check_plane(spatial_shape, name, "the output's spatial plane")
  _check_indices(x, indices, size)
  batch = x.shape[:min(axes[0], channel_axis)]
  plane = math.prod(x.shape[a] for a in axes)
  if channels_first:
    view = (math.prod(batch) * x.shape[channel_axis], plane, 1)
    out_shape = batch + (x.shape[channel_axis],) + spatial_shape
  else:
    view = (math.prod(batch), plane, x.shape[channel_axis])
    out_shape = batch + spatial_shape + (x.shape[channel_axis],)
  y = _unpool(x.reshape(view), indices.astype(_INDEX).reshape(view), size)
  return y.reshape(out_shape)

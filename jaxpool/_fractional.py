"""Fractional max pooling (Graham 2014), exact against PyTorch's kernel.

Every window has the same size, ``window_shape``; only where the windows
start is random: along a spatial dim of size ``n`` with ``o`` outputs and
window ``k``, output ``i`` starts at ``int((i + u) * alpha) - int(u * alpha)``
with ``alpha = (n - k) / (o - 1)``, and the last one at ``n - k``, for one
sample ``u`` in ``[0, 1)`` per example, channel and spatial dim. That is
PyTorch's ``generate_intervals``, computed as it does in the input's dtype.

So the pooled values are a stride-1 max pool (the core's, with its ties,
NaN rule and gradient) read at those starts: one gather per spatial dim,
with indices that differ per example and channel, and no per-output loop.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool import _lowering
from jaxpool._adaptive import spatial_rank
from jaxpool._indices import max_pool_with_indices
from jaxpool._pooling import max_pool
from jaxpool._sharding import partitioned
from jaxpool._spec import int_tuple, is_symbolic, layout_axes
from jaxpool._typing import IntOrSequence


def sample_dims(rank: int) -> tuple[int, ...]:
  """Which entry of the last axis of ``samples`` drives each spatial dim.

  PyTorch's 2-D kernel reads ``samples[..., 0]`` for the width (the last
  spatial dim) and ``samples[..., 1]`` for the height; its 3-D kernel reads
  them in the order of the dims (time, height, width). 1-D has one.
  """
  return (1, 0) if rank == 2 else tuple(range(rank))


def _ratio_sizes(output_ratio: Any, in_shape: Sequence[Any],
                 rank: int) -> tuple[int, ...]:
  if isinstance(output_ratio, Sequence) and not isinstance(output_ratio, str):
    ratios = tuple(output_ratio)
    if len(ratios) != rank:
      raise ValueError(
          f"output_ratio must have one entry per spatial dim ({rank}), got "
          f"{output_ratio!r}.")
  else:
    ratios = (output_ratio,) * rank
  for r in ratios:
    if isinstance(r, (bool, np.bool_)) or not isinstance(r, numbers.Real):
      raise TypeError(
          f"output_ratio must be a number or one per spatial dim, got "
          f"{output_ratio!r}.")
    if not 0 < float(r) <= 1:
      raise ValueError(f"output_ratio must be in (0, 1], got {output_ratio!r}.")
  if any(is_symbolic(n) for n in in_shape):
    raise ValueError(
        "output_ratio needs concrete spatial sizes (the output size is "
        f"int(size * ratio)); got spatial sizes {tuple(in_shape)}. Give "
        "output_size instead.")
  # As torch.nn.functional: int(size * ratio), in Python floats.
  return tuple(int(n * float(r)) for n, r in zip(in_shape, ratios))


def _starts(u: jax.Array, n: Any, o: int, k: int) -> jax.Array:
  """PyTorch's ``generate_intervals``: the ``o`` window starts along one dim
  for samples ``u`` (any shape), as int32 of shape ``(*u.shape, o)``.

  The arithmetic is in ``u``'s dtype, one rounding per operation, as the
  kernel's ``scalar_t`` (for bfloat16 too, whose C++ operators round each
  result back), and each term is truncated to int as ``static_cast<int>``.
  """
  dtype = u.dtype
  last = lax.broadcast_in_dim(
      _lowering.size_value(n - k, np.int32), u.shape + (1,), ())
  if o == 1:
    return last
  span = _lowering.size_value(n - k, dtype)
  alpha = span / np.asarray(o - 1, dtype)
  i = lax.broadcasted_iota(dtype, u.shape + (o - 1,), u.ndim)
  uu = lax.broadcast_in_dim(u, u.shape + (o - 1,), tuple(range(u.ndim)))
  first = lax.convert_element_type(uu * alpha, np.int32)
  seq = lax.convert_element_type((i + uu) * alpha, np.int32) - first
  return jnp.concatenate([seq, last], axis=-1)


def _gather_plan(starts: jax.Array, axis: int, spatial_axes: tuple[int, ...],
                 channel_axis: int, ndim: int) -> jax.Array:
  """``starts`` (``(*batch, C, o)``) as indices for ``take_along_axis``
  along ``axis``: batch dims and channel in place, ``o`` at ``axis`` and 1
  on the other spatial dims."""
  batch = starts.ndim - 2
  shape = [1] * ndim
  dims = list(range(batch)) + [channel_axis, axis]
  for d, size in zip(dims, starts.shape):
    shape[d] = size
  # broadcast_in_dim needs increasing dims: sort the operand's axes so.
  order = sorted(range(len(dims)), key=lambda j: dims[j])
  return lax.broadcast_in_dim(jnp.transpose(starts, order), tuple(shape),
                              tuple(sorted(dims)))


@partitioned
def fractional_max_pool(
    x: ArrayLike, window_shape: IntOrSequence,
    output_size: IntOrSequence | None = None, *,
    output_ratio: float | Sequence[float] | None = None,
    key: jax.Array | None = None, samples: ArrayLike | None = None,
    return_indices: bool = False, channels_first: bool = False
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Fractional max pooling: windows of a fixed size at random starts.

  Along each spatial dim of size ``n`` the ``o`` windows of size ``k`` start
  at ``int((i + u) * alpha) - int(u * alpha)``, ``alpha = (n - k) / (o - 1)``,
  the last one at ``n - k``; so the output size is any ``o <= n - k + 1``,
  not ``n`` divided by an integer. ``u`` is one sample in ``[0, 1)`` per
  example, channel and spatial dim, drawn from ``key``
  (``jax.random.uniform``) or given as ``samples``. With the same samples
  (PyTorch's ``_random_samples``) the values, indices and gradients are
  ``torch.nn.functional.fractional_max_pool2d/3d``'s, the starts computed as
  its kernel does, in ``x``'s dtype; 1-D follows the same rule. (PyTorch's
  3-D check also rejects ``o = n - k + 1``, which is allowed here.) Ties go to
  the first maximum in row-major window order, NaN to the last NaN, as
  :func:`jaxpool.max_pool_with_indices`; the gradient flows to the chosen
  element.

  Shapes: ``x`` is ``(*batch, *spatial, C)``, or ``(*batch, C, *spatial)``
  with ``channels_first=True``, with 1 to 3 spatial dims: as many as any
  sequence among ``window_shape``, ``output_size`` and ``output_ratio`` has
  (with ints only, ``x`` has one batch dim). The output has ``output_size``
  (or ``int(n * output_ratio)``) as its spatial dims. ``samples`` is
  ``(*batch, C, rank)`` in either layout; as in PyTorch, for 2-D
  ``samples[..., 0]`` drives the width (the last spatial dim) and
  ``samples[..., 1]`` the height, for 1-D and 3-D entry ``j`` drives
  spatial dim ``j``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.arange(1.0, 8.0).reshape(1, 7, 1)
    >>> u = jnp.array([[[0.5]]])  # (batch, C, rank)
    >>> jaxpool.fractional_max_pool(x, (2,), (4,), samples=u)[0, :, 0]
    Array([2., 4., 6., 7.], dtype=float32)
    >>> key = jax.random.key(0)
    >>> jaxpool.fractional_max_pool(jnp.ones((8, 32, 32, 3)), 2,
    ...                             output_ratio=0.5, key=key).shape
    (8, 16, 16, 3)

  Args:
    x: the input, floating point.
    window_shape: the window (PyTorch's ``kernel_size``): an int or one per
      spatial dim.
    output_size: the output's spatial size, an int or one per spatial dim;
      at most ``n - k + 1`` along each.
    output_ratio: instead of ``output_size``: the output size is
      ``int(n * output_ratio)`` along each dim (needs concrete sizes); a
      number in ``(0, 1]`` or one per spatial dim.
    key: a PRNG key to draw ``samples`` with.
    samples: instead of ``key``: the samples, ``(*batch, C, rank)``, in
      ``[0, 1)``; cast to ``x``'s dtype.
    return_indices: also return the flat, row-major index of each maximum in
      its channel's spatial plane, as PyTorch's ``return_indices=True``.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the pooled array, of ``x``'s dtype; with ``return_indices``, the pair
    ``(values, indices)``, the indices int32.

  Raises:
    ValueError: for not exactly one of ``output_size`` and
      ``output_ratio`` or of ``key`` and ``samples``, an output size over
      ``n - k + 1``, ``samples`` of the wrong shape, ``output_ratio`` with
      symbolic sizes, more than 3 spatial dims, or bad window arguments.
    TypeError: for arguments of the wrong type.

  References:
    Graham 2014, "Fractional Max-Pooling" (arXiv:1412.6071); PyTorch's
    ``aten/src/ATen/native/FractionalMaxPool2d.cpp`` and ``...3d.cpp``.
  """
  x = jnp.asarray(x)
  if (output_size is None) == (output_ratio is None):
    raise ValueError(
        "give exactly one of output_size and output_ratio, got output_size="
        f"{output_size!r}, output_ratio={output_ratio!r}.")
  if (key is None) == (samples is None):
    raise ValueError("give exactly one of key and samples.")
  if not isinstance(return_indices, (bool, np.bool_)):
    raise TypeError(f"return_indices must be a bool, got {return_indices!r}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"x must be floating point, got dtype {x.dtype}.")
  rank = spatial_rank(x.shape, (window_shape, output_size, output_ratio),
                      "window_shape, output_size and output_ratio")
  if rank > 3:
    raise ValueError(
        f"fractional_max_pool has 1 to 3 spatial dims, got {rank}.")
  window = int_tuple(window_shape, rank, "window_shape")
  axes, channel_axis = layout_axes(x.shape, rank, channels_first)
  in_shape = tuple(x.shape[a] for a in axes)
  if output_size is not None:
    out_shape = int_tuple(output_size, rank, "output_size")
  else:
    out_shape = _ratio_sizes(output_ratio, in_shape, rank)
    if 0 in out_shape:
      raise ValueError(
          f"output_ratio {output_ratio!r} gives an empty output "
          f"{out_shape} for spatial sizes {in_shape}.")
  for n, k, o in zip(in_shape, window, out_shape):
    if not is_symbolic(n) and o > n - k + 1:
      raise ValueError(
          f"output_size {out_shape} too large for window_shape {window} on "
          f"spatial sizes {in_shape}: at most size - window + 1 per dim.")
    if not is_symbolic(n) and k > n:
      raise ValueError(
          f"window_shape {window} larger than the spatial sizes {in_shape}.")

  batch_shape = tuple(s for d, s in enumerate(x.shape)
                      if d not in axes and d != channel_axis)
  sample_shape = batch_shape + (x.shape[channel_axis], rank)
  if key is not None:
    u = jax.random.uniform(key, sample_shape, x.dtype)
  else:
    u = jnp.asarray(samples)
    if u.shape != sample_shape:
      raise ValueError(
          f"samples must have shape (*batch, C, rank) = {sample_shape}, got "
          f"{u.shape}.")
    u = lax.stop_gradient(u.astype(x.dtype))

  if return_indices:
    values, indices = max_pool_with_indices(x, window, 1,
                                            channels_first=channels_first)
  else:
    values = max_pool(x, window, 1, channels_first=channels_first)
  for d, (axis, n, k, o) in enumerate(zip(axes, in_shape, window, out_shape)):
    starts = _starts(u[..., sample_dims(rank)[d]], n, o, k)
    index = _gather_plan(starts, axis, axes, channel_axis, x.ndim)
    values = jnp.take_along_axis(values, index, axis,
                                 mode="promise_in_bounds")
    if return_indices:
      indices = jnp.take_along_axis(indices, index, axis,
                                    mode="promise_in_bounds")
  if return_indices:
    return values, indices
  return values


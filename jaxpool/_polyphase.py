"""Adaptive polyphase sampling (APS): shift-invariant subsampling.

Subsampling by ``s`` keeps one of the ``s**d`` polyphase components of a
``d``-dimensional signal, always the same one; a shift of the input swaps
which component that is. APS keeps, per example, the component of largest
norm instead, so a circular shift of the input only shifts the output.
"""

from __future__ import annotations

import itertools
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool._adaptive import spatial_rank
from jaxpool._blur import blur, filter_padding, pad_axis
from jaxpool._pooling import accumulation_dtype, max_pool
from jaxpool._sharding import partitioned
from jaxpool._spec import (WindowSpec, int_tuple, is_symbolic, layout_axes,
                           window_spec)
from jaxpool._typing import IntOrSequence


def _check_norm_ord(norm_ord: Any) -> float:
  if isinstance(norm_ord, (bool, np.bool_)) or not isinstance(
      norm_ord, numbers.Real):
    raise TypeError(f"norm_ord must be a real number, got {norm_ord!r}.")
  if not float(norm_ord) > 0:
    raise ValueError(f"norm_ord must be > 0 (or inf), got {norm_ord!r}.")
  return float(norm_ord)


def _circular(x: jax.Array, axes: tuple[int, ...],
              pads: tuple[tuple[int, int], ...]) -> jax.Array:
  for axis, (lo, hi) in zip(axes, pads):
    x = pad_axis(x, axis, lo, hi, "wrap")
  return x


def _wrap_to_multiple(x: jax.Array, axis: int, stride: int) -> jax.Array:
  """``x`` padded circularly at the end of ``axis`` to a multiple of
  ``stride``; the width, symbolic with the size, is cut from one at most."""
  n = x.shape[axis]
  if not is_symbolic(n):
    return pad_axis(x, axis, 0, -n % stride, "wrap")
  if stride == 1:
    return x
  x = pad_axis(x, axis, 0, stride - 1, "wrap")
  return lax.slice_in_dim(x, 0, -(-n // stride) * stride, axis=axis)


def _power_sum(component: jax.Array, batch: int, p: float) -> jax.Array:
  """``sum |c| ** p`` (``max |c|`` for ``p = inf``) per example.

  The root is left out: it is monotone, so the component it ranks first is
  the same, and it could only round two different sums to one value.
  """
  acc, _ = accumulation_dtype(component.dtype)
  c = component.astype(acc)
  axes = tuple(range(batch, c.ndim))
  if p == math.inf:
    return jnp.max(jnp.abs(c), axis=axes)
  if p == 2:
    return jnp.sum(c * c, axis=axes)
  if p == 1:
    return jnp.sum(jnp.abs(c), axis=axes)
  return jnp.sum(jnp.abs(c) ** np.asarray(p, acc), axis=axes)


def polyphase_components(x: jax.Array, spec: WindowSpec) -> list[jax.Array]:
  """The ``prod(strides)`` polyphase components of ``x``, as strided slices.

  Component ``q`` starts at phase ``(q // prod(s[:i])) % s[i]`` along
  spatial dim ``i``: the first dim's phase varies fastest, the order of the
  reference code (``permute_polyphase``: even-even, odd-even, even-odd,
  odd-odd for rows-columns), which decides ties.
  """
  phases = itertools.product(*[range(s) for s in reversed(spec.strides)])
  components = []
  for phase in phases:
    start = [0] * x.ndim
    stride = [1] * x.ndim
    limit = list(x.shape)
    for axis, p, s, o in zip(spec.spatial_axes, reversed(phase),
                             spec.strides, spec.out_shape):
      start[axis], stride[axis], limit[axis] = p, s, p + (o - 1) * s + 1
    components.append(lax.slice(x, start, limit, stride))
  return components


@partitioned
def aps_pool(x: ArrayLike, strides: IntOrSequence = 2, *,
             window_shape: IntOrSequence = 1, norm_ord: float = 2,
             filter_size: IntOrSequence = 1,
             channels_first: bool = False) -> jax.Array:
  """Adaptive polyphase sampling: keeps the polyphase component of largest
  norm.

  Of the ``prod(strides)`` ways to subsample ``x`` by ``strides`` (its
  polyphase components, one per phase offset), keeps, per example, the one
  whose ``norm_ord``-norm over all channels and positions is largest; ties go
  to the first component in the reference code's order (the first spatial
  dim's phase varies fastest). Spatial dims are first padded circularly at
  their end to a multiple of the stride, as the reference does for odd sizes.

  With ``window_shape`` > 1 a stride-1 max pool with circular padding (of
  ``window - 1`` at the end of each dim, as the paper's ResNet pads before
  its ``MaxPool2d(2, stride=1)``) comes first; with ``filter_size`` > 1 a
  stride-1 binomial blur with circular padding (as ``ApsPool(filt_size)``)
  comes next. Both are equivariant to circular shifts, so the whole is
  exactly invariant to them: if ``x`` has spatial sizes divisible by the
  strides, ``aps_pool(jnp.roll(x, t, axis))`` is ``jnp.roll(aps_pool(x),
  (p + t) // s, axis)`` where ``p`` is the phase ``aps_pool(x)`` picked along
  that axis, and the kept component's norm is unchanged (barring ties).

  The gradient flows to the kept component only; the choice is a constant.

  Shapes: ``x`` is ``(*batch, *spatial, C)``, or ``(*batch, C, *spatial)``
  with ``channels_first=True``; every batch index picks its own component.
  The number of spatial dims is the length of any of ``strides``,
  ``window_shape``, ``filter_size`` given as a sequence; with ints only,
  ``x`` has one batch dim (``x.ndim - 2`` spatial dims). Each spatial dim of
  size ``n`` becomes ``ceil(n / stride)``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.array([0., 5., 1., 7., 2., 6.]).reshape(1, 6, 1)
    >>> jaxpool.aps_pool(x)[0, :, 0]  # the odd phase has the larger norm
    Array([5., 7., 6.], dtype=float32)

  Args:
    x: the input.
    strides: the subsampling factor, an int or one per spatial dim.
    window_shape: the max pool's window before sampling (1: none).
    norm_ord: the norm that ranks components: any ``p > 0``, or ``inf``
      (largest absolute value); the reference's ``"l2"``, ``"l1"`` and
      ``"l_infty"`` are 2, 1 and ``inf``.
    filter_size: taps of the binomial blur before sampling (1: none).
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the kept components, of ``x``'s dtype.

  Raises:
    ValueError: for non-positive ``strides``, ``window_shape`` or
      ``filter_size``, ``norm_ord <= 0``, sequences of different lengths, or
      ``x`` with too few dims.
    TypeError: for arguments of the wrong type.

  References:
    Chaman & Dokmanić 2021, "Truly Shift-Invariant Convolutional Neural
    Networks" (CVPR); github.com/achaman2/truly_shift_invariant_cnns.
  """
  y = jnp.asarray(x)
  p = _check_norm_ord(norm_ord)
  rank = spatial_rank(y.shape, (strides, window_shape, filter_size),
                      "strides, window_shape and filter_size")
  strides = int_tuple(strides, rank, "strides")
  window = int_tuple(window_shape, rank, "window_shape")
  filters = int_tuple(filter_size, rank, "filter_size")
  axes, _ = layout_axes(y.shape, rank, channels_first)
  if 0 in (y.shape[a] for a in axes):
    raise ValueError(f"x must have non-empty spatial dims, got {y.shape}.")

  if any(k > 1 for k in window):
    y = _circular(y, axes, tuple((0, k - 1) for k in window))
    y = max_pool(y, window, 1, channels_first=channels_first)
  if any(k > 1 for k in filters):
    spec = window_spec(y.shape, filters, 1,
                       tuple(filter_padding(k) for k in filters),
                       channels_first=channels_first)
    y = blur(y, spec, "wrap").astype(accumulation_dtype(y.dtype)[1])
  for a, s in zip(axes, strides):
    y = _wrap_to_multiple(y, a, s)
  spec = window_spec(y.shape, strides, strides,
                     channels_first=channels_first)

  components = polyphase_components(y, spec)
  if len(components) == 1:
    return components[0]
  batch = min(axes + (spec.channel_axis,))
  norms = jnp.stack([_power_sum(c, batch, p) for c in components], axis=-1)
  # argmax: the first of equal norms, as torch.argmax in the reference.
  which = jnp.argmax(norms, axis=-1).astype(np.int32)
  which = lax.broadcast_in_dim(which, components[0].shape,
                               tuple(range(batch)))
  return lax.select_n(which, *components)

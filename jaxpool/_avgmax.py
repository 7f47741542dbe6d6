"""Pooling by mixtures of the maximum and the average.

Mixed pooling (a fixed, learned or random proportion of max and average),
gated pooling (a proportion computed from each window by a learned mask),
and timm's adaptive ``avgmax`` and ``catavgmax`` heads. Windowed forms are
jaxpool's ``max_pool`` and ``avg_pool`` (so padding, layouts and argument
checks are theirs), global forms the global reductions; the maximum's
gradient goes to PyTorch's element (the first maximum of each window).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool import _lowering
from jaxpool._adaptive import (_adaptive_bins, adaptive_avg_pool,
                               adaptive_max_pool, global_avg_pool,
                               global_max_pool)
from jaxpool._means import _documented, _global_or_windowed, channel_param
from jaxpool._pooling import accumulation_dtype, avg_pool, max_pool
from jaxpool._sharding import partitioned
from jaxpool._spec import is_symbolic, layout_axes
from jaxpool._typing import IntOrSequence, OutputSizeLike, PaddingLike, Shape

_INDEX = np.int32


def _check_proportion(value: Any, name: str) -> None:
  """A proportion in ``[0, 1]``; JAX arrays (maybe traced) are not read."""
  if isinstance(value, (bool, np.bool_, str)):
    raise TypeError(f"{name} must be a real number or array, got {value!r}.")
  if isinstance(value, jax.Array):
    if not jnp.issubdtype(value.dtype, jnp.floating):
      raise TypeError(f"{name} must be floating, got dtype {value.dtype}.")
    return
  array = np.asarray(value)
  if array.dtype.kind not in "fiu":
    raise TypeError(f"{name} must be a real number or array, got {value!r}.")
  if not np.all((array >= 0) & (array <= 1)):
    raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")


def _max_and_avg(x: jax.Array, is_global: bool, axes, window_shape, strides,
                 padding, channels_first: bool):
  """Each window's (or plane's) maximum and mean, keeping the spatial dims."""
  if is_global:
    return (global_max_pool(x, keepdims=True, spatial_dims=len(axes),
                            channels_first=channels_first),
            global_avg_pool(x, keepdims=True, spatial_dims=len(axes),
                            channels_first=channels_first))
  return (max_pool(x, window_shape, strides, padding,
                   channels_first=channels_first),
          avg_pool(x, window_shape, strides, padding,
                   count_include_pad=False, channels_first=channels_first))


@partitioned
@_documented
def mixed_pool(x: ArrayLike, a: ArrayLike = 0.5, *,
               key: jax.Array | None = None,
               window_shape: Shape | None = None,
               strides: IntOrSequence | None = None,
               padding: PaddingLike = "VALID", keepdims: bool = False,
               spatial_dims: int | None = None,
               channels_first: bool = False) -> jax.Array:
  """Mixed max-average pooling: ``a * max + (1 - a) * mean`` of each window.

  Without ``key`` it is Lee, Gallagher & Tu's mixed pooling: ``a`` is a
  fixed or learned proportion, a traced scalar or one per channel, and the
  result is differentiable in it (it is the learned parameter of the
  ``MixedPool`` modules). With a ``key`` it is Yu et al.'s: each feature
  map (each example's channel) takes max pooling with probability ``a``
  and average pooling otherwise, drawn anew at each call, as the paper
  draws its ``lambda`` in {0, 1} per feature map at each forward pass; the
  gradient flows through the chosen pooling only (none to ``a``). At test
  time the paper keeps the choice made most often in training for each
  map: pass that as a per-channel ``a`` of 0s and 1s without a key. The
  mean leaves out padding; the maximum's gradient goes to each window's
  first maximum, as PyTorch's.

  {global_or_windowed}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.array([1.0, 3.0]).reshape(1, 2, 1)
    >>> jaxpool.mixed_pool(x, 0.25)  # 0.25 * 3 + 0.75 * 2
    Array([[2.25]], dtype=float32)
    >>> jaxpool.mixed_pool(jnp.ones((8, 32, 32, 3)), window_shape=(2, 2)).shape
    (8, 16, 16, 3)

  Args:
    x: the input.
    a: the proportion of max pooling, in ``[0, 1]``: a scalar or one per
      channel (traced values are not checked). With ``key``: the
      probability of max pooling.
    key: a ``jax.random`` key: choose max or average at random per map.
    {global_or_windowed_args}

  Returns:
    the pooled array, of ``x``'s dtype (the default float for integers).

  Raises:
    ValueError: for ``a`` outside ``[0, 1]`` or neither a scalar nor one
      per channel, windowed arguments with a global pooling or global ones
      with a window, and for bad window arguments as
      :func:`jaxpool.avg_pool`.
    TypeError: for arguments of the wrong type.

  References:
    Lee, Gallagher & Tu 2016, "Generalizing Pooling Functions in
    Convolutional Neural Networks: Mixed, Gated, and Tree" (AISTATS);
    Yu, Wang, Chen & Wei 2014, "Mixed Pooling for Convolutional Neural
    Networks" (RSKT).
  """
  x = jnp.asarray(x)
  _check_proportion(a, "a")
  is_global, axes, _, channel_axis = _global_or_windowed(
      x, window_shape, strides, padding, keepdims, spatial_dims,
      channels_first)
  acc, out = accumulation_dtype(x.dtype)
  top, mean = _max_and_avg(x, is_global, axes, window_shape, strides,
                           padding, channels_first)
  aa = channel_param(a, "a", x.shape, channel_axis, acc)
  if key is not None:
    maps = tuple(1 if i in axes else n for i, n in enumerate(top.shape))
    aa = jax.random.bernoulli(key, lax.stop_gradient(aa), maps).astype(acc)
  y = aa * top.astype(acc) + (1 - aa) * mean.astype(acc)
  if is_global and not keepdims:
    y = lax.squeeze(y, axes)
  return y.astype(out)


def _gate_weights(gate: Any, shape: tuple[int, ...], window: tuple[int, ...],
                  axes: tuple[int, ...], channel_axis: int, acc) -> jax.Array:
  """``gate`` checked, as one array per tap shaped to broadcast against x.

  Returns an array of ``window + (1 or C,)``-ish layout: ``ndim`` dims with
  the window's sizes at ``axes`` and ``C`` or 1 at ``channel_axis``.
  """
  w = jnp.asarray(gate)
  if not jnp.issubdtype(w.dtype, jnp.floating):
    w = w.astype(acc)
  channels = shape[channel_axis]
  # The mask is laid out as one window of x without its batch dims.
  channels_first = channel_axis < axes[0]
  per_channel = ((channels, *window) if channels_first else
                 (*window, channels))
  if w.shape not in (window, per_channel):
    raise ValueError(
        f"gate must have the window's shape {window} (one mask for all "
        f"channels) or {per_channel} (one per channel), got shape {w.shape}.")
  full = [1] * len(shape)
  for axis, k in zip(axes, window):
    full[axis] = k
  if w.shape == per_channel:
    full[channel_axis] = channels
  return w.astype(acc).reshape(full)


@partitioned(arrays=2)
@_documented
def gated_pool(x: ArrayLike, gate: ArrayLike, *,
               window_shape: Shape | None = None,
               strides: IntOrSequence | None = None,
               padding: PaddingLike = "VALID", keepdims: bool = False,
               spatial_dims: int | None = None,
               channels_first: bool = False) -> jax.Array:
  """Gated max-average pooling: ``g * max + (1 - g) * mean``, ``g`` computed.

  Each window's proportion ``g = sigmoid(<gate, window>)`` is the sigmoid
  of the inner product of the window (of one channel) with the gating mask
  ``gate``, so it responds to what the window holds. ``gate`` is a mask of
  the window's shape shared by all channels (the paper's "one per layer"),
  or one mask per channel, shaped as one window of ``x`` without batch
  dims; the result is differentiable in it (it is the learned parameter of
  the ``GatedPool`` modules, initialised to zeros: ``g = 1/2``). Taps in the
  padding add 0 to the inner product and are left out of the mean. For
  global pooling the mask has the spatial shape. The maximum's gradient
  goes to each window's first maximum, as PyTorch's.

  {global_or_windowed}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.array([1.0, 3.0]).reshape(1, 2, 1)
    >>> jaxpool.gated_pool(x, jnp.zeros(2), window_shape=(2,))  # g = 1/2
    Array([[[2.5]]], dtype=float32)
    >>> jaxpool.gated_pool(jnp.ones((8, 32, 32, 3)), jnp.zeros((2, 2)),
    ...                    window_shape=(2, 2)).shape
    (8, 16, 16, 3)

  Args:
    x: the input.
    gate: the gating mask: of shape ``window_shape`` (the spatial shape for
      global pooling), or that with the channels where ``x`` has them:
      ``(*window_shape, C)``, or ``(C, *window_shape)`` with
      ``channels_first``.
    {global_or_windowed_args}

  Returns:
    the pooled array, of ``x``'s dtype (the default float for integers).

  Raises:
    ValueError: for a ``gate`` of another shape, windowed arguments with a
      global pooling or global ones with a window, and for bad window
      arguments as :func:`jaxpool.avg_pool`.
    TypeError: for arguments of the wrong type.

  References:
    Lee, Gallagher & Tu 2016, "Generalizing Pooling Functions in
    Convolutional Neural Networks: Mixed, Gated, and Tree" (AISTATS),
    gated max-average pooling.
  """
  x = jnp.asarray(x)
  is_global, axes, spec, channel_axis = _global_or_windowed(
      x, window_shape, strides, padding, keepdims, spatial_dims,
      channels_first)
  acc, out = accumulation_dtype(x.dtype)
  xa = x.astype(acc)
  window = tuple(x.shape[a] for a in axes) if spec is None else spec.window
  w = _gate_weights(gate, x.shape, window, axes, channel_axis, acc)
  if is_global:
    logit = jnp.sum(xa * w, axis=axes, keepdims=True)
  else:
    assert spec is not None
    xp = _lowering.pad(xa, spec, 0)
    logit = jnp.zeros((), acc)
    for offsets, tap in zip(np.ndindex(*spec.window),
                            _lowering.taps(xp, spec)):
      index = [slice(None)] * x.ndim
      for axis, k in zip(axes, offsets):
        index[axis] = slice(k, k + 1)
      logit = logit + tap * w[tuple(index)]
  g = jax.nn.sigmoid(logit)
  top, mean = _max_and_avg(x, is_global, axes, window_shape, strides,
                           padding, channels_first)
  y = g * top.astype(acc) + (1 - g) * mean.astype(acc)
  if is_global and not keepdims:
    y = lax.squeeze(y, axes)
  return y.astype(out)


# ---------------------------------------------------------------------------
# timm's adaptive avgmax heads.


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _global_avg_and_max(x: jax.Array, axes: tuple[int, ...]):
  """The plane's mean and maximum (keepdims), in one pass over ``x``.

  ``x`` is in the dtype to accumulate in. The maximum's derivative is
  PyTorch's ``adaptive_max_pool``'s: all to the first maximum in row-major
  order, or to the last NaN if the plane holds one.
  """
  count = 1
  for a in axes:
    count *= x.shape[a]
  mean = jnp.sum(x, axis=axes, keepdims=True) / _lowering.size_value(
      count, x.dtype)
  top = jnp.max(x, axis=axes, keepdims=True)
  # jnp.max may skip NaN on XLA:CPU; PyTorch's maximum is NaN then.
  top = jnp.where(jnp.isnan(mean), mean, top)
  return mean, top


@_global_avg_and_max.defjvp
def _global_avg_and_max_jvp(axes, primals, tangents):
  (x,), (t,) = primals, tangents
  mean, top = _global_avg_and_max(x, axes)
  size = 1
  for axis in axes:
    size *= x.shape[axis]
  # Positions as float32 where exact: XLA:CPU vectorises a float maximum
  # over the non-minor (spatial) dims of channels-last maps, not an int one.
  small = not is_symbolic(size) and size < 2**24
  index = np.float32 if small else _INDEX
  position = jnp.zeros((1,) * x.ndim, index)
  for axis in axes:
    dims = [1] * x.ndim
    dims[axis] = x.shape[axis]
    position = position * _lowering.size_value(
        x.shape[axis], index) + lax.broadcasted_iota(index, dims, axis)
  # One reduction finds both: the first maximum (the largest -position) or,
  # in a plane whose maximum is NaN, the last NaN (the largest position).
  nan_plane = jnp.isnan(top)
  score = jnp.where(nan_plane, position, -position)
  lowest = -np.inf if small else np.iinfo(_INDEX).min
  chosen = jnp.max(jnp.where((x == top) | jnp.isnan(x), score,
                             index(lowest)), axis=axes, keepdims=True)
  chosen = jnp.where(nan_plane, chosen, -chosen)
  t_mean = jnp.mean(t, axis=axes, keepdims=True)
  t_top = jnp.sum(jnp.where(position == chosen, t, jnp.zeros((), t.dtype)),
                  axis=axes, keepdims=True)
  return (mean, top), (t_mean, t_top)


def _adaptive_avg_and_max(x: jax.Array, output_size: OutputSizeLike,
                          channels_first: bool):
  """``(adaptive_avg_pool, adaptive_max_pool)`` and the channel axis."""
  bins = _adaptive_bins(x, output_size, channels_first)
  axes, channel_axis = layout_axes(x.shape, len(bins), channels_first)
  if all(b is not None and len(b.starts) == 1 for b in bins) and (
      jnp.issubdtype(x.dtype, jnp.inexact)):
    # Every bin is the whole plane: timm's usual head.
    acc, out = accumulation_dtype(x.dtype)
    mean, top = _global_avg_and_max(x.astype(acc), tuple(axes))
    return mean.astype(out), top.astype(out), channel_axis
  return (adaptive_avg_pool(x, output_size, channels_first=channels_first),
          adaptive_max_pool(x, output_size, channels_first=channels_first),
          channel_axis)


@partitioned
def adaptive_avgmax_pool(x: ArrayLike, output_size: OutputSizeLike = 1, *,
                         channels_first: bool = False) -> jax.Array:
  """The mean of adaptive average and adaptive max pooling, timm's ``avgmax``.

  ``0.5 * (adaptive_avg_pool(x, s) + adaptive_max_pool(x, s))``: equals
  ``timm.layers.SelectAdaptivePool2d(output_size, pool_type="avgmax")``
  (``adaptive_avgmax_pool2d``) in values and gradients, the maximum's
  gradient going to each bin's first maximum, for any rank. For
  ``output_size=1`` the mean and the maximum come from one pass over ``x``.
  The shapes are :func:`jaxpool.adaptive_avg_pool`'s.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.array([1.0, 2.0, 6.0]).reshape(1, 3, 1)
    >>> jaxpool.adaptive_avgmax_pool(x)  # 0.5 * (3 + 6)
    Array([[[4.5]]], dtype=float32)
    >>> jaxpool.adaptive_avgmax_pool(jnp.ones((8, 7, 7, 64)), 1).shape
    (8, 1, 1, 64)

  Args:
    x: the input.
    output_size: an int for every spatial dim, or one entry per spatial dim,
      ``None`` keeping that dim's size.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the pooled array, of ``x``'s dtype (the default float for integers).

  Raises:
    ValueError: for an empty, zero or negative ``output_size``, an empty
      spatial dim, or ``x`` with too few dims.

  References:
    Wightman, ``timm`` (PyTorch Image Models),
    ``timm/layers/adaptive_avgmax_pool.py``.
  """
  x = jnp.asarray(x)
  mean, top, _ = _adaptive_avg_and_max(x, output_size, channels_first)
  acc, out = accumulation_dtype(mean.dtype)
  return (0.5 * (mean.astype(acc) + top.astype(acc))).astype(out)


@partitioned
def adaptive_catavgmax_pool(x: ArrayLike, output_size: OutputSizeLike = 1, *,
                            channels_first: bool = False) -> jax.Array:
  """Adaptive average and max pooling concatenated, timm's ``catavgmax``.

  The channels of ``adaptive_avg_pool(x, s)`` then those of
  ``adaptive_max_pool(x, s)``, on the channel axis (``2 * C`` channels):
  equals ``timm.layers.SelectAdaptivePool2d(output_size,
  pool_type="catavgmax")`` (``adaptive_catavgmax_pool2d``) in values and
  gradients, for any rank. For ``output_size=1`` both come from one pass
  over ``x``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.array([1.0, 2.0, 6.0]).reshape(1, 3, 1)
    >>> jaxpool.adaptive_catavgmax_pool(x)
    Array([[[3., 6.]]], dtype=float32)
    >>> jaxpool.adaptive_catavgmax_pool(jnp.ones((8, 7, 7, 64)), 1).shape
    (8, 1, 1, 128)

  Args:
    x: the input.
    output_size: an int for every spatial dim, or one entry per spatial dim,
      ``None`` keeping that dim's size.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the pooled array, of ``x``'s dtype (the default float for integers),
    with twice ``x``'s channels.

  Raises:
    ValueError: for an empty, zero or negative ``output_size``, an empty
      spatial dim, or ``x`` with too few dims.

  References:
    Wightman, ``timm`` (PyTorch Image Models),
    ``timm/layers/adaptive_avgmax_pool.py``.
  """
  x = jnp.asarray(x)
  mean, top, axis = _adaptive_avg_and_max(x, output_size, channels_first)
  return jnp.concatenate([mean, top.astype(mean.dtype)], axis=axis)

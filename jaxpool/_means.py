"""Pooling by smooth means: generalised mean (GeM), SoftPool, log-sum-exp.

Each method is a mean of the window's elements that lies between the average
and the maximum, built on the core's windowed sums and maxima (or, for the
global forms, on the global reductions), so the core's argument checks,
layouts and padding rules hold here too.

SoftPool and log-sum-exp weight each element by ``exp`` of it: they subtract
the maximum of each window (a per-window constant, under ``stop_gradient``
since the result does not depend on it) before ``exp``, so no window
overflows or underflows to ``0 / 0`` whatever its values. A window's
elements are reached as one strided slice of the input per window tap, an
elementwise loop that XLA fuses into one pass forward and one backward;
taps that fall in the padding are masked out by constant masks.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool import _lowering
from jaxpool._adaptive import global_avg_pool, spatial_rank
from jaxpool._pooling import accumulation_dtype, avg_pool, documented, max_pool
from jaxpool._sharding import partitioned
from jaxpool._spec import (WindowSpec, int_tuple, is_symbolic, layout_axes,
                           window_spec)
from jaxpool._typing import IntOrSequence, PaddingLike, Shape

# ---------------------------------------------------------------------------
# Parameters that may be traced.


def check_positive(value: Any, name: str) -> None:
  """Checks a parameter that may be a traced array.

  Python and NumPy values must be real, finite and positive; JAX arrays are
  not read (that would stop a traced computation, or wait on the device).
  """
  if isinstance(value, (bool, np.bool_, str)):
    raise TypeError(f"{name} must be a real number or array, got {value!r}.")
  if isinstance(value, jax.Array):
    if not jnp.issubdtype(value.dtype, jnp.number) or jnp.issubdtype(
        value.dtype, jnp.complexfloating):
      raise TypeError(f"{name} must be real, got dtype {value.dtype}.")
    return
  array = np.asarray(value)
  if array.dtype.kind not in "fiu":
    raise TypeError(f"{name} must be a real number or array, got {value!r}.")
  if not np.all(np.isfinite(array) & (array > 0)):
    raise ValueError(f"{name} must be finite and > 0, got {value!r}.")


def channel_param(value: Any, name: str, shape: tuple[int, ...],
                  channel_axis: int, dtype) -> jax.Array:
  """A scalar or per-channel parameter, shaped to broadcast against ``shape``.

  Args:
    value: a scalar, or one value per channel (shape ``(C,)``).
    name: the argument's name, for errors.
    shape: the shape of the array it multiplies.
    channel_axis: where that array keeps its channels.
    dtype: the dtype to compute in.

  Returns:
    a scalar, or an array of ``len(shape)`` dims with ``C`` at
    ``channel_axis`` and 1 elsewhere.
  """
  array = jnp.asarray(value)
  channels = shape[channel_axis]
  if array.ndim == 0:
    return array.astype(dtype)
  if array.shape != (channels,):
    raise ValueError(
        f"{name} must be a scalar or have one entry per channel ({channels},), "
        f"got shape {array.shape}.")
  full = [1] * len(shape)
  full[channel_axis] = channels
  return array.astype(dtype).reshape(full)


def _static_int(value: Any) -> int | None:
  """``value`` as an int if it is a Python or NumPy integer-valued number."""
  if isinstance(value, numbers.Real) and not isinstance(value, bool) and (
      float(value).is_integer()):
    return int(float(value))
  return None


def _check_eps(eps: Any) -> float:
  if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
    raise TypeError(f"eps must be a real number, got {eps!r}.")
  if not (math.isfinite(eps) and float(eps) > 0):
    raise ValueError(f"eps must be finite and > 0, got {eps!r}.")
  return float(eps)


# ---------------------------------------------------------------------------
# Global or windowed.


def global_layout(shape: tuple[int, ...], spatial_dims: int | None,
                  channels_first: bool) -> tuple[tuple[int, ...], int]:
  """Spatial axes and channel axis of a global pooling's input."""
  if spatial_dims is None:
    rank = spatial_rank(shape, (), "spatial_dims")
  else:
    rank = int_tuple(spatial_dims, 1, "spatial_dims")[0]
  axes, channel_axis = layout_axes(shape, rank, channels_first)
  if any(shape[a] == 0 for a in axes):
    raise ValueError(
        f"x must have non-empty spatial dims, got shape {shape} (spatial "
        f"{tuple(shape[a] for a in axes)}).")
  return axes, channel_axis


def check_global_or_windowed(window_shape: Any, strides: Any, padding: Any,
                             keepdims: Any, spatial_dims: Any) -> bool:
  """Whether a global-or-windowed pooling is global; checks the mix."""
  if not isinstance(keepdims, (bool, np.bool_)):
    raise TypeError(f"keepdims must be a bool, got {keepdims!r}.")
  if window_shape is None:
    if strides is not None or not (isinstance(padding, str)
                                   and padding.upper() == "VALID"):
      raise ValueError(
          "strides and padding apply to windowed pooling; give window_shape "
          f"too (got strides={strides!r}, padding={padding!r}).")
    return True
  if keepdims or spatial_dims is not None:
    raise ValueError(
        "keepdims and spatial_dims apply to global pooling (window_shape="
        f"None); got window_shape={window_shape!r} with keepdims={keepdims!r},"
        f" spatial_dims={spatial_dims!r}.")
  return False


_GLOBAL_OR_WINDOWED_DOC = """Shapes: with ``window_shape=None`` the pooling is global: the spatial dims
  are the ``spatial_dims`` dims before the channel dim (after it with
  ``channels_first``), by default ``x.ndim - 2`` of them (one batch dim),
  and the output is ``(*batch, C)``, or ``(*batch, 1, ..., 1, C)`` with
  ``keepdims``. With a ``window_shape`` it is windowed: ``x`` is
  ``(*batch, *spatial, C)`` (or ``(*batch, C, *spatial)``) with
  ``len(window_shape)`` spatial dims and any number of batch dims, and the
  output size along a dim of size ``n`` with padding ``(lo, hi)``, window
  ``k`` and stride ``s`` is ``floor((n + lo + hi - k) / s) + 1``. Padding is
  not part of any window: each window's mean is over its elements inside
  the input."""


_GLOBAL_OR_WINDOWED_ARGS = """window_shape: ``None`` (global pooling) or the window's size along each
      spatial dim.
    strides: windowed only: an int or one per spatial dim; default: the
      window.
    padding: windowed only: ``"VALID"``, ``"SAME"``, an int, ints, or
      ``(low, high)`` pairs.
    keepdims: global only: keep the spatial dims, of size 1.
    spatial_dims: global only: the number of spatial dims; default
      ``x.ndim - 2``.
    channels_first: the layout is ``(*batch, C, *spatial)``."""


def _documented(fn):
  """:func:`documented`, and the shape rule and arguments shared by the
  poolings that are global or windowed."""
  fn.__doc__ = fn.__doc__.replace(
      "{global_or_windowed}", _GLOBAL_OR_WINDOWED_DOC).replace(
          "{global_or_windowed_args}", _GLOBAL_OR_WINDOWED_ARGS)
  return documented(fn)


# ---------------------------------------------------------------------------
# Windows as taps.


def _tap_masks(spec: WindowSpec) -> list[Any]:
  """Per window tap (row-major), where its outputs read inside the input.

  None for a tap that reads inside the input at every output; otherwise a
  bool array shaped to broadcast against the output (built in the graph
  when a size is symbolic, under ``jax.export``).
  """
  sizes = (*spec.in_shape, *spec.out_shape,
           *(p for pair in spec.padding for p in pair))
  if any(is_symbolic(n) for n in sizes):
    return [_traced_tap_mask(spec, offsets)
            for offsets in np.ndindex(*spec.window)]
  masks: list[Any] = []
  for offsets in np.ndindex(*spec.window):
    valid = np.ones((), bool)
    for k, n, s, d, (lo, _), o in zip(offsets, spec.in_shape, spec.strides,
                                      spec.dilation, spec.padding,
                                      spec.out_shape):
      index = np.arange(o) * s + k * d - lo
      valid = np.logical_and.outer(valid, (index >= 0) & (index < n))
    masks.append(None if valid.all() else valid.reshape(
        spec.full(valid.shape, 1)))
  return masks


def _traced_tap_mask(spec: WindowSpec, offsets: tuple[int, ...]) -> jax.Array:
  """One tap's mask of :func:`_tap_masks`, for symbolic sizes."""
  valid = None
  for axis, k, n, s, d, (lo, _), o in zip(
      spec.spatial_axes, offsets, spec.in_shape, spec.strides,
      spec.dilation, spec.padding, spec.out_shape):
    dims = [1] * spec.ndim
    dims[axis] = o
    index = (lax.broadcasted_iota(np.int32, dims, axis) * np.int32(s)
             + np.int32(k * d) - _lowering.size_value(lo))
    inside = (index >= 0) & (index < _lowering.size_value(n))
    valid = inside if valid is None else valid & inside
  assert valid is not None
  return valid


def _exp_taps(z: jax.Array, spec: WindowSpec):
  """For each window of ``z``: its maximum, and each tap's ``z - max`` and
  ``exp(z - max)`` (zero for taps in the padding).

  The maximum is under ``stop_gradient``: the callers' results do not depend
  on it.
  """
  top = lax.stop_gradient(_lowering.window_reduce(lax.stop_gradient(z), spec,
                                                  "max"))
  zp = _lowering.pad(z, spec, 0)
  result = []
  for tap, mask in zip(_lowering.taps(zp, spec), _tap_masks(spec)):
    shifted = tap - top
    if mask is None:
      result.append((shifted, jnp.exp(shifted)))
    else:
      # Padded taps become 0 before exp, so that neither exp nor its
      # derivative overflows where the mask then drops them.
      shifted = jnp.where(mask, shifted, 0)
      result.append((shifted, jnp.where(mask, jnp.exp(shifted), 0)))
  return top, result


# ---------------------------------------------------------------------------
# Public functions.


@partitioned
@_documented
def gem_pool(x: ArrayLike, p: ArrayLike = 3.0, eps: float = 1e-6, *,
             window_shape: Shape | None = None,
             strides: IntOrSequence | None = None,
             padding: PaddingLike = "VALID", keepdims: bool = False,
             spatial_dims: int | None = None,
             channels_first: bool = False) -> jax.Array:
  """Generalised-mean (GeM) pooling: ``mean(max(x, eps) ** p) ** (1 / p)``.

  ``p = 1`` is average pooling of the clamped input, and it tends to max
  pooling as ``p`` grows. ``p`` may be a traced scalar or one value per
  channel, and the result is differentiable in it: it is the learned
  parameter of :class:`jaxpool.linen.GemPool` and :class:`jaxpool.nnx.
  GemPool`. The clamp passes the gradient where ``x >= eps``, as
  ``torch.clamp(min=eps)``. A static integer ``p`` (``3.0``) powers by
  multiplication. Half precision computes in float32; integer ``x`` gives
  the default float dtype.

  {global_or_windowed}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.arange(1.0, 9.0).reshape(1, 2, 2, 2)
    >>> jaxpool.gem_pool(x, 1.0)  # the mean: p = 1
    Array([[4., 5.]], dtype=float32)
    >>> jaxpool.gem_pool(jnp.ones((8, 32, 32, 3)), window_shape=(2, 2)).shape
    (8, 16, 16, 3)

  Args:
    x: the input.
    p: the power: a scalar or one per channel, finite and positive (traced
      values are not checked).
    eps: the clamp's lower bound, positive.
    {global_or_windowed_args}

  Returns:
    the pooled array, of ``x``'s dtype (the default float for integers).

  Raises:
    ValueError: for ``p`` or ``eps`` not finite and positive, ``p`` neither
      a scalar nor one per channel, windowed arguments with a global pooling
      or global ones with a window, and for bad window arguments as
      :func:`jaxpool.avg_pool`.
    TypeError: for arguments of the wrong type.

  References:
    Radenović, Tolias & Chum 2018, "Fine-tuning CNN Image Retrieval with No
    Human Annotation" (TPAMI); the reference code is ``cirtorch``'s
    ``gem``: ``avg_pool2d(x.clamp(min=eps).pow(p), (H, W)).pow(1. / p)``.
  """
  x = jnp.asarray(x)
  check_positive(p, "p")
  eps = _check_eps(eps)
  is_global = check_global_or_windowed(window_shape, strides, padding,
                                       keepdims, spatial_dims)
  if is_global:
    axes, channel_axis = global_layout(x.shape, spatial_dims, channels_first)
  else:
    spec = window_spec(x.shape, window_shape, strides, padding,
                       channels_first=channels_first)
    channel_axis = spec.channel_axis
  acc, out = accumulation_dtype(x.dtype)
  xa = x.astype(acc)
  clamped = jnp.where(xa < eps, np.asarray(eps, acc), xa)
  power = _static_int(p)
  root: jax.Array | np.ndarray
  if power is not None:
    powered = lax.integer_pow(clamped, power)
    root = np.asarray(1 / power, acc)
  else:
    pp = channel_param(p, "p", x.shape, channel_axis, acc)
    powered = jnp.power(clamped, pp)
    root = 1 / pp
  if is_global:
    mean = global_avg_pool(powered, keepdims=True, spatial_dims=len(axes),
                           channels_first=channels_first)
  else:
    mean = avg_pool(powered, window_shape, strides, padding,
                    count_include_pad=False, channels_first=channels_first)
  y = jnp.power(mean, root).astype(out)
  if is_global and not keepdims:
    y = lax.squeeze(y, axes)
  return y


def _global_or_windowed(x: jax.Array, window_shape, strides, padding,
                        keepdims, spatial_dims, channels_first):
  """``(is_global, axes, spec, channel_axis)`` of a global-or-windowed call."""
  is_global = check_global_or_windowed(window_shape, strides, padding,
                                       keepdims, spatial_dims)
  if is_global:
    axes, channel_axis = global_layout(x.shape, spatial_dims, channels_first)
    return True, tuple(axes), None, channel_axis
  spec = window_spec(x.shape, window_shape, strides, padding,
                     channels_first=channels_first)
  return False, tuple(spec.spatial_axes), spec, spec.channel_axis


def _global_exp(z: jax.Array, axes: tuple[int, ...]):
  """The plane's maximum (under ``stop_gradient``), ``z - max`` and its exp."""
  top = lax.stop_gradient(jnp.max(z, axis=axes, keepdims=True))
  shifted = z - top
  return top, shifted, jnp.exp(shifted)


@partitioned
@_documented
def soft_pool(x: ArrayLike, *, window_shape: Shape | None = None,
              strides: IntOrSequence | None = None,
              padding: PaddingLike = "VALID", keepdims: bool = False,
              spatial_dims: int | None = None,
              channels_first: bool = False) -> jax.Array:
  """SoftPool: the softmax-weighted mean ``sum(exp(x) * x) / sum(exp(x))``.

  Each window's elements are weighted by their softmax over the window, so
  the result lies between the window's mean and its maximum, and every
  element gets some gradient. It is computed stably: the window's maximum
  is subtracted before ``exp`` (the result does not depend on it), so large
  or very negative inputs neither overflow nor give ``0 / 0``. Half
  precision computes in float32; integer ``x`` gives the default float
  dtype.

  {global_or_windowed}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.array([[0.0, 0.0, 0.0, 1000.0]]).reshape(1, 4, 1)
    >>> jaxpool.soft_pool(x, window_shape=(2,))  # no overflow
    Array([[[   0.],
            [1000.]]], dtype=float32)
    >>> jaxpool.soft_pool(jnp.ones((8, 32, 32, 3)), window_shape=(2, 2)).shape
    (8, 16, 16, 3)

  Args:
    x: the input.
    {global_or_windowed_args}

  Returns:
    the pooled array, of ``x``'s dtype (the default float for integers).

  Raises:
    ValueError: for windowed arguments with a global pooling or global ones
      with a window, and for bad window arguments as :func:`jaxpool.avg_pool`.
    TypeError: for arguments of the wrong type.

  References:
    Stergiou, Poppe & Kalliatakis 2021, "Refining activation downsampling
    with SoftPool" (ICCV); the reference code (``alexandrosstergiou/
    SoftPool``) computes ``avg_pool(exp(x) * x) / avg_pool(exp(x))``, which
    this equals where ``exp`` does not overflow.
  """
  x = jnp.asarray(x)
  is_global, axes, spec, _ = _global_or_windowed(
      x, window_shape, strides, padding, keepdims, spatial_dims,
      channels_first)
  acc, out = accumulation_dtype(x.dtype)
  xa = x.astype(acc)
  if is_global:
    top, shifted, e = _global_exp(xa, axes)
    y = top + (jnp.sum(e * shifted, axis=axes, keepdims=True)
               / jnp.sum(e, axis=axes, keepdims=True))
    y = y if keepdims else lax.squeeze(y, axes)
    return y.astype(out)
  assert spec is not None
  top, taps = _exp_taps(xa, spec)
  weighted = sum(e * s for s, e in taps)
  total = sum(e for _, e in taps)
  return (top + weighted / total).astype(out)


@partitioned
@_documented
def lse_pool(x: ArrayLike, r: ArrayLike = 1.0, *,
             window_shape: Shape | None = None,
             strides: IntOrSequence | None = None,
             padding: PaddingLike = "VALID", keepdims: bool = False,
             spatial_dims: int | None = None,
             channels_first: bool = False) -> jax.Array:
  """Log-sum-exp pooling: ``logsumexp(r * x) / r`` over each window.

  A smooth maximum: it tends to the window's maximum as ``r`` grows, and
  exceeds it by at most ``log(n) / r`` for a window of ``n`` elements (the
  variant ``log(mean(exp(r * x))) / r`` of Pinheiro & Collobert is this less
  ``log(n) / r``). ``r`` may be a traced scalar or one value per channel,
  and the result is differentiable in it. Computed stably (the maximum of
  ``r * x`` is subtracted before ``exp``). Half precision computes in
  float32; integer ``x`` gives the default float dtype.

  {global_or_windowed}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.array([0.0, 0.0]).reshape(1, 2, 1)
    >>> jaxpool.lse_pool(x, 2.0)  # log(2) / 2
    Array([[0.3465736]], dtype=float32)
    >>> jaxpool.lse_pool(jnp.ones((8, 32, 32, 3)), window_shape=(2, 2)).shape
    (8, 16, 16, 3)

  Args:
    x: the input.
    r: the sharpness: a scalar or one per channel, finite and positive
      (traced values are not checked).
    {global_or_windowed_args}

  Returns:
    the pooled array, of ``x``'s dtype (the default float for integers).

  Raises:
    ValueError: for ``r`` not finite and positive or neither a scalar nor
      one per channel, windowed arguments with a global pooling or global
      ones with a window, and for bad window arguments as
      :func:`jaxpool.avg_pool`.
    TypeError: for arguments of the wrong type.

  References:
    Boyd & Vandenberghe 2004, "Convex Optimization", §3.1.5 (log-sum-exp as
    a smooth maximum); Pinheiro & Collobert 2015, "From Image-level to
    Pixel-level Labeling with Convolutional Networks" (CVPR), LSE pooling.
  """
  x = jnp.asarray(x)
  check_positive(r, "r")
  is_global, axes, spec, channel_axis = _global_or_windowed(
      x, window_shape, strides, padding, keepdims, spatial_dims,
      channels_first)
  acc, out = accumulation_dtype(x.dtype)
  rr = channel_param(r, "r", x.shape, channel_axis, acc)
  z = x.astype(acc) * rr
  if is_global:
    top, _, e = _global_exp(z, axes)
    y = (top + jnp.log(jnp.sum(e, axis=axes, keepdims=True))) / rr
    y = y if keepdims else lax.squeeze(y, axes)
    return y.astype(out)
  assert spec is not None
  top, taps = _exp_taps(z, spec)
  return ((top + jnp.log(sum(e for _, e in taps))) / rr).astype(out)

"""Windowed pooling: max, min, average, Lp, and the generic reduction."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool import _lowering
from jaxpool._sharding import partitioned
from jaxpool._spec import WindowSpec, spread_mask, window_spec
from jaxpool._typing import IntOrSequence, PaddingLike, Reducer

_LAYOUT_DOC = """Shapes: ``x`` is ``(*batch, *spatial, C)``, or ``(*batch, C, *spatial)``
  with ``channels_first=True``, with any number of batch dims (none
  included); the number of spatial dims is ``len(window_shape)``. An int
  ``window_shape`` (PyTorch's ``MaxPool2d(3)``) is that size on every
  spatial dim of an input with one batch dim, ``(N, *spatial, C)``, so the
  number of spatial dims is ``x.ndim - 2`` (the adaptive pools' int
  ``output_size`` rule). Spatial sizes may be symbolic (``jax.export``).
  Along each spatial dim of size ``n`` with padding ``(lo, hi)``, window
  ``k``, stride ``s`` and dilation ``d``, the output size is
  ``floor((n + lo + hi - d * (k - 1) - 1) / s) + 1``; with ``ceil_mode`` the
  floor is a ceiling, less one if the last window would start in the right
  padding (PyTorch's rule)."""


_WINDOW_ARGS_DOC = """window_shape: the window's size along each spatial dim, or an
      int for every spatial dim (see Shapes).
    strides: an int or one per spatial dim; default: the window.
    padding: ``"VALID"``, ``"SAME"``, an int, ints, or ``(low, high)`` pairs.
    dilation: an int or one per spatial dim (PyTorch's ``dilation``).
    ceil_mode: round the output size up, as PyTorch.
    channels_first: the layout is ``(*batch, C, *spatial)``."""

_WINDOW_RAISES_DOC = """ValueError: for a non-positive window, stride or dilation, an unknown or
      ill-sized padding, a window larger than the padded input, or ``x`` with
      too few dims."""


def documented(fn):
  """Puts the shared shape rule and window arguments into ``fn``'s
  docstring."""
  for key, text in (("{layout}", _LAYOUT_DOC),
                    ("{window_args}", _WINDOW_ARGS_DOC),
                    ("{window_raises}", _WINDOW_RAISES_DOC)):
    fn.__doc__ = fn.__doc__.replace(key, text)
  return fn


def accumulation_dtype(dtype) -> tuple[np.dtype, np.dtype]:
  """The dtype a sum of ``dtype`` accumulates in, and the result dtype.

  Half precision accumulates in float32 and returns its own dtype; integers
  and bools average to the default float dtype, as ``jnp.mean`` does.
  """
  dtype = np.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.inexact):
    if jnp.finfo(dtype).bits < 32:
      return np.dtype(np.float32), dtype
    return dtype, dtype
  default = jax.dtypes.canonicalize_dtype(np.float64)
  return default, default


def _spec(x: jax.Array, window_shape, strides, padding, dilation, ceil_mode,
          channels_first) -> WindowSpec:
  return window_spec(x.shape, window_shape, strides, padding,
                     dilation=dilation, ceil_mode=ceil_mode,
                     channels_first=channels_first)


def _spatial_constant(values: np.ndarray, spec: WindowSpec, dtype):
  """A per-output-position constant, shaped to broadcast against outputs."""
  values = np.asarray(values)
  if np.all(values == values.flat[0]):
    return np.asarray(values.flat[0], dtype)
  return values.reshape(spec.full(values.shape, 1)).astype(dtype)


def _init_value(init: ArrayLike, dtype) -> ArrayLike:
  """``init`` in ``dtype``, kept concrete when it is.

  ``lax.reduce_window`` takes its differentiable sum/max/min primitives only
  for a concrete identity; ``jnp.asarray`` would stage it under ``jit`` and
  leave a generic reduction that ``grad`` cannot linearize.
  """
  if isinstance(init, jax.core.Tracer):
    return lax.convert_element_type(init, dtype)
  return np.asarray(init, dtype)


@partitioned
@documented
def pool(x: ArrayLike, init: ArrayLike, reducer: Reducer,
         window_shape: IntOrSequence, strides: IntOrSequence | None = None,
         padding: PaddingLike = "VALID", *, dilation: IntOrSequence = 1,
         ceil_mode: bool = False, channels_first: bool = False) -> jax.Array:
  """Reduces every window of ``x`` with ``reducer``, starting from ``init``.

  The generic windowed reduction, one ``lax.reduce_window``: padding (the
  user's and that ``ceil_mode`` adds) is filled with ``init``.

  {layout}

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> jaxpool.pool(x, -jnp.inf, jax.lax.max, (2, 2))[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]

  Args:
    x: the input.
    init: the reduction's identity, e.g. ``0`` for ``lax.add``.
    reducer: a binary reduction such as ``lax.add`` or ``lax.max``.
    {window_args}

  Returns:
    the reduced array, of ``x``'s dtype.

  Raises:
    {window_raises}
  """
  x = jnp.asarray(x)
  spec = _spec(x, window_shape, strides, padding, dilation, ceil_mode,
               channels_first)
  return _lowering.reduce_window(x, _init_value(init, x.dtype), reducer,
                                 spec)


@partitioned
@documented
def max_pool(x: ArrayLike, window_shape: IntOrSequence,
             strides: IntOrSequence | None = None,
             padding: PaddingLike = "VALID", *, dilation: IntOrSequence = 1,
             ceil_mode: bool = False, channels_first: bool = False,
             mask: ArrayLike | None = None) -> jax.Array:
  """Max pooling, with PyTorch's values and gradients.

  Padding never wins (floats pad with ``-inf``, integers with their minimum).
  A NaN in a window makes its output NaN. The gradient of each window goes to
  one element: the first maximum in row-major window order (the last NaN, if
  any), as ``torch.nn.functional.max_pool{1,2,3}d`` does, dilation included.

  With ``mask``, masked elements never win (nor get gradient), and a window
  with no unmasked element gives 0 (``False`` for bool) and no gradient.

  {layout}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> jaxpool.max_pool(jnp.ones((8, 32, 32, 3)), (2, 2)).shape
    (8, 16, 16, 3)
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> jaxpool.max_pool(x, (3, 3), 2, 1)[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    >>> keep = jnp.array([True, True, False, False])  # a padded sequence
    >>> s = jnp.array([[[1.0], [3.0], [9.0], [9.0]]])
    >>> jaxpool.max_pool(s, (2,), mask=keep).ravel().tolist()
    [3.0, 0.0]

  Args:
    x: the input, float, integer or bool.
    {window_args}
    mask: bool, broadcastable to ``x``'s shape without its channel dim;
      ``False`` marks an element to leave out (padding of a ragged batch).

  Returns:
    the pooled array, of ``x``'s dtype.

  Raises:
    {window_raises}
    TypeError: for a ``mask`` that is not bool or integer (ValueError: for
      one that does not broadcast).
  """
  x = jnp.asarray(x)
  spec = _spec(x, window_shape, strides, padding, dilation, ceil_mode,
               channels_first)
  if mask is not None:
    return masked_window_max(x, spread_mask(mask, x.shape, spec.channel_axis),
                             spec)
  return _lowering.window_reduce(x, spec, "max")


@partitioned
@documented
def min_pool(x: ArrayLike, window_shape: IntOrSequence,
             strides: IntOrSequence | None = None,
             padding: PaddingLike = "VALID", *, dilation: IntOrSequence = 1,
             ceil_mode: bool = False,
             channels_first: bool = False) -> jax.Array:
  """Min pooling: :func:`max_pool` with the order reversed.

  It equals ``-max_pool(-x)`` (PyTorch has no min pool), also in its
  gradient: the first minimum in row-major window order, the last NaN if
  any; padding is ``+inf`` (integers: their maximum) and never wins.

  {layout}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> jaxpool.min_pool(jnp.ones((8, 32, 32, 3)), (3, 3), 2, 1).shape
    (8, 16, 16, 3)
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> jaxpool.min_pool(x, (3, 3), 2, 1)[0, :, :, 0].tolist()
    [[0.0, 1.0], [4.0, 5.0]]

  Args:
    x: the input, float, integer or bool.
    {window_args}

  Returns:
    the pooled array, of ``x``'s dtype.

  Raises:
    ValueError: as :func:`max_pool`.
  """
  x = jnp.asarray(x)
  spec = _spec(x, window_shape, strides, padding, dilation, ceil_mode,
               channels_first)
  return _lowering.window_reduce(x, spec, "min")


def lowest(dtype) -> np.ndarray:
  """The value that never wins a max: ``-inf``, an integer's minimum."""
  dtype = np.dtype(dtype)
  if dtype == np.bool_:
    return np.asarray(False)
  if jnp.issubdtype(dtype, jnp.inexact):
    return np.asarray(-np.inf, dtype)
  return np.asarray(np.iinfo(dtype).min, dtype)


def masked_window_max(x: jax.Array, mask: jax.Array,
                      spec: WindowSpec) -> jax.Array:
  """The windowed max of the elements ``mask`` keeps; 0 where none."""
  y = _lowering.window_reduce(jnp.where(mask, x, lowest(x.dtype)), spec,
                              "max")
  # Counted, not compared with the fill: an unmasked -inf still counts.
  kept = _lowering.window_reduce(mask.astype(np.float32), spec, "max")
  return jnp.where(kept > 0, y, np.zeros((), x.dtype))


def masked_window_mean(x: jax.Array, mask: jax.Array,
                       spec: WindowSpec) -> jax.Array:
  """The windowed mean of the elements ``mask`` keeps; 0 where none."""
  acc, out = accumulation_dtype(x.dtype)
  zero = np.zeros((), acc)
  total = _lowering.window_reduce(jnp.where(mask, x.astype(acc), zero), spec,
                                  "sum")
  count = _lowering.window_reduce(mask.astype(acc), spec, "sum")
  # Double where: 0/0 would be NaN in the value and in the gradient.
  some = count > 0
  return jnp.where(some, total / jnp.where(some, count, np.ones((), acc)),
                   zero).astype(out)


def _check_divisor(divisor_override) -> None:
  if divisor_override is None:
    return
  if isinstance(divisor_override, (bool, np.bool_)) or not isinstance(
      divisor_override, numbers.Integral):
    raise TypeError(
        f"divisor_override must be an int or None, got {divisor_override!r}.")
  if divisor_override == 0:
    raise ValueError("divisor_override must not be 0.")


def _window_mean(x: jax.Array, spec: WindowSpec, count_include_pad: bool,
                 divisor_override: int | None) -> jax.Array:
  acc, out = accumulation_dtype(x.dtype)
  total = _lowering.window_reduce(x.astype(acc), spec, "sum")
  divisor: np.ndarray | jax.Array
  if divisor_override is not None:
    divisor = np.asarray(divisor_override, acc)
  elif spec.symbolic:
    divisor = _lowering.traced_divisor(spec, count_include_pad, acc)
  else:
    divisor = _spatial_constant(spec.divisor(count_include_pad), spec, acc)
  return (total / divisor).astype(out)


@partitioned
@documented
def avg_pool(x: ArrayLike, window_shape: IntOrSequence,
             strides: IntOrSequence | None = None,
             padding: PaddingLike = "VALID", *, dilation: IntOrSequence = 1,
             ceil_mode: bool = False, count_include_pad: bool = True,
             divisor_override: int | None = None,
             channels_first: bool = False,
             mask: ArrayLike | None = None) -> jax.Array:
  """Average pooling, with PyTorch's divisors.

  Padding is zeros. Each window's sum is divided by ``divisor_override`` if
  given; else, with ``count_include_pad``, by the number of its taps inside
  the input or the padding (taps in the overhang that ``ceil_mode`` adds do
  not count), and without it by the number inside the input, as
  ``torch.nn.functional.avg_pool{1,2,3}d``. Half precision accumulates in
  float32; integer inputs give the default float dtype.

  With ``mask``, each window's sum of unmasked elements is divided by their
  number (padding counts as masked, so ``count_include_pad`` has no
  effect), and a window with none gives 0, with zero gradient.

  {layout}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> jaxpool.avg_pool(jnp.ones((8, 32, 32, 3)), (3, 3), 2, 1).shape
    (8, 16, 16, 3)
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> jaxpool.avg_pool(x, (2, 2))[0, :, :, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    >>> y = jaxpool.avg_pool(x, (3, 3), 2, 1, count_include_pad=False)
    >>> y[0, :, :, 0].tolist()
    [[2.5, 4.0], [8.5, 10.0]]
    >>> keep = jnp.array([True, True, True, False])
    >>> s = jnp.array([[[1.0], [3.0], [8.0], [9.0]]])
    >>> jaxpool.avg_pool(s, (2,), mask=keep).ravel().tolist()
    [2.0, 8.0]

  Args:
    x: the input.
    window_shape: the window's size along each spatial dim, or an int for
      every spatial dim (see Shapes).
    strides: an int or one per spatial dim; default: the window.
    padding: ``"VALID"``, ``"SAME"``, an int, ints, or ``(low, high)`` pairs.
    dilation: an int or one per spatial dim (PyTorch has none for averages).
    ceil_mode: round the output size up, as PyTorch.
    count_include_pad: count padded taps in the divisor.
    divisor_override: divide every window's sum by this instead.
    channels_first: the layout is ``(*batch, C, *spatial)``.
    mask: bool, broadcastable to ``x``'s shape without its channel dim;
      ``False`` marks an element to leave out (padding of a ragged batch).

  Returns:
    the pooled array, of ``x``'s dtype (float for integer ``x``).

  Raises:
    ValueError: as :func:`max_pool`, for ``divisor_override=0``, and for
      ``divisor_override`` given with ``mask``.
  """
  x = jnp.asarray(x)
  spec = _spec(x, window_shape, strides, padding, dilation, ceil_mode,
               channels_first)
  if not isinstance(count_include_pad, (bool, np.bool_)):
    raise TypeError(
        f"count_include_pad must be a bool, got {count_include_pad!r}.")
  _check_divisor(divisor_override)
  if mask is not None:
    if divisor_override is not None:
      raise ValueError(
          "divisor_override cannot be combined with mask: the divisor is the "
          "number of unmasked elements.")
    return masked_window_mean(
        x, spread_mask(mask, x.shape, spec.channel_axis), spec)
  return _window_mean(x, spec, bool(count_include_pad), divisor_override)


def check_p(p) -> float:
  if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
    raise TypeError(f"p must be a real number, got {p!r}.")
  value = float(p)
  if not (math.isfinite(value) and value > 0):
    raise ValueError(f"p must be finite and > 0, got {p!r}.")
  return value


@partitioned
@documented
def lp_pool(x: ArrayLike, p: float, window_shape: IntOrSequence,
            strides: IntOrSequence | None = None,
            padding: PaddingLike = "VALID", *, ceil_mode: bool = False,
            channels_first: bool = False) -> jax.Array:
  """Power-average (Lp) pooling: ``(sum x**p) ** (1/p)`` over each window.

  PyTorch's definition, ``torch.nn.functional.lp_pool{1,2,3}d``: it computes
  ``(avg_pool(x**p) * window_size) ** (1/p)``, so a window that overhangs
  the input in ``ceil_mode`` has its sum scaled by ``window_size / taps
  inside``. Padding is zeros. Negative sums with a fractional ``1/p`` are
  NaN, as there. A window whose sum is zero has value and gradient zero.

  {layout}

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> jaxpool.lp_pool(jnp.ones((8, 32, 32, 3)), 2.0, (2, 2)).shape
    (8, 16, 16, 3)
    >>> x = jnp.array([3.0, 4.0, 6.0, 8.0]).reshape(1, 4, 1)
    >>> jaxpool.lp_pool(x, 2.0, (2,)).ravel().tolist()
    [5.0, 10.0]

  Args:
    x: the input.
    p: the power, finite and positive.
    window_shape: the window's size along each spatial dim, or an int for
      every spatial dim (see Shapes).
    strides: an int or one per spatial dim; default: the window.
    padding: ``"VALID"``, ``"SAME"``, an int, ints, or ``(low, high)`` pairs
      (PyTorch has no padding here).
    ceil_mode: round the output size up, as PyTorch.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the pooled array, of ``x``'s dtype (float for integer ``x``).

  Raises:
    ValueError: as :func:`max_pool`, and for ``p`` not finite and positive.
  """
  x = jnp.asarray(x)
  p = check_p(p)
  spec = _spec(x, window_shape, strides, padding, 1, ceil_mode,
               channels_first)
  acc, out = accumulation_dtype(x.dtype)
  total = _window_mean(lp_power(x.astype(acc), p), spec, True, None).astype(
      acc) * np.asarray(spec.window_size, acc)
  return lp_root(total, p).astype(out)


def lp_power(x: jax.Array, p: float) -> jax.Array:
  """``x ** p``, an integer power where ``p`` is whole (as torch's ``pow``,
  so negative ``x`` stays finite)."""
  return lax.integer_pow(x, int(p)) if p.is_integer() else jnp.power(
      x, np.asarray(p, x.dtype))


def lp_root(total: jax.Array, p: float) -> jax.Array:
  """``total ** (1/p)``, with value and gradient 0 where ``total`` is 0."""
  # Double where: the root's derivative at 0 is infinite; PyTorch's is 0.
  zero = total == 0
  one = np.ones((), total.dtype)
  safe = jnp.where(zero, one, total)
  return jnp.where(zero, np.zeros((), total.dtype),
                   jnp.power(safe, np.asarray(1 / p, total.dtype)))


@documented
def pool_output_shape(input_shape: Sequence[int], window_shape: IntOrSequence,
                      strides: IntOrSequence | None = None,
                      padding: PaddingLike = "VALID",
                      dilation: IntOrSequence = 1, ceil_mode: bool = False,
                      channels_first: bool = False) -> tuple[int, ...]:
  """The shape a windowed pooling of an input of ``input_shape`` returns.

  It applies the same checks as the pooling functions, so it raises for
  arguments they would reject.

  {layout}

  Example:
    >>> import jaxpool
    >>> jaxpool.pool_output_shape((8, 7, 7, 3), (3, 3), 2, ceil_mode=True)
    (8, 3, 3, 3)

  Args:
    input_shape: the full input shape, batch and channel dims included.
    {window_args}

  Returns:
    the output shape, batch and channel dims included.

  Raises:
    ValueError: as :func:`max_pool`.
  """
  spec = window_spec(input_shape, window_shape, strides, padding,
                     dilation=dilation, ceil_mode=ceil_mode,
                     channels_first=channels_first, name="input_shape")
  return spec.output_shape(input_shape)

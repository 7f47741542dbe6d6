"""Anti-aliased downsampling: blur pooling and max-blur pooling (Zhang 2019).

A blur pool low-pass filters its input with a normalised binomial kernel
before it subsamples, so that a small shift of the input changes the output
little. The kernel is separable, so the blur runs one spatial dim at a time:
along each dim it is a weighted sum of ``filter_size`` strided slices of the
input padded along that dim alone. No convolution is emitted; XLA fuses the
slices, and their transposes (pads of the cotangent) make the gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool._adaptive import spatial_rank
from jaxpool._pooling import accumulation_dtype, max_pool
from jaxpool._sharding import partitioned
from jaxpool._spec import WindowSpec, int_tuple, is_symbolic, window_spec
from jaxpool._typing import IntOrSequence

#: Padding modes and what ``jnp.pad`` calls them: PyTorch's ReflectionPad,
#: ReplicationPad, ZeroPad and ``F.pad(mode="circular")``.
PADDING_MODES = {
    "reflect": "reflect",
    "replicate": "edge",
    "zero": "constant",
    "circular": "wrap",
}


def padding_mode(padding: Any) -> str:
  """Checks a blur padding mode; returns ``jnp.pad``'s name for it."""
  if not isinstance(padding, str) or padding not in PADDING_MODES:
    raise ValueError(
        f"padding must be one of {tuple(PADDING_MODES)}, got {padding!r}.")
  return PADDING_MODES[padding]


def binomial_filter(size: int) -> np.ndarray:
  """Row ``size - 1`` of Pascal's triangle, normalised to sum to one.

  The weights are exact binary fractions (the sum is a power of two), so the
  separable product of two rows is the normalised 2-D kernel that
  ``antialiased_cnns`` and ``kornia`` build, to the last bit.
  """
  row = np.array([math.comb(size - 1, j) for j in range(size)], np.float64)
  return row / row.sum()


def filter_padding(size: int) -> tuple[int, int]:
  """The ``(low, high)`` padding that keeps ``ceil(n / stride)`` outputs.

  ``(size - 1) // 2`` before and ``size // 2`` after, as both
  ``antialiased_cnns.BlurPool`` and ``kornia.filters.blur_pool2d`` pad.
  """
  return (size - 1) // 2, size // 2


def pad_axis(x: jax.Array, axis: int, low: int, high: int,
             mode: str) -> jax.Array:
  """``x`` padded along ``axis`` alone, in a ``jnp.pad`` mode."""
  if not low and not high:
    return x
  n = x.shape[axis]
  if mode == "wrap" and is_symbolic(n):
    # jnp.pad's wrap compares sizes with the widths, which a symbolic size
    # cannot answer; the widths are at most a window, so one copy suffices
    # where the constraints promise the size is at least that.
    width = max(low, high)
    try:
      enough = n >= width
    except jax.errors.InconclusiveDimensionOperation:
      enough = False
    if not enough:
      raise ValueError(
          f"x: circular padding by {width} needs spatial size {n} >= "
          f"{width}; add the constraint '{n} >= {width}' to the symbolic "
          f"shape (jax.export.symbolic_shape(..., constraints=...)).")
    parts = [lax.slice_in_dim(x, n - low, n, axis=axis)] if low else []
    parts.append(x)
    if high:
      parts.append(lax.slice_in_dim(x, 0, high, axis=axis))
    return lax.concatenate(parts, axis)
  widths = [(0, 0)] * x.ndim
  widths[axis] = (low, high)
  return jnp.pad(x, widths, mode=mode)


def blur(x: jax.Array, spec: WindowSpec, mode: str) -> jax.Array:
  """The binomial blur of ``spec.window`` taps at ``spec.strides``.

  Each spatial dim is padded by ``spec.padding`` in ``mode`` and reduced to
  ``spec.out_shape`` before the next one is padded, so every later stage
  runs on an input already ``stride`` times smaller. Sums accumulate in
  :func:`accumulation_dtype`; the caller casts back.
  """
  acc, _ = accumulation_dtype(x.dtype)
  x = x.astype(acc)
  for axis, k, s, (lo, hi), o in zip(spec.spatial_axes, spec.window,
                                     spec.strides, spec.padding,
                                     spec.out_shape):
    x = pad_axis(x, axis, lo, hi, mode)
    taps = [lax.slice_in_dim(x, j, j + (o - 1) * s + 1, s, axis)
            for j in range(k)]
    if k == 1:
      x = taps[0]
      continue
    # Pascal rows are symmetric: add mirrored taps first, one product each.
    weights = binomial_filter(k)
    terms = [(taps[j] if j == k - 1 - j else taps[j] + taps[k - 1 - j])
             * np.asarray(weights[j], acc) for j in range((k + 1) // 2)]
    x = sum(terms[1:], terms[0])
  return x


def _rank(x: jax.Array, entries: Sequence[Any], name: str) -> int:
  return spatial_rank(x.shape, entries, name)


def _blur_spec(shape: Sequence[int], filters: tuple[int, ...],
               strides: IntOrSequence, channels_first: bool) -> WindowSpec:
  return window_spec(shape, filters, strides,
                     tuple(filter_padding(k) for k in filters),
                     channels_first=channels_first)


@partitioned
def blur_pool(x: ArrayLike, filter_size: IntOrSequence = 4,
              strides: IntOrSequence = 2, *, padding: str = "reflect",
              channels_first: bool = False) -> jax.Array:
  """Blur pooling: a binomial low-pass filter, then subsampling.

  Every channel is correlated with the normalised binomial kernel of
  ``filter_size`` taps per spatial dim (``[1, 3, 3, 1] / 8`` in each dim for
  4) at ``strides``, after padding each spatial dim by
  ``((filter_size - 1) // 2, filter_size // 2)`` in the ``padding`` mode.
  This is ``antialiased_cnns.BlurPool(C, pad_type=padding,
  filt_size=filter_size, stride=strides)`` (and its ``BlurPool1D``), and
  with ``padding="zero"`` it is ``kornia.filters.blur_pool2d(x,
  filter_size, strides)``. ``filter_size=1`` subsamples, ``x[::strides]``.
  Half precision accumulates in float32; integer inputs give the default
  float dtype.

  Shapes: ``x`` is ``(*batch, *spatial, C)``, or ``(*batch, C, *spatial)``
  with ``channels_first=True``. The number of spatial dims is the length of
  ``filter_size`` or ``strides`` when either is a sequence; with ints only,
  ``x`` is taken to have one batch dim (``x.ndim - 2`` spatial dims). Each
  spatial dim of size ``n`` becomes ``ceil(n / stride)``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.arange(8.0).reshape(1, 8, 1)
    >>> jaxpool.blur_pool(x, 3, 2)[0, :, 0]
    Array([0.5, 2. , 4. , 6. ], dtype=float32)

  Args:
    x: the input.
    filter_size: taps of the binomial filter, an int or one per spatial dim;
      any size >= 1 (the references offer 1 to 7).
    strides: the subsampling stride, an int or one per spatial dim.
    padding: how the border is extended: ``"reflect"`` (mirrored without
      repeating the edge, the paper's default), ``"replicate"`` (the edge
      repeated), ``"zero"`` or ``"circular"``. Reflection past a mirror
      image repeats, as ``numpy.pad``; PyTorch refuses pads that large.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the blurred, subsampled array, of ``x``'s dtype (float for integers).

  Raises:
    ValueError: for a non-positive ``filter_size`` or ``strides``, an
      unknown ``padding``, sequences of different lengths, or ``x`` with too
      few dims.
    TypeError: for non-integer sizes.

  References:
    Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"
    (ICML); github.com/adobe/antialiased-cnns.
  """
  x = jnp.asarray(x)
  mode = padding_mode(padding)
  rank = _rank(x, (filter_size, strides), "filter_size and strides")
  filters = int_tuple(filter_size, rank, "filter_size")
  spec = _blur_spec(x.shape, filters, strides, channels_first)
  _, out = accumulation_dtype(x.dtype)
  return blur(x, spec, mode).astype(out)


@partitioned
def max_blur_pool(x: ArrayLike, filter_size: IntOrSequence = 4,
                  strides: IntOrSequence = 2, *,
                  window_shape: IntOrSequence = 2, padding: str = "reflect",
                  channels_first: bool = False) -> jax.Array:
  """Max-blur pooling: a dense max pool, then :func:`blur_pool`.

  ``blur_pool(max_pool(x, window_shape, strides=1), filter_size, strides,
  padding=padding)``: the max pool evaluated at every position (no padding),
  anti-aliased, then subsampled. With the default ``padding="reflect"`` it
  is the paper's ``nn.MaxPool2d(window, stride=1)`` followed by
  ``antialiased_cnns.BlurPool``; with ``padding="zero"`` it is
  ``kornia.filters.max_blur_pool2d(x, filter_size, strides,
  max_pool_size=window_shape)``. The max pool's gradient is PyTorch's (the
  first maximum of each window).

  Shapes: as :func:`blur_pool`, ``window_shape`` counting among the sizes
  that fix the number of spatial dims. Each spatial dim of size ``n``
  becomes ``ceil((n - window + 1) / stride)``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> jaxpool.max_blur_pool(jnp.ones((2, 32, 32, 3))).shape
    (2, 16, 16, 3)

  Args:
    x: the input.
    filter_size: taps of the binomial filter, an int or one per spatial dim.
    strides: the subsampling stride, an int or one per spatial dim.
    window_shape: the max pool's window, an int or one per spatial dim.
    padding: the blur's border mode, as in :func:`blur_pool`.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the pooled array, of ``x``'s dtype (float for integers).

  Raises:
    ValueError: as :func:`blur_pool`, and for a window larger than the
      input.

  References:
    Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"
    (ICML), the MaxBlurPool of its Figure 2.
  """
  x = jnp.asarray(x)
  mode = padding_mode(padding)
  rank = _rank(x, (filter_size, strides, window_shape),
               "filter_size, strides and window_shape")
  window = int_tuple(window_shape, rank, "window_shape")
  filters = int_tuple(filter_size, rank, "filter_size")
  pooled = max_pool(x, window, 1, channels_first=channels_first)
  spec = _blur_spec(pooled.shape, filters, strides, channels_first)
  _, out = accumulation_dtype(x.dtype)
  return blur(pooled, spec, mode).astype(out)

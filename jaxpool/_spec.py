"""Normalising and checking the static arguments of a windowed pooling.

Every public pooling function calls :func:`window_spec` once, at trace time.
It turns the user's window, strides, padding, dilation, ``ceil_mode`` and
layout into one frozen :class:`WindowSpec` and raises ``ValueError`` or
``TypeError`` naming the argument for anything XLA would otherwise reject
(or, worse, silently accept) deep inside ``lax.reduce_window``.

Spatial sizes may be symbolic (``jax.export.symbolic_shape``): the output
sizes and paddings are then dimension expressions, and a check that the
symbolic sizes cannot decide raises ``ValueError`` asking for a constraint.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.export  # not imported by `import jax` in every supported version
import numpy as np
from jax._src import core as _core

from jaxpool._typing import IntOrSequence, PaddingLike

_PADDING_WORDS = ("VALID", "SAME")

#: The largest spatial size jaxpool handles. Tap positions, flat indices and
#: per-position constants are int32, so every size argument (window, stride,
#: dilation, padding, output size, level, unpooled shape), every padded
#: input dim and every output spatial plane is checked against it at trace
#: time, before any work per element: an absurd size raises at once instead
#: of building tables of that many entries.
MAX_SIZE = int(np.iinfo(np.int32).max)


def check_size(value: int, name: str) -> int:
  """``value``, if at most :data:`MAX_SIZE`; else a ValueError naming it."""
  if value > MAX_SIZE:
    raise ValueError(
        f"{name} must be at most 2**31 - 1 = {MAX_SIZE} (jaxpool indexes "
        f"spatial positions with int32), got {value}.")
  return value


def check_plane(sizes: Sequence[int], name: str, what: str) -> int:
  """The number of elements of a spatial plane of ``sizes``, checked.

  Args:
    sizes: the plane's spatial sizes, each at most :data:`MAX_SIZE`.
    name: the argument that sets them, for the error message.
    what: what the plane is, e.g. ``"the output's spatial plane"``.

  Raises:
    ValueError: naming ``name`` if the plane has more than ``MAX_SIZE``
      elements (a flat int32 index could not address it).
  """
  total = math.prod(sizes)
  if is_symbolic(total):
    # Known only when the artifact is called; jax.export's shape checks run
    # there.
    return total
  if total > MAX_SIZE:
    raise ValueError(
        f"{name}: {what} {tuple(sizes)} would hold {total} elements, more "
        f"than 2**31 - 1 = {MAX_SIZE} (jaxpool indexes spatial planes with "
        f"int32).")
  return total


@dataclasses.dataclass(frozen=True)
class WindowSpec:
  """A fully resolved windowed reduction over the spatial axes of an array.

  Attributes:
    ndim: rank of the input array.
    spatial_axes: the axes of the input that are spatial, in order.
    channel_axis: the axis holding the channels.
    in_shape: input size of each spatial dim.
    window: window size of each spatial dim.
    strides: stride of each spatial dim.
    dilation: dilation of each spatial dim.
    padding: the user's ``(low, high)`` padding of each spatial dim (after
      resolving ``"SAME"``); it counts for ``count_include_pad``.
    extra: the padding ``ceil_mode`` adds after ``padding[i][1]`` so that the
      last window fits (negative: high padding that no window reads, trimmed
      so that the padded input holds exactly ``out_shape`` windows); it never
      counts for ``count_include_pad``.
    out_shape: output size of each spatial dim.
  """

  ndim: int
  spatial_axes: tuple[int, ...]
  channel_axis: int
  in_shape: tuple[int, ...]
  window: tuple[int, ...]
  strides: tuple[int, ...]
  dilation: tuple[int, ...]
  padding: tuple[tuple[int, int], ...]
  extra: tuple[int, ...]
  out_shape: tuple[int, ...]

  @property
  def symbolic(self) -> bool:
    """Whether a spatial size, padding or output size is symbolic.

    Such a spec can only take lowerings that need no concrete size: no
    NumPy tables over the outputs, no Python comparisons of sizes.
    """
    return any(is_symbolic(v) for v in (
        *self.in_shape, *self.out_shape, *self.extra,
        *(p for pair in self.padding for p in pair)))

  @property
  def nspatial(self) -> int:
    return len(self.window)

  @property
  def effective_window(self) -> tuple[int, ...]:
    return tuple(d * (k - 1) + 1 for k, d in zip(self.window, self.dilation))

  @property
  def total_padding(self) -> tuple[tuple[int, int], ...]:
    """Padding actually applied: the user's plus ``extra``.

    The padded input holds exactly ``out_shape`` windows, so a
    ``reduce_window`` over it gives ``out_shape``.
    """
    return tuple((lo, hi + e) for (lo, hi), e in zip(self.padding, self.extra))

  @property
  def window_size(self) -> int:
    return math.prod(self.window)

  def full(self, per_spatial: Sequence[Any], fill: Any) -> tuple[Any, ...]:
    """Spreads a per-spatial-dim tuple over all ``ndim`` axes."""
    out = [fill] * self.ndim
    for axis, value in zip(self.spatial_axes, per_spatial):
      out[axis] = value
    return tuple(out)

  def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
    """The full output shape for an input of ``input_shape``."""
    shape = list(input_shape)
    for axis, size in zip(self.spatial_axes, self.out_shape):
      shape[axis] = size
    return tuple(shape)

  def divisor(self, count_include_pad: bool) -> np.ndarray:
    """Number of window taps counted by an average, per output position.

    PyTorch's rule: with ``count_include_pad`` every tap inside the input or
    the user's padding counts, taps in the ``ceil_mode`` overhang do not;
    without it only taps inside the input count. Dilated taps that fall
    between counted positions are not taps, so they never count.

    Returns:
      a float array of shape ``out_shape``.
    """
    counts = []
    for n, k, s, d, (lo, hi), o in zip(self.in_shape, self.window,
                                       self.strides, self.dilation,
                                       self.padding, self.out_shape):
      # Taps j of output i read i * s + j * d - lo; counted if in
      # [low, high). In closed form, so the work is per output, not per tap.
      low, high = (-lo, n + hi) if count_include_pad else (0, n)
      first, last = _tap_range(np.arange(o, dtype=np.int64) * s - lo, k, d,
                               low, high)
      counts.append(np.maximum(last - first + 1, 0))
    divisor = np.ones((), np.float64)
    for c in counts:
      divisor = np.multiply.outer(divisor, c)
    return divisor.astype(np.float64)

  def first_valid_tap(self) -> np.ndarray:
    """Row-major index of the first window tap inside the input.

    PyTorch's max pooling starts its search at this tap, so a window whose
    elements are all ``-inf`` reports (and back-propagates to) it.

    Returns:
      an int32 array of shape ``out_shape``.
    """
    index = np.zeros((), np.int64)
    for n, k, s, d, (lo, _), o in zip(self.in_shape, self.window,
                                      self.strides, self.dilation,
                                      self.padding, self.out_shape):
      first, last = _tap_range(np.arange(o, dtype=np.int64) * s - lo, k, d,
                               0, n)
      index = np.add.outer(index * k, np.where(first <= last, first, 0))
    return index.astype(np.int32)


def is_symbolic(size: Any) -> bool:
  """Whether ``size`` is a symbolic dimension (``jax.export``), not an int."""
  return jax.export.is_symbolic_dim(size)


def dim_max(a: Any, b: Any) -> Any:
  """``max(a, b)`` of sizes, either of them possibly symbolic."""
  if is_symbolic(a) or is_symbolic(b):
    return _core.max_dim(a, b)
  return max(a, b)


def dim_min(a: Any, b: Any) -> Any:
  """``min(a, b)`` of sizes, either of them possibly symbolic."""
  if is_symbolic(a) or is_symbolic(b):
    return _core.min_dim(a, b)
  return min(a, b)
def _tap_range(start: np.ndarray, k: int, d: int, low: int,
               high: int) -> tuple[np.ndarray, np.ndarray]:
  """First and last tap ``j`` in ``[0, k)`` whose position ``start + j * d``
  lies in ``[low, high)``, per window start; none where ``first > last``."""
  first = np.maximum(-((start - low) // d), 0)
  last = np.minimum((high - 1 - start) // d, k - 1)
  return first, last


def _index(value: Any, name: str) -> int:
  if isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be an int, got {value!r}.")
  try:
    return operator.index(value)
  except TypeError:
    raise TypeError(
        f"{name} must be an int, got {value!r} of type "
        f"{type(value).__name__}.") from None


def int_tuple(value: IntOrSequence, n: int, name: str, *,
              minimum: int = 1) -> tuple[int, ...]:
  """An int or a sequence of ``n`` ints, each at least ``minimum`` and at
  most :data:`MAX_SIZE`."""
  if isinstance(value, Sequence) and not isinstance(value, str):
    values = tuple(_index(v, name) for v in value)
    if len(values) != n:
      raise ValueError(
          f"{name} must have one entry per spatial dim ({n}), got "
          f"{tuple(value)!r}.")
  else:
    values = (_index(value, name),) * n
  if any(v < minimum for v in values):
    raise ValueError(f"{name} must be >= {minimum}, got {value!r}.")
  for v in values:
    check_size(v, name)
  return values


def int_rank(shape: Sequence[Any], name: str) -> int:
  """The spatial rank an int size (window, output size, level) implies.

  The one convention for every argument that takes an int for "the same on
  every spatial dim": the input is then ``(N, *spatial, C)`` (or ``(N, C,
  *spatial)``), with exactly one batch dim, so the rank is ``x.ndim - 2``.
  A sequence of sizes gives the rank itself, with any number of batch dims.
  """
  if len(shape) < 3:
    raise ValueError(
        f"with int {name}, x must be (N, *spatial, C) or (N, C, *spatial) "
        f"with at least one spatial dim; got shape {tuple(shape)}. Give one "
        f"size per spatial dim to pool other layouts.")
  return len(shape) - 2


def window_tuple(window_shape: Any,
                 shape: Sequence[Any] | None = None) -> tuple[int, ...]:
  """Checks ``window_shape``: a positive int or a non-empty sequence of them.

  An int is the same window on every spatial dim, the rank given by
  :func:`int_rank` from the input's ``shape``.
  """
  if isinstance(window_shape, str) or (
      not isinstance(window_shape, Sequence) and shape is None):
    raise TypeError(
        "window_shape must be a sequence of ints, one per spatial dim, got "
        f"{window_shape!r}.")
  if not isinstance(window_shape, Sequence) and shape is not None:
    return int_tuple(window_shape, int_rank(shape, "window_shape"),
                     "window_shape")
  if not window_shape:
    raise ValueError("window_shape must not be empty.")
  return int_tuple(window_shape, len(window_shape), "window_shape")


def _explicit_padding(padding: Any, n: int) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, Sequence) and not isinstance(padding, str):
    if len(padding) != n:
      raise ValueError(
          f"padding must have one entry per spatial dim ({n}), got "
          f"{padding!r}.")
    pairs = []
    for p in padding:
      if isinstance(p, Sequence):
        if len(p) != 2:
          raise ValueError(
              f"padding entries must be ints or (low, high) pairs, got {p!r} "
              f"in {padding!r}.")
        pairs.append((_index(p[0], "padding"), _index(p[1], "padding")))
      else:
        v = _index(p, "padding")
        pairs.append((v, v))
  else:
    v = _index(padding, "padding")
    pairs = [(v, v)] * n
  if any(lo < 0 or hi < 0 for lo, hi in pairs):
    raise ValueError(f"padding must be non-negative, got {padding!r}.")
  for pair in pairs:
    for p in pair:
      check_size(p, "padding")
  return tuple(pairs)


def _spatial_axes(ndim: int, n: int,
                  channels_first: bool) -> tuple[tuple[int, ...], int]:
  if channels_first:
    return tuple(range(ndim - n, ndim)), ndim - n - 1
  return tuple(range(ndim - n - 1, ndim - 1)), ndim - 1


def layout_axes(shape: Sequence[int], nspatial: int, channels_first: bool,
                name: str = "x") -> tuple[tuple[int, ...], int]:
  """Spatial axes and channel axis of an input, checking its rank.

  The layout is ``(*batch, *spatial, C)``, or ``(*batch, C, *spatial)`` when
  ``channels_first``; any number of batch dims, none included.
  """
  if not isinstance(channels_first, (bool, np.bool_)):
    raise TypeError(f"channels_first must be a bool, got {channels_first!r}.")
  ndim = len(shape)
  if ndim < nspatial + 1:
    layout = "(*batch, C, *spatial)" if channels_first else (
        "(*batch, *spatial, C)")
    raise ValueError(
        f"{name} must have at least {nspatial + 1} dims {layout} for "
        f"{nspatial} spatial dims, got shape {tuple(shape)}.")
  return _spatial_axes(ndim, nspatial, bool(channels_first))


def _window_too_large(n: Any, k: int, d: int, lo: Any, hi: Any,
                      axis: int) -> bool:
  eff = d * (k - 1) + 1
  length = n + lo + hi
  try:
    return bool(length < eff)
  except jax.errors.InconclusiveDimensionOperation:
    needed = eff if is_symbolic(lo) or is_symbolic(hi) else eff - lo - hi
    raise ValueError(
        f"window_shape[{axis}]={k} (dilation {d}, so it spans {eff}) needs "
        f"the padded size {length} (input {n}, padding ({lo}, {hi})) of "
        f"spatial dim {axis} to be at least {eff}, which its symbolic size "
        f"does not guarantee; give jax.export.symbolic_shape a constraint "
        f"such as '{n} >= {needed}'.") from None


def _symbolic_out_size(n: Any, eff: int, s: int, lo: Any, hi: Any,
                       ceil_mode: bool) -> tuple[Any, Any]:
  """:func:`_out_size` for symbolic sizes: the same rule, with ``min`` and
  ``max`` of dimension expressions in place of its comparisons."""
  length = n + lo + hi
  if ceil_mode:
    last = -(-(length - eff) // s)
    # PyTorch drops the last window if it starts in the right padding:
    # the largest start inside the input or its left padding is
    # floor((n + lo - 1) / s), and at most one window is dropped.
    out = dim_max(dim_min(last, (n + lo - 1) // s), last - 1) + 1
  else:
    out = (length - eff) // s + 1
  extra = dim_max(0, (out - 1) * s + eff - n - lo) - hi
  return out, extra


def _out_size(n: int, k: int, s: int, d: int, lo: int, hi: int,
              ceil_mode: bool, axis: int) -> tuple[int, int]:
  eff = d * (k - 1) + 1
  length = n + lo + hi
  if _window_too_large(n, k, d, lo, hi, axis):
    raise ValueError(
        f"window_shape[{axis}]={k} (dilation {d}, so it spans {eff}) is "
        f"larger than the padded input size {length} (input {n}, padding "
        f"({lo}, {hi})) of spatial dim {axis}.")
  if any(is_symbolic(v) for v in (n, lo, hi)):
    return _symbolic_out_size(n, eff, s, lo, hi, ceil_mode)
  if ceil_mode:
    out = -(-(length - eff) // s) + 1
    # PyTorch: the last window must start inside the input or its left
    # padding, never in the right padding alone.
    if (out - 1) * s >= n + lo:
      out -= 1
  else:
    out = (length - eff) // s + 1
  # Pad (or trim) the high side to exactly what the last window reads: a
  # ceil_mode window dropped by the rule above may still fit in the user's
  # padding, and reduce_window would then return it.
  extra = max(0, (out - 1) * s + eff - n - lo) - hi
  return out, extra


def window_spec(shape: Sequence[int], window_shape: Any,
                strides: IntOrSequence | None = None,
                padding: PaddingLike = "VALID", *,
                dilation: IntOrSequence = 1, ceil_mode: bool = False,
                channels_first: bool = False, name: str = "x") -> WindowSpec:
  """Checks and normalises the static arguments of a windowed pooling.

  Args:
    shape: the input's full shape.
    window_shape: one window size per spatial dim, or an int for every
      spatial dim of an input with one batch dim (:func:`int_rank`).
    strides: an int or one per dim; ``None`` means the window.
    padding: see :data:`jaxpool.typing.PaddingLike`.
    dilation: an int or one per dim.
    ceil_mode: PyTorch's ``ceil_mode``.
    channels_first: layout ``(*batch, C, *spatial)``.
    name: what to call the input in error messages.

  Returns:
    the resolved :class:`WindowSpec`.

  Raises:
    ValueError: for a non-positive window, stride or dilation, an unknown
      padding word, padding of the wrong length or negative, a window larger
      than the padded input, or an input with too few dims.
    TypeError: for arguments of the wrong type.
  """
  shape = tuple(shape)
  window = window_tuple(window_shape, shape)
  n = len(window)
  spatial_axes, channel_axis = layout_axes(shape, n, channels_first, name)
  in_shape = tuple(shape[a] for a in spatial_axes)
  strides = window if strides is None else int_tuple(strides, n, "strides")
  dilation = int_tuple(dilation, n, "dilation")
  if not isinstance(ceil_mode, (bool, np.bool_)):
    raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}.")

  if isinstance(padding, str):
    word = padding.upper()
    if word not in _PADDING_WORDS:
      raise ValueError(
          f"padding must be 'VALID', 'SAME', an int or a sequence, got "
          f"{padding!r}.")
    if word == "VALID":
      pads = ((0, 0),) * n
    else:
      # TensorFlow's rule, as flax: out = ceil(in / stride), extra on high.
      pairs = []
      for i, k, s, d in zip(in_shape, window, strides, dilation):
        out = -(-i // s)
        total = dim_max((out - 1) * s + d * (k - 1) + 1 - i, 0)
        pairs.append((total // 2, total - total // 2))
      pads = tuple(pairs)
  else:
    pads = _explicit_padding(padding, n)

  outs, extras = [], []
  for axis, (i, k, s, d, (lo, hi)) in enumerate(
      zip(in_shape, window, strides, dilation, pads)):
    # Symbolic sizes (jax.export) are bounded when the artifact is called.
    concrete = not any(is_symbolic(v) for v in (i, lo, hi))
    if concrete and lo + hi and i + lo + hi > max(i, MAX_SIZE):
      cause = ("window_shape (with 'SAME' padding)" if isinstance(
          padding, str) else "padding")
      raise ValueError(
          f"{cause}: spatial dim {axis} of size {i} padded by ({lo}, {hi}) "
          f"would be {i + lo + hi} long, more than 2**31 - 1 = {MAX_SIZE} "
          f"(jaxpool indexes spatial positions with int32).")
    o, e = _out_size(i, k, s, d, lo, hi, bool(ceil_mode), axis)
    outs.append(o)
    extras.append(e)
  check_plane(outs, "window_shape, strides, padding, dilation, ceil_mode",
              "the output's spatial plane")
  return WindowSpec(
      ndim=len(shape), spatial_axes=spatial_axes, channel_axis=channel_axis,
      in_shape=in_shape, window=window, strides=strides, dilation=dilation,
      padding=pads, extra=tuple(extras), out_shape=tuple(outs))


def spread_mask(mask: Any, shape: Sequence[Any], channel_axis: int,
                name: str = "mask") -> jax.Array:
  """``mask`` as a bool array of ``shape``, its channel dim included.

  ``mask`` is bool (or integer, nonzero keeps) and broadcastable, NumPy's
  way, to ``shape`` without its channel dim: ``(N, T)`` for ``(N, T, C)``,
  or ``(T,)`` for every example alike.
  """
  # Imported here: jax.numpy is not needed by the static checks above.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  mask = jnp.asarray(mask)
  if not (mask.dtype == np.bool_ or jnp.issubdtype(mask.dtype, jnp.integer)):
    raise TypeError(f"{name} must be bool (True keeps), got dtype "
                    f"{mask.dtype}.")
  axis = channel_axis % len(shape)
  plain = tuple(shape[:axis]) + tuple(shape[axis + 1:])
  if mask.ndim > len(plain):
    raise ValueError(
        f"{name} of shape {mask.shape} must broadcast to the input's shape "
        f"without its channel dim, {plain}.")
  for m, n in zip(mask.shape[::-1], plain[::-1]):
    if m != 1 and m is not n and not (m == n):
      raise ValueError(
          f"{name} of shape {mask.shape} must broadcast to the input's shape "
          f"without its channel dim, {plain}.")
  mask = jnp.broadcast_to(mask.astype(bool) if mask.dtype != np.bool_
                          else mask, plain)
  return jnp.broadcast_to(jnp.expand_dims(mask, axis), tuple(shape))

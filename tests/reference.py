"""An independent NumPy reference for windowed pooling, with PyTorch's rules.

Written as plainly as possible, with Python loops over output positions and
window taps, and sharing no code with ``jaxpool``: tests compare the library
against it, never against itself. It follows PyTorch's semantics:

* output size: ``floor`` (or ``ceil`` with ``ceil_mode``) of
  ``(n + lo + hi - d * (k - 1) - 1) / s`` plus one, where ``ceil_mode`` drops
  a last window that would start in the right padding;
* ``"SAME"`` padding: TensorFlow's rule, ``out = ceil(n / s)`` and the odd
  pad on the high side;
* max/min: PyTorch's loop ``if (v > best || isnan(v))`` started at the first
  tap inside the input, so ties keep the first tap in row-major window order,
  the last NaN wins, and an all ``-inf`` window selects its first input tap;
* average: PyTorch's divisor (taps inside the input or the user's padding
  with ``count_include_pad``, taps in the ``ceil_mode`` overhang never), or
  ``divisor_override``;
* Lp: PyTorch's ``(avg_pool(x ** p) * window_size) ** (1 / p)``.

Layout: ``(*batch, *spatial, C)``, or ``(*batch, C, *spatial)`` with
``channels_first``; any number of batch dims.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

OPS = ("max", "min", "avg", "lp")


def _per_dim(value, n: int) -> tuple[int, ...]:
  if isinstance(value, (int, np.integer)):
    return (int(value),) * n
  value = tuple(int(v) for v in value)
  assert len(value) == n, value
  return value


def _pads(padding, in_shape, window, strides, dilation):
  n = len(window)
  if isinstance(padding, str):
    if padding.upper() == "VALID":
      return ((0, 0),) * n
    assert padding.upper() == "SAME", padding
    pads = []
    for size, k, s, d in zip(in_shape, window, strides, dilation):
      out = math.ceil(size / s)
      total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
      pads.append((total // 2, total - total // 2))
    return tuple(pads)
  if isinstance(padding, (int, np.integer)):
    return ((int(padding), int(padding)),) * n
  pads = []
  for p in padding:
    if isinstance(p, (int, np.integer)):
      pads.append((int(p), int(p)))
    else:
      lo, hi = p
      pads.append((int(lo), int(hi)))
  assert len(pads) == n, padding
  return tuple(pads)


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Where every window of a pooling lies, per spatial dim."""
  in_shape: tuple[int, ...]
  window: tuple[int, ...]
  strides: tuple[int, ...]
  dilation: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  out_shape: tuple[int, ...]


def geometry(in_shape: Sequence[int], window_shape: Sequence[int],
             strides=None, padding="VALID", dilation=1,
             ceil_mode: bool = False) -> Geometry:
  """Resolves the spatial arguments of a pooling, PyTorch's way."""
  in_shape = tuple(int(v) for v in in_shape)
  window = tuple(int(k) for k in window_shape)
  n = len(window)
  strides = window if strides is None else _per_dim(strides, n)
  dilation = _per_dim(dilation, n)
  pads = _pads(padding, in_shape, window, strides, dilation)
  out_shape = []
  for size, k, s, d, (lo, hi) in zip(in_shape, window, strides, dilation,
                                     pads):
    span = d * (k - 1) + 1
    length = size + lo + hi
    if length < span:
      raise ValueError(f"window {k} (dilation {d}) larger than {length}")
    if ceil_mode:
      out = math.ceil((length - span) / s) + 1
      if (out - 1) * s >= size + lo:
        out -= 1
    else:
      out = math.floor((length - span) / s) + 1
    out_shape.append(out)
  return Geometry(in_shape, window, strides, dilation, pads, tuple(out_shape))


def output_shape(x_shape: Sequence[int], window_shape: Sequence[int],
                 strides=None, padding="VALID", dilation=1,
                 ceil_mode: bool = False,
                 channels_first: bool = False) -> tuple[int, ...]:
  """The full output shape of a pooling of an input of ``x_shape``."""
  n = len(window_shape)
  x_shape = tuple(x_shape)
  if channels_first:
    geo = geometry(x_shape[-n:], window_shape, strides, padding, dilation,
                   ceil_mode)
    return x_shape[:-n] + geo.out_shape
  geo = geometry(x_shape[-n - 1:-1], window_shape, strides, padding,
                 dilation, ceil_mode)
  return x_shape[:-n - 1] + geo.out_shape + x_shape[-1:]


def _windows(geo: Geometry):
  """Yields, per output position, its taps in row-major window order.

  Each tap is ``(position, with_pad)``: ``position`` is the spatial index of
  the input element, or ``None`` outside the input; ``with_pad`` says if the
  tap is inside the input or the user's padding (not the ceil overhang).
  """
  for out_index in np.ndindex(*geo.out_shape):
    taps = []
    for tap in np.ndindex(*geo.window):
      position, inside, with_pad = [], True, True
      for o, j, size, s, d, (lo, hi) in zip(out_index, tap, geo.in_shape,
                                           geo.strides, geo.dilation,
                                           geo.pads):
        i = o * s + j * d - lo
        position.append(i)
        inside &= 0 <= i < size
        with_pad &= -lo <= i < size + hi
      taps.append((tuple(position) if inside else None, with_pad))
    yield out_index, taps


def _to_bcs(x: np.ndarray, n: int, channels_first: bool):
  """``x`` as ``(batch, C, *spatial)`` and a function that undoes it."""
  if not channels_first:
    x = np.moveaxis(x, -1, -n - 1)
  lead = x.shape[:-n - 1]
  channels = x.shape[-n - 1]
  flat = x.reshape((-1, channels) + x.shape[-n:])

  def undo(y: np.ndarray) -> np.ndarray:
    y = y.reshape(lead + (channels,) + y.shape[2:])
    return y if channels_first else np.moveaxis(y, -n - 1, -1)

  return flat, undo


def _identity(shape, op: str, dtype) -> np.ndarray:
  """What max/min pooling pads with: a value that never wins."""
  if dtype == np.bool_:
    return np.full(shape, op == "min")
  if np.issubdtype(dtype, np.integer):
    info = np.iinfo(dtype)
    return np.full(shape, info.min if op == "max" else info.max, dtype)
  return np.full(shape, -np.inf if op == "max" else np.inf, dtype)


def _selected(values: list[np.ndarray], op: str, dtype) -> tuple:
  """PyTorch's max loop over one window's in-input taps (``(B, C)`` each)."""
  shape = values[0].shape
  best = _identity(shape, op, dtype)
  which = np.zeros(shape, np.int64)
  for k, v in enumerate(values):
    take = v > best if op == "max" else v < best
    if np.issubdtype(dtype, np.floating):
      take |= np.isnan(v)
    best = np.where(take, v, best)
    which = np.where(take, k, which)
  return best, which


def _divisor(taps, count_include_pad: bool, divisor_override) -> float:
  if divisor_override is not None:
    return float(divisor_override)
  if count_include_pad:
    return float(sum(with_pad for _, with_pad in taps))
  return float(sum(pos is not None for pos, _ in taps))


def divisors(geo: Geometry, count_include_pad: bool) -> np.ndarray:
  """The average's divisor at every output position, PyTorch's rule."""
  result = np.zeros(geo.out_shape)
  for out_index, taps in _windows(geo):
    result[out_index] = _divisor(taps, count_include_pad, None)
  return result


def first_input_taps(geo: Geometry) -> np.ndarray:
  """Row-major index of each window's first tap inside the input.

  PyTorch's max pooling starts its search there: an all ``-inf`` window
  selects it. A window entirely in padding has none: -1.
  """
  result = np.zeros(geo.out_shape, np.int64)
  for out_index, taps in _windows(geo):
    inside = [k for k, (pos, _) in enumerate(taps) if pos is not None]
    result[out_index] = inside[0] if inside else -1
  return result


def pool(x, op: str, window_shape: Sequence[int], strides=None,
         padding="VALID", *, dilation=1, ceil_mode: bool = False,
         count_include_pad: bool = True, divisor_override=None,
         p: float | None = None, channels_first: bool = False,
         cotangent=None):
  """Pools ``x``; with ``cotangent``, also the vector-Jacobian product.

  Args:
    x: the input (NumPy array or array-like).
    op: "max", "min", "avg" or "lp".
    window_shape: one window size per spatial dim.
    strides: an int or one per dim; ``None``: the window.
    padding: "VALID", "SAME", an int, ints or ``(lo, hi)`` pairs.
    dilation: an int or one per dim.
    ceil_mode: PyTorch's ``ceil_mode``.
    count_include_pad: for "avg", PyTorch's meaning.
    divisor_override: for "avg", PyTorch's meaning.
    p: the power, for "lp".
    channels_first: layout ``(*batch, C, *spatial)``.
    cotangent: an array of the output's shape, or ``None``.

  Returns:
    the output (``x``'s dtype for max/min, float64 for avg/lp); with
    ``cotangent`` the pair ``(output, input gradient in float64)``.
  """
  assert op in OPS, op
  x = np.asarray(x)
  n = len(window_shape)
  xb, undo = _to_bcs(x, n, channels_first)
  geo = geometry(xb.shape[2:], window_shape, strides, padding, dilation,
                 ceil_mode)
  out_dtype = x.dtype if op in ("max", "min") else np.float64
  y = np.zeros(xb.shape[:2] + geo.out_shape, out_dtype)
  grad = np.zeros(xb.shape, np.float64)
  ct = None
  if cotangent is not None:
    ct, _ = _to_bcs(np.asarray(cotangent, np.float64), n, channels_first)
  everything = (slice(None), slice(None))
  with np.errstate(divide="ignore", invalid="ignore"):
    for out_index, taps in _windows(geo):
      at = everything + out_index
      inside = [pos for pos, _ in taps if pos is not None]
      if op in ("max", "min"):
        if not inside:  # Only padding: it never wins, and takes no gradient.
          y[at] = _identity(xb.shape[:2], op, x.dtype)
          continue
        best, which = _selected([xb[everything + pos] for pos in inside], op,
                                x.dtype)
        y[at] = best
        if ct is not None:
          for b, c in np.ndindex(*xb.shape[:2]):
            grad[(b, c) + inside[which[b, c]]] += ct[(b, c) + out_index]
      elif op == "avg":
        divisor = _divisor(taps, count_include_pad, divisor_override)
        total = sum((xb[everything + pos].astype(np.float64)
                     for pos in inside), np.zeros(xb.shape[:2]))
        y[at] = total / divisor
        if ct is not None:
          for pos in inside:
            grad[everything + pos] += ct[at] / divisor
      else:
        # PyTorch: avg_pool(x ** p) (padding and the ceil overhang count as
        # avg_pool's divisor says) times the window size, to the 1 / p.
        scale = math.prod(geo.window) / _divisor(taps, True, None)
        total = sum((xb[everything + pos].astype(np.float64) ** p
                     for pos in inside), np.zeros(xb.shape[:2]))
        out = np.power(total * scale, 1.0 / p)
        y[at] = out
        if ct is not None:
          # d/dx_i (scale * sum x^p)^(1/p) = out^(1-p) * scale * x_i^(p-1).
          factor = np.where(out == 0, 0.0, np.power(out, 1.0 - p)) * scale
          for pos in inside:
            xi = xb[everything + pos].astype(np.float64)
            grad[everything + pos] += ct[at] * factor * np.power(xi, p - 1)
  if cotangent is None:
    return undo(y)
  return undo(y), undo(grad)

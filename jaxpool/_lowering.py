"""How a windowed reduction is lowered: the one place that decides it.

Four lowerings compute the same windowed sum, max or min:

* ``PLAIN``: one ``lax.reduce_window``, differentiated by JAX itself. This is
  what ``flax.linen.max_pool`` does; its gradient for max/min is XLA's
  select-and-scatter, which is slow and, with dilation, not implemented.
* ``SLICES``: an elementwise reduction over the window's taps, one strided
  slice of the input per tap. Each tap is padded on its own (a pad with one
  user, which XLA fuses), so no padded copy of the input is ever written.
* ``RESHAPE``: non-overlapping windows: a reshape that gives every window
  its own axes, then one reduction over them.
* ``SEPARABLE``: windows with many taps in several dims are reduced one
  spatial dim at a time (box windows are separable for sum, max and min),
  each stage lowered as above.
* ``COMPACT``: max and min of wide windows whose selection, unrolled tap by
  tap, would be slow to compile: the value is one ``lax.reduce_window``;
  the selection (for the derivative and for indices) one variadic
  ``lax.reduce_window`` over ``(value, flat position)`` pairs whose
  combiner is PyTorch's rule; the tangent is gathered at the chosen
  position (reverse mode: a scatter-add). Its HLO does not grow with the
  window.

The derivative of max and min (which element of each window takes the
gradient) is lowered on its own: ``TAPS`` (taps of a padded copy of the
input: any window), ``SLICES`` or ``RESHAPE`` (blocks).

Which configuration takes which lowering is data, not code: :func:`plan`
reads the plan tables of the platform the computation is compiled for
(:mod:`jaxpool._plan_table`: the user's table from ``jaxpool.tune``, the
table shipped in ``jaxpool/_plans/``, then the default, the plain forward
with the ``TAPS`` derivative). Every public op goes through
:func:`per_platform`, so ``jax.export`` for several platforms gives each
one its own plan. The shipped CPU table, with the measurements behind each
rule, is ``jaxpool/_plans/cpu.json``. Every plan any table can pick
(:func:`valid_plans`) is tested equal to the plain path.

Indices (:func:`selected_tap`) and derivatives whose selection, unrolled,
would have more than ``MAX_UNROLLED`` (256) tap slices take ``COMPACT``'s
selection whatever the lowering of the value: 512 taps of an 8x8x8
window took 201 s to compile in bfloat16 on a loaded 2-core CPU, 1.4 s so.

Max and min carry a custom JVP on every lowering except a forced plain one
without dilation (where JAX has none, the forced path takes it too). It
picks, per window, the tap PyTorch picks (the first maximum in row-major window order, the last NaN if any, the
first in-bounds tap if all are ``-inf``), keeps that tap's index in int8,
and routes the tangent through ``lax.select_n`` over the same taps of the
tangent (``RESHAPE``: a masked sum over the blocks). JAX transposes those
taps into pads of the cotangent that XLA fuses into one loop writing the
gradient: no select-and-scatter is ever emitted, dilation included, and
forward-mode, reverse-mode and higher-order derivatives all work. The
selection is computed once, by the JVP rule, and only when differentiating.

With stride 1 the tangent is :func:`_selected_tangent`, whose transpose
is one loop per pool over the cotangent and index padded once (chains of
pools, SPPF: each pool's gradient is written once, not re-added in every
tap of the pool before it).

The selection never pads the input as a whole either: XLA does not fuse a
pad with several users, so the outputs are cut into the interior, whose
windows need no padding, and thin border strips padded on their own.

Sums need no rule: their transpose (pads of the cotangent) is already fast.

Half-precision taps are compared in float32 (exact: the result is one of
the inputs); XLA:CPU's loops are several times slower on bfloat16, while its
block reductions are not, so those stay in the input's dtype. Without
a gradient, non-overlapping windows that tile the input exactly are reduced
as blocks on every path, as that is XLA:CPU's fastest max.

:func:`force_plain_lowering` (or ``JAXPOOL_FORCE_PLAIN=1``) makes every op
take ``PLAIN`` with JAX's own derivative, exactly what ``flax.linen`` does;
it is read at trace time. That derivative differs from PyTorch's for a
window holding NaN and for one that only holds the padding's value; every
other lowering, and a plain one picked for a wide window, follows PyTorch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import math
import os
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax._src import core as _core

from jaxpool import _plan_table
from jaxpool._spec import WindowSpec, is_symbolic


class Lowering(enum.Enum):
  """A way to compute a windowed reduction or its derivative.

  The forward is ``PLAIN``, ``SLICES``, ``RESHAPE`` or ``SEPARABLE``; the
  derivative of max and min (which element of each window takes the
  gradient) is ``TAPS`` (taps of a padded copy: short, any window),
  ``SLICES`` or ``RESHAPE`` (blocks).
  """

  PLAIN = "plain"
  RESHAPE = "reshape"
  SLICES = "slices"
  SEPARABLE = "separable"
  TAPS = "taps"
  COMPACT = "compact"


@dataclasses.dataclass(frozen=True)
class Plan:
  """The lowering of a windowed reduction's forward and of its derivative."""

  forward: Lowering
  derivative: Lowering

  @classmethod
  def of(cls, forward: str, derivative: str) -> Plan:
    return cls(Lowering(forward), Lowering(derivative))


# Past this many taps an unrolled slice per tap is too long to compile well:
# SLICES is not valid beyond it, and NaN-checked folds become reductions.
MAX_TAPS_1D = 64
# A selection unrolled over more tap slices than this (taps times the border
# regions of _regions) takes COMPACT's, whatever the table: XLA's compile
# time grows with the slices, superlinearly in half precision (an 8x8x8
# window's 512 taps: 60 s), while COMPACT's HLO does not grow with the window.
MAX_UNROLLED = 256

_COMBINE = {"sum": lax.add, "max": lax.max, "min": lax.min}

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
  Max and min pools are then differentiated by JAX itself (select-and-scatter,
  as ``flax.linen.max_pool``), except with dilation, where JAX has no rule:
  the first maximum takes the gradient as in PyTorch, but a window holding
  NaN sends it elsewhere than PyTorch's last NaN, and a window overhanging
  the padding whose elements all equal the padding (``-inf`` for max) sends
  it to the padding (dropped) rather than to its first element.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> with jaxpool.force_plain_lowering():
    ...   y = jaxpool.max_pool(x, (2, 2))
    >>> bool((y == jaxpool.max_pool(x, (2, 2))).all())
    True

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


def _non_overlapping(spec: WindowSpec) -> bool:
  return spec.strides == spec.window and all(d == 1 for d in spec.dilation)


#: Symbolic sizes: wider windows spanning several dims are reduced one dim
#: at a time, so that the derivative selects over k1 + k2 taps, not k1 * k2.
SYMBOLIC_MAX_TAPS = 16

#: The forced plain path (``force_plain_lowering``): flax's lowering.
FORCED_PLAIN = Plan(Lowering.PLAIN, Lowering.TAPS)


def valid_derivative(lowering: Lowering, spec: WindowSpec) -> bool:
  """Whether ``lowering`` can pick the max/min element of ``spec``'s
  windows (a separable forward applies it per stage where valid)."""
  if lowering is Lowering.TAPS:
    return True
  if lowering is Lowering.SLICES:
    return spec.window_size <= MAX_TAPS_1D
  if lowering is Lowering.RESHAPE:
    return _non_overlapping(spec)
  if lowering is Lowering.COMPACT:
    # Positions in the plane need its concrete size.
    return not spec.symbolic
  return False


def valid_forward(lowering: Lowering, spec: WindowSpec) -> bool:
  """Whether ``lowering`` can compute the forward of ``spec``."""
  if lowering is Lowering.PLAIN:
    return True
  if lowering is Lowering.SEPARABLE:
    return sum(k > 1 for k in spec.window) > 1
  # Slices and blocks are valid where their selections are.
  return lowering in (Lowering.SLICES, Lowering.RESHAPE) and valid_derivative(
      lowering, spec)


def valid_plans(spec: WindowSpec) -> list[Plan]:
  """Every plan a table may pick for ``spec``: tested equal to plain."""
  return [Plan(f, d) for f in Lowering for d in Lowering
          if f is not Lowering.TAPS and valid_forward(f, spec)
          and d is not Lowering.PLAIN and d is not Lowering.SEPARABLE
          and (valid_derivative(d, spec) or f is Lowering.SEPARABLE)]


def default_platform() -> str:
  """The platform of JAX's default backend, as plan tables name it."""
  platform = jax.default_backend()
  if platform == "gpu":
    kind = (_plan_table.local_device_kind("cuda") and "cuda") or (
        _plan_table.local_device_kind("rocm") and "rocm")
    return kind or "cuda"
  return platform


def plan(spec: WindowSpec, op: str = "max", platform: str | None = None,
         dtype: Any = np.float32, shape: Sequence[int] | None = None, *,
         include_user: bool = True) -> Plan:
  """Chooses how to lower a windowed ``op`` over ``spec`` on ``platform``.

  The first rule of the platform's tables (the user's tuned table, the
  shipped one, then the default: see :mod:`jaxpool._plan_table`) that
  matches the configuration's class and whose lowerings are valid for it.

  Args:
    spec: the resolved window.
    op: ``"max"``, ``"min"`` or ``"sum"``.
    platform: ``"cpu"``, ``"cuda"``, ``"rocm"``, ``"tpu"``; None for the
      default backend's; any other name takes the default plan.
    dtype: the input's dtype.
    shape: the input's full shape (its size class).
    include_user: whether the user's tuned table counts (``jaxpool.tune``
      compares with the shipped plan).

  Returns:
    the :class:`Plan`.
  """
  if _plain_forced():
    return FORCED_PLAIN
  if spec.symbolic:
    # Symbolic spatial sizes (jax.export): a lowering that needs no
    # concrete size, whatever the tables say.
    return symbolic_plan(spec)
  override = getattr(_state, "plan", None)
  if override is not None:
    return override
  if platform is None:
    platform = default_platform()
  cls = _plan_table.config_class(spec, op, dtype, _concrete(shape))
  for rule in _plan_table.rules(platform, include_user):
    if not rule.matches(cls):
      continue
    chosen = Plan.of(rule.forward, rule.derivative)
    if valid_forward(chosen.forward, spec) and (
        op == "sum" or valid_derivative(chosen.derivative, spec) or
        chosen.forward is Lowering.SEPARABLE):
      if chosen.forward is Lowering.SEPARABLE:
        # Its derivative selects per 1-D stage, each bounded on its own
        # (_extremum_jvp): bounded here by the whole window, a 13x13 pool's
        # stages took COMPACT (YOLO's SPP forward+backward 1.9-3x slower).
        return chosen
      return Plan(chosen.forward, bounded(chosen.derivative, spec, op))
    _plan_table.warn_once(
        f"{rule.origin}/{_plan_table.class_key(cls)}",
        f"jaxpool: {rule.origin} picks {rule.forward}/{rule.derivative} for "
        f"{_plan_table.class_key(cls)}, where it is not valid; ignored.")
  raise AssertionError("the default rules match every configuration")


def _concrete(shape: Sequence[int] | None) -> Sequence[int] | None:
  """``shape``, or None if a batch size is symbolic (``jax.export``): the
  size class then counts the spatial size alone."""
  if shape is None or any(is_symbolic(d) for d in shape):
    return None
  return shape


def symbolic_plan(spec: WindowSpec) -> Plan:
  """The plan for symbolic spatial sizes (``jax.export``).

  ``reduce_window`` over an explicitly padded input (its padding may be
  symbolic: ``"SAME"``, ``ceil_mode``), one spatial dim at a time for wide
  windows, and the ``TAPS`` derivative, whose first-valid-tap table is then
  computed in the graph: every size stays a dimension expression, and
  values, ties and gradients are PyTorch's as on every other plan.
  """
  if valid_forward(Lowering.SEPARABLE, spec) and (
      spec.window_size > SYMBOLIC_MAX_TAPS):
    return Plan(Lowering.SEPARABLE, Lowering.TAPS)
  return Plan(Lowering.PLAIN, Lowering.TAPS)


@contextlib.contextmanager
def use_plan(chosen: Plan | None) -> Iterator[None]:
  """Every pooling traced inside the block takes ``chosen`` (tests, tuning).

  Args:
    chosen: the plan, or None for the tables' choice.

  Yields:
    nothing.
  """
  previous = getattr(_state, "plan", None)
  _state.plan = chosen
  try:
    yield
  finally:
    _state.plan = previous


@contextlib.contextmanager
def spread_tangents(enabled: bool = True) -> Iterator[None]:
  """Whether stride-1 max/min derivatives traced inside the block take
  :func:`_selected_tangent` (the default) or the per-tap select they took
  before it (tests and ``bench.chains --versus-previous`` compare them).

  Args:
    enabled: whether to take ``_selected_tangent``.

  Yields:
    nothing.
  """
  previous = getattr(_state, "spread", True)
  _state.spread = bool(enabled)
  try:
    yield
  finally:
    _state.spread = previous


@contextlib.contextmanager
def recording() -> Iterator[list[tuple[tuple[int, ...], np.dtype, WindowSpec,
                                       str]]]:
  """Records ``(shape, dtype, spec, op)`` of each windowed reduction traced
  inside the block (what :func:`jaxpool.tune` tunes for a function)."""
  previous = getattr(_state, "recorder", None)
  found: list[tuple[tuple[int, ...], np.dtype, WindowSpec, str]] = []
  _state.recorder = found
  try:
    yield found
  finally:
    _state.recorder = previous


def _record(x: jax.Array, spec: WindowSpec, op: str) -> None:
  recorder = getattr(_state, "recorder", None)
  if recorder is not None:
    recorder.append((tuple(x.shape), np.dtype(x.dtype), spec, op))


def per_platform(choose: Callable[[str | None], Hashable],
                 build: Callable[[Any], Callable[..., Any]],
                 *args: Any) -> Any:
  """``build(choose(platform))(*args)`` for the platform compiled for.

  Each platform of :data:`_plan_table.PLATFORMS` (and the default, for any
  other) gets the function built from its own choice; where all choices
  agree that function is called directly, otherwise through
  ``lax.platform_dependent``, which JAX resolves when lowering: ``jit`` on
  one platform compiles that platform's branch alone, and ``jax.export``
  for several platforms carries each one's branch.
  """
  choices = {p: choose(p) for p in _plan_table.PLATFORMS}
  default = choose(None)
  built: dict[Hashable, Callable[..., Any]] = {}
  for choice in (*choices.values(), default):
    if choice not in built:
      built[choice] = build(choice)
  if len(built) == 1:
    return built[default](*args)
  return lax.platform_dependent(
      *args, default=built[default],
      **{p: built[c] for p, c in choices.items()})


def compact(spec: WindowSpec) -> bool:
  """Whether a selection over ``spec``'s taps, unrolled, would be large.

  It counts the strided slices of :func:`_slices_selection` (every tap of
  every border region); past :data:`MAX_UNROLLED` the selection is
  ``COMPACT``, whose HLO does not grow with the window.
  """
  regions = math.prod(len(r) for r in _regions(spec))
  return spec.window_size * regions > MAX_UNROLLED


def bounded(derivative: Lowering, spec: WindowSpec, op: str) -> Lowering:
  """``derivative``, or ``COMPACT`` where it would unroll a selection of
  more than :data:`MAX_UNROLLED` tap slices (compile time), whatever the
  table says."""
  if (op != "sum" and derivative in (Lowering.TAPS, Lowering.SLICES)
      and valid_derivative(Lowering.COMPACT, spec) and compact(spec)):
    return Lowering.COMPACT
  return derivative


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


def identity(dtype: jnp.dtype, op: str) -> np.ndarray:
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


def _applied_padding(spec: WindowSpec) -> tuple[tuple[int, int], ...]:
  """``spec.total_padding``, or for a symbolic ``ceil_mode`` pad an upper
  bound of it (``stride - 1``): a padded input that holds at least
  ``out_shape`` windows, as ``lax.pad`` takes no symbolic trim."""
  return tuple((lo, hi + (s - 1 if is_symbolic(e) else e))
               for (lo, hi), e, s in zip(spec.padding, spec.extra,
                                         spec.strides))


def pad(x: jax.Array, spec: WindowSpec, value) -> jax.Array:
  """Pads the spatial dims of ``x`` by the user's and ``ceil_mode``'s pads.

  With symbolic sizes the high side may get more (see
  :func:`_applied_padding`); taps and windows read only what they need.
  """
  config = spec.full([(lo, hi, 0) for lo, hi in _applied_padding(spec)],
                     (0, 0, 0))
  if all(c == (0, 0, 0) for c in config):
    return x
  return lax.pad(x, jnp.asarray(value, x.dtype), config)


def taps(xp: jax.Array, spec: WindowSpec) -> list[jax.Array]:
  """One strided slice of the padded input ``xp`` per window tap, row-major."""
  return _strided_taps(xp, spec, spec.out_shape)


def _strided_taps(xp: jax.Array, spec: WindowSpec,
                  out_shape: Sequence[int]) -> list[jax.Array]:
  """Row-major taps of ``xp``, already padded, for ``out_shape`` outputs."""
  result = []
  for offsets in np.ndindex(*spec.window):
    start = [0] * spec.ndim
    limit = list(xp.shape)
    step = [1] * spec.ndim
    for axis, k, s, d, o in zip(spec.spatial_axes, offsets, spec.strides,
                                spec.dilation, out_shape):
      start[axis] = k * d
      limit[axis] = k * d + (o - 1) * s + 1
      step[axis] = s
    result.append(lax.slice(xp, start, limit, step))
  return result


def _fill(x: jax.Array, op: str) -> jax.Array:
  return jnp.asarray(identity(x.dtype, op), x.dtype)


def _tap(x: jax.Array, spec: WindowSpec, offsets: Sequence[int],
         op: str) -> jax.Array:
  """One tap of the unpadded ``x``, its out-of-bounds outputs set to fill.

  The pad is of this tap alone and has one user, so XLA fuses it into the
  reduction instead of writing a padded copy of the input.
  """
  start, limit, step = [0] * spec.ndim, list(x.shape), [1] * spec.ndim
  config = [(0, 0, 0)] * spec.ndim
  for axis, k, s, d, (lo, _), n, o in zip(
      spec.spatial_axes, offsets, spec.strides, spec.dilation,
      spec.total_padding, spec.in_shape, spec.out_shape):
    offset = k * d - lo  # Input index read by output 0.
    first = max(0, -(offset // s))  # First output reading inside the input.
    last = min(o - 1, (n - 1 - offset) // s)
    if last < first:
      return jnp.full(spec.output_shape(x.shape), identity(
          _compute_dtype(x.dtype), op))
    start[axis] = offset + first * s
    limit[axis] = offset + last * s + 1
    step[axis] = s
    config[axis] = (first, o - 1 - last, 0)
  # Converted tap by tap: a converted copy of x with many users would be
  # written out in full.
  tap = lax.slice(x, start, limit, step).astype(_compute_dtype(x.dtype))
  if any(c != (0, 0, 0) for c in config):
    tap = lax.pad(tap, _fill(tap, op), config)
  return tap


def _compute_dtype(dtype) -> np.dtype:
  """Taps of half precision are compared in float32: exact, and XLA:CPU's
  loops are several times faster so."""
  dtype = np.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
    return np.dtype(np.float32)
  return dtype


def _reduce_window(x: jax.Array, spec: WindowSpec, op: str) -> jax.Array:
  # The init must be a NumPy constant: JAX recognises reduce_window_max (and
  # its VJP) only then; a jax.Array init gives the generic reduce_window,
  # which has no VJP at all.
  return reduce_window(x, identity(x.dtype, op), _COMBINE[op], spec)


def reduce_window(x: jax.Array, init, reducer, spec: WindowSpec) -> jax.Array:
  """One ``lax.reduce_window`` of ``x`` over ``spec``, padded with ``init``.

  ``reduce_window`` takes only static padding: with symbolic sizes the
  input is padded explicitly (``lax.pad`` takes dimension expressions), the
  windows taken VALID and the output cut to ``out_shape``.
  """
  if not spec.symbolic:
    return lax.reduce_window(
        x, init, reducer, spec.full(spec.window, 1),
        spec.full(spec.strides, 1), spec.full(spec.total_padding, (0, 0)),
        window_dilation=spec.full(spec.dilation, 1))
  y = lax.reduce_window(
      pad(x, spec, init), init, reducer, spec.full(spec.window, 1),
      spec.full(spec.strides, 1), "VALID",
      window_dilation=spec.full(spec.dilation, 1))
  return lax.slice(y, (0,) * y.ndim, spec.output_shape(y.shape))


def size_value(size, dtype=np.int32):
  """A size, perhaps symbolic, as a scalar of ``dtype`` (NumPy if concrete)."""
  if is_symbolic(size):
    return lax.convert_element_type(_core.dimension_as_value(size), dtype)
  return np.asarray(size, dtype)


def _output_iota(spec: WindowSpec, i: int) -> jax.Array:
  """Input index of tap 0 of every output along spatial dim ``i``
  (``o * stride - low``), shaped to broadcast against the outputs."""
  axis = spec.spatial_axes[i]
  shape = [1] * spec.ndim
  shape[axis] = spec.out_shape[i]
  start = lax.broadcasted_iota(np.int32, shape, axis) * np.int32(
      spec.strides[i])
  return start - size_value(spec.padding[i][0])


def _traced_first_valid(spec: WindowSpec) -> jax.Array:
  """``spec.first_valid_tap()`` computed in the graph, for symbolic sizes."""
  index = jnp.zeros((1,) * spec.ndim, np.int32)
  for i, (n, k, d) in enumerate(zip(spec.in_shape, spec.window,
                                    spec.dilation)):
    start = _output_iota(spec, i)
    first = jnp.zeros(start.shape, np.int32)
    for t in reversed(range(k)):
      at = start + np.int32(t * d)
      first = jnp.where((at >= 0) & (at < size_value(n)), np.int32(t), first)
    index = index * np.int32(k) + first
  return index


def traced_divisor(spec: WindowSpec, count_include_pad: bool,
                   dtype) -> jax.Array:
  """``spec.divisor(count_include_pad)`` computed in the graph, for
  symbolic sizes, in ``dtype``, shaped to broadcast against the outputs."""
  divisor = jnp.ones((1,) * spec.ndim, dtype)
  for i, (n, k, d, (lo, hi)) in enumerate(zip(
      spec.in_shape, spec.window, spec.dilation, spec.padding)):
    start = _output_iota(spec, i)
    if count_include_pad:
      low, high = -size_value(lo), size_value(n + hi)
    else:
      low, high = np.int32(0), size_value(n)
    count = functools.reduce(lax.add, [
        ((start + np.int32(t * d) >= low) & (start + np.int32(t * d) < high)
         ).astype(np.int32) for t in range(k)])
    divisor = divisor * count.astype(dtype)
  return divisor


def reduce_extremum(x: jax.Array, axes: Sequence[int], op: str,
                    keepdims: bool = False,
                    fold_up_to: int = MAX_TAPS_1D) -> jax.Array:
  """``jnp.max`` (or ``jnp.min``) over ``axes``, NaN propagating.

  XLA:CPU (jax 0.10) runs such reductions in YNNPACK kernels that return
  the largest non-NaN element, so a window holding a NaN would not give NaN
  as PyTorch's does. Elementwise maxima propagate NaN everywhere: each axis
  of up to ``fold_up_to`` elements is folded so (one fused pass, as fast as
  the kernel); a longer axis gets a NaN check. Axes that may be split over
  devices want ``fold_up_to=0``: a reduction partitions into one
  all-reduce, a fold into a collective per element.
  """
  axes = tuple(a % x.ndim for a in axes)
  reduce = jnp.max if op == "max" else jnp.min
  if not jnp.issubdtype(x.dtype, jnp.inexact):
    return reduce(x, axis=axes, keepdims=keepdims)
  y = x
  checked = tuple(a for a in axes if x.shape[a] > fold_up_to)
  if checked:
    # One reduction over all of them: split over devices, one all-reduce.
    # The flag as an int8 maximum: XLA:CPU reduces booleans element by
    # element (a global max of (64, 13, 13, 256): 3.0 ms against 0.9).
    nan = jnp.max(jnp.isnan(y).astype(np.int8), axis=checked,
                  keepdims=True) > 0
    y = jnp.where(nan, jnp.asarray(np.nan, y.dtype),
                  reduce(y, axis=checked, keepdims=True))
  for axis in axes:
    if axis not in checked:
      y = functools.reduce(_COMBINE[op], [
          lax.slice_in_dim(y, i, i + 1, axis=axis)
          for i in range(y.shape[axis])])
  return y if keepdims else jnp.squeeze(y, axes)


def _blocks(x: jax.Array, spec: WindowSpec,
            value) -> tuple[jax.Array, tuple[int, ...]]:
  """Non-overlapping windows of ``x`` (padded by ``value``) on axes of their own."""
  xp = pad(x, spec, value)
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


def _exact_blocks(spec: WindowSpec) -> bool:
  """Non-overlapping windows that tile the input exactly, unpadded."""
  return _non_overlapping(spec) and all(
      lo == hi == 0 for lo, hi in spec.total_padding) and all(
          n % k == 0 for n, k in zip(spec.in_shape, spec.window))


def _forward(x: jax.Array, spec: WindowSpec, op: str,
             lowering: Lowering) -> jax.Array:
  """The windowed ``op`` of ``x`` (already in its accumulation dtype)."""
  if lowering in (Lowering.PLAIN, Lowering.COMPACT):
    return _reduce_window(x, spec, op)
  if lowering is Lowering.RESHAPE or (op != "sum" and _exact_blocks(spec)):
    # Windows on axes of their own: a sum is one reduction; a max/min folds
    # each window axis elementwise (reduce_extremum), as fast as XLA:CPU's
    # reduction kernel in float32 and NaN-propagating, which that kernel is
    # not.
    blocks, axes = _blocks(x, spec, identity(x.dtype, op))
    if op == "sum":
      return jnp.sum(blocks, axis=axes)
    return reduce_extremum(blocks, axes, op)
  y = functools.reduce(_COMBINE[op], [_tap(x, spec, offsets, op)
                                      for offsets in np.ndindex(*spec.window)])
  return _keep_fused(y).astype(x.dtype)


def _keep_fused(y: jax.Array) -> jax.Array:
  """``y`` unchanged, behind an op that XLA:CPU's YNNPACK fusion rejects.

  That fusion pulls the adds (or maxima) of a windowed reduction into a
  reduction that follows it (a loss, a mean) but not the strided slices
  feeding them, so every tap would be written out; ending with a no-op
  ``reduce_precision`` keeps it in one loop fusion (2.5x faster
  forward+backward for a 3x3/2 average). Elsewhere it is a free no-op.
  """
  if not jnp.issubdtype(y.dtype, jnp.floating):
    return y
  info = jnp.finfo(y.dtype)
  return lax.reduce_precision(y, exponent_bits=info.nexp,
                              mantissa_bits=info.nmant)


# ---------------------------------------------------------------------------
# Max and min with PyTorch's choice of element.


def _index_dtype(spec: WindowSpec) -> np.dtype:
  for dtype in (np.int8, np.int16):
    if spec.window_size <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  return np.dtype(np.int32)


def _take(tap: jax.Array, best: jax.Array, op: str) -> jax.Array:
  """PyTorch's ``val > best || isnan(val)``: ties keep the earlier tap."""
  better = lax.gt if op == "max" else lax.lt
  take = better(tap, best)
  if jnp.issubdtype(tap.dtype, jnp.inexact):
    take = take | lax.ne(tap, tap)
  return take


def _scan_taps(window_taps: Sequence[jax.Array], op: str,
               first: np.ndarray | jax.Array,
               index_dtype) -> tuple[jax.Array, jax.Array]:
  """PyTorch's loop over the taps, started at ``first`` (the first valid)."""
  best = window_taps[0]
  index = jnp.broadcast_to(jnp.asarray(first, index_dtype), best.shape)
  for k, tap in enumerate(window_taps[1:], 1):
    take = _take(tap, best, op)
    best = lax.select(take, tap, best)
    index = lax.select(take, jnp.full(best.shape, k, index_dtype), index)
  return best, index


def _first_valid(spec: WindowSpec,
                 ranges: Sequence[tuple[int, int]] | None = None
                 ) -> np.ndarray | jax.Array:
  """``spec.first_valid_tap()`` over ``ranges`` of outputs (all of them by
  default), broadcastable."""
  if spec.symbolic:  # Symbolic plans select over all outputs at once.
    return _traced_first_valid(spec)
  first = spec.first_valid_tap()
  if ranges is not None:
    first = first[tuple(slice(a, b) for a, b in ranges)]
  if not first.any():
    return np.zeros((), first.dtype)
  return first.reshape(spec.full(first.shape, 1))


def _reference_selection(x: jax.Array, spec: WindowSpec,
                         op: str) -> tuple[jax.Array, jax.Array]:
  """The selection over taps of a padded copy of ``x``: short and obvious."""
  xp = pad(x, spec, identity(x.dtype, op))
  return _scan_taps(taps(xp, spec), op, _first_valid(spec), np.int32)


def _regions(spec: WindowSpec) -> list[list[tuple[int, int]]]:
  """Per spatial dim: output ranges whose windows overhang the low padding,
  lie inside the input, overhang the high padding; empty ranges dropped."""
  result = []
  for n, k, s, d, (lo, _), o in zip(spec.in_shape, spec.window, spec.strides,
                                    spec.dilation, spec.total_padding,
                                    spec.out_shape):
    a = min(max(-(-lo // s), 0), o)
    b = min(max((n - 1 + lo - (k - 1) * d) // s + 1, a), o)
    result.append([(lo_, hi_) for lo_, hi_ in ((0, a), (a, b), (b, o))
                   if hi_ > lo_])
  return result


def _region_taps(x: jax.Array, spec: WindowSpec,
                 ranges: Sequence[tuple[int, int]],
                 op: str) -> list[jax.Array]:
  """The taps of the outputs in ``ranges`` (one ``(start, stop)`` per dim).

  Only the input those outputs read is sliced out, and padded only if their
  windows overhang the padding, which for a border range is a thin strip.
  """
  start, limit = [0] * spec.ndim, list(x.shape)
  config = [(0, 0, 0)] * spec.ndim
  out_shape = []
  for axis, n, k, s, d, (lo, _), (o0, o1) in zip(
      spec.spatial_axes, spec.in_shape, spec.window, spec.strides,
      spec.dilation, spec.total_padding, ranges):
    i0 = o0 * s - lo
    i1 = (o1 - 1) * s + (k - 1) * d - lo + 1
    start[axis], limit[axis] = max(i0, 0), min(i1, n)
    config[axis] = (max(-i0, 0), max(i1 - n, 0), 0)
    out_shape.append(o1 - o0)
  part = lax.slice(x, start, limit)
  if any(c != (0, 0, 0) for c in config):
    part = lax.pad(part, _fill(x, op), config)
  compute = _compute_dtype(x.dtype)
  return [tap.astype(compute)
          for tap in _strided_taps(part, spec, out_shape)]


def _stitch(pieces: Sequence[jax.Array], axis: int,
            ranges: Sequence[tuple[int, int]]) -> jax.Array:
  """``pieces`` laid side by side along ``axis`` at output ``ranges``.

  The largest is padded to the full extent and the others are written over
  it with ``dynamic_update_slice`` instead of a concatenation: XLA partitions
  a concatenation along a sharded axis with all-to-alls that reshuffle whole
  shards, a pad with a halo exchange, and an update with at most a gather of
  the (thin) piece itself.
  """
  total = ranges[-1][1]
  big = max(range(len(pieces)), key=lambda i: pieces[i].shape[axis])
  lo, hi = ranges[big]
  config = [(0, 0, 0)] * pieces[big].ndim
  config[axis] = (lo, total - hi, 0)
  result = lax.pad(pieces[big], jnp.zeros((), pieces[big].dtype), config)
  for i, (piece, (lo, _)) in enumerate(zip(pieces, ranges)):
    if i != big:
      start = [0] * piece.ndim
      start[axis] = lo
      result = lax.dynamic_update_slice(result, piece, start)
  return result


def _slices_selection(x: jax.Array, spec: WindowSpec,
                      op: str) -> tuple[jax.Array, jax.Array]:
  """The selection with every tap a strided slice of the unpadded ``x``.

  The values are in ``_compute_dtype(x.dtype)``.

  A pad with several users is never fused by XLA, so padding the input once
  would write a padded copy of it; instead the outputs are cut into the
  interior, whose windows need no padding, and thin border strips, each
  padded on its own, and the pieces are stitched back (:func:`_stitch`).
  """
  index_dtype = _index_dtype(spec)
  per_dim = _regions(spec)

  def build(level, ranges):
    if level == spec.nspatial:
      return _scan_taps(_region_taps(x, spec, ranges, op), op,
                        _first_valid(spec, ranges), index_dtype)
    parts = [build(level + 1, ranges + [r]) for r in per_dim[level]]
    if len(parts) == 1:
      return parts[0]
    axis = spec.spatial_axes[level]
    return tuple(_stitch(list(p), axis, [r for r in per_dim[level]])
                 for p in zip(*parts))

  return build(0, [])


#: Non-overlapping windows of at most this many taps select by a fold over
#: their block's taps; larger ones by reductions over the block.
MAX_FOLDED_BLOCK = 9


def _block_taps(blocks: jax.Array, axes: Sequence[int],
                window: Sequence[int]) -> list[jax.Array]:
  """Every tap of a blocked array (:func:`_blocks`), row-major."""
  out = []
  for offsets in np.ndindex(*window):
    at: list[Any] = [slice(None)] * blocks.ndim
    for axis, o in zip(axes, offsets):
      at[axis] = o
    out.append(blocks[tuple(at)])
  return out


def _blocks_selection(x: jax.Array, spec: WindowSpec,
                      op: str) -> tuple[jax.Array, jax.Array]:
  """The selection over non-overlapping windows of a blocked ``x``."""
  fill = identity(x.dtype, op)
  blocks, axes = _blocks(x, spec, fill)
  first_valid = _first_valid(spec)
  if spec.window_size <= MAX_FOLDED_BLOCK:
    # A few taps: PyTorch's loop over them, elementwise in one pass (the
    # reductions below read each block three times: 2x2/2 and 3x3/3
    # forward and backward 3-5x slower). Past 9 taps XLA recomputes the
    # fold for every element of the gradient: 4x4 costs the same either
    # way, a 13-tap 1-D window 15x more folded.
    return _scan_taps(_block_taps(blocks, axes, spec.window), op,
                      first_valid, _index_dtype(spec))
  # A reduction, not a fold: XLA would fuse a fold into each comparison
  # below, redoing it for every element (2.4x slower for 32x32 windows).
  best = reduce_extremum(blocks, axes, op, keepdims=True, fold_up_to=0)
  tap = _block_tap_iota(blocks.ndim, blocks.shape, axes)
  size = np.int32(spec.window_size)
  first = jnp.min(jnp.where(blocks == best, tap, size), axis=axes)
  last_nan = jnp.max(jnp.where(blocks != blocks, tap, np.int32(-1)), axis=axes)
  best = best.reshape(first.shape)
  # An all-fill window compares equal to its padding: PyTorch starts at the
  # first tap inside the input.
  index = jnp.where(best == fill, jnp.asarray(first_valid, np.int32), first)
  index = jnp.where(best != best, last_nan, index)
  return best, index.astype(_index_dtype(spec))


def _block_tap_iota(ndim: int, shape: Sequence[int],
                    axes: Sequence[int]) -> jax.Array:
  """The row-major tap index of every element of a blocked array."""
  tap = jnp.zeros((1,) * ndim, np.int32)
  for axis in axes:
    dims = [1] * ndim
    dims[axis] = shape[axis]
    tap = tap * np.int32(shape[axis]) + lax.broadcasted_iota(
        np.int32, dims, axis)
  return tap


def _selection(x: jax.Array, spec: WindowSpec, op: str,
               derivative: Lowering) -> tuple[jax.Array, jax.Array]:
  """The selection by ``derivative``, or over taps where it is not valid."""
  if not valid_derivative(derivative, spec):
    derivative = Lowering.TAPS
  if bounded(derivative, spec, op) is Lowering.COMPACT:
    y, position = _compact_selection(x, spec, op)
    return y, _position_to_tap(position, spec)
  if derivative is Lowering.RESHAPE and valid_derivative(derivative, spec):
    return _blocks_selection(x, spec, op)
  if derivative is Lowering.SLICES and valid_derivative(derivative, spec):
    return _slices_selection(x, spec, op)
  return _reference_selection(x, spec, op)


def selected_tap(x: jax.Array, spec: WindowSpec,
                 op: str) -> tuple[jax.Array, jax.Array]:
  """The max/min of each window and the index of the tap PyTorch picks.

  This is PyTorch's loop, ``if (val > best || isnan(val)) best = val``,
  started at the first in-bounds tap: ties keep the first tap, a NaN is
  always taken (so the last NaN wins), padding never wins. The index is the
  row-major position in the window, as int32. Each platform selects with
  its plan's derivative lowering.
  """
  def build(chosen: Plan):
    def select(x):
      y, index = _selection(x, spec, op, chosen.derivative)
      # Every platform's branch in x's dtype (some select in float32).
      return y.astype(x.dtype), index.astype(np.int32)
    return select

  return per_platform(
      lambda p: plan(spec, op, p, x.dtype, x.shape), build, x)


# ---------------------------------------------------------------------------
# COMPACT: the selection as one variadic reduce_window.

# The position of the padding: larger than any in a plane (at most
# MAX_SIZE elements), so it loses every tie.
_NOWHERE = np.int32(np.iinfo(np.int32).max)


def _plane_positions(spec: WindowSpec) -> jax.Array:
  """The flat row-major position of every element in its spatial plane,
  int32, shaped to broadcast against the input."""
  position = jnp.zeros((1,) * spec.ndim, np.int32)
  for axis, n in zip(spec.spatial_axes, spec.in_shape):
    dims = [1] * spec.ndim
    dims[axis] = n
    position = position * np.int32(n) + lax.broadcasted_iota(
        np.int32, dims, axis)
  return position


def _compact_selection(x: jax.Array, spec: WindowSpec,
                       op: str) -> tuple[jax.Array, jax.Array]:
  """The max/min of each window and the flat plane position PyTorch picks.

  One variadic ``reduce_window`` over ``(value, position)`` pairs. Its
  combiner keeps the better pair by PyTorch's rule (:func:`beats`), a total
  order, so it is associative and commutative; of equal numbers the earlier
  position is the earlier tap in row-major window order. The padding, ``(identity, _NOWHERE)``, loses every tie, so an
  all-``-inf`` window picks its first element inside the input; a window
  wholly in the padding gets ``_NOWHERE``. The values are in
  ``_compute_dtype(x.dtype)``.
  """
  v = x.astype(_compute_dtype(x.dtype))
  position = jnp.broadcast_to(_plane_positions(spec), v.shape)

  def combine(a, b):
    take = beats(b, a, op)
    return lax.select(take, b[0], a[0]), lax.select(take, b[1], a[1])

  return lax.reduce_window(
      (v, position), (identity(v.dtype, op), _NOWHERE), combine,
      spec.full(spec.window, 1), spec.full(spec.strides, 1),
      spec.full(spec.total_padding, (0, 0)),
      window_dilation=spec.full(spec.dilation, 1))


def beats(new: tuple[jax.Array, jax.Array], old: tuple[jax.Array, jax.Array],
          op: str) -> jax.Array:
  """Whether ``(value, position)`` pair ``new`` beats ``old`` by PyTorch's
  rule for ``op`` ("max" or "min"), a total order: any NaN beats any
  number, the later of two NaNs wins, the larger (max) or smaller (min)
  number wins, and of equal numbers the earlier position. The best of a
  union of sets is the best of their bests."""
  (vb, ib), (va, ia) = new, old
  better = lax.gt if op == "max" else lax.lt
  take = better(vb, va) | (lax.eq(vb, va) & lax.lt(ib, ia))
  if jnp.issubdtype(vb.dtype, jnp.inexact):
    a_nan, b_nan = lax.ne(va, va), lax.ne(vb, vb)
    take = lax.select(a_nan, b_nan & lax.gt(ib, ia), take | b_nan)
  return take


def _position_to_tap(position: jax.Array, spec: WindowSpec) -> jax.Array:
  """The row-major window tap of each chosen plane position (0 for
  ``_NOWHERE``, as :meth:`WindowSpec.first_valid_tap`)."""
  tap = jnp.zeros((1,) * spec.ndim, np.int32)
  stride = math.prod(spec.in_shape)
  for axis, n, k, s, d, (lo, _), o in zip(
      spec.spatial_axes, spec.in_shape, spec.window, spec.strides,
      spec.dilation, spec.padding, spec.out_shape):
    stride //= n
    coordinate = lax.rem(lax.div(position, np.int32(stride)), np.int32(n))
    dims = [1] * spec.ndim
    dims[axis] = o
    start = lax.broadcasted_iota(np.int32, dims, axis) * np.int32(s) - (
        np.int32(lo))
    tap = tap * np.int32(k) + lax.div(coordinate - start, np.int32(d))
  return jnp.where(position == _NOWHERE, np.int32(0), tap)


def _gather_positions(t: jax.Array, spec: WindowSpec,
                      position: jax.Array) -> jax.Array:
  """``t`` at each chosen plane position, zero for ``_NOWHERE``.

  Planes are flattened to ``(P, plane, Q)`` (the spatial dims are adjacent
  in both layouts) and the lookup mapped over ``P`` and ``Q``, so they are
  the gather's (and its transpose's scatter-add's) batching dims.
  """
  first, last = spec.spatial_axes[0], spec.spatial_axes[-1]
  lead, trail = t.shape[:first], t.shape[last + 1:]
  view = (math.prod(lead), math.prod(spec.in_shape), math.prod(trail))
  out_view = (view[0], math.prod(spec.out_shape), view[2])
  valid = position != _NOWHERE
  index = jnp.where(valid, position, np.int32(0)).reshape(out_view)
  take = lambda t, i: t.at[i].get(mode="promise_in_bounds",
                                  wrap_negative_indices=False)
  per_plane = jax.vmap(jax.vmap(take, in_axes=1, out_axes=1))
  gathered = per_plane(t.reshape(view), index).reshape(position.shape)
  return jnp.where(valid, gathered, jnp.zeros((), t.dtype))


# ---------------------------------------------------------------------------
# Tangents: the same taps, read from the tangent.


def _tangent_taps(t: jax.Array, spec: WindowSpec) -> list[jax.Array]:
  """Every tap of ``t``, zero where it reads padding, row-major.

  JAX transposes each into a pad with interior padding, which XLA fuses
  into one loop over the gradient: measured faster on CPU than reading the
  taps through a phase decomposition (reshape by stride, split, concatenate).
  """
  return [_tap(t, spec, offsets, "sum") for offsets in np.ndindex(*spec.window)]


def _select_taps(cases: Sequence[jax.Array], index: jax.Array) -> jax.Array:
  if len(cases) == 1:
    return cases[0]
  return lax.select_n(index.astype(np.int32), *cases)


def _select_blocks(t: jax.Array, spec: WindowSpec,
                   index: jax.Array) -> jax.Array:
  """Per window, the tangent at tap ``index``: a masked sum over blocks."""
  blocks, axes = _blocks(t, spec, 0)
  # Compared in the index's own (narrow) type: a conversion to int32 per
  # element of the gradient's loop costs more than the select (2x2/2: 1.5x).
  tap = _block_tap_iota(blocks.ndim, blocks.shape, axes).astype(index.dtype)
  mask = tap == jnp.expand_dims(index, axes)
  return jnp.sum(jnp.where(mask, blocks, jnp.zeros((), t.dtype)), axis=axes)


def _spread_config(spec: WindowSpec) -> list[tuple[int, int]]:
  """Per spatial dim of a stride-1 window, the pad ``(low, high)`` (either
  may be negative: a crop) that turns the outputs' extent into the span of
  every output reading any input: ``(window - 1) * dilation`` before the
  first input to the last, ``in + (window - 1) * dilation`` long."""
  config = []
  for n, k, d, (lo, _), o in zip(spec.in_shape, spec.window, spec.dilation,
                                 spec.total_padding, spec.out_shape):
    span = n + (k - 1) * d
    first = lo - (k - 1) * d  # The output read by input 0's last tap.
    config.append((-first, span - o + first))
  return config


def _spread_ok(spec: WindowSpec) -> bool:
  """Whether :func:`_selected_tangent` applies: stride 1, concrete sizes."""
  return not spec.symbolic and all(s == 1 for s in spec.strides)


def _selected_tangent(t: jax.Array, spec: WindowSpec,
                      index: jax.Array) -> jax.Array:
  """Per window of a stride-1 ``spec``, the tangent at tap ``index``.

  The same values as ``_select_taps(_tangent_taps(t, spec), index)``, but
  written so that JAX's transpose of it (the gradient) is one loop over
  the input: the cotangent and the index are padded once, each to the span
  of outputs that read any input (:func:`_spread_config`), and every tap's
  contribution to an input is a slice of those two padded arrays. A pad
  with several users is never fused by XLA, so both are written once, and
  the loop reads them, not the cotangent's producer (in a chain of pools,
  the next pool's gradient loop): per tap, XLA:CPU would otherwise keep the
  gradient as separate tap arrays and re-add them in every tap of the
  pool before (a chain of three 5x5 pools cost twelve single pools).
  """
  config = _spread_config(spec)
  spread = spec.full([(lo, hi, 0) for lo, hi in config], (0, 0, 0))
  # The index of an output outside the outputs matches no tap.
  marked = lax.pad(index, np.array(-1, index.dtype), spread)
  terms = []
  for tap, offsets in enumerate(np.ndindex(*spec.window)):
    place = [(0, 0, 0)] * t.ndim
    for axis, k, m, d in zip(spec.spatial_axes, spec.window, offsets,
                             spec.dilation):
      place[axis] = ((k - 1 - m) * d, m * d, 0)
    shifted = lax.pad(t, jnp.zeros((), t.dtype), place)
    term = lax.select(marked == np.array(tap, index.dtype), shifted,
                      jnp.zeros(shifted.shape, t.dtype))
    terms.append(term)
  total = functools.reduce(lax.add, terms)
  crop = spec.full([(-lo, -hi, 0) for lo, hi in config], (0, 0, 0))
  return lax.pad(total, jnp.zeros((), t.dtype), crop)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4))
def _extremum(x: jax.Array, spec: WindowSpec, op: str, forward: Lowering,
              derivative: Lowering) -> jax.Array:
  return _forward(x, spec, op, forward)


def _choose(x: jax.Array, spec: WindowSpec, op: str,
            derivative: Lowering) -> tuple[jax.Array, jax.Array]:
  """The max/min of each window and ``derivative``'s record of the element
  it took, for :func:`_chosen`."""
  if derivative is Lowering.COMPACT:
    return _compact_selection(x, spec, op)
  if derivative is Lowering.TAPS:
    return _reference_selection(x, spec, op)
  if derivative is Lowering.RESHAPE:
    return _blocks_selection(x, spec, op)
  return _slices_selection(x, spec, op)


def _chosen(t: jax.Array, spec: WindowSpec, derivative: Lowering,
            choice: jax.Array) -> jax.Array:
  """The tangent ``t`` at the element each window took (:func:`_choose`)."""
  if derivative is Lowering.COMPACT:
    return _gather_positions(t, spec, choice)
  if derivative is Lowering.TAPS:
    return _select_taps(taps(pad(t, spec, 0), spec), choice)
  if derivative is Lowering.RESHAPE:
    return _select_blocks(t, spec, choice)
  if _spread_ok(spec) and getattr(_state, "spread", True):
    # Stride 1 (chains of pools: SPPF, YOLO's SPP): a gradient of one loop.
    return _selected_tangent(t, spec, choice)
  return _select_taps(_tangent_taps(t, spec), choice)


@_extremum.defjvp
def _extremum_jvp(spec, op, forward, derivative, primals, tangents):
  del forward  # The selection gives the values too.
  (x,), (t,) = primals, tangents
  if not valid_derivative(derivative, spec):
    derivative = Lowering.TAPS  # A separable stage too wide for slices.
  derivative = bounded(derivative, spec, op)
  # Half precision converted once, whole: the selection and the gradient's
  # loop then run in float32 (exact: the result is one of the inputs; sums
  # of overlapping windows' cotangents are rounded once). XLA:CPU's
  # bfloat16 loops are 3-15x slower, and per tap the conversions would be
  # repeated in every loop. Other dtypes convert to themselves: no op.
  compute = _compute_dtype(x.dtype)
  y, choice = _choose(x.astype(compute), spec, op, derivative)
  return y.astype(x.dtype), _chosen(t.astype(compute), spec, derivative,
                                    choice).astype(t.dtype)


# ---------------------------------------------------------------------------
# Entry points.


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def wide_derivative(x: jax.Array, fn) -> jax.Array:
  """``fn(x)``, differentiated in float32 when ``x`` is half precision.

  ``fn`` is a max or min made of several steps (separable stages, a plain
  ``reduce_window`` with JAX's own derivative, adaptive stages): each step's
  derivative would round its sums of overlapping windows' cotangents to
  half precision, and the next step would sum and round again. Its
  derivative is taken from ``fn`` of ``x`` in float32 instead, so every sum
  is float32 and the gradient is rounded once, at the end; the value is
  exact either way (it is one of the inputs), so ``fn`` runs on ``x``
  itself when not differentiated.
  """
  return fn(x)


@wide_derivative.defjvp
def _wide_derivative_jvp(fn, primals, tangents):
  (x,), (t,) = primals, tangents
  wide = _compute_dtype(x.dtype)
  y, t_out = jax.jvp(fn, (x.astype(wide),), (t.astype(wide),))
  return y.astype(x.dtype), t_out.astype(t.dtype)


def _separable(x: jax.Array, spec: WindowSpec, op: str,
               derivative: Lowering) -> jax.Array:
  """The windowed ``op`` one spatial dim at a time, each stage's selection
  (if differentiated) by ``derivative`` where it is valid."""
  exact = op != "sum" and jnp.issubdtype(x.dtype, jnp.inexact)
  for stage in stages(spec):
    if not exact:
      x = _forward(x, stage, op, Lowering.PLAIN)
    else:
      # A non-overlapping stage as blocks: XLA:CPU would run its
      # reduce_window as a reduction that drops NaN.
      forward = (Lowering.RESHAPE if _non_overlapping(stage)
                 and not stage.symbolic else Lowering.PLAIN)
      x = _extremum(x, stage, op, forward, derivative)
  return x


def _widened(fn, x: jax.Array, op: str) -> jax.Array:
  """``fn(x)``, through :func:`wide_derivative` for half-precision max/min."""
  if op != "sum" and _compute_dtype(x.dtype) != x.dtype:
    return wide_derivative(x, fn)
  return fn(x)


def window_reduce(x: jax.Array, spec: WindowSpec, op: str, *,
                  shared: Callable[[str | None], bool] | None = None
                  ) -> jax.Array:
  """The windowed ``op`` ("sum", "max" or "min") of ``x`` over ``spec``.

  ``x`` is already in the dtype to accumulate in. Each platform computes
  it by its own :func:`plan`; where ``shared(platform)`` says so, its
  forward is one ``reduce_window`` (``PLAIN``) instead, the derivative
  still the plan's: a caller that reads the result in several places
  (XLA recomputes a fold of slices in each, but not a ``reduce_window``).
  A plan forced by :func:`use_plan` is kept whole.
  """
  _record(x, spec, op)
  if _plain_forced():
    return _planned(x, spec=spec, op=op, chosen=FORCED_PLAIN)

  def choose(platform):
    chosen = plan(spec, op, platform, x.dtype, x.shape)
    if (shared is not None and shared(platform)
        and getattr(_state, "plan", None) is None):
      chosen = Plan(Lowering.PLAIN, chosen.derivative)
    return chosen

  return per_platform(
      choose, lambda chosen: functools.partial(_planned, spec=spec, op=op,
                                               chosen=chosen), x)


def _planned(x: jax.Array, *, spec: WindowSpec, op: str,
             chosen: Plan) -> jax.Array:
  """The windowed ``op`` of ``x`` lowered as ``chosen`` says."""
  exact = op != "sum" and jnp.issubdtype(x.dtype, jnp.inexact)
  if chosen.forward is Lowering.SEPARABLE:
    # Each stage's values come from a 1-D reduce_window: as strided slices,
    # XLA fuses one stage into the next and recomputes it per tap (9x
    # slower at 13x13); its selection, if differentiated, as planned.
    return _widened(functools.partial(_separable, spec=spec, op=op,
                                      derivative=chosen.derivative), x, op)
  if not exact:
    # Sums are linear, so JAX's own derivative is the sum's transpose (pads
    # of the cotangent, fused), and integers and bools have no tangent.
    return _forward(x, spec, op, chosen.forward)
  if (_plain_forced() and chosen.forward is Lowering.PLAIN
      and all(d == 1 for d in spec.dilation)):
    # The forced plain path is flax's: JAX's own select-and-scatter VJP
    # (in float32 for half precision, as every other lowering's).
    return _widened(functools.partial(_forward, spec=spec, op=op,
                                      lowering=chosen.forward), x, op)
  # JAX has no VJP for dilated max/min reduce_window (NotImplementedError),
  # and its NaN choice is not PyTorch's: a plain lowering keeps
  # reduce_window for the value and takes our rule.
  return _extremum(x, spec, op, chosen.forward, chosen.derivative)

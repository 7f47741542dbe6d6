"""Measuring how far a model's outputs move when its input is shifted.

Pooling is said to make a network invariant to small shifts of its input;
Azulay & Weiss (2019) and Zhang (2019) measured that strided max pooling
breaks that, and that blur pooling (Zhang 2019) or adaptive polyphase
sampling (Chaman & Dokmanić 2021) restore it. The functions here measure the
property for any ``apply(x) -> logits or features`` callable, so a choice
between pooling layers can rest on a number:

* :func:`shift_consistency`: the fraction of inputs whose predicted class is
  the same under two random shifts (Zhang 2019's "consistency");
* :func:`feature_shift_error`: the mean relative change of the outputs per
  shift, to plot error against shift;
* :func:`shift` and :func:`random_shift_pairs`: the shifts they use, public
  so that a measurement can be reproduced by hand.

Inputs are ``(N, *spatial, C)``, or ``(N, C, *spatial)`` with
``channels_first=True``: one batch axis of ``N`` inputs, then any number of
spatial dims. Two kinds of shift:

* ``"circular"``: the input is rolled (``jnp.roll``); what leaves one side
  comes back on the other. As Chaman & Dokmanić, under which a network of
  circular convolutions, APS and global pooling is exactly invariant.
* ``"crop"``: the input is shifted inside a canvas: pad every spatial dim
  by ``m`` (at least the shift) with ``fill_value``, then crop the input's
  size back out starting at offset ``m - s``. The content moves by ``s``,
  what leaves the frame is lost and the uncovered border is
  ``fill_value``. This is the shift of a camera over a larger scene with an
  empty background, as Zhang's random crops.

A shift ``s`` moves content towards higher indices by ``s`` along each
spatial dim (``y[i] = x[i - s]``), in both modes.

Every function is pure, runs under ``jax.jit`` and ``jax.vmap`` (with
``progress=False``), draws its randomness from an explicit ``key``, and
calls ``apply`` on arrays of ``batch_size`` inputs (the last chunk is padded
with inputs that are then left out), so ``apply`` compiles once and memory
stays bounded on large sets. The measured values do not depend on
``batch_size``.

References: Zhang 2019, "Making Convolutional Networks Shift-Invariant
Again"; Azulay & Weiss 2019, "Why do deep convolutional networks generalize
so poorly to small image transformations?"; Chaman & Dokmanić 2021, "Truly
shift-invariant convolutional neural networks".
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool._spec import int_tuple
from jaxpool._typing import IntOrSequence

__all__ = (
    "feature_shift_error",
    "random_shift_pairs",
    "shift",
    "shift_consistency",
)

_MODES = ("crop", "circular")

#: A model: a batch of inputs in, a batch of logits or features out.
Apply = Callable[[jax.Array], jax.Array]


# ---------------------------------------------------------------------------
# Argument checks, once, at trace time.


def _check_x(x: ArrayLike, channels_first: bool) -> tuple[jax.Array,
                                                          tuple[int, ...]]:
  """``x`` as an array and its spatial axes (without the batch axis)."""
  if not isinstance(channels_first, (bool, np.bool_)):
    raise TypeError(f"channels_first must be a bool, got {channels_first!r}.")
  x = jnp.asarray(x)
  if x.ndim < 3:
    layout = "(N, C, *spatial)" if channels_first else "(N, *spatial, C)"
    raise ValueError(
        f"x must be a batch of inputs {layout} with at least one spatial dim, "
        f"got shape {x.shape}.")
  if x.shape[0] == 0:
    raise ValueError(f"x must hold at least one input, got shape {x.shape}.")
  nspatial = x.ndim - 2
  first = 1 if channels_first else 0
  axes = tuple(range(first, first + nspatial))
  if any(x.shape[1 + a] == 0 for a in axes):
    raise ValueError(f"x has an empty spatial dim: shape {x.shape}.")
  return x, axes


def _check_mode(mode: str) -> str:
  if mode not in _MODES:
    raise ValueError(f"mode must be 'crop' or 'circular', got {mode!r}.")
  return mode


def _check_apply(apply: Any) -> None:
  if not callable(apply):
    raise TypeError(f"apply must be a callable, got {apply!r}.")


def _check_batch_size(batch_size: Any, n: int) -> int:
  if batch_size is None:
    return n
  if isinstance(batch_size, (bool, np.bool_)) or not isinstance(
      batch_size, numbers.Integral):
    raise TypeError(f"batch_size must be an int or None, got {batch_size!r}.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size!r}.")
  return min(int(batch_size), n)


def _check_progress(progress: Any, *arrays: jax.Array) -> bool:
  if not isinstance(progress, (bool, np.bool_, str)):
    raise TypeError(
        f"progress must be a bool or a description string, got {progress!r}.")
  if progress is not False and any(
      isinstance(a, jax.core.Tracer) for a in arrays):
    raise ValueError(
        "progress needs concrete inputs: under jax.jit or jax.vmap pass "
        "progress=False.")
  return progress is not False


def _check_shifts(shifts: ArrayLike, nspatial: int, name: str) -> jax.Array:
  """Shifts as int32, ``(..., nspatial)``; a trailing axis is added to
  shifts given as one int per row (the same shift along every dim)."""
  shifts = jnp.asarray(shifts)
  if not jnp.issubdtype(shifts.dtype, jnp.integer):
    raise TypeError(f"{name} must hold integers, got dtype {shifts.dtype}.")
  return shifts.astype(jnp.int32)


def _features_dtype(dtype) -> np.dtype:
  """Norms of half-precision features are taken in float32."""
  dtype = np.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.inexact) and dtype.itemsize >= 4:
    return dtype
  return np.dtype(np.float32)


# ---------------------------------------------------------------------------
# Shifts.


def _shift_one(img: jax.Array, s: jax.Array, axes: tuple[int, ...],
               mode: str, fill: jax.Array) -> jax.Array:
  """One input (no batch axis) shifted by ``s``, one int per spatial axis."""
  out = jnp.roll(img, s, axis=axes)
  if mode == "crop":
    # The pad-and-crop of the docs, written as a roll whose wrapped-around
    # part is overwritten: the same values, without building the canvas.
    for k, axis in enumerate(axes):
      n = img.shape[axis]
      source = jnp.arange(n, dtype=jnp.int32) - s[k]
      inside = (source >= 0) & (source < n)
      shape = [1] * img.ndim
      shape[axis] = n
      out = jnp.where(inside.reshape(shape), out, fill)
  return out


def _shift(x: jax.Array, shifts: jax.Array, axes: tuple[int, ...], mode: str,
           fill: jax.Array) -> jax.Array:
  """``x`` shifted by ``shifts``: ``(nspatial,)`` for all, or one row each."""
  per_input = 0 if shifts.ndim == 2 else None
  return jax.vmap(_shift_one, in_axes=(0, per_input, None, None, None))(
      x, shifts, axes, mode, fill)


def _fill(fill_value: Any, dtype) -> jax.Array:
  if isinstance(fill_value, jax.core.Tracer):
    return lax.convert_element_type(fill_value, dtype)
  return jnp.asarray(np.asarray(fill_value, dtype))


def shift(x: ArrayLike, shifts: ArrayLike, *, mode: str = "crop",
          fill_value: ArrayLike = 0, channels_first: bool = False
          ) -> jax.Array:
  """Shifts every input of a batch along its spatial dims.

  Shapes: ``x`` is ``(N, *spatial, C)``, or ``(N, C, *spatial)`` with
  ``channels_first=True``; ``shifts`` is an int (the same shift along every
  spatial dim of every input), ``(nspatial,)`` (one per dim, every input),
  or ``(N, nspatial)`` (one row per input). The result has ``x``'s shape and
  dtype: ``y[n, i] = x[n, i - s]`` along each spatial dim, where ``i - s``
  wraps around (``"circular"``) or, outside ``[0, size)``, reads
  ``fill_value`` (``"crop"``: a shift inside a canvas padded with
  ``fill_value``, cropped back to ``x``'s size).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxpool import invariance
    >>> x = jnp.arange(1, 6).reshape(1, 5, 1)
    >>> invariance.shift(x, 2, mode="circular")[0, :, 0]
    Array([4, 5, 1, 2, 3], dtype=int32)
    >>> invariance.shift(x, -1, mode="crop")[0, :, 0]
    Array([2, 3, 4, 5, 0], dtype=int32)

  Args:
    x: the inputs.
    shifts: signed integer shifts; may be traced.
    mode: ``"crop"`` or ``"circular"``.
    fill_value: what a ``"crop"`` shift puts where no input is.
    channels_first: the layout is ``(N, C, *spatial)``.

  Returns:
    the shifted inputs.

  Raises:
    ValueError: for an unknown ``mode``, ``x`` with fewer than 3 dims, or
      ``shifts`` of the wrong shape.
    TypeError: for non-integer ``shifts``.
  """
  x, axes = _check_x(x, channels_first)
  mode = _check_mode(mode)
  shifts = _check_shifts(shifts, len(axes), "shifts")
  if shifts.ndim == 0:
    shifts = jnp.broadcast_to(shifts, (len(axes),))
  if shifts.shape not in ((len(axes),), (x.shape[0], len(axes))):
    raise ValueError(
        f"shifts must be an int, ({len(axes)},) or ({x.shape[0]}, "
        f"{len(axes)}) for x of shape {x.shape}, got shape {shifts.shape}.")
  return _shift(x, shifts, axes, mode, _fill(fill_value, x.dtype))


def random_shift_pairs(key: jax.Array, num: int, max_shift: IntOrSequence,
                       *, nspatial: int | None = None) -> jax.Array:
  """The two random shifts of each input that :func:`shift_consistency`
  draws from the same ``key``.

  Every shift is drawn independently and uniformly from the integers
  ``-max_shift .. max_shift`` along each spatial dim, so each shifted copy
  is at most ``max_shift`` from the original and the two copies of an input
  differ by up to ``2 * max_shift``; they may coincide.

  Example:
    >>> import jax
    >>> from jaxpool import invariance
    >>> pairs = invariance.random_shift_pairs(jax.random.key(0), 5, 4)
    >>> pairs.shape, bool(abs(pairs).max() <= 4)
    ((5, 2, 2), True)

  Args:
    key: a ``jax.random`` key.
    num: the number of inputs.
    max_shift: the largest shift, an int or one per spatial dim.
    nspatial: the number of spatial dims; default ``len(max_shift)`` for a
      sequence, else 2.

  Returns:
    an int32 array ``(num, 2, nspatial)``: row ``n`` holds the two shifts of
    input ``n``.

  Raises:
    ValueError: for a negative ``num`` or ``max_shift``, or a ``max_shift``
      sequence whose length is not ``nspatial``.
  """
  if isinstance(num, (bool, np.bool_)) or not isinstance(
      num, numbers.Integral):
    raise TypeError(f"num must be an int, got {num!r}.")
  if num < 0:
    raise ValueError(f"num must be >= 0, got {num!r}.")
  if nspatial is None:
    nspatial = (len(max_shift) if isinstance(max_shift, (tuple, list))
                else 2)
  nspatial = int_tuple(nspatial, 1, "nspatial")[0]
  bound = np.asarray(int_tuple(max_shift, nspatial, "max_shift", minimum=0),
                     np.int32)
  shape = (int(num), 2, nspatial)
  bound = np.broadcast_to(bound, shape)
  return jax.random.randint(key, shape, -bound, bound + 1, dtype=jnp.int32)


# ---------------------------------------------------------------------------
# Batched evaluation.


def _chunks(arrays: tuple[jax.Array, ...], n: int,
            b: int) -> tuple[tuple[jax.Array, ...], jax.Array]:
  """Arrays of leading size ``n`` as ``(n_chunks, b, ...)``, and the mask of
  real entries. The last chunk is filled up with the first inputs (real
  data, so ``apply`` sees nothing unusual), which the mask leaves out."""
  count = -(-n // b)
  pad = count * b - n
  valid = np.arange(count * b) < n
  out = []
  for a in arrays:
    if pad:
      a = jnp.concatenate([a, a[:pad]], axis=0)
    out.append(a.reshape((count, b) + a.shape[1:]))
  return tuple(out), jnp.asarray(valid.reshape(count, b))


def _run(fn: Callable[..., jax.Array], arrays: tuple[jax.Array, ...],
         n: int, b: int, progress: bool | str) -> jax.Array:
  """Sums ``fn(*chunk, valid)`` over chunks of ``b`` inputs."""
  chunks, valid = _chunks(arrays, n, b)
  if progress is False:
    return jnp.sum(lax.map(lambda c: fn(*c), chunks + (valid,)), axis=0)
  try:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "progress needs tqdm (pip install tqdm), or pass progress=False."
    ) from e
  step = jax.jit(fn)
  total: jax.Array | None = None
  desc = progress if isinstance(progress, str) else None
  with tqdm(total=n, desc=desc, unit="input", leave=False) as bar:
    for i in range(valid.shape[0]):
      part = step(*(c[i] for c in chunks), valid[i])
      total = part if total is None else total + part
      bar.update(min(b, n - i * b))
  assert total is not None  # n >= 1: one chunk at least.
  return total


def _call(apply: Apply, x: jax.Array, what: str) -> jax.Array:
  out = jnp.asarray(apply(x))
  if out.ndim < 1 or out.shape[0] != x.shape[0]:
    raise ValueError(
        f"apply must return one row per input: for a batch of shape "
        f"{x.shape} it returned shape {out.shape} ({what}).")
  return out


def shift_consistency(apply: Apply, x: ArrayLike, *,
                      max_shift: IntOrSequence, key: jax.Array,
                      mode: str = "crop", fill_value: ArrayLike = 0,
                      batch_size: int | None = None,
                      channels_first: bool = False,
                      progress: bool | str = False) -> jax.Array:
  """The fraction of inputs whose predicted class survives a random shift.

  Zhang (2019)'s consistency: each input is shifted twice, by two shifts
  drawn independently and uniformly from ``-max_shift .. max_shift`` along
  every spatial dim (:func:`random_shift_pairs` with the same ``key`` gives
  them), and the input counts as consistent when ``argmax`` of ``apply``'s
  logits is the same for both copies. 1.0 is a model whose prediction no
  shift changes; Zhang reports it in percent.

  Shapes: ``x`` is ``(N, *spatial, C)``, or ``(N, C, *spatial)`` with
  ``channels_first=True``; ``apply`` maps a batch ``(B, ...)`` of inputs
  to logits ``(B, K)``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jaxpool import invariance
    >>> w = jax.random.normal(jax.random.key(1), (3, 10))
    >>> model = lambda x: jnp.mean(x, axis=(1, 2)) @ w  # invariant: GAP
    >>> x = jax.random.normal(jax.random.key(2), (32, 8, 8, 3))
    >>> invariance.shift_consistency(model, x, max_shift=2,
    ...                              key=jax.random.key(0), mode="circular")
    Array(1., dtype=float32)

  Args:
    apply: the model, ``(B, ...) -> (B, K)`` logits; any JAX-traceable
      callable (e.g. ``functools.partial(module.apply, variables)``).
    x: the inputs.
    max_shift: the largest shift, an int or one per spatial dim; smaller
      than the spatial size.
    key: a ``jax.random`` key for the shifts.
    mode: ``"crop"`` (a shift inside a canvas padded with ``fill_value``) or
      ``"circular"`` (a roll); see the module docs.
    fill_value: what a ``"crop"`` shift puts where no input is.
    batch_size: how many inputs ``apply`` sees at a time; default all. The
      result does not depend on it.
    channels_first: the layout is ``(N, C, *spatial)``.
    progress: show a ``tqdm`` progress bar (a string: its description);
      needs concrete inputs, not under ``jit``/``vmap``.

  Returns:
    a float32 scalar in ``[0, 1]``.

  Raises:
    ValueError: for an unknown ``mode``, ``x`` with fewer than 3 dims or no
      inputs, a negative ``max_shift`` or one not smaller than the spatial
      size, ``batch_size < 1``, ``apply`` returning other than ``(B, K)``,
      or ``progress`` under a trace.
    TypeError: for a non-callable ``apply`` and arguments of wrong types.

  References: Zhang 2019, "Making Convolutional Networks Shift-Invariant
  Again" (consistency); Chaman & Dokmanić 2021, "Truly shift-invariant
  convolutional neural networks" (circular shifts).
  """
  _check_apply(apply)
  x, axes = _check_x(x, channels_first)
  mode = _check_mode(mode)
  nspatial = len(axes)
  bound = int_tuple(max_shift, nspatial, "max_shift", minimum=0)
  sizes = tuple(x.shape[1 + a] for a in axes)
  if any(m >= s for m, s in zip(bound, sizes)):
    raise ValueError(
        f"max_shift must be smaller than the spatial size {sizes}, got "
        f"{max_shift!r}.")
  n = x.shape[0]
  b = _check_batch_size(batch_size, n)
  show = _check_progress(progress, x, key)
  pairs = random_shift_pairs(key, n, bound, nspatial=nspatial)
  fill = _fill(fill_value, x.dtype)

  def agreements(xb, pb, valid):
    first = _call(apply, _shift(xb, pb[:, 0], axes, mode, fill), "logits")
    second = _call(apply, _shift(xb, pb[:, 1], axes, mode, fill), "logits")
    if first.ndim != 2:
      raise ValueError(
          f"apply must return logits (B, K) for shift_consistency, got "
          f"shape {first.shape}.")
    same = jnp.argmax(first, axis=-1) == jnp.argmax(second, axis=-1)
    return jnp.sum(jnp.where(valid, same, False), dtype=jnp.int32)

  agree = _run(agreements, (x, pairs), n, b, progress if show else False)
  return agree.astype(jnp.float32) / np.float32(n)


def feature_shift_error(apply: Apply, x: ArrayLike, shifts: ArrayLike, *,
                        mode: str = "crop", fill_value: ArrayLike = 0,
                        batch_size: int | None = None,
                        channels_first: bool = False,
                        progress: bool | str = False) -> jax.Array:
  """The mean relative change of ``apply``'s outputs, for each shift.

  For each shift ``s``, the mean over the inputs of
  ``||f(shift(x, s)) - f(x)|| / ||f(x)||``, with ``f = apply`` and the
  Euclidean norm over all of an output's entries. It measures invariance:
  ``0`` for outputs a shift does not change, about ``sqrt(2)`` for outputs
  it leaves as large but unrelated. Give it invariant outputs (logits,
  class probabilities, globally pooled features) and plot it against the
  shift; a feature map that moves with its input (equivariant) has a large
  error by design, so pool it globally inside ``apply`` first. Inputs with
  ``f(x) = 0`` give ``inf`` or ``nan``.

  Shapes: ``x`` is ``(N, *spatial, C)``, or ``(N, C, *spatial)`` with
  ``channels_first=True``; ``shifts`` is ``(S,)`` (shift ``shifts[k]``
  along every spatial dim, e.g. the diagonal shifts of Zhang's plots) or
  ``(S, nspatial)``; ``apply`` maps a batch ``(B, ...)`` to ``(B, ...)``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jaxpool import invariance
    >>> x = jax.random.normal(jax.random.key(0), (16, 8, 8, 3))
    >>> gap = lambda x: jnp.mean(x, axis=(1, 2))  # invariant to rolls
    >>> invariance.feature_shift_error(gap, x, jnp.arange(4),
    ...                                mode="circular").round(4)
    Array([0., 0., 0., 0.], dtype=float32)

  Args:
    apply: the model, ``(B, ...) -> (B, ...)``; any JAX-traceable callable.
    x: the inputs.
    shifts: signed integer shifts, may be traced.
    mode: ``"crop"`` (a shift inside a canvas padded with ``fill_value``) or
      ``"circular"`` (a roll); see the module docs.
    fill_value: what a ``"crop"`` shift puts where no input is.
    batch_size: how many inputs ``apply`` sees at a time; default all. The
      result does not depend on it.
    channels_first: the layout is ``(N, C, *spatial)``.
    progress: show a ``tqdm`` progress bar (a string: its description);
      needs concrete inputs, not under ``jit``/``vmap``.

  Returns:
    ``(S,)`` errors, float32 (float64 for float64 outputs).

  Raises:
    ValueError: for an unknown ``mode``, ``x`` with fewer than 3 dims or no
      inputs, ``shifts`` of the wrong shape, a concrete ``"crop"`` shift not
      smaller than the spatial size, ``batch_size < 1``, ``apply`` not
      returning one row per input, or ``progress`` under a trace.
    TypeError: for a non-callable ``apply`` and arguments of wrong types.

  References: Zhang 2019, "Making Convolutional Networks Shift-Invariant
  Again"; Azulay & Weiss 2019, "Why do deep convolutional networks
  generalize so poorly to small image transformations?".
  """
  _check_apply(apply)
  x, axes = _check_x(x, channels_first)
  mode = _check_mode(mode)
  nspatial = len(axes)
  shifts = _check_shifts(shifts, nspatial, "shifts")
  if shifts.ndim == 1:
    shifts = jnp.broadcast_to(shifts[:, None], (shifts.shape[0], nspatial))
  if shifts.ndim != 2 or shifts.shape[1] != nspatial:
    raise ValueError(
        f"shifts must be (S,) or (S, {nspatial}) for {nspatial} spatial "
        f"dims, got shape {shifts.shape}.")
  if shifts.shape[0] == 0:
    raise ValueError("shifts must hold at least one shift.")
  sizes = np.asarray([x.shape[1 + a] for a in axes])
  if mode == "crop" and not isinstance(shifts, jax.core.Tracer):
    if np.any(np.abs(np.asarray(shifts)) >= sizes):
      raise ValueError(
          f"shifts must be smaller than the spatial size {tuple(sizes)} for "
          f"mode 'crop' (it would leave no input), got "
          f"{np.asarray(shifts).tolist()}.")
  n = x.shape[0]
  b = _check_batch_size(batch_size, n)
  show = _check_progress(progress, x, shifts)
  fill = _fill(fill_value, x.dtype)

  def errors(xb, valid):
    reference = _call(apply, xb, "features")
    dtype = _features_dtype(reference.dtype)
    reference = reference.reshape(reference.shape[0], -1).astype(dtype)
    norm = jnp.linalg.norm(reference, axis=-1)

    def one(s):
      moved = _call(apply, _shift(xb, s, axes, mode, fill), "features")
      moved = moved.reshape(moved.shape[0], -1).astype(dtype)
      error = jnp.linalg.norm(moved - reference, axis=-1) / norm
      return jnp.sum(jnp.where(valid, error, jnp.zeros((), dtype)))

    return lax.map(one, shifts)

  total = _run(errors, (x,), n, b, progress if show else False)
  return total / np.asarray(n, total.dtype)

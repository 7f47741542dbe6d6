"""Segment (ragged) pooling: a reduction over groups of rows of one array.

Graph and point-cloud models pool the nodes of many graphs packed into one
array, each node labelled with its graph (PyTorch Geometric's ``batch``).
``jax.ops.segment_*`` computes such reductions but leaves empty segments at
the reduction's identity (``-inf`` for a max) and splits the gradient of a
max by its own rule; :func:`segment_pool` gives PyTorch Geometric's values
(empty segments 0) and gradients, and :mod:`jaxpool.graph` its readouts.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxpool._pooling import accumulation_dtype, check_p, lp_power, lp_root
from jaxpool._sharding import partitioned

_METHODS = ("sum", "mean", "max", "min", "lp")


def _check_num_segments(num_segments) -> int:
  if isinstance(num_segments, (bool, np.bool_)) or not isinstance(
      num_segments, numbers.Integral):
    raise TypeError(
        "num_segments must be a static int (it sets the output's shape; "
        f"under jit, pass it as a static argument), got {num_segments!r}.")
  if num_segments < 0:
    raise ValueError(f"num_segments must be >= 0, got {num_segments}.")
  return int(num_segments)


def _segment_sum(x, ids, n, sorted_):
  return jax.ops.segment_sum(x, ids, n, indices_are_sorted=sorted_)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _segment_max(x: jax.Array, ids: jax.Array, n: int,
                 sorted_: bool) -> jax.Array:
  y = jax.ops.segment_max(x, ids, n, indices_are_sorted=sorted_)
  # Empty segments hold the identity, -inf: PyTorch Geometric's are 0.
  count = _segment_sum(jnp.ones(ids.shape, np.int32), ids, n, sorted_)
  full = count.reshape(count.shape + (1,) * (x.ndim - 1)) > 0
  return jnp.where(full, y, np.zeros((), y.dtype))


@_segment_max.defjvp
def _segment_max_jvp(n, sorted_, primals, tangents):
  # torch.scatter_reduce's "amax" rule, which PyTorch Geometric's max
  # readout uses: a segment's gradient is shared equally among the rows
  # that equal its maximum. Linear in the tangent, so it transposes.
  x, ids = primals
  t, _ = tangents
  y = _segment_max(x, ids, n, sorted_)
  acc, _ = accumulation_dtype(t.dtype)
  tied = (x == jnp.take(y, ids, axis=0, mode="clip")).astype(acc)
  ties = _segment_sum(tied, ids, n, sorted_)
  some = ties > 0
  t_out = _segment_sum(t.astype(acc) * tied, ids, n, sorted_) / jnp.where(
      some, ties, np.ones((), acc))
  return y, t_out.astype(t.dtype)


@partitioned(arrays=2)
def segment_pool(x: ArrayLike, segment_ids: ArrayLike, num_segments: int, *,
                 method: str = "mean", p: float | None = None,
                 indices_are_sorted: bool = False) -> jax.Array:
  """Pools the rows of ``x`` that share a segment id, PyTorch Geometric's way.

  Row ``i`` of ``x`` belongs to segment ``segment_ids[i]``; the result's row
  ``s`` reduces the rows of segment ``s`` with ``method``: ``"sum"``,
  ``"mean"``, ``"max"``, ``"min"`` or ``"lp"`` (``(sum x**p) ** (1/p)``,
  :func:`lp_pool`'s rule: whole powers of negative rows as torch's
  ``pow``, value and gradient 0 where the sum is 0). An empty segment
  gives 0 (as
  ``torch_geometric.utils.scatter``), with zero gradient; ids outside
  ``[0, num_segments)`` are dropped. Values and gradients equal PyTorch
  Geometric's: the mean divides by the segment's size; the gradient of a
  max (min) is shared equally among the rows that equal it, as
  ``torch.Tensor.scatter_reduce(..., "amax")`` and ``torch.amax``. (One
  difference: PyTorch Geometric reduces into zeros with
  ``include_self=False``, and torch's backward then counts those zeros as
  tied where a segment's maximum is exactly 0, dividing its gradient by
  the ties plus one; jaxpool passes on the whole gradient.) Half precision
  accumulates in float32; integer means give the default float dtype.

  Shapes: ``x`` is ``(n, *features)``, ``segment_ids`` is ``(n,)``; the
  result is ``(num_segments, *features)``. ``n`` may be symbolic
  (``jax.export``); ``num_segments`` is a static int.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.array([[1.0], [3.0], [5.0], [7.0]])
    >>> ids = jnp.array([0, 0, 2, 2])  # segment 1 is empty
    >>> jaxpool.segment_pool(x, ids, 3).ravel().tolist()
    [2.0, 0.0, 6.0]
    >>> jaxpool.segment_pool(x, ids, 3, method="max").ravel().tolist()
    [3.0, 0.0, 7.0]
    >>> rows = jnp.array([[3.0], [4.0]])
    >>> jaxpool.segment_pool(rows, jnp.array([0, 0]), 1, method="lp", p=2.0)
    Array([[5.]], dtype=float32)

  Args:
    x: the rows to pool, float, integer or bool (bool: max and min only).
    segment_ids: int, one per row of ``x``.
    num_segments: the number of segments, a static int.
    method: ``"sum"``, ``"mean"``, ``"max"``, ``"min"`` or ``"lp"``.
    p: the power of ``method="lp"``, finite and positive; only with it.
    indices_are_sorted: promise that ``segment_ids`` are sorted (faster on
      some platforms; a false promise gives wrong results).

  Returns:
    ``(num_segments, *features)``, of ``x``'s dtype (float for an integer
    mean).

  Raises:
    ValueError: for an unknown ``method``, a negative ``num_segments``,
      ``segment_ids`` not of shape ``(x.shape[0],)``, or ``p`` missing for
      ``method="lp"``, given for another method, or not finite and
      positive.
    TypeError: for a ``num_segments`` that is not a static int, or
      ``segment_ids`` that are not integers.
  """
  x = jnp.asarray(x)
  ids = jnp.asarray(segment_ids)
  n = _check_num_segments(num_segments)
  if method not in _METHODS:
    raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
  if (p is None) == (method == "lp"):
    raise ValueError(
        "p is the power of method='lp' and needs it; got "
        f"method={method!r}, p={p!r}.")
  power = None if p is None else check_p(p)
  if not isinstance(indices_are_sorted, (bool, np.bool_)):
    raise TypeError(
        f"indices_are_sorted must be a bool, got {indices_are_sorted!r}.")
  sorted_ = bool(indices_are_sorted)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise TypeError(f"segment_ids must be integers, got dtype {ids.dtype}.")
  if x.ndim < 1 or ids.shape != x.shape[:1]:
    raise ValueError(
        f"segment_ids must have shape (x.shape[0],), got {ids.shape} for x "
        f"of shape {x.shape}.")
  if method in ("max", "min"):
    if not jnp.issubdtype(x.dtype, jnp.inexact):
      # No gradient to route: the plain segment reduction, empties set to 0.
      y = (jax.ops.segment_max if method == "max" else jax.ops.segment_min)(
          x, ids, n, indices_are_sorted=sorted_)
      count = _segment_sum(jnp.ones(ids.shape, np.int32), ids, n, sorted_)
      full = count.reshape(count.shape + (1,) * (x.ndim - 1)) > 0
      return jnp.where(full, y, np.zeros((), y.dtype))
    if method == "min":
      y = -_segment_max(-x, ids, n, sorted_)
      # An empty segment's -0 made +0, as PyTorch Geometric's zeros.
      return jnp.where(y == 0, np.zeros((), y.dtype), y)
    return _segment_max(x, ids, n, sorted_)
  acc, out = accumulation_dtype(x.dtype)
  if method == "sum":
    acc, out = (acc, x.dtype) if jnp.issubdtype(x.dtype, jnp.inexact) else (
        x.dtype, x.dtype)
    if x.dtype == np.bool_:
      raise ValueError("method='sum' needs numbers, got bool x.")
    return _segment_sum(x.astype(acc), ids, n, sorted_).astype(out)
  if x.dtype == np.bool_:
    raise ValueError(f"method={method!r} needs numbers, got bool x.")
  if power is not None:
    total = _segment_sum(lp_power(x.astype(acc), power), ids, n, sorted_)
    return lp_root(total, power).astype(out)
  total = _segment_sum(x.astype(acc), ids, n, sorted_)
  count = _segment_sum(jnp.ones(ids.shape, acc), ids, n, sorted_)
  # PyTorch Geometric's divisor, the size clamped to at least 1.
  count = jnp.maximum(count, np.ones((), acc))
  return (total / count.reshape(count.shape + (1,) * (x.ndim - 1))).astype(
      out)


"""Stochastic pooling (Zeiler & Fergus 2013).

Training samples one element of each window with probability proportional to
its value; evaluation takes the expectation of that choice, the
probability-weighted mean ``sum(a * a) / sum(a)``: two windowed sums of the
core. The training pick is one uniform draw per window compared against the
running sum of its taps (strided slices of the input, an elementwise loop
that XLA fuses), so no window is materialised and nothing is sorted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxpool import _lowering
from jaxpool._pooling import accumulation_dtype, documented
from jaxpool._sharding import partitioned
from jaxpool._spec import WindowSpec, window_spec
from jaxpool._typing import IntOrSequence, PaddingLike


def _expectation(x: jax.Array, spec: WindowSpec) -> jax.Array:
  """``sum(a * a) / sum(a)`` per window, 0 where the sum is 0."""
  total = _lowering.window_reduce(x, spec, "sum")
  squares = _lowering.window_reduce(x * x, spec, "sum")
  nonzero = total != 0
  # A safe divisor, so that neither the value nor its gradient is 0 / 0 in
  # the branch that where() drops.
  safe = jnp.where(nonzero, total, np.asarray(1, x.dtype))
  return jnp.where(nonzero, squares / safe, np.asarray(0, x.dtype))


def _sample(x: jax.Array, spec: WindowSpec, key: jax.Array) -> jax.Array:
  """One element per window, element ``j`` with probability ``a_j / sum(a)``.

  With ``u`` uniform in ``[0, 1)`` the pick is the first tap whose running
  sum exceeds ``u * sum(a)``: it has ``a_j > 0``, and the probability of
  tap ``j`` is the length of its interval, ``a_j / sum(a)``. The threshold
  is kept below the sum itself, where ``u * sum`` could round up to it.
  """
  xp = _lowering.pad(x, spec, 0)
  taps = _lowering.taps(xp, spec)
  running = [lax.stop_gradient(taps[0])]
  for tap in taps[1:]:
    running.append(running[-1] + lax.stop_gradient(tap))
  total = running[-1]
  u = jax.random.uniform(key, total.shape, total.dtype)
  threshold = jnp.minimum(u * total,
                          jnp.nextafter(total, jnp.zeros_like(total)))
  value = jnp.zeros_like(taps[0])
  found = jnp.zeros(total.shape, bool)
  for tap, cum in zip(taps, running):
    hit = jnp.logical_and(jnp.logical_not(found), cum > threshold)
    value = jnp.where(hit, tap, value)
    found = jnp.logical_or(found, hit)
  return value


@partitioned
@documented
def stochastic_pool(x: ArrayLike, window_shape: IntOrSequence,
                    strides: IntOrSequence | None = None,
                    padding: PaddingLike = "VALID", *,
                    key: jax.Array | None = None, deterministic: bool = False,
                    channels_first: bool = False) -> jax.Array:
  """Stochastic pooling: a window element drawn with probability ``a / sum(a)``.

  In training (``deterministic=False``) each window outputs one of its
  elements, element ``i`` with probability ``p_i = a_i / sum(a)``, drawn
  with ``key``; the gradient flows to the drawn element only, as max
  pooling's flows to the maximum. In evaluation (``deterministic=True``,
  no key needed) each window outputs the expectation ``sum(p_i * a_i) =
  sum(a * a) / sum(a)``. A window whose sum is 0 gives 0 either way. The
  inputs are assumed non-negative (after a ReLU), as in the paper; that is
  not checked. Padding is zeros, which are never drawn. Half precision
  computes in float32.

  {layout}

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import jaxpool
    >>> x = jnp.array([1.0, 3.0, 0.0, 0.0]).reshape(1, 4, 1)
    >>> jaxpool.stochastic_pool(x, (2,), deterministic=True)[0, :, 0]
    Array([2.5, 0. ], dtype=float32)
    >>> y = jaxpool.stochastic_pool(x, (2,), key=jax.random.key(0))
    >>> float(y[0, 0, 0]) in (1.0, 3.0)
    True

  Args:
    x: the input, floating point, non-negative.
    window_shape: the window's size along each spatial dim, or an int for
      every spatial dim (see Shapes).
    strides: an int or one per spatial dim; default: the window.
    padding: ``"VALID"``, ``"SAME"``, an int, ints, or ``(low, high)`` pairs.
    key: a PRNG key for the draws; needed unless ``deterministic``.
    deterministic: evaluate: the expectation instead of a draw.
    channels_first: the layout is ``(*batch, C, *spatial)``.

  Returns:
    the pooled array, of ``x``'s dtype.

  Raises:
    ValueError: for no ``key`` in training, and as :func:`jaxpool.max_pool`
      for bad window arguments.
    TypeError: for non-float ``x`` or a non-bool ``deterministic``.

  References:
    Zeiler & Fergus 2013, "Stochastic Pooling for Regularization of Deep
    Convolutional Neural Networks" (ICLR).
  """
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"x must be floating point, got dtype {x.dtype}.")
  if not isinstance(deterministic, (bool, np.bool_)):
    raise TypeError(f"deterministic must be a bool, got {deterministic!r}.")
  spec = window_spec(x.shape, window_shape, strides, padding,
                     channels_first=channels_first)
  acc, out = accumulation_dtype(x.dtype)
  xa = x.astype(acc)
  if deterministic:
    return _expectation(xa, spec).astype(out)
  if key is None:
    raise ValueError(
        "key is needed to draw (deterministic=False); give a key, or "
        "deterministic=True to evaluate.")
  return _sample(xa, spec, key).astype(out)

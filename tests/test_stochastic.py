"""Tests of stochastic pooling.

References: the paper's definitions (Zeiler & Fergus 2013, section 3): a
NumPy loop for the evaluation form ``sum(p_i a_i)``, ``p_i = a_i / sum(a)``,
and, for the training form, the support of each draw, the gradient going to
the drawn element, and the frequencies of the draws against ``p_i`` (a
chi-square bound over many windows).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxpool
from test_adaptive import to_bcs
from test_fractional import function_fields, linen_key, module_fields


def numpy_windows(x, window, strides, padding, rank, channels_first):
  """Every window of ``x`` (zero padded), as ``(batch, C, *out, taps)``."""
  xb, undo = to_bcs(x, rank, channels_first)
  xp = np.pad(xb, [(0, 0), (0, 0)] + list(padding))
  out = [(xp.shape[2 + d] - window[d]) // strides[d] + 1 for d in range(rank)]
  result = np.zeros(xb.shape[:2] + tuple(out) + (int(np.prod(window)),),
                    xb.dtype)
  for pos in itertools.product(*[range(o) for o in out]):
    taps = []
    for offset in itertools.product(*[range(k) for k in window]):
      index = tuple(p * s + t for p, s, t in zip(pos, strides, offset))
      taps.append(xp[(slice(None), slice(None)) + index])
    result[(slice(None), slice(None)) + pos] = np.stack(taps, -1)
  return result, undo


def numpy_expectation(x, window, strides, padding, rank, channels_first):
  """``sum(p_i a_i)`` per window by the definition, in float64."""
  w, undo = numpy_windows(x.astype(np.float64), window, strides, padding,
                          rank, channels_first)
  total = w.sum(-1, keepdims=True)
  p = np.divide(w, total, out=np.zeros_like(w), where=total != 0)
  return undo((p * w).sum(-1))


def relu_input(rng, shape, dtype=np.float32):
  """Non-negative values, with whole zero windows likely."""
  return np.maximum(rng.standard_normal(shape), 0).astype(dtype)


CONFIGS = [
    (1, (9,), (3,), (2,), ((1, 1),)),
    (2, (7, 6), (2, 2), (2, 2), ((0, 0), (0, 0))),
    (2, (7, 7), (3, 3), (2, 1), ((1, 1), (0, 2))),
    (3, (4, 5, 4), (2, 2, 2), (1, 2, 2), ((0, 0), (1, 0), (0, 0))),
]


@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("rank,spatial,window,strides,padding", CONFIGS)
def test_eval_matches_numpy_loop(rank, spatial, window, strides, padding,
                                 channels_first):
  shape = (2, 3) + spatial if channels_first else (2,) + spatial + (3,)
  x = relu_input(np.random.default_rng(rank), shape)
  y = jaxpool.stochastic_pool(x, window, strides, padding, deterministic=True,
                              channels_first=channels_first)
  want = numpy_expectation(x, window, strides, padding, rank, channels_first)
  assert y.dtype == np.float32
  np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7)


def test_eval_gradient_and_half_precision():
  rng = np.random.default_rng(0)
  x = relu_input(rng, (2, 6, 6, 2)) + 0.5
  check_grads(lambda x: jaxpool.stochastic_pool(x, 2, deterministic=True),
              (x,), order=1, modes=("rev",), eps=1e-2)
  zero = jax.grad(lambda x: jaxpool.stochastic_pool(
      x, 2, deterministic=True).sum())(jnp.zeros((1, 4, 4, 1)))
  assert np.all(np.isfinite(zero))
  xh = x.astype(ml_dtypes.bfloat16)
  y = jaxpool.stochastic_pool(xh, 2, deterministic=True)
  assert y.dtype == ml_dtypes.bfloat16
  want = numpy_expectation(xh.astype(np.float32), (2, 2), (2, 2),
                           ((0, 0), (0, 0)), 2, False)
  np.testing.assert_allclose(np.asarray(y, np.float32), want, rtol=1e-2)


@pytest.mark.parametrize("rank,spatial,window,strides,padding", CONFIGS)
def test_train_draws_a_positive_window_element_and_grads_it(
    rank, spatial, window, strides, padding):
  channels_first = rank == 2 and window[0] == 3
  shape = (2, 3) + spatial if channels_first else (2,) + spatial + (3,)
  rng = np.random.default_rng(rank + 10)
  # Distinct values, so that the drawn element is known from its value.
  x = (relu_input(rng, shape) *
       rng.permutation(np.prod(shape)).reshape(shape)).astype(np.float32)
  fn = lambda x: jaxpool.stochastic_pool(
      x, window, strides, padding, key=jax.random.key(3),
      channels_first=channels_first)
  y, vjp = jax.vjp(fn, x)
  (grad,) = vjp(jnp.ones_like(y))
  w, _ = numpy_windows(x, window, strides, padding, rank, channels_first)
  yb, _ = to_bcs(y, rank, channels_first)
  total = w.sum(-1)
  picked = (w == yb[..., None]) & (w > 0)
  # A window of zeros gives 0; any other, exactly one of its positive values.
  np.testing.assert_array_equal(picked.sum(-1), (total > 0).astype(int))
  np.testing.assert_array_equal(yb[total == 0], 0)
  # The gradient: 1 on each drawn element (counted once per window that
  # drew it), 0 elsewhere.
  gb, _ = to_bcs(grad, rank, channels_first)
  drawn = np.isin(x, np.asarray(y)[np.asarray(y) > 0])
  db, _ = to_bcs(drawn, rank, channels_first)
  assert np.all(gb[~db] == 0) and np.all(gb[db] >= 1)
  assert gb.sum() == (total > 0).sum()


def test_train_frequencies_follow_probabilities():
  # 2x2 windows of one pattern, 4096 per pattern, drawn independently: the
  # counts of each tap against a_i / sum(a), a chi-square bound at 3 dof
  # (16.27 is its 0.999 quantile).
  patterns = np.array([[1, 2, 3, 4], [0, 1, 0, 3], [5, 5, 0, 1]], np.float32)
  for a in patterns:
    x = np.tile(a.reshape(2, 2), (64, 64)).reshape(1, 128, 128, 1)
    y = np.asarray(jaxpool.stochastic_pool(x, 2, key=jax.random.key(7)))
    live = a > 0
    # Equal values (5, 5) are one outcome of twice the probability.
    values, counts = np.unique(y.ravel(), return_counts=True)
    p = np.array([a[a == v].sum() / a.sum() for v in values])
    assert set(values) <= set(a[live])
    expected = p * y.size
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 16.27, (a, values, counts, expected)


def test_keys_jit_and_vmap():
  x = relu_input(np.random.default_rng(1), (3, 8, 8, 2)) + 0.1
  keys = jax.random.split(jax.random.key(0), 3)
  fn = jax.jit(lambda x, k: jaxpool.stochastic_pool(x, 2, key=k))
  a = jax.vmap(fn)(x[:, None], keys)
  for j in range(3):
    np.testing.assert_array_equal(a[j], fn(x[j:j + 1], keys[j]))
  assert not np.array_equal(fn(x, keys[0]), fn(x, keys[1]))


def test_bad_arguments():
  x = jnp.ones((1, 4, 4, 1))
  with pytest.raises(ValueError, match="key"):
    jaxpool.stochastic_pool(x, 2)
  with pytest.raises(TypeError, match="deterministic"):
    jaxpool.stochastic_pool(x, 2, deterministic=1)
  with pytest.raises(TypeError, match="floating"):
    jaxpool.stochastic_pool(jnp.ones((1, 4, 4, 1), jnp.int32), 2,
                            deterministic=True)
  with pytest.raises(ValueError, match="window"):
    jaxpool.stochastic_pool(x, (5, 5), deterministic=True)


# ---------------------------------------------------------------------------
# Modules: each is one call of the function, with the key it draws.


def test_modules_take_the_function_keywords_but_the_key():
  from jaxpool import equinox as jpe
  from jaxpool import linen as jpl
  from jaxpool import nnx as jpn
  want = function_fields(jaxpool.stochastic_pool, ("key",))
  for module in (jpl.StochasticPool, jpn.StochasticPool, jpe.StochasticPool):
    assert module_fields(module) == want, module


def test_modules_equal_the_function_with_their_key():
  import flax.nnx as nnx
  from jaxpool import equinox as jpe
  from jaxpool import linen as jpl
  from jaxpool import nnx as jpn
  x = jnp.asarray(relu_input(np.random.default_rng(8), (2, 8, 8, 3)))
  kwargs = dict(window_shape=(3, 3), strides=2, padding=1)
  key = jax.random.key(4)
  train = jaxpool.stochastic_pool(x, key=key, **kwargs)
  test = jaxpool.stochastic_pool(x, deterministic=True, **kwargs)
  # Linen: the "pooling" stream; deterministic as a field or at the call.
  module = jpl.StochasticPool(**kwargs)
  np.testing.assert_array_equal(
      module.apply({}, x, rngs={"pooling": key}),
      jaxpool.stochastic_pool(x, key=linen_key(key), **kwargs))
  np.testing.assert_array_equal(module.apply({}, x, deterministic=True), test)
  np.testing.assert_array_equal(
      jpl.StochasticPool(**kwargs, deterministic=True).apply({}, x), test)
  # NNX: rngs at construction ("pooling", forked) or at the call; eval().
  stream = nnx.Rngs(pooling=5)["pooling"].fork()
  module = jpn.StochasticPool(**kwargs, rngs=nnx.Rngs(pooling=5))
  np.testing.assert_array_equal(
      module(x), jaxpool.stochastic_pool(x, key=stream(), **kwargs))
  np.testing.assert_array_equal(module(x, rngs=key), train)
  module.eval()
  np.testing.assert_array_equal(module(x), test)
  # Equinox: key at the call; inference or deterministic.
  module = jpe.StochasticPool(**kwargs)
  np.testing.assert_array_equal(module(x, key=key), train)
  np.testing.assert_array_equal(module(x, inference=True), test)
  np.testing.assert_array_equal(
      jpe.StochasticPool(**kwargs, deterministic=True)(x), test)
  with pytest.raises(ValueError, match="key"):
    module(x)

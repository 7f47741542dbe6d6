"""Tests of fractional max pooling.

References: ``torch.nn.functional.fractional_max_pool2d/3d`` given the same
``_random_samples`` (values, indices and gradients), and a NumPy loop that
transcribes PyTorch's ``generate_intervals`` for 1-D, which PyTorch lacks.
"""

from __future__ import annotations

import dataclasses
import inspect

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.test_util import check_grads

import jaxpool
from test_adaptive import to_bcs, unique_input

_TORCH = {2: F.fractional_max_pool2d, 3: F.fractional_max_pool3d}
_TORCH_DTYPE = {np.dtype(np.float32): torch.float32,
                np.dtype(np.float64): torch.float64,
                np.dtype(ml_dtypes.bfloat16): torch.bfloat16}


def _to_torch(a: np.ndarray) -> torch.Tensor:
  if a.dtype == ml_dtypes.bfloat16:
    return torch.tensor(a.astype(np.float32)).to(torch.bfloat16)
  return torch.tensor(a)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
  return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def torch_fractional(x, window, output_size, samples, cotangent, rank,
                     channels_first):
  """PyTorch's values, indices and input gradient, in our layout.

  ``samples`` is ``(*batch, C, rank)``, flattened to PyTorch's
  ``(N, C, rank)`` with the batch dims.
  """
  xb, undo = to_bcs(x, rank, channels_first)
  xt = _to_torch(xb).requires_grad_(True)
  ut = _to_torch(samples.reshape((-1,) + samples.shape[-2:]))
  y, i = _TORCH[rank](xt, window, output_size=output_size,
                      _random_samples=ut, return_indices=True)
  ct, _ = to_bcs(cotangent, rank, channels_first)
  (grad,) = torch.autograd.grad(y, xt, _to_torch(ct))
  return undo(_to_numpy(y.detach())), undo(i.numpy()), undo(_to_numpy(grad))


def _inputs(rng, shape, rank, channels_first, dtype):
  """Ties included (rounded values), and samples of the right shape."""
  x = np.round(rng.standard_normal(shape) * 3).astype(dtype)
  lead = shape[:len(shape) - rank - 1]
  channels = shape[-rank - 1] if channels_first else shape[-1]
  samples = rng.random(lead + (channels, rank)).astype(dtype)
  return x, samples


@pytest.mark.parametrize("dtype,channels_first", [
    (np.float32, False), (np.float32, True), (ml_dtypes.bfloat16, False)])
@pytest.mark.parametrize("rank,spatial,window,out", [
    (2, (11, 9), (2, 3), (5, 4)),
    (2, (8, 8), (3, 3), (6, 1)),
    (3, (7, 6, 9), (2, 2, 3), (4, 4, 3)),  # PyTorch's 3-D wants o < n-k+1
])
def test_matches_torch(rank, spatial, window, out, dtype, channels_first):
  rng = np.random.default_rng(rank)
  shape = (2, 3) + spatial if channels_first else (2,) + spatial + (3,)
  x, samples = _inputs(rng, shape, rank, channels_first, dtype)
  fn = jax.jit(lambda x: jaxpool.fractional_max_pool(
      x, window, out, samples=samples, return_indices=True,
      channels_first=channels_first))
  y, i = fn(x)
  ct = rng.standard_normal(y.shape).astype(dtype)
  (grad,) = jax.vjp(lambda x: fn(x)[0], x)[1](jnp.asarray(ct))
  want_y, want_i, want_grad = torch_fractional(
      x, window, out, samples, ct, rank, channels_first)
  assert y.dtype == dtype and i.dtype == np.int32
  np.testing.assert_array_equal(np.asarray(y, np.float32), want_y)
  np.testing.assert_array_equal(i, want_i)
  np.testing.assert_allclose(np.asarray(grad, np.float32), want_grad,
                             rtol=1e-6 if dtype == np.float32 else 2e-2,
                             atol=0 if dtype == np.float32 else 2e-2)


def test_nan_and_inf_follow_torch():
  # PyTorch's kernel: the last NaN of a window wins, and -inf windows give
  # their first element; the gradient goes where the index says.
  rng = np.random.default_rng(5)
  x = rng.standard_normal((1, 2, 9, 9)).astype(np.float32)
  x[0, 0, 2, 3] = x[0, 0, 3, 3] = np.nan
  x[0, 1, :4, :4] = -np.inf
  samples = rng.random((1, 2, 2)).astype(np.float32)
  ct = np.ones((1, 2, 5, 5), np.float32)
  fn = lambda x: jaxpool.fractional_max_pool(
      x, 3, (5, 5), samples=samples, return_indices=True,
      channels_first=True)
  (y, i), vjp = jax.vjp(fn, x)
  (grad,) = vjp((jnp.asarray(ct), np.zeros(i.shape, jax.dtypes.float0)))
  want_y, want_i, want_grad = torch_fractional(x, 3, (5, 5), samples, ct, 2,
                                               True)
  np.testing.assert_array_equal(y, want_y)
  np.testing.assert_array_equal(i, want_i)
  np.testing.assert_array_equal(grad, want_grad)


def test_float64_and_long_dims_match_torch():
  # Long dims make alpha's rounding matter; float64 computes the starts in
  # float64, as the kernel's scalar_t.
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    x = rng.standard_normal((1, 2, 301, 97))
    samples = rng.random((1, 2, 2))
    y, i = jaxpool.fractional_max_pool(x, 3, (170, 53), samples=samples,
                                       return_indices=True,
                                       channels_first=True)
    want_y, want_i, _ = torch_fractional(
        x, 3, (170, 53), samples, np.zeros(y.shape), 2, True)
    assert y.dtype == np.float64
  np.testing.assert_array_equal(y, want_y)
  np.testing.assert_array_equal(i, want_i)


def test_output_ratio_and_batch_dims_match_torch():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 3, 13, 10, 4)).astype(np.float32)
  samples = rng.random((2, 3, 4, 2)).astype(np.float32)
  y = jaxpool.fractional_max_pool(x, 2, output_ratio=(0.7, 0.5),
                                  samples=samples)
  xt = torch.tensor(np.moveaxis(x, -1, -3).reshape(6, 4, 13, 10))
  want = F.fractional_max_pool2d(
      xt, 2, output_ratio=(0.7, 0.5),
      _random_samples=torch.tensor(samples.reshape(6, 4, 2)))
  assert y.shape == (2, 3, 9, 5, 4)
  np.testing.assert_array_equal(
      np.moveaxis(np.asarray(y), -1, -3).reshape(want.shape), want.numpy())


# ---------------------------------------------------------------------------
# 1-D: the same rule, by a NumPy loop.


def numpy_starts(u, n, o, k, dtype):
  """PyTorch's ``generate_intervals``, in ``dtype`` arithmetic."""
  if o == 1:
    return [n - k]
  u = dtype(u)
  alpha = dtype(n - k) / dtype(o - 1)
  seq = [int((dtype(i) + u) * alpha) - int(u * alpha) for i in range(o - 1)]
  return seq + [n - k]


def numpy_fractional_1d(x, k, o, samples, cotangent):
  """Values, indices and gradient of ``x`` (N, n, C) by a loop."""
  nb, n, c = x.shape
  y = np.zeros((nb, o, c), x.dtype)
  idx = np.zeros((nb, o, c), np.int32)
  grad = np.zeros(x.shape, np.float64)
  for b in range(nb):
    for ch in range(c):
      for j, s in enumerate(numpy_starts(samples[b, ch, 0], n, o, k,
                                         np.float32)):
        window = x[b, s:s + k, ch]
        best = s + int(np.argmax(window))  # the first maximum
        y[b, j, ch], idx[b, j, ch] = x[b, best, ch], best
        grad[b, best, ch] += cotangent[b, j, ch]
  return y, idx, grad


@pytest.mark.parametrize("n,k,o", [(17, 3, 9), (6, 1, 6), (9, 4, 1)])
def test_1d_matches_numpy_loop(n, k, o):
  rng = np.random.default_rng(n)
  x = np.round(rng.standard_normal((2, n, 3)) * 2).astype(np.float32)
  samples = rng.random((2, 3, 1)).astype(np.float32)
  ct = rng.standard_normal((2, o, 3)).astype(np.float32)
  fn = lambda x: jaxpool.fractional_max_pool(x, k, o, samples=samples)
  y, vjp = jax.vjp(fn, x)
  _, i = jaxpool.fractional_max_pool(x, k, o, samples=samples,
                                     return_indices=True)
  want_y, want_i, want_grad = numpy_fractional_1d(x, k, o, samples, ct)
  np.testing.assert_array_equal(y, want_y)
  np.testing.assert_array_equal(i, want_i)
  np.testing.assert_allclose(vjp(jnp.asarray(ct))[0], want_grad, rtol=1e-6)


def test_gradients_check_numerically():
  x = unique_input(np.random.default_rng(2), (2, 9, 8, 3))
  samples = np.random.default_rng(3).random((2, 3, 2)).astype(np.float32)
  check_grads(lambda x: jaxpool.fractional_max_pool(
      x, 2, (5, 4), samples=samples), (x,), order=1, modes=("rev",),
              eps=1e-2)


def test_key_draws_uniform_samples_per_batch_and_channel():
  x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 3, 9, 8, 4)),
                  jnp.float32)
  key = jax.random.key(5)
  samples = jax.random.uniform(key, (2, 3, 4, 2), jnp.float32)
  a = jaxpool.fractional_max_pool(x, 2, (4, 5), key=key)
  b = jaxpool.fractional_max_pool(x, 2, (4, 5), samples=samples)
  np.testing.assert_array_equal(a, b)
  c = jaxpool.fractional_max_pool(x, 2, (4, 5), key=jax.random.key(6))
  assert not np.array_equal(a, c)


def test_vmap_and_grad():
  x = jnp.asarray(np.random.default_rng(7).standard_normal((3, 1, 12, 12)),
                  jnp.float32)
  keys = jax.random.split(jax.random.key(0), 3)
  fn = jax.jit(lambda x, k: jaxpool.fractional_max_pool(
      x, (2, 2), (7, 7), key=k, channels_first=True))
  y = jax.vmap(fn)(x[:, None], keys)
  for j in range(3):
    np.testing.assert_array_equal(y[j], fn(x[j:j + 1], keys[j]))
  g = jax.grad(lambda x: fn(x, keys[0]).sum())(x)
  assert float(g.sum()) == 3 * 49


@pytest.mark.parametrize("kwargs,match", [
    (dict(window_shape=2, output_size=(4, 4), output_ratio=0.5), "exactly"),
    (dict(window_shape=2), "exactly one of output_size"),
    (dict(window_shape=2, output_size=(8, 8)), "output_size"),
    (dict(window_shape=(9, 2), output_size=(1, 1)), "window_shape"),
    (dict(window_shape=2, output_ratio=1.5), "output_ratio"),
    (dict(window_shape=(2, 2), output_ratio=(0.5,) * 3), "output_ratio"),
    (dict(window_shape=(2, 2, 2, 2), output_size=1), "1 to 3"),
    (dict(window_shape=0, output_size=2), "window_shape"),
])
def test_bad_arguments(kwargs, match):
  x = jnp.ones((1, 8, 8, 2))
  kwargs.setdefault("key", jax.random.key(0))
  with pytest.raises(ValueError, match=match):
    jaxpool.fractional_max_pool(x, **kwargs)


def test_bad_key_and_samples():
  x = jnp.ones((1, 8, 8, 2))
  with pytest.raises(ValueError, match="key and samples"):
    jaxpool.fractional_max_pool(x, 2, 4)
  with pytest.raises(ValueError, match="key and samples"):
    jaxpool.fractional_max_pool(x, 2, 4, key=jax.random.key(0),
                                samples=np.zeros((1, 2, 2)))
  with pytest.raises(ValueError, match="samples"):
    jaxpool.fractional_max_pool(x, 2, 4, samples=np.zeros((2, 2)))
  with pytest.raises(TypeError, match="floating"):
    jaxpool.fractional_max_pool(jnp.ones((1, 8, 8, 2), jnp.int32), 2, 4,
                                samples=np.zeros((1, 2, 2)))


# ---------------------------------------------------------------------------
# Modules: each is one call of the function, with the key it draws.


def module_fields(module):
  """``module``'s dataclass fields as (name, default, keyword-only)."""
  return [(f.name,
           "required" if f.default is dataclasses.MISSING else f.default,
           f.kw_only) for f in dataclasses.fields(module)
          if f.name not in ("parent", "name", "rngs", "_")]


def function_fields(function, call_arguments):
  return [(p.name, "required" if p.default is p.empty else p.default,
           p.kind == p.KEYWORD_ONLY)
          for p in list(inspect.signature(function).parameters.values())[1:]
          if p.name not in call_arguments]


def linen_key(key):
  """The key a top-level Linen module's first ``make_rng("pooling")`` gets
  from ``rngs={"pooling": key}``."""
  import flax.linen as nn

  class Probe(nn.Module):

    def __call__(self):
      return self.make_rng("pooling")

  return Probe().apply({}, rngs={"pooling": key})


def test_modules_take_the_function_keywords_but_the_key():
  from jaxpool import equinox as jpe
  from jaxpool import linen as jpl
  from jaxpool import nnx as jpn
  want = function_fields(jaxpool.fractional_max_pool, ("key", "samples"))
  for module in (jpl.FractionalMaxPool, jpn.FractionalMaxPool,
                 jpe.FractionalMaxPool):
    assert module_fields(module) == want, module


def test_modules_equal_the_function_with_their_key():
  import flax.nnx as nnx
  from jaxpool import equinox as jpe
  from jaxpool import linen as jpl
  from jaxpool import nnx as jpn
  x = jnp.asarray(np.random.default_rng(8).standard_normal((2, 9, 9, 3)),
                  jnp.float32)
  kwargs = dict(window_shape=2, output_ratio=0.7, return_indices=True)
  key = jax.random.key(4)
  want = jaxpool.fractional_max_pool(x, key=key, **kwargs)
  chex.assert_trees_all_equal(
      jpl.FractionalMaxPool(**kwargs).apply({}, x, rngs={"pooling": key}),
      jaxpool.fractional_max_pool(x, key=linen_key(key), **kwargs))
  chex.assert_trees_all_equal(jpe.FractionalMaxPool(**kwargs)(x, key=key),
                              want)
  chex.assert_trees_all_equal(jpn.FractionalMaxPool(**kwargs)(x, rngs=key),
                              want)
  # NNX's own stream: "pooling", forked as nnx.Dropout forks.
  stream = nnx.Rngs(pooling=5)["pooling"].fork()
  chex.assert_trees_all_equal(
      jpn.FractionalMaxPool(**kwargs, rngs=nnx.Rngs(pooling=5))(x),
      jaxpool.fractional_max_pool(x, key=stream(), **kwargs))
  # Explicit samples, in all three.
  samples = np.random.default_rng(9).random((2, 3, 2)).astype(np.float32)
  want = jaxpool.fractional_max_pool(x, samples=samples, **kwargs)
  for got in (jpl.FractionalMaxPool(**kwargs).apply({}, x, samples),
              jpn.FractionalMaxPool(**kwargs)(x, samples),
              jpe.FractionalMaxPool(**kwargs)(x, samples)):
    chex.assert_trees_all_equal(got, want)
  with pytest.raises(ValueError, match="key"):
    jpe.FractionalMaxPool(**kwargs)(x)

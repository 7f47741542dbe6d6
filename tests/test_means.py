"""Tests of the mean-like poolings: SoftPool, log-sum-exp, mixed, gated and
timm's adaptive avgmax / catavgmax heads.

References: NumPy loops over output windows (float64) for SoftPool,
log-sum-exp, mixed and gated pooling; ``timm.layers.SelectAdaptivePool2d``
(``"avgmax"``, ``"catavgmax"``) and PyTorch's ``adaptive_avg/max_pool`` for
the heads, values and gradients; finite differences for the gradients in the
learned parameters.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.test_util import check_grads

import jaxpool
from test_adaptive import torch_vjp, unique_input


def _import_timm():
  # timm imports torchvision: torchvision_cpu makes it importable beside the
  # CPU build of torch.
  import torchvision_cpu  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import timm.layers  # pylint: disable=g-import-not-at-top
  return timm.layers


def random(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(
      np.float32)


# ---------------------------------------------------------------------------
# The NumPy loop reference: channels-last, explicit padding pairs.


def numpy_windows(x, window, strides, padding, reduce, channels_first=False):
  """``reduce(patch, valid, position)`` over every window of ``x``.

  ``patch`` is ``(*batch, *window, C)`` with padding as 0, ``valid`` a bool
  mask of the window's taps inside the input; returns ``(*batch, *out, C)``.
  """
  rank = len(window)
  x = np.asarray(x, np.float64)
  if channels_first:
    x = np.moveaxis(x, -rank - 1, -1)
  lead = x.ndim - rank - 1
  spatial = x.shape[lead:lead + rank]
  pads = [(0, 0)] * lead + list(padding) + [(0, 0)]
  xp = np.pad(x, pads)
  inside = np.pad(np.ones(spatial, bool), list(padding))
  outs = [(n + lo + hi - k) // s + 1
          for n, (lo, hi), k, s in zip(spatial, padding, window, strides)]
  y = None
  for pos in itertools.product(*[range(o) for o in outs]):
    sl = tuple(slice(p * s, p * s + k) for p, s, k in zip(pos, strides, window))
    value = reduce(xp[(Ellipsis,) + sl + (slice(None),)], inside[sl])
    if y is None:
      y = np.zeros(x.shape[:lead] + tuple(outs) + value.shape[-1:])
    y[(Ellipsis,) + pos + (slice(None),)] = value
  if channels_first:
    y = np.moveaxis(y, -1, -rank - 1)
  return y


def _flat(patch, valid, rank):
  """The window's valid taps as ``(*batch, taps, C)``."""
  lead = patch.ndim - rank - 1
  flat = patch.reshape(patch.shape[:lead] + (-1,) + patch.shape[-1:])
  return flat[..., valid.ravel(), :]


def np_soft(rank):
  def reduce(patch, valid):
    v = _flat(patch, valid, rank)
    e = np.exp(v - v.max(-2, keepdims=True))
    return (e * v).sum(-2) / e.sum(-2)
  return reduce


def np_lse(rank, r):
  def reduce(patch, valid):
    v = _flat(patch, valid, rank) * r
    top = v.max(-2)
    return (top + np.log(np.exp(v - top[..., None, :]).sum(-2))) / r
  return reduce


def np_mixed(rank, a):
  def reduce(patch, valid):
    v = _flat(patch, valid, rank)
    return a * v.max(-2) + (1 - a) * v.mean(-2)
  return reduce


def np_gated(rank, gate):
  """``gate`` shaped ``(*window, 1 or C)``; padding taps count as 0."""
  def reduce(patch, valid):
    lead = patch.ndim - rank - 1
    logit = np.tensordot(patch * gate, np.ones(gate.shape[:-1]),
                         axes=(list(range(lead, lead + rank)),
                               list(range(rank))))
    g = 1 / (1 + np.exp(-logit))
    v = _flat(patch, valid, rank)
    return g * v.max(-2) + (1 - g) * v.mean(-2)
  return reduce


def global_reference(x, reduce_for_rank, rank, channels_first, keepdims):
  """A global pooling as one window of the whole plane."""
  spatial = (np.shape(x)[-rank:] if channels_first else
             np.shape(x)[-rank - 1:-1])
  y = numpy_windows(x, spatial, spatial, [(0, 0)] * rank,
                    reduce_for_rank(rank), channels_first)
  if not keepdims:
    axes = tuple(range(y.ndim - rank, y.ndim)) if channels_first else tuple(
        range(y.ndim - rank - 1, y.ndim - 1))
    y = y.reshape([n for i, n in enumerate(y.shape) if i not in axes])
  return y


#: (input shape, window, strides, padding pairs, channels_first).
WINDOWED = [
    ((2, 7, 3), (3,), (2,), [(1, 1)], False),
    ((2, 3, 7, 6), (2, 3), (2, 2), [(0, 1), (1, 1)], True),
    ((5, 6, 2), (2, 2), (1, 2), [(0, 0), (0, 0)], False),
    ((1, 4, 5, 4, 2), (2, 2, 3), (2, 2, 1), [(0, 0), (1, 0), (1, 1)], False),
]


def _case_id(case):
  return f"{len(case[1])}d_{'cf' if case[4] else 'cl'}_{case[0]}"


def _windowed_kwargs(window, strides, padding):
  return dict(window_shape=window, strides=strides, padding=padding)


# ---------------------------------------------------------------------------
# GeM: cirtorch's formula in PyTorch, values and gradients in x and p.


def torch_gem(x, p, eps, window=None, strides=None, padding=0):
  """cirtorch's ``gem``: ``avg_pool(x.clamp(min=eps) ** p) ** (1 / p)``
  (windowed: padding left out of the mean)."""
  powered = x.clamp(min=eps).pow(p)
  if window is None:
    return F.avg_pool2d(powered, powered.shape[-2:]).pow(1.0 / p)
  return F.avg_pool2d(powered, window, strides, padding,
                      count_include_pad=False).pow(1.0 / p)


@pytest.mark.parametrize("windowed,per_channel,cf", [
    (False, False, False), (True, True, True), (True, False, False)])
def test_gem_pool_equals_cirtorch_with_gradients(windowed, per_channel, cf):
  rng = np.random.default_rng(0)
  x = np.abs(rng.standard_normal((2, 7, 6, 3))).astype(np.float32)
  x[0, 0, 0] = 0  # under eps: clamped, no gradient
  p = np.array([2.0, 3.0, 4.5], np.float32) if per_channel else np.float32(
      3.0)
  kwargs = dict(window_shape=(3, 3), strides=2, padding=1) if windowed else {}
  xin = np.moveaxis(x, -1, 1).copy() if cf else x
  fn = lambda x, p: jaxpool.gem_pool(x, p, 1e-6, channels_first=cf,
                                     **kwargs)
  y = jax.eval_shape(fn, xin, p)
  cotangent = random(y.shape, 1)
  got, vjp = jax.vjp(jax.jit(fn), jnp.asarray(xin), jnp.asarray(p))
  got_x, got_p = vjp(jnp.asarray(cotangent))
  xt = torch.tensor(np.moveaxis(x, -1, 1).copy(), requires_grad=True)
  pt = torch.tensor(p, requires_grad=True)
  pb = pt.reshape(-1, 1, 1) if per_channel else pt
  yt = torch_gem(xt, pb, 1e-6, *((3, 2, 1) if windowed else ()))
  if not windowed:
    yt = yt.flatten(1)
  ct = np.moveaxis(cotangent, -1, 1) if windowed and not cf else cotangent
  want_x, want_p = torch.autograd.grad(yt, (xt, pt), torch.tensor(
      np.ascontiguousarray(ct)))
  want = yt.detach().numpy()
  if windowed and not cf:
    want = np.moveaxis(want, 1, -1)
  want_x = want_x.numpy() if cf else np.moveaxis(want_x.numpy(), 1, -1)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(got_x, want_x, rtol=2e-4, atol=1e-6)
  np.testing.assert_allclose(got_p, want_p.numpy(), rtol=2e-4, atol=1e-6)


# ---------------------------------------------------------------------------
# SoftPool and log-sum-exp.


@pytest.mark.parametrize("case", WINDOWED, ids=_case_id)
def test_soft_pool_windowed_equals_numpy(case):
  shape, window, strides, padding, cf = case
  x = random(shape) * 3
  got = jax.jit(lambda x: jaxpool.soft_pool(
      x, **_windowed_kwargs(window, strides, padding),
      channels_first=cf))(x)
  want = numpy_windows(x, window, strides, padding, np_soft(len(window)), cf)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("rank,cf,keepdims", [(1, False, False),
                                              (2, True, True),
                                              (3, False, True)])
def test_soft_and_lse_global_equal_numpy(rank, cf, keepdims):
  shape = (2,) + (3,) * rank + (4,) if not cf else (2, 4) + (3,) * rank
  x = random(shape) * 3
  got = jaxpool.soft_pool(x, keepdims=keepdims, channels_first=cf)
  want = global_reference(x, np_soft, rank, cf, keepdims)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
  r = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
  got = jaxpool.lse_pool(x, r, keepdims=keepdims, channels_first=cf)
  # The reference sees channels last.
  want = global_reference(x, lambda n: np_lse(n, r), rank, cf, keepdims)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_soft_pool_is_stable_and_between_mean_and_max():
  x = np.array([0.0, 1000.0, -1000.0, -1000.0, 88.0, 89.0],
               np.float32).reshape(1, 6, 1)
  y = jaxpool.soft_pool(x, window_shape=(2,))
  np.testing.assert_allclose(
      y.ravel(), [1000.0, -1000.0, (88 + 89 * math.e) / (1 + math.e)],
      rtol=1e-6)
  g = jax.grad(lambda x: jaxpool.soft_pool(x, window_shape=(2,)).sum())(x)
  assert np.all(np.isfinite(g))
  x = random((3, 8, 8, 2))
  y = jaxpool.soft_pool(x, window_shape=(2, 2))
  assert np.all(y <= jaxpool.max_pool(x, (2, 2)) + 1e-6)
  assert np.all(y >= jaxpool.avg_pool(x, (2, 2)) - 1e-6)


@pytest.mark.parametrize("case", WINDOWED[:2], ids=_case_id)
def test_lse_pool_windowed_equals_numpy(case):
  shape, window, strides, padding, cf = case
  x = random(shape) * 3
  channels = shape[-len(window) - 1] if cf else shape[-1]
  r = np.linspace(0.5, 3.0, channels).astype(np.float32)
  for rv in (2.0, r):
    got = jaxpool.lse_pool(x, rv, **_windowed_kwargs(window, strides,
                                                     padding),
                           channels_first=cf)
    # The reference sees channels last.
    want = numpy_windows(x, window, strides, padding,
                         np_lse(len(window), np.asarray(rv)), cf)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_gradients_of_soft_and_lse():
  x = jnp.asarray(unique_input(np.random.default_rng(0), (1, 5, 4, 2)))
  kwargs = dict(window_shape=(3, 2), strides=(2, 1), padding=((1, 1), (0, 1)))
  check_grads(lambda x: jaxpool.soft_pool(x, **kwargs), (x,), 1,
              modes=("rev",), eps=1e-2, rtol=2e-2)
  check_grads(lambda x: jaxpool.soft_pool(x), (x,), 1, modes=("fwd", "rev"),
              eps=1e-2, rtol=2e-2)
  r = jnp.array([0.7, 1.9])
  check_grads(lambda x, r: jaxpool.lse_pool(x, r, **kwargs), (x, r), 1,
              modes=("rev",), eps=1e-2, rtol=2e-2)
  check_grads(lambda r: jaxpool.lse_pool(x, r), (r,), 1, modes=("rev",),
              eps=1e-2, rtol=2e-2)


def test_half_precision_computes_in_float32():
  x = random((2, 6, 6, 3)) * 4
  for fn in (lambda x: jaxpool.soft_pool(x, window_shape=(2, 2)),
             lambda x: jaxpool.lse_pool(x, 2.0),
             lambda x: jaxpool.mixed_pool(x, 0.3, window_shape=(3, 3)),
             lambda x: jaxpool.gated_pool(x, jnp.ones((2, 2)) * 0.1,
                                          window_shape=(2, 2)),
             jaxpool.adaptive_avgmax_pool):
    low = fn(jnp.asarray(x, jnp.bfloat16))
    assert low.dtype == jnp.bfloat16
    want = fn(jnp.asarray(jnp.asarray(x, jnp.bfloat16), jnp.float32))
    np.testing.assert_allclose(np.asarray(low, np.float32), want, rtol=1e-2,
                               atol=1e-2)


# ---------------------------------------------------------------------------
# Mixed and gated pooling.


@pytest.mark.parametrize("case", WINDOWED, ids=_case_id)
def test_mixed_and_gated_windowed_equal_numpy(case):
  shape, window, strides, padding, cf = case
  rank = len(window)
  x = random(shape)
  channels = shape[-rank - 1] if cf else shape[-1]
  a = np.linspace(0.0, 1.0, channels).astype(np.float32)
  kwargs = _windowed_kwargs(window, strides, padding)
  got = jaxpool.mixed_pool(x, a, **kwargs, channels_first=cf)
  want = numpy_windows(x, window, strides, padding, np_mixed(rank, a), cf)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # One mask for all channels, and one per channel (laid out as x is).
  shared = random(window, 3)
  got = jaxpool.gated_pool(x, shared, **kwargs, channels_first=cf)
  want = numpy_windows(x, window, strides, padding,
                       np_gated(rank, shared[..., None]), cf)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  per = random(window + (channels,), 4)
  gate = np.moveaxis(per, -1, 0) if cf else per
  got = jaxpool.gated_pool(x, gate, **kwargs, channels_first=cf)
  want = numpy_windows(x, window, strides, padding, np_gated(rank, per), cf)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mixed_and_gated_global_equal_numpy():
  x = random((2, 4, 5, 3))
  np.testing.assert_allclose(
      jaxpool.mixed_pool(x, 0.3),
      global_reference(x, lambda n: np_mixed(n, 0.3), 2, False, False),
      rtol=1e-5, atol=1e-6)
  gate = random((4, 5, 3), 1)
  np.testing.assert_allclose(
      jaxpool.gated_pool(x, gate, keepdims=True),
      global_reference(x, lambda n: np_gated(n, gate), 2, False, True),
      rtol=1e-5, atol=1e-6)


def test_random_mixed_pool_picks_max_or_mean_per_map():
  x = random((64, 6, 6, 3))
  kwargs = dict(window_shape=(2, 2))
  top, mean = jaxpool.max_pool(x, (2, 2)), jaxpool.avg_pool(x, (2, 2))
  y = jax.jit(lambda x, k: jaxpool.mixed_pool(x, 0.25, key=k, **kwargs))(
      x, jax.random.key(1))
  is_max = np.all(np.isclose(y, top), axis=(1, 2))
  is_mean = np.all(np.isclose(y, mean), axis=(1, 2))
  assert np.all(is_max ^ is_mean)  # each map wholly one or the other
  assert 0.1 < is_max.mean() < 0.4
  y2 = jaxpool.mixed_pool(x, 0.25, key=jax.random.key(2), **kwargs)
  assert not np.array_equal(y, y2)
  g = jax.grad(lambda a: jaxpool.mixed_pool(
      x, a, key=jax.random.key(1), **kwargs).sum())(0.5)
  assert g == 0


def test_gradients_of_mixed_and_gated():
  rng = np.random.default_rng(0)
  x = jnp.asarray(unique_input(rng, (2, 5, 4, 2)))
  kwargs = dict(window_shape=(2, 2), strides=1, padding="SAME")
  a = jnp.array([0.3, 0.8])
  check_grads(lambda x, a: jaxpool.mixed_pool(x, a, **kwargs), (x, a), 1,
              modes=("rev",), eps=1e-2, rtol=2e-2)
  gate = jnp.asarray(random((2, 2, 2), 5) * 0.3)
  check_grads(lambda x, g: jaxpool.gated_pool(x, g, **kwargs), (x, gate), 1,
              modes=("rev",), eps=1e-2, rtol=2e-2)
  check_grads(lambda g: jaxpool.gated_pool(x * 0.25, g),
              (random((5, 4), 6) * 0.1,),
              1, modes=("rev",), eps=1e-2, rtol=2e-2)
  # The maximum's gradient goes to the first of tied maxima, as PyTorch's.
  tied = jnp.ones((1, 2, 2, 1))
  g = jax.grad(lambda x: jaxpool.mixed_pool(x, 1.0, window_shape=(2, 2))
               .sum())(tied)
  np.testing.assert_array_equal(g.ravel(), [1, 0, 0, 0])


# ---------------------------------------------------------------------------
# timm's adaptive heads.


def _timm_pool(pool_type, output_size):
  layers = _import_timm()
  return layers.SelectAdaptivePool2d(output_size=output_size,
                                     pool_type=pool_type)


@pytest.mark.parametrize("output_size,cf,ties", [
    (1, False, True), (1, True, False), ((3, 2), False, True),
    ((2, 4), True, False)])
def test_avgmax_heads_equal_timm(output_size, cf, ties):
  rng = np.random.default_rng(0)
  shape = (2, 3, 7, 5) if cf else (2, 7, 5, 3)
  x = rng.standard_normal(shape).astype(np.float32)
  if ties:
    x = np.maximum(np.round(x), 0)
  for name, fn in (("avgmax", jaxpool.adaptive_avgmax_pool),
                   ("catavgmax", jaxpool.adaptive_catavgmax_pool)):
    pool = functools.partial(fn, output_size=output_size, channels_first=cf)
    y = jax.eval_shape(pool, x)
    cotangent = random(y.shape, 1)
    got, vjp = jax.vjp(jax.jit(pool), jnp.asarray(x))
    (got_grad,) = vjp(jnp.asarray(cotangent))
    want, want_grad = torch_vjp(_timm_pool(name, output_size), x, cotangent,
                                2, cf)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rank", [1, 3])
def test_avgmax_heads_other_ranks_equal_torch(rank):
  x = np.maximum(np.round(random((2,) + (4,) * rank + (3,)) * 2), 0)
  avg = getattr(F, f"adaptive_avg_pool{rank}d")
  mx = getattr(F, f"adaptive_max_pool{rank}d")
  for size in (1, 3):
    cotangent = random((2,) + (size,) * rank + (3,), 1)
    got, vjp = jax.vjp(lambda x: jaxpool.adaptive_avgmax_pool(x, size),
                       jnp.asarray(x))
    want, want_grad = torch_vjp(
        lambda t: 0.5 * (avg(t, size) + mx(t, size)), x, cotangent, rank,
        False)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(vjp(jnp.asarray(cotangent))[0], want_grad,
                               rtol=1e-6, atol=1e-8)


def test_global_avgmax_nan_and_forward_mode():
  x = np.ones((1, 3, 3, 1), np.float32)
  x[0, 0, 1, 0] = x[0, 2, 0, 0] = np.nan
  g = jax.grad(lambda x: jaxpool.adaptive_catavgmax_pool(x)[..., 1].sum())(x)
  want = np.zeros_like(x)
  want[0, 2, 0, 0] = 1  # The last NaN, as PyTorch's adaptive_max_pool.
  np.testing.assert_array_equal(g, want)
  xu = jnp.asarray(unique_input(np.random.default_rng(0), (2, 3, 4, 2)))
  check_grads(jaxpool.adaptive_avgmax_pool, (xu,), 1, modes=("fwd", "rev"),
              eps=1e-2)


# ---------------------------------------------------------------------------
# Transforms and errors.


def test_vmap_equals_batch():
  x = random((3, 2, 6, 6, 2))
  for fn in (lambda x: jaxpool.soft_pool(x, window_shape=(2, 2)),
             lambda x: jaxpool.lse_pool(x, 1.5),
             lambda x: jaxpool.mixed_pool(x, 0.4, window_shape=(3, 3)),
             lambda x: jaxpool.gated_pool(x, jnp.ones((2, 2)),
                                          window_shape=(2, 2)),
             lambda x: jaxpool.adaptive_catavgmax_pool(x, 1)):
    np.testing.assert_allclose(jax.vmap(fn)(x), jnp.stack([fn(v) for v in x]),
                               rtol=1e-6, atol=1e-6)


def test_bad_arguments_name_themselves():
  x = jnp.ones((2, 4, 4, 3))
  with pytest.raises(ValueError, match="r must be finite and > 0"):
    jaxpool.lse_pool(x, -1.0)
  with pytest.raises(ValueError, match="r must be a scalar or have one"):
    jaxpool.lse_pool(x, np.ones(2))
  with pytest.raises(ValueError, match=r"a must lie in \[0, 1\]"):
    jaxpool.mixed_pool(x, 1.5)
  with pytest.raises(ValueError, match="gate must have the window's shape"):
    jaxpool.gated_pool(x, jnp.ones((3, 3)), window_shape=(2, 2))
  with pytest.raises(ValueError, match="strides and padding apply"):
    jaxpool.soft_pool(x, strides=2)
  with pytest.raises(ValueError, match="keepdims and spatial_dims apply"):
    jaxpool.mixed_pool(x, window_shape=(2, 2), keepdims=True)
  with pytest.raises(ValueError, match="output_size"):
    jaxpool.adaptive_avgmax_pool(x, 0)
  with pytest.raises(ValueError, match="window_shape"):
    jaxpool.soft_pool(x, window_shape=(5, 5))

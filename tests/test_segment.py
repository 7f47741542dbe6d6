"""Tests of masked pooling, segment pooling and the graph readouts.

References: Keras 3's masked ``GlobalAveragePooling1D`` (JAX backend), in
values and gradients; PyTorch Geometric's ``global_add_pool``,
``global_mean_pool``, ``global_max_pool`` and ``utils.scatter``, in values
and gradients, ties included; PyTorch's ``amax`` and ``adaptive_max_pool``
for the tie rules of a masked global max; and NumPy loops over windows for
masked windowed pooling.
"""

from __future__ import annotations

import itertools
import os

os.environ["KERAS_BACKEND"] = "jax"  # Before keras is imported.

# pylint: disable=g-import-not-at-top,wrong-import-position
import equinox as eqx
import flax.linen as nn
import hypothesis
import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
import torch
import torch_geometric.nn as pyg
from flax import nnx
from hypothesis import strategies as st
from jax.test_util import check_grads
from torch_geometric.utils import scatter

import jaxpool
from jaxpool import equinox as jpe
from jaxpool import graph
from jaxpool import linen as jpl
from jaxpool import nnx as jpn
from test_adaptive import SETTINGS, unique_input

assert keras.backend.backend() == "jax", "set KERAS_BACKEND=jax"


def rng(seed=0):
  return np.random.default_rng(seed)


def ragged_mask(lengths, steps):
  """A padded batch's mask: the first ``lengths[i]`` steps of row i."""
  return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


# ---------------------------------------------------------------------------
# Masked global pooling.


@pytest.mark.parametrize("data_format,keepdims", [
    ("channels_last", False), ("channels_first", True)])
def test_global_avg_pool_mask_equals_keras(data_format, keepdims):
  x = rng().standard_normal((3, 6, 4)).astype(np.float32)
  mask = ragged_mask([6, 2, 1], 6)
  channels_first = data_format == "channels_first"
  if channels_first:
    x = np.swapaxes(x, 1, 2)
  layer = keras.layers.GlobalAveragePooling1D(data_format=data_format,
                                              keepdims=keepdims)
  ct = rng(1).standard_normal(
      jax.eval_shape(lambda x: layer(x, mask), x).shape).astype(np.float32)

  def ours(x):
    return jaxpool.global_avg_pool(x, mask=mask, keepdims=keepdims,
                                   channels_first=channels_first)

  def theirs(x):
    return layer(x, mask)

  np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
  g_ours = jax.grad(lambda x: jnp.vdot(ours(x), ct))(x)
  g_theirs = jax.grad(lambda x: jnp.vdot(theirs(x), ct))(x)
  np.testing.assert_allclose(g_ours, g_theirs, rtol=1e-6, atol=1e-6)


def numpy_global(x, mask, op, rank):
  """The loop: each example's channel over the spatial elements kept."""
  x, mask = np.asarray(x, np.float64), np.broadcast_to(
      mask, x.shape[:-1])
  lead = x.shape[:x.ndim - rank - 1]
  out = np.zeros(lead + x.shape[-1:])
  for b in itertools.product(*map(range, lead)):
    kept = x[b][mask[b]]  # (kept, C)
    if len(kept):
      out[b] = kept.max(0) if op == "max" else kept.mean(0)
  return out


@pytest.mark.parametrize("op", ["avg", "max"])
@pytest.mark.parametrize("shape,mask_shape", [
    ((2, 4, 5, 3), (2, 4, 5)), ((3, 2, 3, 2, 2), (2, 3, 2))])
def test_masked_global_pool_equals_loop(op, shape, mask_shape):
  x = unique_input(rng(), shape)
  mask = rng(2).random(mask_shape) < 0.5
  mask = np.broadcast_to(mask, shape[:-1]).copy()
  mask[0] = False  # an example with nothing kept
  fn = jaxpool.global_avg_pool if op == "avg" else jaxpool.global_max_pool
  y = fn(x, mask=mask)
  np.testing.assert_allclose(y, numpy_global(x, mask, op, len(shape) - 2),
                             rtol=1e-6)
  np.testing.assert_array_equal(y[0], 0)
  grad = jax.grad(lambda x: fn(x, mask=mask).sum())(x)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(np.asarray(grad)[~mask], 0)
  check_grads(lambda x: fn(x, mask=mask), (x,), 1, modes=("rev",),
              eps=1e-2)


@pytest.mark.parametrize("tie_rule", ["first", "split"])
def test_masked_global_max_ties_equal_torch(tie_rule):
  # ReLU-like values: many ties, among kept and masked elements alike.
  x = np.maximum(np.round(rng().standard_normal((3, 4, 4, 2)) * 2), 0
                 ).astype(np.float32)
  mask = rng(3).random((3, 4, 4)) < 0.6
  mask[2] = False
  ct = rng(4).standard_normal((3, 2)).astype(np.float32)
  xt = torch.tensor(x, requires_grad=True)
  masked = torch.where(torch.tensor(mask)[..., None], xt,
                       torch.tensor(-np.inf))
  nchw = masked.permute(0, 3, 1, 2)
  if tie_rule == "split":
    y = nchw.amax((2, 3))
  else:
    y = torch.nn.functional.adaptive_max_pool2d(nchw, 1)[:, :, 0, 0]
  y = torch.where(torch.tensor(mask.any((1, 2)))[:, None], y,
                  torch.zeros(()))
  (g,) = torch.autograd.grad(y, xt, torch.tensor(ct))
  fn = lambda x: jaxpool.global_max_pool(x, mask=mask, tie_rule=tie_rule)
  np.testing.assert_array_equal(fn(x), y.detach().numpy())
  np.testing.assert_allclose(jax.vjp(fn, x)[1](ct)[0], g.numpy(), rtol=1e-6)


def test_mask_broadcasts_and_checks():
  x = jnp.ones((2, 5, 3))
  np.testing.assert_array_equal(
      jaxpool.global_avg_pool(x, mask=np.array([True] * 2 + [False] * 3)),
      jaxpool.global_avg_pool(x[:, :2]))
  np.testing.assert_array_equal(  # Keras passes int masks
      jaxpool.global_max_pool(x, mask=np.array([[1, 0, 0, 0, 0]] * 2)),
      jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="mask"):
    jaxpool.global_avg_pool(x, mask=np.ones((2, 4), bool))
  with pytest.raises(TypeError, match="mask"):
    jaxpool.max_pool(x, (2,), mask=np.ones((2, 5)))
  with pytest.raises(ValueError, match="divisor_override"):
    jaxpool.avg_pool(x, (2,), mask=np.ones((2, 5), bool),
                     divisor_override=2)


# ---------------------------------------------------------------------------
# Masked windowed pooling.


def numpy_masked_window(x, mask, op, window, strides, padding,
                        channels_first):
  """The loop: each window's kept elements (padding is never kept)."""
  rank = len(window)
  x = np.asarray(x, np.float64)
  mask = np.broadcast_to(mask, x.shape[:-rank - 1] + x.shape[-rank:]
                         if channels_first else x.shape[:-1])
  if channels_first:
    x = np.moveaxis(x, -rank - 1, -1)
  lead = x.ndim - rank - 1
  pads = [(0, 0)] * lead + [(p, p) for p in padding]
  xp = np.pad(x, pads + [(0, 0)])
  mp = np.pad(mask, pads)
  spatial = x.shape[lead:lead + rank]
  outs = [(n + 2 * p - k) // s + 1
          for n, p, k, s in zip(spatial, padding, window, strides)]
  y = np.zeros(x.shape[:lead] + tuple(outs) + x.shape[-1:])
  for b in itertools.product(*map(range, x.shape[:lead])):
    for pos in itertools.product(*map(range, outs)):
      win = tuple(slice(o * s, o * s + k)
                  for o, s, k in zip(pos, strides, window))
      kept = xp[b + win][mp[b + win]]
      if len(kept):
        y[b + pos] = kept.max(0) if op == "max" else kept.mean(0)
  return np.moveaxis(y, -1, -rank - 1) if channels_first else y


@pytest.mark.parametrize("op", ["avg", "max"])
@pytest.mark.parametrize("shape,window,strides,padding,channels_first", [
    ((2, 9, 3), (3,), (2,), (1,), False),
    ((2, 3, 5, 6), (2, 3), (1, 2), (1, 0), True),
])
def test_masked_window_pool_equals_loop(op, shape, window, strides, padding,
                                        channels_first):
  x = unique_input(rng(), shape)
  spatial = shape[-len(window):] if channels_first else shape[1:-1]
  mask = rng(5).random((shape[0],) + tuple(spatial)) < 0.4
  fn = jaxpool.max_pool if op == "max" else jaxpool.avg_pool
  pool = lambda x: fn(x, window, strides, padding, mask=mask,
                      channels_first=channels_first)
  np.testing.assert_allclose(
      pool(x), numpy_masked_window(x, mask, op, window, strides, padding,
                                   channels_first), rtol=1e-6, atol=1e-6)
  grad = jax.grad(lambda x: pool(x).sum())(x)
  assert np.all(np.isfinite(grad))
  keep = np.expand_dims(mask, 1 if channels_first else -1)
  np.testing.assert_array_equal(
      np.asarray(grad) * ~np.broadcast_to(keep, shape), 0)
  check_grads(pool, (x,), 1, modes=("rev",), eps=1e-2)


def numpy_masked_adaptive(x, mask, op, out):
  """The loop over PyTorch's bins, floor(i*n/o) to ceil((i+1)*n/o)."""
  x = np.asarray(x, np.float64)
  spatial = x.shape[1:-1]
  y = np.zeros(x.shape[:1] + tuple(out) + x.shape[-1:])
  for b in range(x.shape[0]):
    for pos in itertools.product(*map(range, out)):
      win = tuple(slice(i * n // o, -(-(i + 1) * n // o))
                  for i, n, o in zip(pos, spatial, out))
      kept = x[(b,) + win][mask[(b,) + win]]
      if len(kept):
        y[(b,) + pos] = kept.max(0) if op == "max" else kept.mean(0)
  return y


@pytest.mark.parametrize("op", ["avg", "max"])
def test_masked_adaptive_pool_equals_loop(op):
  x = unique_input(rng(), (2, 7, 10, 2))
  mask = rng(6).random((2, 7, 10)) < 0.3
  fn = jaxpool.adaptive_max_pool if op == "max" else jaxpool.adaptive_avg_pool
  pool = lambda x: fn(x, (3, 4), mask=mask)
  np.testing.assert_allclose(pool(x), numpy_masked_adaptive(
      x, mask, op, (3, 4)), rtol=1e-6, atol=1e-6)
  grad = jax.grad(lambda x: pool(x).sum())(x)
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(np.asarray(grad)[~mask], 0)
  check_grads(pool, (x,), 1, modes=("rev",), eps=1e-2)


def test_masked_max_pool_fully_masked_windows_and_neg_inf():
  x = jnp.array([[[-jnp.inf], [2.0], [5.0], [7.0]]])
  mask = jnp.array([[True, False, False, False]])
  np.testing.assert_array_equal(
      jaxpool.max_pool(x, (2,), mask=mask).ravel(), [-np.inf, 0.0])
  grad = jax.grad(lambda x: jaxpool.avg_pool(x, (2,), mask=mask).sum())(x)
  np.testing.assert_array_equal(grad.ravel(), [1, 0, 0, 0])


def test_masked_half_precision_accumulates_in_float32():
  x = jnp.full((1, 300, 1), 0.1, jnp.bfloat16)
  y = jaxpool.global_avg_pool(x, mask=jnp.ones((1, 300), bool))
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(y[0, 0]), np.float32(x[0, 0, 0]))


# ---------------------------------------------------------------------------
# Segment pooling and the graph readouts against PyTorch Geometric.


def graph_batch(seed, nodes=12, graphs=5, features=3, ties=True):
  r = rng(seed)
  # Ties away from 0 (see test_pyg_max_gradient_at_zero).
  x = (np.round(r.standard_normal((nodes, features)) * 2) + 10
       if ties else r.standard_normal((nodes, features))).astype(np.float32)
  batch = r.integers(0, graphs, nodes)
  batch[batch == 1] = 0  # graph 1 is empty
  return x, batch


def pyg_vjp(fn, x, batch, ct, **kwargs):
  xt = torch.tensor(x, requires_grad=True)
  y = fn(xt, None if batch is None else torch.tensor(batch), **kwargs)
  (g,) = torch.autograd.grad(y, xt, torch.tensor(ct))
  return y.detach().numpy(), g.numpy()


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("sorted_", [False, True])
def test_segment_pool_equals_pyg_scatter(name, sorted_):
  x, batch = graph_batch(0)
  if sorted_:
    order = np.argsort(batch, kind="stable")
    x, batch = x[order], batch[order]
  ct = rng(1).standard_normal((6, 3)).astype(np.float32)
  want, want_grad = pyg_vjp(
      lambda x, b: scatter(x, b, 0, dim_size=6, reduce=name), x, batch, ct)
  fn = jax.jit(lambda x: jaxpool.segment_pool(
      x, batch, 6, method=name, indices_are_sorted=sorted_))
  y, vjp = jax.vjp(fn, x)
  np.testing.assert_allclose(y, want, rtol=1e-6)
  np.testing.assert_array_equal(y[1], 0)
  np.testing.assert_allclose(vjp(ct)[0], want_grad, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("p", [2.0, 4.0, 3.0, 2.5])
def test_segment_lp_equals_torch(p):
  # torch: the segment sums of x ** p, then the root. Even powers on signed
  # rows (integer powers, as torch's pow), odd and fractional ones on
  # positive rows; the empty segment 1 is 0 with zero gradient (jaxpool's
  # lp_pool rule).
  x, batch = graph_batch(5, ties=False)
  if p % 2:
    x = np.abs(x) + 0.1
  ct = rng(6).standard_normal((6, 3)).astype(np.float32)
  want, want_grad = pyg_vjp(
      lambda xt, b: torch.zeros(6, 3).index_add(0, b, xt ** p).pow(1 / p),
      x, batch, ct)
  y, vjp = jax.vjp(lambda x: jaxpool.segment_pool(x, batch, 6, method="lp",
                                                  p=p), x)
  np.testing.assert_allclose(y, want, rtol=2e-6)
  np.testing.assert_array_equal(y[1], 0)
  np.testing.assert_allclose(vjp(ct)[0], want_grad, rtol=1e-5, atol=1e-6)
  grad_empty = jax.grad(lambda x: jaxpool.segment_pool(
      x, np.zeros(len(x), np.int32), 2, method="lp", p=p)[1].sum())(x)
  np.testing.assert_array_equal(grad_empty, 0)


def test_segment_lp_of_a_negative_sum_is_nan_as_torch():
  x = np.array([[-2.0], [1.0], [2.0]], np.float32)
  ids = np.array([0, 0, 1])
  want = torch.zeros(2, 1).index_add(0, torch.tensor(ids),
                                     torch.tensor(x) ** 3).pow(1 / 3)
  y = jaxpool.segment_pool(x, ids, 2, method="lp", p=3.0)
  np.testing.assert_array_equal(np.isnan(y), np.isnan(want.numpy()))
  np.testing.assert_allclose(y[1], want[1].numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", ["add", "mean", "max"])
def test_graph_readouts_equal_pyg(name):
  ours = getattr(graph, f"global_{name}_pool")
  theirs = getattr(pyg, f"global_{name}_pool")
  x, batch = graph_batch(2, ties=name == "max")
  for b, size in ((batch, None), (batch, 7)):
    y_want = theirs(torch.tensor(x), torch.tensor(b), size).numpy()
    ct = rng(3).standard_normal(y_want.shape).astype(np.float32)
    want, want_grad = pyg_vjp(theirs, x, b, ct, size=size)
    y, vjp = jax.vjp(lambda x: ours(x, b, size), x)
    np.testing.assert_allclose(y, want, rtol=1e-6)
    np.testing.assert_allclose(vjp(ct)[0], want_grad, rtol=1e-6, atol=1e-7)
  # No batch: one graph of every node; unique values (PyTorch Geometric's
  # x.max(dim) then picks one of tied nodes, where jaxpool shares).
  x = unique_input(rng(), (7, 3))
  np.testing.assert_allclose(ours(x), theirs(torch.tensor(x), None).numpy(),
                             rtol=1e-6)
  np.testing.assert_allclose(ours(x[:, 0]),
                             theirs(torch.tensor(x[:, 0]), None).numpy(),
                             rtol=1e-6)


def test_pyg_max_gradient_at_zero():
  # PyTorch Geometric's max is torch's scatter_reduce("amax",
  # include_self=False) into zeros, whose backward still counts those zeros
  # as tied wherever a graph's maximum is exactly 0: the gradient there is
  # divided by ties + 1, and a part of it is lost. jaxpool shares the whole
  # gradient among the tied nodes (torch.amax's rule), which PyTorch
  # Geometric also does for every maximum other than 0.
  x = np.array([[0.0], [0.0], [1.0], [-1.0]], np.float32)
  batch = np.array([0, 0, 1, 2])
  ct = np.ones((3, 1), np.float32)
  _, theirs = pyg_vjp(pyg.global_max_pool, x, batch, ct)
  np.testing.assert_allclose(theirs.ravel(), [1 / 3, 1 / 3, 1, 1])
  ours = jax.grad(lambda x: graph.global_max_pool(x, batch).sum())(x)
  np.testing.assert_array_equal(ours.ravel(), [0.5, 0.5, 1, 1])


def test_graph_readout_size_under_jit():
  x, batch = graph_batch(4)
  jitted = jax.jit(graph.global_mean_pool, static_argnums=2)
  np.testing.assert_allclose(
      jitted(x, batch, 6), pyg.global_mean_pool(
          torch.tensor(x), torch.tensor(batch), 6).numpy(), rtol=1e-6)
  with pytest.raises(ValueError, match="size"):
    jax.jit(graph.global_max_pool)(x, batch)


def test_segment_pool_checks_arguments():
  x = jnp.ones((4, 2))
  ids = jnp.array([0, 0, 1, 1])
  with pytest.raises(TypeError, match="num_segments"):
    jax.jit(jaxpool.segment_pool)(x, ids, 2)
  with pytest.raises(ValueError, match="method"):
    jaxpool.segment_pool(x, ids, 2, method="median")
  with pytest.raises(ValueError, match="segment_ids"):
    jaxpool.segment_pool(x, ids[:3], 2)
  with pytest.raises(TypeError, match="segment_ids"):
    jaxpool.segment_pool(x, ids.astype(jnp.float32), 2)
  with pytest.raises(ValueError, match="p is the power"):
    jaxpool.segment_pool(x, ids, 2, method="lp")
  with pytest.raises(ValueError, match="p is the power"):
    jaxpool.segment_pool(x, ids, 2, method="mean", p=2.0)
  with pytest.raises(ValueError, match="p must be finite"):
    jaxpool.segment_pool(x, ids, 2, method="lp", p=-1.0)


def test_segment_pool_integers_halves_and_nan():
  ids = np.array([0, 0, 2])
  xi = np.array([[3], [5], [-1]], np.int32)
  np.testing.assert_array_equal(
      jaxpool.segment_pool(xi, ids, 3, method="max"), [[5], [0], [-1]])
  mean = jaxpool.segment_pool(xi, ids, 3)
  assert jnp.issubdtype(mean.dtype, jnp.floating)
  np.testing.assert_allclose(mean.ravel(), [4, 0, -1])
  xh = jnp.full((300, 1), 0.1, jnp.float16)
  y = jaxpool.segment_pool(xh, jnp.zeros(300, jnp.int32), 1)
  assert y.dtype == jnp.float16
  np.testing.assert_allclose(np.float32(y[0, 0]), np.float32(xh[0, 0]))
  # NaN propagates, as torch's scatter_reduce.
  xn = np.array([[1.0], [np.nan], [2.0]], np.float32)
  y = jaxpool.segment_pool(xn, ids, 3, method="max")
  assert np.isnan(y[0, 0]) and y[2, 0] == 2.0


@hypothesis.settings(max_examples=10, **SETTINGS)
@hypothesis.given(st.sampled_from([1, 5]), st.integers(0, 99),
                  st.sampled_from(["sum", "mean", "max", "min", "lp"]))
def test_segment_pool_equals_loop(segments, seed, name):
  # Few shapes, so few compilations; the ids vary.
  nodes = 16
  r = rng(seed)
  x = r.standard_normal((nodes, 2))
  ids = r.integers(-1, segments + 1, nodes)  # out-of-range ids are dropped
  p = 2.0 if name == "lp" else None
  y = jaxpool.segment_pool(x.astype(np.float32), ids, segments, method=name,
                           p=p)
  want = np.zeros((segments, 2))
  for s in range(segments):
    rows = x[ids == s]
    if len(rows):
      want[s] = {"sum": np.sum, "mean": np.mean, "max": np.max,
                 "min": np.min,
                 "lp": lambda r, a: np.sqrt(np.sum(r * r, a))}[name](rows, 0)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Modules: the mask is a call argument.


@pytest.mark.parametrize("name,kwargs", [
    ("MaxPool", dict(window_shape=(2,))),
    ("AvgPool", dict(window_shape=(3,), strides=1, padding=1)),
    ("GlobalAvgPool", {}),
    ("GlobalMaxPool", dict(tie_rule="split")),
    ("AdaptiveAvgPool", dict(output_size=4)),
    ("AdaptiveMaxPool", dict(output_size=(4,))),
])
def test_modules_take_the_mask_at_call(name, kwargs):
  x = unique_input(rng(), (2, 6, 3))
  mask = ragged_mask([4, 1], 6)
  function = getattr(jpl, name).function
  want = function(x, **kwargs, mask=mask)
  linen = getattr(jpl, name)(**kwargs)
  np.testing.assert_array_equal(linen.apply({}, x, mask), want)
  np.testing.assert_array_equal(linen.apply({}, x, mask=mask), want)
  np.testing.assert_array_equal(getattr(jpn, name)(**kwargs)(x, mask), want)
  eqx_module = getattr(jpe, name)(**kwargs)
  np.testing.assert_array_equal(eqx_module(x, mask), want)
  np.testing.assert_array_equal(
      eqx.filter_jit(lambda m, x, k: m(x, k))(eqx_module, x, mask), want)
  np.testing.assert_array_equal(linen.apply({}, x), function(x, **kwargs))


def test_masked_modules_in_models():
  x = jnp.ones((2, 5, 3))
  mask = jnp.asarray(ragged_mask([5, 2], 5))

  class Head(nn.Module):

    @nn.compact
    def __call__(self, x, mask):
      return nn.Dense(2)(jpl.GlobalAvgPool()(x, mask))

  params = Head().init(jax.random.key(0), x, mask)
  assert Head().apply(params, x, mask).shape == (2, 2)
  model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))
  pooled = nnx.jit(lambda m, x, k: jpn.GlobalMaxPool()(m(x), k))(
      model, x, mask)
  assert pooled.shape == (2, 4)

"""Tests of adaptive and global pooling against PyTorch and a NumPy loop."""

from __future__ import annotations

import functools
import itertools
import math

import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from absl.testing import parameterized
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxpool
from jaxpool import _plan_table

SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[hypothesis.HealthCheck.too_slow])


# ---------------------------------------------------------------------------
# Layout helpers, shared with the other test files of this family.


def to_bcs(x: np.ndarray, rank: int, channels_first: bool):
  """``x`` as ``(batch, C, *spatial)`` and a function that undoes that."""
  x = np.asarray(x)
  if not channels_first:
    x = np.moveaxis(x, -1, -rank - 1)
  lead, channels = x.shape[:-rank - 1], x.shape[-rank - 1]
  flat = x.reshape((-1, channels) + x.shape[-rank:])

  def undo(y):
    y = np.asarray(y)
    y = y.reshape(lead + y.shape[1:])
    return y if channels_first else np.moveaxis(y, -rank - 1, -1)

  return flat, undo


def torch_vjp(fn, x: np.ndarray, cotangent: np.ndarray, rank: int,
              channels_first: bool):
  """PyTorch's ``fn`` on ``x`` in our layout: output and VJP, our layout."""
  xb, undo = to_bcs(x, rank, channels_first)
  xt = torch.tensor(xb, requires_grad=True)
  y = fn(xt)
  ct, _ = to_bcs(cotangent, rank, channels_first)
  (grad,) = torch.autograd.grad(y, xt, torch.tensor(ct))
  return undo(y.detach().numpy()), undo(grad.numpy())


def random_input(rng, shape, ties: bool, dtype=np.float32) -> np.ndarray:
  """Unit-normal values, or few distinct ReLU-like values to force ties."""
  x = rng.standard_normal(shape)
  if ties:
    x = np.maximum(np.round(x * 2), 0)
  return x.astype(dtype)


def unique_input(rng, shape, dtype=np.float32) -> np.ndarray:
  """Values far apart (a permutation), for finite-difference checks."""
  return (rng.permutation(math.prod(shape)).reshape(shape) * 0.1).astype(
      dtype)


# ---------------------------------------------------------------------------
# The NumPy loop reference.


def bin_ranges(n: int, o: int) -> list[range]:
  """PyTorch's bins: ``[floor(i n / o), ceil((i + 1) n / o))``."""
  return [range(math.floor(i * n / o), math.ceil((i + 1) * n / o))
          for i in range(o)]


def numpy_adaptive(x, out_shape, op: str, channels_first: bool = False,
                   cotangent=None):
  """Adaptive pooling by a loop over bins; returns (output, VJP or None).

  Max follows PyTorch's loop ``if (v > best || isnan(v))`` over the bin in
  row-major order, starting from ``-inf`` at the bin's first element.
  """
  rank = len(out_shape)
  xb, undo = to_bcs(x, rank, channels_first)
  batch = xb.shape[:2]
  ranges = [bin_ranges(n, o) for n, o in zip(xb.shape[2:], out_shape)]
  y = np.zeros(batch + tuple(out_shape),
               np.float64 if op == "avg" else xb.dtype)
  grad = np.zeros(xb.shape, np.float64)
  ct = None if cotangent is None else to_bcs(cotangent, rank,
                                             channels_first)[0]
  for out_index in np.ndindex(*out_shape):
    at = (slice(None), slice(None)) + out_index
    members = list(itertools.product(*[r[i] for r, i in
                                       zip(ranges, out_index)]))
    if op == "avg":
      y[at] = sum(xb[(slice(None), slice(None)) + m].astype(np.float64)
                  for m in members) / len(members)
      if ct is not None:
        for m in members:
          grad[(slice(None), slice(None)) + m] += ct[at] / len(members)
      continue
    for b, c in np.ndindex(*batch):
      best, which = None, members[0]
      for m in members:
        v = xb[(b, c) + m]
        if best is None or v > best or (np.issubdtype(type(v), np.floating)
                                        and np.isnan(v)):
          best, which = v, m
      y[(b, c) + out_index] = best
      if ct is not None:
        grad[(b, c) + which] += ct[(b, c) + out_index]
  return undo(y), (None if ct is None else undo(grad))


TORCH_ADAPTIVE = {
    ("avg", 1): F.adaptive_avg_pool1d, ("avg", 2): F.adaptive_avg_pool2d,
    ("avg", 3): F.adaptive_avg_pool3d, ("max", 1): F.adaptive_max_pool1d,
    ("max", 2): F.adaptive_max_pool2d, ("max", 3): F.adaptive_max_pool3d,
}
JAX_ADAPTIVE = {"avg": jaxpool.adaptive_avg_pool,
                "max": jaxpool.adaptive_max_pool}


def full_output_shape(in_spatial, output_size):
  return tuple(n if o is None else o for n, o in zip(in_spatial, output_size))


@st.composite
def adaptive_configs(draw):
  rank = draw(st.integers(1, 3))
  biggest = (16, 10, 6)[rank - 1]
  in_spatial = tuple(draw(st.integers(1, biggest)) for _ in range(rank))
  output_size = tuple(
      draw(st.one_of(st.none(), st.integers(1, n + 3)) if rank > 1 else
           st.integers(1, n + 3)) for n in in_spatial)
  batch = tuple(draw(st.lists(st.integers(1, 2), max_size=2)))
  return dict(rank=rank, in_spatial=in_spatial, output_size=output_size,
              batch=batch, channels=draw(st.integers(1, 3)),
              channels_first=draw(st.booleans()), ties=draw(st.booleans()),
              seed=draw(st.integers(0, 2**16)))


def _shape(config):
  c = (config["channels"],)
  if config["channels_first"]:
    return config["batch"] + c + config["in_spatial"]
  return config["batch"] + config["in_spatial"] + c


@pytest.mark.parametrize("op", ["avg", "max"])
@hypothesis.settings(max_examples=20, **SETTINGS)
@hypothesis.given(config=adaptive_configs())
def test_adaptive_matches_torch_and_numpy(op, config):
  rng = np.random.default_rng(config["seed"])
  x = random_input(rng, _shape(config), config["ties"])
  out_shape = full_output_shape(config["in_spatial"], config["output_size"])
  rank, cf = config["rank"], config["channels_first"]
  fn = functools.partial(JAX_ADAPTIVE[op], output_size=config["output_size"],
                         channels_first=cf)
  y, vjp = jax.vjp(jax.jit(fn), jnp.asarray(x))
  axes = range(x.ndim - rank, x.ndim) if cf else range(
      x.ndim - rank - 1, x.ndim - 1)
  expected_shape = list(x.shape)
  for axis, o in zip(axes, out_shape):
    expected_shape[axis] = o
  chex.assert_shape(y, tuple(expected_shape))
  ct = rng.standard_normal(y.shape).astype(np.float32)
  (grad,) = vjp(jnp.asarray(ct))

  torch_fn = functools.partial(TORCH_ADAPTIVE[op, rank],
                               output_size=out_shape if rank > 1 else
                               out_shape[0])
  y_torch, grad_torch = torch_vjp(torch_fn, x, ct, rank, cf)
  np.testing.assert_allclose(y, y_torch, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grad, grad_torch, rtol=1e-5, atol=1e-6)

  y_np, grad_np = numpy_adaptive(x, out_shape, op, cf, ct)
  np.testing.assert_allclose(y, y_np, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grad, grad_np, rtol=1e-5, atol=1e-5)


# Regular bins (9 -> 4, 7 -> 3, 5 -> 2: windows 3, 3, 4 at strides 2, 2, 1)
# and irregular ones (11 -> 4: lengths 3, 4, 4, 3; 41 -> 3: 14, 15, 14;
# 10 -> 4: starts 0, 2, 5, 7), which take the running maximum tap by tap,
# and 200 -> 3 (lengths 67, 68, 67), longer than that: by reduce_window.
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("in_spatial,out_shape", [
    ((9, 7, 5), (4, 3, 2)), ((11, 41, 10), (4, 3, 4)),
    ((200, 11, 10), (3, 4, 4))])
def test_max_nan_and_inf_follow_torch(rank, in_spatial, out_shape):
  rng = np.random.default_rng(rank)
  in_spatial, out_shape = in_spatial[:rank], out_shape[:rank]
  x = rng.standard_normal((2, 3) + in_spatial).astype(np.float32)
  x = np.maximum(x, 0.5)  # ties
  x[0, 0].flat[[1, 4, 6]] = np.nan
  x[0, 1] = -np.inf
  x[1, 2].flat[::3] = np.nan
  x[1, 1].flat[::5] = np.inf
  ct = rng.standard_normal((2, 3) + out_shape).astype(np.float32)
  y, vjp = jax.vjp(jax.jit(lambda x: jaxpool.adaptive_max_pool(
      x, out_shape, channels_first=True)), jnp.asarray(x))
  fn = functools.partial(TORCH_ADAPTIVE["max", rank],
                         output_size=out_shape if rank > 1 else out_shape[0])
  y_torch, grad_torch = torch_vjp(fn, x, ct, rank, True)
  np.testing.assert_array_equal(y, y_torch)
  # An element chosen by several overlapping bins sums their cotangents,
  # in an order that may differ from PyTorch's by one rounding.
  np.testing.assert_allclose(vjp(jnp.asarray(ct))[0], grad_torch, rtol=1e-6,
                             atol=0)


# At this size XLA:CPU runs max reductions in library kernels that drop NaN.
@pytest.mark.parametrize("output_size", [7, 5, 1])
def test_max_nan_at_library_kernel_sizes_follows_torch(output_size):
  rng = np.random.default_rng(12)
  x = rng.standard_normal((8, 56, 56, 64)).astype(np.float32)
  x[rng.random(x.shape) < 0.001] = np.nan
  ct = rng.standard_normal((8, output_size, output_size, 64)).astype(
      np.float32)
  y, vjp = jax.vjp(jax.jit(lambda x: jaxpool.adaptive_max_pool(
      x, output_size)), jnp.asarray(x))
  y_torch, grad_torch = torch_vjp(
      functools.partial(F.adaptive_max_pool2d, output_size=output_size), x,
      ct, 2, False)
  np.testing.assert_array_equal(jax.jit(lambda x: jaxpool.adaptive_max_pool(
      x, output_size))(x), y_torch)
  np.testing.assert_array_equal(y, y_torch)
  np.testing.assert_allclose(vjp(jnp.asarray(ct))[0], grad_torch, rtol=1e-6,
                             atol=0)
  global_max = jax.jit(jaxpool.global_max_pool)(x)
  np.testing.assert_array_equal(global_max, np.max(x, axis=(1, 2)))


def test_equinox_example_from_the_issue():
  """10 -> 4 average: bins [0, 3), [2, 5), [5, 8), [7, 10), as PyTorch."""
  x = np.random.default_rng(0).standard_normal((10, 1)).astype(np.float32)
  y = jaxpool.adaptive_avg_pool(x, (4,))
  expected = [x[0:3].mean(), x[2:5].mean(), x[5:8].mean(), x[7:10].mean()]
  np.testing.assert_allclose(y[:, 0], expected, rtol=1e-6)
  y_torch = F.adaptive_avg_pool1d(torch.tensor(x.T), 4).numpy()[0]
  np.testing.assert_allclose(y[:, 0], y_torch, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_avg_half_precision_accumulates_in_float32(dtype):
  # Bins of ~2700 ones and threes: a half-precision running sum would stall.
  x = np.ones((1, 8001, 1), np.float32)
  x[0, ::7] = 3.0
  y = jaxpool.adaptive_avg_pool(jnp.asarray(x, dtype), (3,))
  assert y.dtype == dtype
  expected = numpy_adaptive(x, (3,), "avg")[0]
  np.testing.assert_allclose(np.asarray(y, np.float32), expected, rtol=1e-2)
  g = jaxpool.global_avg_pool(jnp.asarray(x, dtype))
  assert g.dtype == dtype
  np.testing.assert_allclose(np.asarray(g, np.float32)[0, 0], x.mean(),
                             rtol=1e-2)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_])
def test_max_integers_and_bools(dtype):
  rng = np.random.default_rng(1)
  x = (rng.integers(0, 3, (2, 11, 6, 2))).astype(dtype)
  y = jaxpool.adaptive_max_pool(x, (4, 5))
  assert y.dtype == dtype
  np.testing.assert_array_equal(y, numpy_adaptive(x, (4, 5), "max")[0])


def test_int_output_size_means_one_batch_dim():
  x = np.random.default_rng(2).standard_normal((2, 9, 7, 3)).astype(
      np.float32)
  np.testing.assert_array_equal(jaxpool.adaptive_max_pool(x, 4),
                                jaxpool.adaptive_max_pool(x, (4, 4)))
  chex.assert_shape(jaxpool.adaptive_avg_pool(x[..., None], 2),
                    (2, 2, 2, 2, 1))


def _count_equations(jaxpr) -> int:
  """Equations of a jaxpr, those of its sub-jaxprs included."""
  total = 0
  for eqn in jaxpr.eqns:
    total += 1
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          total += _count_equations(sub)
  return total


@pytest.mark.parametrize("small, large", [
    ((64, 31), (640, 311)),  # Irregular bins, shorter than the input.
    ((5, 12), (50, 120)),  # More bins than elements.
    ((224, 7), (2240, 70)),  # Sizes divide.
])
def test_no_per_bin_unrolling(monkeypatch, small, large):
  """The traced program does not grow with the number of bins (windowed
  runs, which grow with the number of runs up to the plan's bound, are
  tested below)."""
  monkeypatch.setitem(_plan_table.DEFAULT_PARAMETERS, "adaptive_segments", 0)

  def size(n, o):
    x = jax.ShapeDtypeStruct((2, n, n, 3), jnp.float32)
    sizes = []
    for fn in (jaxpool.adaptive_avg_pool, jaxpool.adaptive_max_pool):
      grad = jax.grad(lambda x, fn=fn: fn(x, (o, o)).sum())
      sizes.append(_count_equations(jax.make_jaxpr(grad)(x).jaxpr))
    return sizes

  assert size(*small) == size(*large)


@pytest.mark.parametrize("sizes,outputs", [
    ((64, 64), (31, 31)),  # Three runs per dim.
    ((30, 17), (7, 5)),  # Runs of different lengths and strides.
    ((14, 9), (6, 4)),  # Equal runs with a jump between them.
    ((12,), (5,)),
    ((9, 8, 7), (4, 3, 3)),
])
@pytest.mark.parametrize("channels_first", [False, True])
def test_windowed_runs_equal_the_staged_bins(monkeypatch, sizes, outputs,
                                             channels_first):
  """Adaptive max as windowed maxima over runs of bins (the plan's
  ``adaptive_segments``) equals the bins searched stage by stage: values
  and gradients, with ties, NaN and -inf."""
  rng = np.random.default_rng(len(sizes))
  shape = ((2, 3) + sizes) if channels_first else ((2,) + sizes + (3,))
  x = np.round(rng.standard_normal(shape) * 2).astype(np.float32)
  x.flat[rng.integers(0, x.size, 4)] = np.nan
  x.flat[rng.integers(0, x.size, 4)] = -np.inf
  f = lambda x: jaxpool.adaptive_max_pool(x, outputs,
                                          channels_first=channels_first)
  ct = rng.standard_normal(jax.eval_shape(f, x).shape).astype(np.float32)
  results, programs = [], []
  for runs in (0, 8):
    monkeypatch.setitem(_plan_table.DEFAULT_PARAMETERS, "adaptive_segments",
                        runs)
    # A new function each time: the plan is read when it is traced.
    y, vjp = jax.vjp(jax.jit(lambda x: f(x)), jnp.asarray(x))
    results.append((np.asarray(y), np.asarray(vjp(jnp.asarray(ct))[0])))
    programs.append(str(jax.make_jaxpr(jax.grad(lambda x: f(x).sum()))(x)))
  assert programs[0] != programs[1]  # Two lowerings were compared.
  np.testing.assert_array_equal(results[0][0], results[1][0])
  np.testing.assert_array_equal(results[0][1], results[1][1])


def test_reverse_mode_emits_no_scatter():
  x = jnp.ones((2, 13, 11, 3))
  for fn in (jaxpool.adaptive_avg_pool, jaxpool.adaptive_max_pool):
    grad = jax.jit(jax.grad(lambda x, fn=fn: fn(x, (6, 4)).sum()))
    assert "scatter" not in grad.lower(x).as_text()


class AdaptiveVariantsTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(op=["avg", "max"], channels_first=[False, True])
  def test_shapes_and_values(self, op, channels_first):
    rng = np.random.default_rng(3)
    shape = (2, 3, 13, 10) if channels_first else (2, 13, 10, 3)
    x = random_input(rng, shape, ties=True)
    fn = self.variant(JAX_ADAPTIVE[op],
                      static_argnames=("output_size", "channels_first"))
    y = fn(x, output_size=(6, None), channels_first=channels_first)
    chex.assert_shape(y, (2, 3, 6, 10) if channels_first else (2, 6, 10, 3))
    expected = numpy_adaptive(x, (6, 10), op, channels_first)[0]
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)

  @parameterized.product(op=["avg", "max"], out=[(3, 5), (7, 2), (4, 4)])
  def test_check_grads(self, op, out):
    rng = np.random.default_rng(4)
    x = unique_input(rng, (2, 8, 5, 2))
    check_grads(jax.jit(lambda x: JAX_ADAPTIVE[op](x, out)),
                (jnp.asarray(x),), order=2, modes=("fwd", "rev"), eps=1e-2)

  @parameterized.product(op=["avg", "max"])
  def test_vmap_equals_batch(self, op):
    x = random_input(np.random.default_rng(5), (4, 2, 9, 7, 3), ties=True)
    fn = functools.partial(JAX_ADAPTIVE[op], output_size=(4, 3))
    np.testing.assert_array_equal(jax.jit(jax.vmap(fn))(x), jax.jit(fn)(x))
    grad = jax.grad(lambda x: (fn(x) ** 2).sum())
    np.testing.assert_allclose(jax.jit(jax.vmap(grad))(x), jax.jit(grad)(x),
                               rtol=1e-6)

  def test_no_retrace(self):

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fn(x):
      return jaxpool.adaptive_max_pool(x, (3, 3))

    x = jnp.ones((2, 7, 7, 3))
    fn(x)
    fn(x + 1)


# ---------------------------------------------------------------------------
# Global pooling.


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pools_reduce_every_spatial_dim(rank, channels_first,
                                               keepdims):
  rng = np.random.default_rng(rank)
  spatial = (5, 4, 3)[:rank]
  shape = (2, 3) + spatial if channels_first else (2,) + spatial + (3,)
  x = random_input(rng, shape, ties=True)
  ct_shape = (2, 3) + (1,) * rank if channels_first else (
      (2,) + (1,) * rank + (3,))
  ct = rng.standard_normal(ct_shape).astype(np.float32)
  for op, fn in (("avg", jaxpool.global_avg_pool),
                 ("max", jaxpool.global_max_pool)):
    y, vjp = jax.vjp(jax.jit(functools.partial(
        fn, keepdims=keepdims, channels_first=channels_first)),
                     jnp.asarray(x))
    chex.assert_shape(y, ct_shape if keepdims else (2, 3))
    torch_fn = functools.partial(TORCH_ADAPTIVE[op, rank], output_size=1)
    y_torch, grad_torch = torch_vjp(torch_fn, x, ct, rank, channels_first)
    np.testing.assert_allclose(y, y_torch.reshape(y.shape), rtol=1e-6)
    (grad,) = vjp(jnp.asarray(ct).reshape(y.shape))
    np.testing.assert_allclose(grad, grad_torch, rtol=1e-6)


def test_global_pools_spatial_dims_and_batch_dims():
  x = random_input(np.random.default_rng(6), (2, 3, 5, 4, 6), ties=False)
  for fn, reduce in ((jaxpool.global_avg_pool, np.mean),
                     (jaxpool.global_max_pool, np.max)):
    y = fn(x, spatial_dims=2)
    chex.assert_shape(y, (2, 3, 6))
    np.testing.assert_allclose(y, reduce(x, axis=(2, 3)), rtol=1e-6)
    y = fn(x, spatial_dims=2, channels_first=True, keepdims=True)
    chex.assert_shape(y, (2, 3, 5, 1, 1))
    np.testing.assert_allclose(y, reduce(x, axis=(3, 4), keepdims=True),
                               rtol=1e-6)
    chex.assert_shape(fn(x), (2, 6))  # Default: three spatial dims.


def test_global_max_gradient_goes_to_first_maximum():
  x = jnp.array([[[1.0], [3.0], [3.0], [2.0]]])
  grad = jax.grad(lambda x: jaxpool.global_max_pool(x).sum())(x)
  np.testing.assert_array_equal(grad[0, :, 0], [0, 1, 0, 0])


def test_global_max_nan_and_inf_gradients_match_torch():
  # NaN: the last NaN of the plane takes the gradient; all -inf: the first.
  rng = np.random.default_rng(11)
  x = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
  x[0, 1, 2, 0] = x[0, 3, 1, 0] = np.nan
  x[1, :, :, 1] = -np.inf
  x[2, 2, 2, :] = np.inf
  ct = rng.standard_normal((3, 1, 1, 2)).astype(np.float32)
  y, vjp = jax.vjp(jax.jit(functools.partial(jaxpool.global_max_pool,
                                             keepdims=True)), jnp.asarray(x))
  torch_fn = functools.partial(TORCH_ADAPTIVE["max", 2], output_size=1)
  y_torch, grad_torch = torch_vjp(torch_fn, x, ct, 2, False)
  np.testing.assert_array_equal(y, y_torch.reshape(y.shape))
  np.testing.assert_array_equal(vjp(jnp.asarray(ct))[0], grad_torch)
  assert np.asarray(vjp(jnp.asarray(ct))[0])[0, 3, 1, 0] == ct[0, 0, 0, 0]


# ---------------------------------------------------------------------------
# tie_rule="split": torch.amax's gradient.


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_max_split_matches_torch_amax(rank, channels_first, dtype):
  rng = np.random.default_rng(rank)
  shape = (2,) + (5, 4, 3)[:rank] + (3,)
  x = random_input(rng, shape, ties=True, dtype=dtype)
  x[0, ..., 0] = 0.0  # A plane of ties only.
  if channels_first:
    x = np.moveaxis(x, -1, 1)
  ct = rng.standard_normal((2, 3)).astype(dtype)
  fn = functools.partial(jaxpool.global_max_pool, channels_first=channels_first,
                         tie_rule="split")
  y, vjp = jax.vjp(jax.jit(fn), jnp.asarray(x))
  xt = torch.tensor(x, requires_grad=True)
  axes = tuple(range(2, 2 + rank)) if channels_first else tuple(
      range(1, 1 + rank))
  yt = torch.amax(xt, axes)
  (grad_torch,) = torch.autograd.grad(yt, xt, torch.tensor(ct))
  np.testing.assert_array_equal(y, yt.detach().numpy())
  np.testing.assert_allclose(vjp(jnp.asarray(ct))[0], grad_torch.numpy(),
                             rtol=1e-6)
  # The default keeps PyTorch's adaptive rule: one element per plane.
  grad_first = jax.grad(lambda v: jnp.sum(jaxpool.global_max_pool(
      v, channels_first=channels_first)))(jnp.asarray(x))
  assert np.count_nonzero(grad_first) == 2 * 3
  assert np.count_nonzero(vjp(jnp.asarray(ct))[0]) > 2 * 3


def test_global_max_split_nan_plane_and_half_precision():
  x = np.array([[[1.0], [3.0], [3.0], [np.nan]],
                [[2.0], [2.0], [2.0], [2.0]]], np.float32)  # (N, L, C)
  xt = torch.tensor(x, requires_grad=True)
  torch.amax(xt, 1).sum().backward()
  grad = jax.grad(lambda v: jnp.sum(jaxpool.global_max_pool(
      v, tie_rule="split")))(jnp.asarray(x))
  np.testing.assert_array_equal(grad, xt.grad.numpy())  # NaN plane: NaN.
  grad16 = jax.grad(lambda v: jnp.sum(jaxpool.global_max_pool(
      v, tie_rule="split")))(jnp.asarray(x[1:], jnp.bfloat16))
  assert grad16.dtype == jnp.bfloat16
  np.testing.assert_array_equal(grad16, np.full((1, 4, 1), 0.25))
  # Integers have no gradient; values are the same under both rules.
  xi = jnp.asarray(np.arange(24).reshape(2, 3, 4), jnp.int32)
  np.testing.assert_array_equal(
      jaxpool.global_max_pool(xi, tie_rule="split"),
      jaxpool.global_max_pool(xi))


# ---------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("call, match", [
    (lambda x: jaxpool.adaptive_avg_pool(x, 0), "output_size"),
    (lambda x: jaxpool.adaptive_max_pool(x, (3, -1)), "output_size"),
    (lambda x: jaxpool.adaptive_max_pool(x, ()), "output_size"),
    (lambda x: jaxpool.adaptive_avg_pool(x, (2, 2, 2, 2)), "x must have"),
    (lambda x: jaxpool.adaptive_avg_pool(x[0, 0], 2), "output_size"),
    (lambda x: jaxpool.adaptive_max_pool(x[:, :0], (2, 2)), "non-empty"),
    (lambda x: jaxpool.global_avg_pool(x, spatial_dims=0), "spatial_dims"),
    (lambda x: jaxpool.global_max_pool(x, spatial_dims=4), "x must have"),
    (lambda x: jaxpool.global_max_pool(x, tie_rule="mean"), "tie_rule"),
])
def test_bad_input_raises_value_error(call, match):
  with pytest.raises(ValueError, match=match):
    call(jnp.ones((2, 6, 6, 3)))


@pytest.mark.parametrize("call", [
    lambda x: jaxpool.adaptive_avg_pool(x, 2.5),
    lambda x: jaxpool.adaptive_max_pool(x, (2, "a")),
    lambda x: jaxpool.global_avg_pool(x, keepdims=None),
    lambda x: jaxpool.adaptive_max_pool(x, 2, channels_first=1),
])
def test_bad_types_raise_type_error(call):
  with pytest.raises(TypeError):
    call(jnp.ones((2, 6, 6, 3)))


# ---------------------------------------------------------------------------
# Issue 16: indices, and what differs from PyTorch on purpose.


@pytest.mark.parametrize("shape,output_size", [
    ((2, 3, 10), (4,)), ((2, 3, 10, 7), (4, 3)), ((2, 3, 5, 6), (7, 9)),
    ((2, 2, 5, 9, 6), (3, 4, 2)), ((1, 2, 6, 6), (1, 1))])
@pytest.mark.parametrize("kind", ["ties", "nan"])
def test_adaptive_max_pool_with_indices_matches_torch(shape, output_size,
                                                      kind):
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(len(shape))
  x = np.maximum(np.round(rng.standard_normal(shape)), 0).astype(np.float32)
  if kind == "nan":
    x[rng.random(shape) < 0.1] = np.nan
  n = len(output_size)
  f = lambda x: jaxpool.adaptive_max_pool_with_indices(
      x, output_size, channels_first=True)
  (y, i), vjp = jax.vjp(jax.jit(f), jnp.asarray(x))
  ct = rng.standard_normal(y.shape).astype(np.float32)
  (g,) = vjp((jnp.asarray(ct), np.zeros(i.shape, jax.dtypes.float0)))
  xt = torch.tensor(x, requires_grad=True)
  yt, it = getattr(torch.nn.functional, f"adaptive_max_pool{n}d")(
      xt, output_size, return_indices=True)
  yt.backward(torch.tensor(ct))
  np.testing.assert_array_equal(y, yt.detach().numpy())
  np.testing.assert_array_equal(i, it.numpy())
  assert i.dtype == np.int32
  np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-6, atol=1e-6)
  # The indices feed max_unpool: each value lands at its index.
  up = np.asarray(jaxpool.max_unpool(y, i, shape[2:], channels_first=True))
  flat = up.reshape(shape[:2] + (-1,))
  picked = np.take_along_axis(flat, np.asarray(i).reshape(shape[:2] + (-1,)),
                              axis=-1)
  np.testing.assert_array_equal(picked, np.asarray(y).reshape(picked.shape))


def test_adaptive_indices_channels_last_equal_channels_first():
  x = np.random.default_rng(0).standard_normal((2, 9, 7, 3)).astype(
      np.float32)
  y, i = jaxpool.adaptive_max_pool_with_indices(x, (4, 5))
  y2, i2 = jaxpool.adaptive_max_pool_with_indices(
      np.moveaxis(x, -1, 1), (4, 5), channels_first=True)
  np.testing.assert_array_equal(i, np.moveaxis(np.asarray(i2), 1, -1))
  np.testing.assert_array_equal(y, np.moveaxis(np.asarray(y2), 1, -1))


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.uint8, np.bool_])
def test_integer_adaptive_max_keeps_dtype(dtype):
  """PyTorch raises "not implemented" for integers; jaxpool pools them."""
  x = np.random.default_rng(0).integers(0, 5, (2, 7, 9, 3)).astype(dtype)
  y = jaxpool.adaptive_max_pool(x, (3, 4))
  yi, i = jaxpool.adaptive_max_pool_with_indices(x, (3, 4))
  assert y.dtype == yi.dtype == dtype
  want = jaxpool.adaptive_max_pool(x.astype(np.float32), (3, 4))
  np.testing.assert_array_equal(np.asarray(y, np.float32), want)
  _, iw = jaxpool.adaptive_max_pool_with_indices(x.astype(np.float32), (3, 4))
  np.testing.assert_array_equal(i, iw)


@pytest.mark.parametrize("shape", [(0, 8, 8, 3), (2, 8, 8, 0)])
@pytest.mark.parametrize("name,call", [
    ("adaptive_max_pool", lambda x: jaxpool.adaptive_max_pool(x, (3, 3))),
    ("adaptive_avg_pool", lambda x: jaxpool.adaptive_avg_pool(x, (3, 3))),
    ("adaptive_max_pool_with_indices",
     lambda x: jaxpool.adaptive_max_pool_with_indices(x, (3, 3))[0]),
    ("global_max_pool", jaxpool.global_max_pool),
    ("spatial_pyramid_pool", jaxpool.spatial_pyramid_pool),
    ("max_pool", lambda x: jaxpool.max_pool(x, (3, 3), 1, 1)),
    ("max_pool_separable", lambda x: jaxpool.max_pool(x, (5, 5), 1, 2)),
    ("avg_pool", lambda x: jaxpool.avg_pool(x, (2, 2))),
    ("sppf", jaxpool.sppf),
])
def test_empty_batch_or_channels_give_empty_results(shape, name, call):
  """PyTorch raises for a zero-size batch or channel dim; jaxpool returns an
  empty result (and gradient) of the right shape."""
  x = jnp.zeros(shape, jnp.float32)
  y = jax.jit(call)(x)
  assert y.size == 0 and y.shape[0] == shape[0], (name, y.shape)
  g = jax.grad(lambda x: jnp.sum(call(x)))(x)
  assert g.shape == shape

"""Tests of spatial pyramid pooling, YOLO's SPP and SPPF."""

from __future__ import annotations

import functools
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
from jaxpool import _pyramid
from jaxpool._adaptive import Bins
from test_adaptive import SETTINGS
from test_adaptive import numpy_adaptive
from test_adaptive import random_input
from test_adaptive import torch_vjp
from test_adaptive import unique_input


def _flatten(y: np.ndarray, rank: int) -> np.ndarray:
  return y.reshape(y.shape[:-(rank + 1)] + (-1,))


def spp_definition(x, levels, method, channels_first):
  """The issue's definition, with the NumPy loop for each level."""
  rank = len(levels[0])
  pieces = [_flatten(numpy_adaptive(x, level, method, channels_first)[0],
                     rank) for level in levels]
  return np.concatenate(pieces, axis=-1)


@st.composite
def spp_configs(draw):
  rank = draw(st.integers(1, 3))
  biggest = (20, 11, 6)[rank - 1]
  spatial = tuple(draw(st.integers(1, biggest)) for _ in range(rank))
  levels = draw(st.lists(
      st.tuples(*[st.integers(1, 5) for _ in range(rank)]), min_size=1,
      max_size=3))
  return dict(rank=rank, spatial=spatial, levels=levels,
              batch=tuple(draw(st.lists(st.integers(1, 2), max_size=2))),
              channels_first=draw(st.booleans()), ties=draw(st.booleans()),
              seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("method", ["max", "avg"])
@hypothesis.settings(max_examples=15, **SETTINGS)
@hypothesis.given(config=spp_configs())
def test_spp_matches_its_definition(method, config):
  rng = np.random.default_rng(config["seed"])
  cf = config["channels_first"]
  shape = config["batch"] + ((2,) + config["spatial"] if cf else
                             config["spatial"] + (2,))
  x = random_input(rng, shape, config["ties"])
  y = jax.jit(functools.partial(
      jaxpool.spatial_pyramid_pool, levels=config["levels"], method=method,
      channels_first=cf))(x)
  bins = sum(math.prod(level) for level in config["levels"])
  chex.assert_shape(y, config["batch"] + (2 * bins,))
  expected = spp_definition(x, config["levels"], method, cf)
  np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_spp_2d_channels_last_is_the_issue_formula():
  x = random_input(np.random.default_rng(0), (3, 11, 9, 4), ties=True)
  levels = (1, 2, 4)
  expected = jnp.concatenate(
      [jaxpool.adaptive_max_pool(x, (l, l)).reshape(3, -1) for l in levels],
      axis=1)
  y = jaxpool.spatial_pyramid_pool(x, levels)
  chex.assert_shape(y, (3, 4 * 21))
  np.testing.assert_array_equal(y, expected)
  # Mixed int and tuple levels; the int is square.
  np.testing.assert_array_equal(
      jaxpool.spatial_pyramid_pool(x, (1, (2, 3)), method="avg"),
      jnp.concatenate([jaxpool.adaptive_avg_pool(x, 1).reshape(3, -1),
                       jaxpool.adaptive_avg_pool(x, (2, 3)).reshape(3, -1)],
                      axis=1))


@pytest.mark.parametrize("method", ["max", "avg"])
@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("size, levels", [
    ((13, 13), (3, 2, 1)),  # The paper's conv5 of 13 x 13.
    ((10, 7), ((4, 3), (2, 2), 1)),
])
def test_sppnet_bins_match_torch_pooling(method, channels_first, size,
                                         levels):
  """SPPNet: per level a pool of window ceil(a/n), stride floor(a/n)."""
  rng = np.random.default_rng(1)
  shape = (2, 3) + size if channels_first else (2,) + size + (3,)
  x = random_input(rng, shape, ties=True)
  fn = jax.jit(functools.partial(
      jaxpool.spatial_pyramid_pool, levels=levels, method=method,
      bins="sppnet", channels_first=channels_first))
  y, vjp = jax.vjp(fn, jnp.asarray(x))
  ct = rng.standard_normal(y.shape).astype(np.float32)
  (grad,) = vjp(jnp.asarray(ct))

  torch_pool = F.max_pool2d if method == "max" else F.avg_pool2d

  def torch_spp(xt):
    pieces = []
    for level in levels:
      level = (level, level) if isinstance(level, int) else level
      window = [-(-a // n) for a, n in zip(size, level)]
      stride = [a // n for a, n in zip(size, level)]
      pooled = torch_pool(xt, window, stride)
      assert tuple(pooled.shape[2:]) == tuple(level)
      if not channels_first:
        pooled = pooled.permute(0, 2, 3, 1)
      pieces.append(pooled.reshape(pooled.shape[0], -1))
    return torch.cat(pieces, dim=1)

  xb = x if channels_first else np.moveaxis(x, -1, 1)
  xt = torch.tensor(np.ascontiguousarray(xb), requires_grad=True)
  yt = torch_spp(xt)
  (gt,) = torch.autograd.grad(yt, xt, torch.tensor(ct))
  gt = gt.numpy() if channels_first else np.moveaxis(gt.numpy(), 1, -1)
  np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grad, gt, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# Max levels pooled from a finer level's maxima (the plan's pyramid_nested).


def _torch_adaptive_spp(x, levels, ct, channels_first):
  """PyTorch's SPP (adaptive max per level, flattened in our layout): its
  output and gradient for cotangent ``ct``, in our layout."""
  xb = x if channels_first else np.moveaxis(x, -1, 1)
  xt = torch.tensor(np.ascontiguousarray(xb), requires_grad=True)
  pieces = []
  for level in levels:
    pooled = F.adaptive_max_pool2d(xt, level)
    if not channels_first:
      pooled = pooled.permute(0, 2, 3, 1)
    pieces.append(pooled.reshape(pooled.shape[0], -1))
  yt = torch.cat(pieces, dim=1)
  (gt,) = torch.autograd.grad(yt, xt, torch.tensor(ct))
  gt = gt.numpy() if channels_first else np.moveaxis(gt.numpy(), 1, -1)
  return yt.detach().numpy(), gt


@pytest.mark.parametrize("nested", [0, 1, 2])
@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("size, levels", [
    ((13, 13), (1, 2, 4)),  # 4 x 4 windows 3 apart hold 2 x 2 and 1 x 1.
    ((12, 10), (1, (2, 5), 4)),
    ((8, 8), (8, 4, 2, 1)),  # Blocks; the finest is every element.
    ((13, 13), (3, 2, 1)),  # Only 1 x 1 nests in 3 x 3.
])
@pytest.mark.parametrize("values", ["ties", "nan"])
def test_nested_max_levels_match_torch(nested, channels_first, size, levels,
                                       values, monkeypatch):
  """Values and gradients with ties (first maximum in row-major order) and
  NaN (the last), whichever way the levels are pooled."""
  monkeypatch.setitem(_plan_table.DEFAULT_PARAMETERS, "pyramid_nested",
                      nested)
  rng = np.random.default_rng(sum(size) + len(levels))
  shape = (2, 3) + size if channels_first else (2,) + size + (3,)
  x = random_input(rng, shape, ties=True)
  if values == "nan":
    x = np.where(rng.random(shape) < 0.08, np.nan, x).astype(np.float32)
  fn = jax.jit(functools.partial(jaxpool.spatial_pyramid_pool,
                                 levels=levels, channels_first=channels_first))
  y, vjp = jax.vjp(fn, jnp.asarray(x))
  ct = rng.standard_normal(y.shape).astype(np.float32)
  (grad,) = vjp(jnp.asarray(ct))
  want, want_grad = _torch_adaptive_spp(x, levels, ct, channels_first)
  np.testing.assert_array_equal(y, want)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("nested", [0, 2])
def test_nested_max_levels_half_precision(nested, monkeypatch):
  # Values exact; gradients within bfloat16's rounding of sums (PyTorch
  # sums the levels' gradients in bfloat16, in another order).
  monkeypatch.setitem(_plan_table.DEFAULT_PARAMETERS, "pyramid_nested",
                      nested)
  rng = np.random.default_rng(3)
  x = random_input(rng, (2, 13, 13, 4), ties=True)
  levels = (1, 2, 4)
  fn = jax.jit(functools.partial(jaxpool.spatial_pyramid_pool, levels=levels))
  y, vjp = jax.vjp(fn, jnp.asarray(x, jnp.bfloat16))
  ct = rng.standard_normal(y.shape).astype(np.float32)
  (grad,) = vjp(jnp.asarray(ct, jnp.bfloat16))
  xt = torch.tensor(np.moveaxis(x, -1, 1), dtype=torch.bfloat16,
                    requires_grad=True)
  yt = torch.cat([F.adaptive_max_pool2d(xt, l).permute(0, 2, 3, 1).reshape(
      2, -1) for l in levels], dim=1)
  (gt,) = torch.autograd.grad(yt, xt, torch.tensor(ct, dtype=torch.bfloat16))
  assert y.dtype == grad.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(y, np.float32),
                                yt.detach().float().numpy())
  np.testing.assert_allclose(np.asarray(grad, np.float32),
                             np.moveaxis(gt.float().numpy(), 1, -1),
                             rtol=1e-2, atol=1e-2)


@hypothesis.settings(max_examples=20, **SETTINGS)
@hypothesis.given(config=spp_configs(), nan=st.booleans())
def test_nested_max_levels_equal_each_level_pooled_alone(config, nan):
  """Every rank, layout and drawn levels: the same values and forward-mode
  derivatives as each level pooled from the input, and gradients to
  rounding (an element several bins take sums their cotangents in another
  order)."""
  rng = np.random.default_rng(config["seed"])
  cf = config["channels_first"]
  shape = config["batch"] + ((2,) + config["spatial"] if cf else
                             config["spatial"] + (2,))
  x = random_input(rng, shape, config["ties"])
  if nan:
    x = np.where(rng.random(shape) < 0.1, np.nan, x).astype(np.float32)
  results = []
  for nested in (0, 2):
    with pytest.MonkeyPatch.context() as patch:
      patch.setitem(_plan_table.DEFAULT_PARAMETERS, "pyramid_nested", nested)
      fn = jax.jit(functools.partial(
          jaxpool.spatial_pyramid_pool, levels=config["levels"],
          channels_first=cf))
      y, vjp = jax.vjp(fn, jnp.asarray(x))
      ct = np.random.default_rng(1).standard_normal(y.shape).astype(
          np.float32)
      tangent = np.random.default_rng(2).standard_normal(shape).astype(
          np.float32)
      results.append((y, vjp(jnp.asarray(ct))[0],
                      jax.jvp(fn, (jnp.asarray(x),), (tangent,))[1]))
  (y, grad, tangent), (y0, grad0, tangent0) = results
  np.testing.assert_array_equal(y, y0)
  np.testing.assert_array_equal(tangent, tangent0)
  np.testing.assert_allclose(grad, grad0, rtol=1e-6, atol=1e-6)


def test_nesting_of_bins():
  fine = Bins.adaptive(13, 4)  # [0, 4), [3, 7), [6, 10), [9, 13)
  assert _pyramid._nesting(fine, Bins.adaptive(13, 2)) == ((0, 2), (2, 4))
  assert _pyramid._nesting(fine, Bins.adaptive(13, 1)) == ((0, 4),)
  assert _pyramid._nesting(fine, fine) == ((0, 1), (1, 2), (2, 3), (3, 4))
  # [0, 5) is no union of [0, 4) and [3, 7).
  assert _pyramid._nesting(fine, Bins.adaptive(13, 3)) is None
  # A gap between two bins: [0, 2) and [3, 5) do not cover [0, 5).
  gapped = Bins(5, (0, 3), (2, 5))
  assert _pyramid._nesting(gapped, Bins(5, (0,), (5,))) is None
  # The finest level whose windows hold another level's bins.
  levels = [[Bins.adaptive(13, n)] * 2 for n in (1, 3, 2, 4)]
  assert _pyramid._finest_windows(levels) == 3
  assert _pyramid._finest_windows(levels[:3]) == 1  # 3 holds 1.
  assert _pyramid._finest_windows(
      [[Bins.adaptive(13, n)] * 2 for n in (2, 3)]) is None


# ---------------------------------------------------------------------------
# YOLO's SPP and SPPF.


def torch_yolo_spp(xt, windows):
  """YOLOv5's SPP: ``cat([x] + [MaxPool2d(k, 1, k // 2)(x) ...], 1)``."""
  return torch.cat([xt] + [F.max_pool2d(xt, k, 1, k // 2) for k in windows],
                   dim=1)


def torch_sppf(xt, k, repeats):
  """YOLOv5's SPPF: chained ``MaxPool2d(k, 1, k // 2)``."""
  outputs = [xt]
  for _ in range(repeats):
    outputs.append(F.max_pool2d(outputs[-1], k, 1, k // 2))
  return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("channels_first, ties, windows, k, repeats", [
    (False, True, (5, 9, 13), 5, 3),
    (True, False, (5, 9, 13), 5, 3),
    (True, True, (3, 7), 3, 2),
])
def test_spp_yolo_and_sppf_match_torch(channels_first, ties, windows, k,
                                       repeats):
  rng = np.random.default_rng(2)
  shape = (2, 3, 15, 12) if channels_first else (2, 15, 12, 3)
  x = random_input(rng, shape, ties)
  for ours, theirs in (
      (functools.partial(jaxpool.spp_yolo, window_sizes=windows),
       functools.partial(torch_yolo_spp, windows=windows)),
      (functools.partial(jaxpool.sppf, window_size=k, repeats=repeats),
       functools.partial(torch_sppf, k=k, repeats=repeats))):
    fn = jax.jit(functools.partial(ours, channels_first=channels_first))
    y, vjp = jax.vjp(fn, jnp.asarray(x))
    ct = rng.standard_normal(y.shape).astype(np.float32)
    y_torch, grad_torch = torch_vjp(theirs, x, ct, 2, channels_first)
    np.testing.assert_array_equal(y, y_torch)
    np.testing.assert_allclose(vjp(jnp.asarray(ct))[0], grad_torch,
                               rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("channels_first", [True])
def test_sppf_equals_spp_5_9_13_exactly(channels_first):
  rng = np.random.default_rng(3)
  shape = (2, 4, 17, 14) if channels_first else (2, 17, 14, 4)
  x = jnp.asarray(unique_input(rng, shape))
  spp = jax.jit(functools.partial(jaxpool.spp_yolo, window_sizes=(5, 9, 13),
                                  channels_first=channels_first))
  fast = jax.jit(functools.partial(jaxpool.sppf, window_size=5, repeats=3,
                                   channels_first=channels_first))
  y_spp, vjp_spp = jax.vjp(spp, x)
  y_fast, vjp_fast = jax.vjp(fast, x)
  chex.assert_shape(y_spp, (2, 16, 17, 14) if channels_first else
                    (2, 17, 14, 16))
  np.testing.assert_array_equal(y_spp, y_fast)
  # Small integer cotangents sum exactly in any order, so the two routings
  # of the gradient must agree to the bit.
  ct = jnp.asarray(rng.integers(-4, 5, y_spp.shape).astype(np.float32))
  np.testing.assert_array_equal(vjp_spp(ct)[0], vjp_fast(ct)[0])
  # With ties too, the values agree (the gradients may pick other maxima).
  ties = jnp.asarray(random_input(rng, shape, ties=True))
  np.testing.assert_array_equal(spp(ties), fast(ties))


@pytest.mark.parametrize("rank", [1, 3])
def test_spp_yolo_other_ranks_and_batch_dims(rank):
  rng = np.random.default_rng(rank)
  spatial = (11,) if rank == 1 else (5, 6, 4)
  x = random_input(rng, (2, 3) + spatial + (2,), ties=True)
  window = (3,) * rank
  y = jaxpool.spp_yolo(x, (window, (5,) * rank))
  chex.assert_shape(y, (2, 3) + spatial + (6,))
  np.testing.assert_array_equal(y[..., :2], x)
  np.testing.assert_array_equal(
      y[..., 2:4], jaxpool.max_pool(x, window, 1, "SAME"))
  np.testing.assert_array_equal(
      jaxpool.sppf(x, (3,) * rank, 2), jaxpool.spp_yolo(
          x, ((3,) * rank, (5,) * rank)))


class PyramidVariantsTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(method=["max", "avg"], bins=["adaptive", "sppnet"])
  def test_spp_variants(self, method, bins):
    x = random_input(np.random.default_rng(4), (2, 12, 12, 3), ties=True)
    fn = self.variant(jaxpool.spatial_pyramid_pool,
                      static_argnames=("levels", "method", "bins"))
    y = fn(x, levels=(1, 2, 3), method=method, bins=bins)
    chex.assert_shape(y, (2, 3 * 14))
    # 12 splits evenly into 1, 2 and 3: both bin rules agree.
    np.testing.assert_allclose(
        y, spp_definition(x, [(1, 1), (2, 2), (3, 3)], method, False),
        rtol=1e-6)

  @parameterized.product(method=["max", "avg"])
  def test_check_grads_and_vmap(self, method):
    x = jnp.asarray(unique_input(np.random.default_rng(5), (2, 7, 6, 2)))
    fn = jax.jit(functools.partial(jaxpool.spatial_pyramid_pool,
                                   levels=(1, (2, 3), 4), method=method))
    check_grads(fn, (x,), order=1, modes=("fwd", "rev"), eps=1e-2)
    batched = jax.vmap(fn)(x[:, None])[:, 0]
    if method == "max":
      np.testing.assert_array_equal(batched, fn(x))
    else:  # Matrix products of another batch size may sum in another order.
      np.testing.assert_allclose(batched, fn(x), rtol=1e-6)


# ---------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("call, match", [
    (lambda x: jaxpool.spatial_pyramid_pool(x, ()), "levels"),
    (lambda x: jaxpool.spatial_pyramid_pool(x, (1, 0)), "levels"),
    (lambda x: jaxpool.spatial_pyramid_pool(x, ((1, 2), (1, 2, 3))),
     "levels"),
    (lambda x: jaxpool.spatial_pyramid_pool(x, method="mean"), "method"),
    (lambda x: jaxpool.spatial_pyramid_pool(x, bins="spp"), "bins"),
    (lambda x: jaxpool.spatial_pyramid_pool(x, (4,), bins="sppnet"),
     r"levels: the SPPNet rule .* 7"),
    (lambda x: jaxpool.spatial_pyramid_pool(x, (8,), bins="sppnet"),
     "levels"),
    (lambda x: jaxpool.spp_yolo(x, ()), "window_sizes"),
    (lambda x: jaxpool.spp_yolo(x, (5, -1)), "window_sizes"),
    (lambda x: jaxpool.sppf(x, 0), "window_size"),
    (lambda x: jaxpool.sppf(x, 5, 0), "repeats"),
    (lambda x: jaxpool.sppf(x[0, 0], 5), "window_size"),
])
def test_bad_input_raises_value_error(call, match):
  with pytest.raises(ValueError, match=match):
    call(jnp.ones((2, 7, 7, 3)))


@pytest.mark.parametrize("call", [
    lambda x: jaxpool.spatial_pyramid_pool(x, 4),
    lambda x: jaxpool.spp_yolo(x, 5),
    lambda x: jaxpool.sppf(x, 5, 2.0),
])
def test_bad_types_raise_type_error(call):
  with pytest.raises(TypeError):
    call(jnp.ones((2, 7, 7, 3)))

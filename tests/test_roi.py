"""Tests for jaxpool._roi: RoI pooling and RoI Align against torchvision.

``torchvision.ops.roi_align`` (its pure-PyTorch implementation here, see
``torchvision_cpu.py``) is the reference for RoI Align's values and
gradients on boxes whose samples stay within ``[-1, size]`` (that
implementation has no test for samples beyond); NumPy transcriptions of
torchvision's CPU kernels are the reference for every box, and for
``roi_pool``, ``ps_roi_pool`` and ``ps_roi_align``.
"""

from __future__ import annotations

import functools
from unittest import mock

import jax
import jax.test_util
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import jaxpool
import torchvision_cpu as tv
from jaxpool import _plan_table, _roi

N, C, H, W = 2, 3, 9, 11
# Boxes within the map, partly and wholly outside it, degenerate (zero and
# negative size) and tiny ones, over both images.
INSIDE = np.array([
    [0, 0.0, 0.0, 10.0, 8.0],
    [1, 1.3, 2.2, 6.7, 7.9],
    [0, 3.5, 1.25, 4.0, 2.0],
    [1, 2.0, 3.0, 2.0, 3.0],
    [1, 0.4, 0.6, 9.6, 4.4],
], np.float32)
OUTSIDE = np.array([
    [0, -3.0, -2.0, 5.0, 4.0],
    [1, 8.0, 6.0, 15.3, 13.4],
    [0, 12.0, 10.0, 14.0, 12.0],
    [1, 5.0, 5.0, 3.0, 2.0],
    [0, -4.0, 7.5, -2.0, 8.5],
], np.float32)


def _map(seed: int = 0, shape=(N, C, H, W)) -> np.ndarray:
  # Distinct values: a max picks one element, so ties cannot hide a routing.
  x = np.random.default_rng(seed).permutation(int(np.prod(shape)))
  return (x.reshape(shape) / x.size - 0.5).astype(np.float32)


def _nhwc(x):
  return jnp.asarray(np.moveaxis(x, 1, -1))


def _nchw(y) -> np.ndarray:
  return np.moveaxis(np.asarray(y), -1, 1)


@functools.cache
def _jitted(name: str, channels_first: bool, **kwargs):
  fn = functools.partial(getattr(jaxpool, name),
                         channels_first=channels_first, **kwargs)
  cot = lambda x, b, g: jnp.vdot(fn(x, b), g)
  return jax.jit(fn), jax.jit(jax.grad(cot))


def _run(name, x, boxes, channels_first, grad=None, **kwargs):
  """Values (NCHW) and, given a cotangent (NCHW), the gradient (NCHW)."""
  fwd, bwd = _jitted(name, channels_first, **kwargs)
  xin = jnp.asarray(x) if channels_first else _nhwc(x)
  out = fwd(xin, jnp.asarray(boxes))
  out = np.asarray(out) if channels_first else _nchw(out)
  if grad is None:
    return out
  g = jnp.asarray(grad) if channels_first else _nhwc(grad)
  dx = bwd(xin, jnp.asarray(boxes), g)
  return out, (np.asarray(dx) if channels_first else _nchw(dx))


# ---------------------------------------------------------------------------
# RoI Align.


@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [2, -1])
def test_roi_align_matches_torchvision(ratio, aligned, channels_first):
  x = _map()
  out_size, scale = (3, 4), 0.9
  # Not the zero-size box: with aligned=True and ratio=-1 its grid is empty
  # and the fallback's autograd gives 0 * nan = nan (the kernel, and the
  # test below, give 0).
  boxes = np.delete(INSIDE, 3, axis=0)
  xt = torch.tensor(x, requires_grad=True)
  want = tv.ops.roi_align(xt, torch.tensor(boxes), out_size, scale, ratio,
                          aligned)
  g = np.random.default_rng(1).standard_normal(want.shape).astype(np.float32)
  want.backward(torch.tensor(g))
  got, dx = _run("roi_align", x, boxes, channels_first, g,
                 output_size=out_size, spatial_scale=scale,
                 sampling_ratio=ratio, aligned=aligned)
  np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [1, -1])
def test_roi_align_matches_the_kernel_outside_the_map(ratio, aligned):
  x = _map(2)
  boxes = np.concatenate([INSIDE, OUTSIDE])
  want = tv.roi_align(x, boxes, 2, 3, 1.0, ratio, aligned)
  got = _run("roi_align", x, boxes, False, output_size=(2, 3),
             sampling_ratio=ratio, aligned=aligned)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.floats(-3, 14, width=32), min_size=4, max_size=4),
       st.sampled_from([0.5, 1.0, 1.5]), st.sampled_from([(2, 2), (3, 1)]),
       st.sampled_from([1, 3, -1]), st.booleans())
def test_roi_align_drawn_boxes(corners, scale, out_size, ratio, aligned):
  x = _map(3)
  boxes = np.array([[1, *corners]], np.float32)
  want = tv.roi_align(x, boxes, *out_size, scale, ratio, aligned)
  got = np.asarray(jaxpool.roi_align(
      _nhwc(x), boxes, out_size, scale, ratio, aligned))
  # A box larger than the map may need more samples than the bound.
  if ratio == -1 and max(corners[2] - corners[0],
                         corners[3] - corners[1]) * scale > min(H, W):
    return
  np.testing.assert_allclose(_nchw(got), want, rtol=1e-5, atol=1e-6)


def test_roi_align_past_the_adaptive_bound():
  # A 6x6 map to 2x2 bins: the bound is 3 samples per bin and axis. A box of
  # 20 would take ceil(20/2) = 10; it is sampled on the clamped 3x3 grid.
  x = _map(4, (1, 2, 6, 6))
  boxes = np.array([[0, -7.0, -7.0, 13.0, 13.0]], np.float32)
  got = jaxpool.roi_align(_nhwc(x), boxes, 2)
  np.testing.assert_allclose(_nchw(got), tv.roi_align(x, boxes, 2, 2, 1.0, 3,
                                                      False), rtol=1e-5)
  assert not np.allclose(_nchw(got), tv.roi_align(x, boxes, 2, 2, 1.0, -1,
                                                  False), atol=1e-4)


def test_roi_align_list_of_boxes_and_transforms():
  x = _nhwc(_map())
  per_image = [INSIDE[INSIDE[:, 0] == i, 1:] for i in range(N)]
  flat = np.concatenate([np.c_[np.full(len(b), i), b]
                         for i, b in enumerate(per_image)]).astype(np.float32)
  np.testing.assert_array_equal(jaxpool.roi_align(x, per_image, 2),
                                jaxpool.roi_align(x, flat, 2))
  # vmap over a stack of batches, and jit with traced boxes.
  stacked = jax.vmap(lambda x: jaxpool.roi_align(x, flat, 2))(
      jnp.stack([x, 2 * x]))
  np.testing.assert_allclose(stacked[1], 2 * jaxpool.roi_align(x, flat, 2),
                             rtol=1e-6)
  np.testing.assert_allclose(
      jax.jit(lambda x, b: jaxpool.roi_align(x, b, 2))(x, flat),
      jaxpool.roi_align(x, flat, 2), rtol=1e-5, atol=1e-6)


def test_roi_align_half_precision():
  x = _map()
  want = tv.roi_align(x, INSIDE, 2, 2, 1.0, 2, False)
  got = jaxpool.roi_align(_nhwc(x).astype(jnp.bfloat16), INSIDE, 2,
                          sampling_ratio=2)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(_nchw(got.astype(jnp.float32)), want,
                             atol=2e-2)


# ---------------------------------------------------------------------------
# RoI pooling.


@pytest.fixture(params=["tables", "scan"])
def search(request, monkeypatch):
  """roi_pool's two searches: sparse tables, or (over the budget) a scan of
  each bin's cells."""
  if request.param == "scan":
    monkeypatch.setitem(_plan_table.DEFAULT_PARAMETERS, "roi_table_log2", 0)
  _jitted.cache_clear()
  yield request.param
  _jitted.cache_clear()


@pytest.mark.parametrize("channels_first", [False, True])
def test_roi_pool_matches_the_kernel(channels_first, search):
  x = _map(5)
  boxes = np.concatenate([INSIDE, OUTSIDE])
  want, arg = tv.roi_pool(x, boxes, 3, 2, 0.8)
  g = np.random.default_rng(6).standard_normal(want.shape).astype(np.float32)
  got, dx = _run("roi_pool", x, boxes, channels_first, g, output_size=(3, 2),
                 spatial_scale=0.8)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(dx, tv.roi_pool_grad(x.shape, boxes, arg, g),
                             rtol=1e-6, atol=1e-6)


def test_roi_pool_derivatives_of_both_orders(search):
  # Unique values a step of 1/594 apart, larger than eps: no maximum moves.
  x = jnp.asarray(np.moveaxis(_map(14), 1, -1))
  boxes = np.concatenate([INSIDE, OUTSIDE])
  # Forward mode to the second order (the rule's primal goes through the
  # rule again); reverse mode is the kernel comparisons above.
  jax.test_util.check_grads(lambda x: jaxpool.roi_pool(x, boxes, 3), (x,),
                            order=2, modes=["fwd"], eps=1e-4)


def test_roi_pool_gradient_goes_to_the_first_maximum(search):
  x = np.zeros((1, 1, 4, 4), np.float32)  # Every cell ties.
  boxes = np.array([[0, 0.0, 0.0, 3.0, 3.0]], np.float32)
  dx = jax.grad(lambda x: jnp.sum(jaxpool.roi_pool(x, boxes, 2)))(_nhwc(x))
  want = np.zeros((4, 4), np.float32)
  want[0, 0] = want[0, 2] = want[2, 0] = want[2, 2] = 1
  np.testing.assert_array_equal(np.asarray(dx)[0, :, :, 0], want)


def test_roi_pool_skips_nan_and_the_lowest_values_as_the_kernel(search):
  # The kernel's scan starts at -FLT_MAX and takes a cell only if greater:
  # NaN, -inf and -FLT_MAX are never the maximum, and a bin of only those
  # is -FLT_MAX with no gradient.
  x = _map(12)
  lowest = -np.finfo(np.float32).max
  x[0, 0, :3, :3] = np.nan
  x[0, 1, :3, :3] = [[-np.inf, lowest, np.nan]] * 3
  x[1, 2, 4:, 5:] = np.nan
  x[1, 2, 5, 7] = 0.9
  boxes = np.concatenate([INSIDE, OUTSIDE])
  want, arg = tv.roi_pool(x, boxes, 3, 3, 1.0)
  g = np.random.default_rng(13).standard_normal(want.shape).astype(
      np.float32)
  got, dx = _run("roi_pool", x, boxes, False, g, output_size=3)
  np.testing.assert_array_equal(got, want)
  assert np.any(want == lowest)
  np.testing.assert_allclose(dx, tv.roi_pool_grad(x.shape, boxes, arg, g),
                             rtol=1e-6, atol=1e-6)


def _assert_pools_as_the_kernel(x, boxes, out_size, seed):
  """roi_pool's values and gradient are the kernel's, compiled afresh (the
  caller may have patched how it lowers)."""
  _jitted.cache_clear()
  want, arg = tv.roi_pool(x, boxes, *out_size, 1.0)
  g = np.random.default_rng(seed).standard_normal(want.shape).astype(
      np.float32)
  got, dx = _run("roi_pool", x, boxes, False, g, output_size=out_size)
  _jitted.cache_clear()
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(dx, tv.roi_pool_grad(x.shape, boxes, arg, g),
                             rtol=1e-6, atol=1e-6)


def _block_plans():
  """Every way ``_block_options`` covers the bins of the tests' map (at most
  5 rows and 7 columns to 3x2 bins) on each axis, in pairs, with groups of
  2 of its 6 channels, 4 (the last one padded) and all 6 (a lone group)."""
  ys = list(_roi._block_options(5))
  xs = list(_roi._block_options(7))
  count = max(len(ys), len(xs))
  return [((ys[i % len(ys)], xs[i % len(xs)]), (2, 4, 6)[i % 3])
          for i in range(count)]


@pytest.mark.parametrize("blocks, group", _block_plans(), ids=str)
def test_roi_pool_every_block_plan_matches_the_kernel(blocks, group,
                                                      monkeypatch):
  # Whichever block sizes, lookups and channel groups a table picks: the
  # kernel's values, and its gradient to the first maximum of each bin in
  # row-major order, among ties of both signs of zero, NaN, -inf and
  # -FLT_MAX.
  x = _map(16, (N, 6, H, W))
  x[0, 0, 1:6, 2:8] = 0.25
  x[1, 1, :, :] = np.where(np.arange(W) % 3, 0.0, -0.0)
  x[0, 2, 2:5, :4] = np.nan
  x[1, 3, 4:, 5:] = -np.inf
  x[1, 3, 5, 7] = -np.finfo(np.float32).max
  x[0, 4, ::2, 1::2] = 0.4
  # Three values: ties in every bin, across overlapping blocks.
  x[:, 5] = np.random.default_rng(18).integers(0, 3, (N, H, W)) / 4
  boxes = np.concatenate([INSIDE, OUTSIDE, [[0, 0.0, 0.0, 3.0, 3.0],
                                            [1, 1.0, 2.0, 8.0, 7.0]]])
  monkeypatch.setattr(_roi, "_block_plan", lambda *_: blocks)
  monkeypatch.setattr(_roi, "_channel_group", lambda *_: group)
  _assert_pools_as_the_kernel(x, boxes, (3, 2), 17)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_roi_pool_half_precision(dtype):
  # Half-precision maps pool as their float32 values do, in their dtype.
  x = _map(19, (N, 6, H, W)).astype(dtype).astype(np.float32)
  boxes = np.concatenate([INSIDE, OUTSIDE])
  want, arg = tv.roi_pool(x, boxes, 3, 2, 1.0)
  g = np.random.default_rng(20).standard_normal(want.shape).astype(dtype)
  fn = lambda x: jaxpool.roi_pool(x, boxes, (3, 2), channels_first=True)
  got, vjp = jax.vjp(fn, jnp.asarray(x, dtype))
  assert got.dtype == dtype
  np.testing.assert_array_equal(np.asarray(got, np.float32), want)
  dx = vjp(jnp.asarray(g))[0]
  np.testing.assert_allclose(
      np.asarray(dx, np.float32),
      tv.roi_pool_grad(x.shape, boxes, arg, g.astype(np.float32)),
      rtol=1e-2, atol=1e-2)


def test_roi_pool_under_vmap_jit_and_forward_mode(search):
  # A stack of batches under vmap (values and gradients, both searches),
  # traced boxes under jit, and jvp against the kernel's gradient.
  x = _map(23)
  boxes = np.concatenate([INSIDE, OUTSIDE])
  want, arg = tv.roi_pool(x, boxes, 3, 2, 1.0)
  g = np.random.default_rng(24).standard_normal(want.shape).astype(
      np.float32)
  fn = lambda x, b: jaxpool.roi_pool(x, b, (3, 2), channels_first=True)
  loss = lambda x, b: jnp.vdot(fn(x, b), g)
  stack = jnp.stack([jnp.asarray(x), -jnp.asarray(x)])
  values = jax.vmap(fn, (0, None))(stack, boxes)
  grads = jax.vmap(jax.grad(loss), (0, None))(stack, boxes)
  np.testing.assert_array_equal(values[0], want)
  np.testing.assert_array_equal(values[1], tv.roi_pool(-x, boxes, 3, 2,
                                                       1.0)[0])
  np.testing.assert_allclose(grads[0],
                             tv.roi_pool_grad(x.shape, boxes, arg, g),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(jax.jit(fn)(jnp.asarray(x), boxes), want)
  v = _map(25)
  _, tangent = jax.jvp(lambda x: fn(x, boxes), (jnp.asarray(x),),
                       (jnp.asarray(v),))
  # The derivative is the transpose of the kernel's gradient.
  np.testing.assert_allclose(
      np.vdot(np.asarray(tangent), g),
      np.vdot(v, tv.roi_pool_grad(x.shape, boxes, arg, g)), rtol=1e-5)


def test_roi_pool_wide_offsets(monkeypatch, search):
  # Bins of 255 cells or more record their maxima's offsets in 32 bits.
  monkeypatch.setattr(_roi, "_offsets",
                      lambda bounds: (np.dtype(np.uint32), 16))
  _assert_pools_as_the_kernel(_map(26), np.concatenate([INSIDE, OUTSIDE]),
                              (2, 3), 27)


def test_roi_pool_wide_gradient_index(monkeypatch, search):
  # Maps past 2**16 columns times channels index the gradient in int32.
  monkeypatch.setattr(_roi, "_gradient_index_dtype",
                      lambda shape: np.dtype(np.int32))
  _assert_pools_as_the_kernel(_map(28), np.concatenate([INSIDE, OUTSIDE]),
                              (3, 2), 29)


def test_gradient_index_fits_the_map():
  assert _roi._gradient_index_dtype((2, 50, 68, 256)) == np.uint16
  assert _roi._gradient_index_dtype((1, 8, 256, 256)) == np.uint16
  assert _roi._gradient_index_dtype((1, 8, 257, 256)) == np.int32
  assert _roi._gradient_index_dtype((1, 70000, 4, 4)) == np.int32
  batch = jax.export.symbolic_shape("b")[0]
  assert _roi._gradient_index_dtype((batch, 8, 8, 8)) == np.int32


def test_offsets_fit_their_bins():
  assert _roi._offsets((254, 256)) == (np.dtype(np.uint16), 8)
  assert _roi._offsets((255, 10)) == (np.dtype(np.uint32), 16)
  assert _roi._offsets((10, 257)) == (np.dtype(np.uint32), 16)


def test_channel_groups():
  # Divisors that leave two groups or more where there are some from the
  # least to what fits; else what fits (the channels padded).
  group = _roi._channel_group
  assert [group(256, 19, 16), group(256, 77, 16), group(64, 77, 16),
          group(1024, 38, 16), group(100, 200, 16)] == [16, 64, 32, 32, 50]
  assert [group(3, 16, 16), group(17, 16, 16), group(31, 4, 16),
          group(1, 16, 16), group(256, 0, 16)] == [3, 16, 16, 1, 16]


def test_block_options_cover_every_bin():
  # Each option covers every bin length up to its bound with its lookups
  # of the largest block that fits; the plan is the cheapest of them.
  for bound in range(1, 30):
    for sizes, lookups in _roi._block_options(bound):
      assert sizes[0] == 1 and max(sizes) <= bound
      for length in range(1, bound + 1):
        size = max(s for s in sizes if s <= length)
        assert lookups * size >= length, (bound, sizes, lookups, length)
  plan = _roi._block_plan((9, 11), 1000, 1000, 10)
  cost = lambda p: (100 * len(p[0][0]) * len(p[1][0]) * 1000
                    + 10 * p[0][1] * p[1][1] * 1000)
  assert all(cost(plan) <= cost((y, x))
             for y in _roi._block_options(9) for x in _roi._block_options(11))


@settings(max_examples=12, deadline=None)
@given(st.lists(st.floats(-3, 14, width=32), min_size=4, max_size=4),
       st.sampled_from([0.5, 1.0, 1.25]), st.sampled_from([(2, 2), (1, 3)]),
       st.booleans(), st.data())
def test_roi_pool_drawn_boxes(corners, scale, out_size, ties, data):
  # Any box within the map, on distinct values or three (ties everywhere),
  # with block sizes and lookups drawn from every way of covering its bins.
  x = _map(7)
  if ties:
    x = (np.random.default_rng(21).integers(0, 3, x.shape) / 4).astype(
        np.float32)
  boxes = np.array([[0, *corners]], np.float32)
  if max(corners[2] * scale, corners[3] * scale) > min(H, W) or min(
      corners[0], corners[1]) < 0:
    return  # Past the bound: bins keep their first cells.
  bounds = [min(n, -(-(n + 1) // p) + 1) for n, p in zip((H, W), out_size)]
  blocks = tuple(data.draw(st.sampled_from(list(_roi._block_options(b))))
                 for b in bounds)
  want, arg = tv.roi_pool(x, boxes, *out_size, scale)
  g = np.random.default_rng(22).standard_normal(want.shape).astype(
      np.float32)
  with mock.patch.object(_roi, "_block_plan", lambda *_: blocks):
    got, vjp = jax.vjp(
        lambda x: jaxpool.roi_pool(x, boxes, out_size, scale), _nhwc(x))
    dx = _nchw(vjp(_nhwc(g))[0])
  np.testing.assert_array_equal(_nchw(got), want)
  np.testing.assert_allclose(dx, tv.roi_pool_grad(x.shape, boxes, arg, g),
                             rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# Position-sensitive forms.


def _dot_test(fn, x, reference, seed):
  """The gradient of a linear map is its transpose: <f^T g, v> = <g, f v>."""
  g = np.random.default_rng(seed).standard_normal(
      reference(x).shape).astype(np.float32)
  dx = _nchw(jax.grad(lambda x: jnp.vdot(_nchw_j(fn(x)), g))(_nhwc(x)))
  v = _map(seed + 1, x.shape)
  np.testing.assert_allclose(np.vdot(dx, v), np.vdot(g, reference(v)),
                             rtol=1e-4)


def _nchw_j(y):
  return jnp.moveaxis(y, -1, 1)


@pytest.mark.parametrize("channels_first", [False, True])
def test_ps_roi_pool_matches_the_kernel(channels_first):
  x = _map(8, (N, 2 * 6, H, W))
  boxes = np.concatenate([INSIDE, OUTSIDE])
  want = tv.ps_roi_pool(x, boxes, 2, 3, 1.1)
  got = _run("ps_roi_pool", x, boxes, channels_first, output_size=(2, 3),
             spatial_scale=1.1)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  _dot_test(lambda x: jaxpool.ps_roi_pool(x, boxes, (2, 3), 1.1), x,
            lambda v: tv.ps_roi_pool(v, boxes, 2, 3, 1.1), 9)


@pytest.mark.parametrize("ratio", [2, -1])
def test_ps_roi_align_matches_the_kernel(ratio):
  x = _map(10, (N, 2 * 4, H, W))
  boxes = np.concatenate([INSIDE, OUTSIDE])
  want = tv.roi_align(x, boxes, 2, 2, 0.7, ratio, True,
                      position_sensitive=True)
  got = _run("ps_roi_align", x, boxes, True, output_size=2,
             spatial_scale=0.7, sampling_ratio=ratio)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  _dot_test(lambda x: jaxpool.ps_roi_align(x, boxes, 2, 0.7, ratio), x,
            lambda v: tv.roi_align(v, boxes, 2, 2, 0.7, ratio, True, True),
            11)


# ---------------------------------------------------------------------------
# Multi-scale.


def test_multi_scale_roi_align_matches_torchvision():
  # A 128x128 image; levels of scale 1/4 and 1/8 (FPN levels 2 and 3).
  # Boxes of side ~40 map to level 2, of side ~120 to level 3.
  rng = np.random.default_rng(12)
  feats = [rng.standard_normal((2, 4, 32, 32)).astype(np.float32),
           rng.standard_normal((2, 4, 16, 16)).astype(np.float32)]
  boxes = [np.array([[4, 6, 44, 40], [0, 0, 127, 120], [10, 20, 30, 60]],
                    np.float32),
           np.array([[8, 2, 124, 126], [50, 50, 90, 95]], np.float32)]
  shapes = [(128, 128), (120, 128)]
  pooler = tv.ops.MultiScaleRoIAlign(["a", "b"], 3, 2)
  want = pooler({"a": torch.tensor(feats[0]), "b": torch.tensor(feats[1])},
                [torch.tensor(b) for b in boxes], shapes).numpy()
  got = jaxpool.multi_scale_roi_align([_nhwc(f) for f in feats], boxes,
                                      shapes, 3, 2)
  np.testing.assert_allclose(_nchw(got), want, rtol=1e-5, atol=1e-6)
  # Both levels are used: each box equals roi_align from its own level.
  by_level = [_nchw(jaxpool.roi_align(_nhwc(f), boxes, 3, s, 2))
              for f, s in zip(feats, (0.25, 0.125))]
  which = [int(np.argmin([np.abs(w - b[i]).max() for b in by_level]))
           for i, w in enumerate(want)]
  assert set(which) == {0, 1}, which


# ---------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("call,match", [
    (lambda x: jaxpool.roi_align(x, np.zeros((2, 4)), 2), "boxes"),
    (lambda x: jaxpool.roi_pool(x, np.array([[2, 0, 0, 1, 1.]]), 2),
     "batch ind"),
    (lambda x: jaxpool.roi_align(x, [np.zeros((1, 5))], 2), "boxes"),
    (lambda x: jaxpool.roi_align(x, INSIDE, 0), "output_size"),
    (lambda x: jaxpool.roi_pool(x, INSIDE, (2, -1)), "output_size"),
    (lambda x: jaxpool.roi_align(x, INSIDE, 2, 0.0), "spatial_scale"),
    (lambda x: jaxpool.roi_align(x, INSIDE, 2, sampling_ratio=0),
     "sampling_ratio"),
    (lambda x: jaxpool.ps_roi_pool(x, INSIDE, 2), "multiple"),
    (lambda x: jaxpool.roi_align(x[0], INSIDE, 2), "x must be"),
    (lambda x: jaxpool.multi_scale_roi_align([], INSIDE, [(9, 11)], 2),
     "features"),
])
def test_bad_input_raises(call, match):
  with pytest.raises(ValueError, match=match):
    call(_nhwc(_map()))


# ---------------------------------------------------------------------------
# Modules: Linen, NNX and Equinox, each one call of its function.


MODULES = [
    ("RoIPool", "roi_pool", dict(output_size=(3, 2), spatial_scale=0.8)),
    ("RoIAlign", "roi_align", dict(output_size=2, spatial_scale=0.9,
                                   sampling_ratio=2, aligned=True)),
    ("PSRoIPool", "ps_roi_pool", dict(output_size=(1, 3))),
    ("PSRoIAlign", "ps_roi_align", dict(output_size=(3, 1),
                                        channels_first=True)),
]


def _module_calls(name, kwargs):
  from flax import nnx
  from jaxpool import equinox as jpe, linen as jpl, nnx as jpn
  del nnx
  return {
      "linen": lambda x, b: getattr(jpl, name)(**kwargs).apply({}, x, b),
      "nnx": lambda x, b: getattr(jpn, name)(**kwargs)(x, b),
      "equinox": lambda x, b: getattr(jpe, name)(**kwargs)(x, b),
  }


@pytest.mark.parametrize("name,function,kwargs", MODULES,
                         ids=[m[0] for m in MODULES])
def test_modules_are_their_function(name, function, kwargs):
  x = _map(13, (N, 3, 9, 11)) if kwargs.get("channels_first") else _nhwc(
      _map(13, (N, 3, 9, 11)))
  boxes = jnp.asarray(INSIDE)
  want = getattr(jaxpool, function)(x, boxes, **kwargs)
  for api, call in _module_calls(name, kwargs).items():
    np.testing.assert_array_equal(call(x, boxes), want, err_msg=api)
  # The gradient reaches the map through a module under jit.
  call = _module_calls(name, kwargs)["equinox"]
  g = jax.jit(jax.grad(lambda x: jnp.sum(call(x, boxes) ** 2)))(x)
  assert g.shape == x.shape and np.any(np.asarray(g) != 0)


def test_module_fields_are_the_function_keywords():
  import inspect
  from jaxpool import _layers
  for name, function, _ in MODULES + [("MultiScaleRoIAlign",
                                       "multi_scale_roi_align", {})]:
    layer = getattr(_layers, name)
    fn = getattr(jaxpool, function)
    skip = 3 if name == "MultiScaleRoIAlign" else 2
    want = [(p.name, p.default, p.kind)
            for p in list(inspect.signature(fn).parameters.values())[skip:]]
    got = [(p.name, p.default, p.kind)
           for p in inspect.signature(layer).parameters.values()]
    assert got == want, name


def test_multi_scale_modules():
  from jaxpool import equinox as jpe, linen as jpl, nnx as jpn
  feats = [jnp.ones((1, 32, 32, 4)), 2 * jnp.ones((1, 16, 16, 4))]
  boxes = [jnp.array([[4., 6., 44., 40.], [0., 0., 127., 120.]])]
  shapes = [(128, 128)]
  want = jaxpool.multi_scale_roi_align(feats, boxes, shapes, 3, 2)
  np.testing.assert_array_equal(want[:, 0, 0, 0], [1.0, 2.0])
  for got in (jpl.MultiScaleRoIAlign(3, 2).apply({}, feats, boxes, shapes),
              jpn.MultiScaleRoIAlign(3, 2)(feats, boxes, shapes),
              jpe.MultiScaleRoIAlign(3, 2)(feats, boxes, shapes)):
    np.testing.assert_array_equal(got, want)

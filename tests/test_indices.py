"""Tests of max pooling with indices and of max unpooling."""

from __future__ import annotations

import functools

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
import reference
from test_adaptive import SETTINGS
from test_adaptive import random_input
from test_adaptive import to_bcs
from test_adaptive import torch_vjp

TORCH_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}

# Jitted: op by op, every new shape would compile each primitive on its own.
pool_with_indices = jax.jit(
    jaxpool.max_pool_with_indices,
    static_argnames=("window_shape", "strides", "padding", "dilation",
                     "ceil_mode", "channels_first"))
unpool = jax.jit(jaxpool.max_unpool,
                 static_argnames=("spatial_shape", "channels_first"))


def numpy_indices(x, window, strides, padding, dilation, ceil_mode,
                  channels_first):
  """Flat index of PyTorch's choice in each window, by a loop.

  PyTorch's loop starts at the first tap inside the input with ``-inf`` and
  takes a tap ``if (v > best || isnan(v))``.
  """
  rank = len(window)
  xb, undo = to_bcs(x, rank, channels_first)
  geo = reference.geometry(xb.shape[2:], window, strides, padding, dilation,
                           ceil_mode)
  out = np.zeros(xb.shape[:2] + geo.out_shape, np.int64)
  for out_index in np.ndindex(*geo.out_shape):
    inside = []
    for tap in np.ndindex(*window):
      position = tuple(o * s + t * d - lo for o, t, s, d, (lo, _) in zip(
          out_index, tap, geo.strides, geo.dilation, geo.pads))
      if all(0 <= p < n for p, n in zip(position, geo.in_shape)):
        inside.append(position)
    for b, c in np.ndindex(*xb.shape[:2]):
      best, which = -np.inf, inside[0]
      for position in inside:
        v = xb[(b, c) + position]
        if v > best or np.isnan(v):
          best, which = v, position
      out[(b, c) + out_index] = np.ravel_multi_index(which, geo.in_shape)
  return undo(out)


def torch_unpool(values, indices, spatial_shape):
  """PyTorch's unpooling op itself, without ``F.max_unpool``'s size check."""
  if len(spatial_shape) == 1:
    y = torch.ops.aten.max_unpool2d(values[..., None, :], indices[..., None, :],
                                    [1, spatial_shape[0]])
    return y[..., 0, :]
  if len(spatial_shape) == 2:
    return torch.ops.aten.max_unpool2d(values, indices, list(spatial_shape))
  return torch.ops.aten.max_unpool3d(values, indices, list(spatial_shape),
                                     [1, 1, 1], [0, 0, 0])


@st.composite
def pool_configs(draw):
  rank = draw(st.integers(1, 3))
  window = tuple(draw(st.integers(1, 3)) for _ in range(rank))
  dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
  strides = tuple(draw(st.integers(1, 3)) for _ in range(rank))
  padding = tuple(draw(st.integers(0, k // 2)) for k in window)
  spans = [d * (k - 1) + 1 for k, d in zip(window, dilation)]
  biggest = (12, 8, 5)[rank - 1]
  spatial = tuple(draw(st.integers(max(1, s - 2 * p), max(s, biggest)))
                  for s, p in zip(spans, padding))
  return dict(rank=rank, window=window, strides=strides, padding=padding,
              dilation=dilation, ceil_mode=draw(st.booleans()),
              spatial=spatial,
              batch=tuple(draw(st.lists(st.integers(1, 2), max_size=2))),
              channels_first=draw(st.booleans()), ties=draw(st.booleans()),
              seed=draw(st.integers(0, 2**16)))


@hypothesis.settings(max_examples=25, **SETTINGS)
@hypothesis.given(config=pool_configs())
def test_indices_and_unpool_match_torch(config):
  rng = np.random.default_rng(config["seed"])
  rank, cf = config["rank"], config["channels_first"]
  shape = config["batch"] + ((2,) + config["spatial"] if cf else
                             config["spatial"] + (2,))
  x = random_input(rng, shape, config["ties"])
  args = dict(window_shape=config["window"], strides=config["strides"],
              padding=config["padding"], dilation=config["dilation"],
              ceil_mode=config["ceil_mode"])
  fn = jax.jit(functools.partial(jaxpool.max_pool_with_indices,
                                 channels_first=cf, **args))
  (y, vjp), indices = jax.vjp(lambda x: fn(x)[0], x), fn(x)[1]
  assert indices.dtype == jnp.int32
  chex.assert_equal_shape([y, indices])
  ct = rng.standard_normal(y.shape).astype(np.float32)

  torch_pool = functools.partial(
      TORCH_MAX_POOL[rank], kernel_size=config["window"],
      stride=config["strides"], padding=config["padding"],
      dilation=config["dilation"], ceil_mode=config["ceil_mode"])
  y_torch, grad_torch = torch_vjp(torch_pool, x, ct, rank, cf)
  np.testing.assert_array_equal(y, y_torch)
  (grad,) = vjp(jnp.asarray(ct))
  np.testing.assert_allclose(grad, grad_torch, rtol=1e-6, atol=1e-6)

  xb, undo = to_bcs(x, rank, cf)
  yt, it = torch_pool(torch.tensor(xb), return_indices=True)
  np.testing.assert_array_equal(indices, undo(it.numpy()))
  np.testing.assert_array_equal(
      indices, numpy_indices(x, config["window"], config["strides"],
                             config["padding"], config["dilation"],
                             config["ceil_mode"], cf))

  # Unpooling back to the input's size, values and VJP.
  up, up_vjp = jax.vjp(
      lambda v: unpool(v, indices, config["spatial"], channels_first=cf), y)
  chex.assert_shape(up, x.shape)
  up_ct = rng.standard_normal(up.shape).astype(np.float32)
  yt = yt.detach().requires_grad_()
  up_torch = torch_unpool(yt, it, config["spatial"])
  (up_grad_torch,) = torch.autograd.grad(
      up_torch, yt, torch.tensor(to_bcs(up_ct, rank, cf)[0]))
  np.testing.assert_array_equal(up, undo(up_torch.detach().numpy()))
  np.testing.assert_array_equal(up_vjp(jnp.asarray(up_ct))[0],
                                undo(up_grad_torch.numpy()))


def test_indices_with_nan_and_inf_follow_torch():
  x = np.random.default_rng(0).standard_normal((2, 3, 8, 9)).astype(
      np.float32)
  x[0, 0, :4, :4] = -np.inf
  x[0, 1, 1, [1, 2, 5]] = np.nan
  x[1, 2, ::2, ::3] = np.nan
  for args in (dict(kernel_size=3, stride=2, padding=1),
               dict(kernel_size=(2, 4), stride=(1, 3), ceil_mode=True)):
    y_torch, i_torch = F.max_pool2d(torch.tensor(x), return_indices=True,
                                    **args)
    window = args["kernel_size"]
    window = (window, window) if isinstance(window, int) else window
    y, i = pool_with_indices(
        x, window, args["stride"], args.get("padding", 0),
        ceil_mode=args.get("ceil_mode", False), channels_first=True)
    np.testing.assert_array_equal(y, y_torch.numpy())
    np.testing.assert_array_equal(i, i_torch.numpy())


def test_unpool_collisions_match_torch_cpu():
  """The last value in the plane wins; each value's gradient is a gather."""
  rng = np.random.default_rng(1)
  values = rng.standard_normal((2, 3, 7)).astype(np.float32)
  indices = rng.integers(0, 4, (2, 3, 7))
  ct = rng.standard_normal((2, 3, 5)).astype(np.float32)
  vt = torch.tensor(values, requires_grad=True)
  out_torch = torch_unpool(vt, torch.tensor(indices), (5,))
  (grad_torch,) = torch.autograd.grad(out_torch, vt, torch.tensor(ct))
  out, vjp = jax.vjp(lambda v: jaxpool.max_unpool(
      v, indices, (5,), channels_first=True), jnp.asarray(values))
  np.testing.assert_array_equal(out, out_torch.detach().numpy())
  np.testing.assert_array_equal(vjp(jnp.asarray(ct))[0], grad_torch.numpy())
  # Reference by hand: a sequential write per plane.
  expected = np.zeros((2, 3, 5), np.float32)
  for b, c, j in np.ndindex(2, 3, 7):
    expected[b, c, indices[b, c, j]] = values[b, c, j]
  np.testing.assert_array_equal(out, expected)


def test_unpool_under_jit_drops_out_of_range_indices():
  values = jnp.array([[[1.0], [2.0], [3.0]]])
  indices = jnp.array([[[0], [7], [2]]])
  out = unpool(values, indices, (4,))
  np.testing.assert_array_equal(out[0, :, 0], [1.0, 0.0, 3.0, 0.0])


class IndicesVariantsTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(channels_first=[False, True])
  def test_round_trip(self, channels_first):
    rng = np.random.default_rng(2)
    shape = (2, 3, 6, 8) if channels_first else (2, 6, 8, 3)
    # Positive, so that the zeros unpooling adds never win a window.
    x = np.abs(random_input(rng, shape, ties=False)) + 0.1
    pool = self.variant(jaxpool.max_pool_with_indices,
                        static_argnames=("window_shape", "channels_first"))
    inverse = self.variant(jaxpool.max_unpool,
                           static_argnames=("spatial_shape", "channels_first"))
    y, i = pool(x, window_shape=(2, 2), channels_first=channels_first)
    chex.assert_shape([y, i], (2, 3, 3, 4) if channels_first else
                      (2, 3, 4, 3))
    up = inverse(y, i, spatial_shape=(6, 8), channels_first=channels_first)
    chex.assert_shape(up, shape)
    # Every window keeps its maximum and zeros the rest.
    np.testing.assert_array_equal(up, np.where(up != 0, x, 0))
    np.testing.assert_array_equal(
        jaxpool.max_pool(up, (2, 2), channels_first=channels_first), y)

  def test_check_grads_and_vmap(self):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.permutation(2 * 7 * 6 * 2).reshape(2, 7, 6, 2) *
                    0.1, jnp.float32)
    values = jax.jit(lambda x: jaxpool.max_pool_with_indices(
        x, (3, 2), (2, 1), 1)[0])
    check_grads(values, (x,), order=1, modes=("fwd", "rev"), eps=1e-2)
    y, i = pool_with_indices(x, (3, 2), (2, 1), 1)
    # Non-overlapping windows give distinct indices: a true linear map.
    y2, i2 = pool_with_indices(x, (2, 2))
    check_grads(jax.jit(lambda v: jaxpool.max_unpool(v, i2, (7, 6))), (y2,),
                order=2, modes=("fwd", "rev"), eps=1e-2)
    batched = jax.jit(jax.vmap(
        lambda v, j: jaxpool.max_unpool(v, j, (7, 6))))
    np.testing.assert_array_equal(batched(y[:, None], i[:, None])[:, 0],
                                  unpool(y, i, (7, 6)))
    pool = jax.jit(jax.vmap(
        lambda x: jaxpool.max_pool_with_indices(x, (3, 2))))
    yv, iv = pool(x[:, None])
    y3, i3 = pool_with_indices(x, (3, 2))
    np.testing.assert_array_equal(yv[:, 0], y3)
    np.testing.assert_array_equal(iv[:, 0], i3)

  def test_integer_input(self):
    x = np.random.default_rng(4).integers(0, 3, (1, 5, 5, 2)).astype(
        np.int32)
    y, i = pool_with_indices(x, (2, 2), 1)
    np.testing.assert_array_equal(
        i, numpy_indices(x, (2, 2), 1, 0, 1, False, False))
    assert y.dtype == np.int32
    np.testing.assert_array_equal(
        unpool(y, i, (5, 5)).max(axis=(1, 2)), x.max(axis=(1, 2)))


# ---------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("call, match", [
    (lambda x, i: jaxpool.max_unpool(x, i[:, :1], (4, 4)), "indices"),
    (lambda x, i: jaxpool.max_unpool(x, i.astype(jnp.float32), (4, 4)),
     "indices"),
    (lambda x, i: jaxpool.max_unpool(x, i + 100, (4, 4)), "indices"),
    (lambda x, i: jaxpool.max_unpool(x, i - 100, (4, 4)), "indices"),
    (lambda x, i: jaxpool.max_unpool(x, i, ()), "spatial_shape"),
    (lambda x, i: jaxpool.max_unpool(x, i, (4, 0)), "spatial_shape"),
    (lambda x, i: jaxpool.max_unpool(x, i, (4, 4, 4, 4)), "x must have"),
    (lambda x, i: jaxpool.max_pool_with_indices(x, (0, 2)), "window_shape"),
    (lambda x, i: jaxpool.max_pool_with_indices(x, (9, 2)), "window_shape"),
])
def test_bad_input_raises_value_error(call, match):
  x = jnp.ones((2, 2, 2, 3))
  indices = jnp.zeros((2, 2, 2, 3), jnp.int32)
  with pytest.raises(ValueError, match=match):
    call(x, indices)


def test_bad_spatial_shape_type():
  with pytest.raises(TypeError, match="spatial_shape"):
    jaxpool.max_unpool(jnp.ones((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 1), int),
                       4)


# ---------------------------------------------------------------------------
# Issue 16: PyTorch's unpooling signature.


def _torch_or_error(fn):
  try:
    return "ok", np.asarray(fn())
  except (ValueError, RuntimeError) as e:
    return type(e).__name__, str(e)


@pytest.mark.parametrize("output_size", [
    None, (7, 8), (8, 8), (6, 8), (5, 8), (9, 8), (7, 10), [2, 3, 7, 8],
    (7,), (1, 7, 8)])
def test_unpool_torch_form_matches_torch(output_size):
  x = np.random.default_rng(0).standard_normal((2, 3, 7, 8)).astype(
      np.float32)
  yt, it = F.max_pool2d(torch.tensor(x), 3, 2, 1, return_indices=True)
  want = _torch_or_error(lambda: F.max_unpool2d(
      yt, it, 3, 2, 1, output_size).numpy())
  got = _torch_or_error(lambda: jaxpool.max_unpool(
      yt.numpy(), it.numpy(), window_shape=(3, 3), strides=2, padding=1,
      output_size=output_size, channels_first=True))
  if want[0] == "ok":
    assert got[0] == "ok", got
    np.testing.assert_array_equal(got[1], want[1])
  elif "invalid max index" in want[1]:
    # The default size is too small for these indices: PyTorch's kernel
    # raises RuntimeError, jaxpool's index check ValueError.
    assert got[0] == "ValueError" and "indices must lie" in got[1]
  else:
    assert got == ("ValueError", want[1])


def test_unpool_torch_form_default_size_and_layouts():
  x = np.random.default_rng(1).standard_normal((2, 3, 8, 6, 4)).astype(
      np.float32)
  yt, it = F.max_pool3d(torch.tensor(x), 2, return_indices=True)
  want = F.max_unpool3d(yt, it, 2).numpy()
  got = jaxpool.max_unpool(yt.numpy(), it.numpy(), window_shape=(2, 2, 2),
                           channels_first=True)
  np.testing.assert_array_equal(got, want)
  last = jaxpool.max_unpool(np.moveaxis(yt.numpy(), 1, -1),
                            np.moveaxis(it.numpy(), 1, -1),
                            window_shape=(2, 2, 2))
  np.testing.assert_array_equal(last, np.moveaxis(want, 1, -1))


@pytest.mark.parametrize("kwargs,match", [
    (dict(spatial_shape=(4, 4), window_shape=(2, 2)), "not both"),
    (dict(spatial_shape=(4, 4), padding=1), "not both"),
    (dict(), "needs spatial_shape"),
    (dict(window_shape=(2, 2), padding=3), "non-negative"),
])
def test_unpool_form_errors(kwargs, match):
  x = jnp.ones((1, 2, 2, 1))
  with pytest.raises(ValueError, match=match):
    jaxpool.max_unpool(x, jnp.zeros((1, 2, 2, 1), jnp.int32), **kwargs)

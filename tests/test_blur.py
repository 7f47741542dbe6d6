"""Tests of blur pooling and max-blur pooling.

References: ``antialiased_cnns.BlurPool`` and ``BlurPool1D`` (the paper's
code), ``kornia.filters.blur_pool2d`` and ``max_blur_pool2d``, and a NumPy
loop over output positions with the full (non-separable) kernel for every
rank and padding mode.
"""

from __future__ import annotations

import functools
import itertools
import math

import antialiased_cnns
import chex
import hypothesis
import jax
import jax.numpy as jnp
import kornia
import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxpool
from test_adaptive import SETTINGS, torch_vjp, unique_input

_NP_MODES = {"reflect": "reflect", "replicate": "edge", "zero": "constant",
             "circular": "wrap"}
_PASCAL = {1: [1], 2: [1, 1], 3: [1, 2, 1], 4: [1, 3, 3, 1],
           5: [1, 4, 6, 4, 1], 6: [1, 5, 10, 10, 5, 1],
           7: [1, 6, 15, 20, 15, 6, 1]}


def numpy_blur_pool(x, filters, strides, mode, channels_first):
  """The definition: pad, correlate with the outer-product kernel, sample."""
  rank = len(filters)
  x = np.asarray(x, np.float64)
  if channels_first:
    x = np.moveaxis(x, -rank - 1, -1)
  kernel = np.ones(())
  for k in filters:
    row = np.asarray(_PASCAL[k], np.float64)
    kernel = np.multiply.outer(kernel, row / row.sum())
  lead = x.ndim - rank - 1
  pads = [(0, 0)] * lead + [((k - 1) // 2, k // 2) for k in filters] + [
      (0, 0)]
  xp = np.pad(x, pads, mode=_NP_MODES[mode])
  spatial = x.shape[lead:lead + rank]
  outs = [-(-n // s) for n, s in zip(spatial, strides)]
  y = np.zeros(x.shape[:lead] + tuple(outs) + x.shape[-1:])
  for pos in itertools.product(*[range(o) for o in outs]):
    window = tuple(slice(p * s, p * s + k)
                   for p, s, k in zip(pos, strides, filters))
    patch = xp[(Ellipsis,) + window + (slice(None),)]
    y[(Ellipsis,) + pos + (slice(None),)] = np.tensordot(
        patch, kernel, axes=(list(range(lead, lead + rank)),
                             list(range(rank))))
  if channels_first:
    y = np.moveaxis(y, -1, -rank - 1)
  return y


def random(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(
      np.float32)


def jax_vjp(fn, x, cotangent):
  y, vjp = jax.vjp(fn, jnp.asarray(x))
  return y, vjp(jnp.asarray(cotangent))[0]


def assert_matches_torch(fn, torch_fn, x, rank, channels_first, tol=1e-5):
  y = jax.eval_shape(fn, jnp.asarray(x))
  cotangent = random(y.shape, 1)
  got, got_grad = jax.jit(functools.partial(jax_vjp, fn))(x, cotangent)
  want, want_grad = torch_vjp(torch_fn, x, cotangent, rank, channels_first)
  np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
  np.testing.assert_allclose(got_grad, want_grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("filter_size", range(1, 8))
@pytest.mark.parametrize("mode", ["reflect", "replicate", "zero"])
def test_matches_antialiased_cnns_2d(filter_size, mode):
  channels_first = filter_size % 2 == 0
  shape = (2, 3, 11, 8) if channels_first else (2, 11, 8, 3)
  x = random(shape, filter_size)
  ref = antialiased_cnns.BlurPool(3, pad_type=mode, filt_size=filter_size,
                                  stride=2)
  assert_matches_torch(
      lambda x: jaxpool.blur_pool(x, filter_size, 2, padding=mode,
                                  channels_first=channels_first),
      ref, x, 2, channels_first)


@pytest.mark.parametrize("filter_size,stride,mode", [
    (3, 2, "reflect"), (4, 3, "replicate"), (7, 2, "zero"), (2, 1, "reflect"),
    (1, 3, "zero")])
def test_matches_antialiased_cnns_1d(filter_size, stride, mode):
  x = random((2, 13, 3))
  ref = antialiased_cnns.blurpool.BlurPool1D(
      3, pad_type=mode, filt_size=filter_size, stride=stride)
  assert_matches_torch(
      lambda x: jaxpool.blur_pool(x, filter_size, stride, padding=mode), ref,
      x, 1, False)


@pytest.mark.parametrize("filter_size,stride", [(3, 2), (4, 2), (5, 3),
                                                (2, 1)])
def test_zero_padding_matches_kornia(filter_size, stride):
  x = random((2, 3, 10, 9))
  assert_matches_torch(
      lambda x: jaxpool.blur_pool(x, filter_size, stride, padding="zero",
                                  channels_first=True),
      lambda t: kornia.filters.blur_pool2d(t, filter_size, stride), x, 2,
      True)
  assert_matches_torch(
      lambda x: jaxpool.max_blur_pool(x, filter_size, stride, window_shape=3,
                                      padding="zero", channels_first=True),
      lambda t: kornia.filters.max_blur_pool2d(t, filter_size, stride,
                                               max_pool_size=3), x, 2, True)


@pytest.mark.parametrize("filter_size,window", [(4, 2), (3, 3), (1, 2)])
def test_max_blur_matches_the_papers_layers(filter_size, window):
  x = unique_input(np.random.default_rng(0), (2, 12, 9, 3))
  ref = torch.nn.Sequential(
      torch.nn.MaxPool2d(window, stride=1),
      antialiased_cnns.BlurPool(3, filt_size=filter_size, stride=2))
  assert_matches_torch(
      lambda x: jaxpool.max_blur_pool(x, filter_size, 2, window_shape=window),
      ref, x, 2, False)


@st.composite
def blur_configs(draw):
  rank = draw(st.integers(1, 3))
  biggest = (16, 9, 6)[rank - 1]
  return dict(
      spatial=tuple(draw(st.integers(2, biggest)) for _ in range(rank)),
      filters=tuple(draw(st.integers(1, 7)) for _ in range(rank)),
      strides=tuple(draw(st.integers(1, 3)) for _ in range(rank)),
      mode=draw(st.sampled_from(sorted(_NP_MODES))),
      batch=tuple(draw(st.lists(st.integers(1, 2), max_size=2))),
      channels_first=draw(st.booleans()),
      seed=draw(st.integers(0, 2**16)))


@hypothesis.settings(max_examples=12, **SETTINGS)
@hypothesis.given(config=blur_configs())
def test_matches_numpy_definition(config):
  cf = config["channels_first"]
  shape = config["batch"] + ((2,) + config["spatial"] if cf else
                             config["spatial"] + (2,))
  # Reflection past one mirror image is numpy's rule, not PyTorch's: keep
  # the filter within the input, as the references require.
  filters = tuple(min(k, n) for k, n in zip(config["filters"],
                                             config["spatial"]))
  x = random(shape, config["seed"])
  y = jaxpool.blur_pool(x, filters, config["strides"], padding=config["mode"],
                        channels_first=cf)
  want = numpy_blur_pool(x, filters, config["strides"], config["mode"], cf)
  chex.assert_shape(y, want.shape)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_3d_max_blur_matches_numpy():
  x = random((2, 3, 7, 6, 5))
  y = jaxpool.max_blur_pool(x, (3, 4, 2), (2, 2, 1), window_shape=(2, 1, 2),
                            padding="circular", channels_first=True)
  pooled = np.asarray(jaxpool.max_pool(x, (2, 1, 2), 1, channels_first=True))
  want = numpy_blur_pool(pooled, (3, 4, 2), (2, 2, 1), "circular", True)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_int_and_bool_shapes_and_dtypes():
  x = jnp.arange(2 * 9 * 9 * 2).reshape(2, 9, 9, 2) % 7
  y = jaxpool.blur_pool(x, 3)
  chex.assert_type(y, jnp.float32)
  np.testing.assert_allclose(y, jaxpool.blur_pool(x.astype(jnp.float32), 3))
  chex.assert_shape(y, (2, 5, 5, 2))
  half = jaxpool.max_blur_pool(jnp.asarray(random((2, 8, 8, 2)), jnp.bfloat16))
  chex.assert_type(half, jnp.bfloat16)
  chex.assert_shape(jaxpool.blur_pool(x > 3, 3), (2, 5, 5, 2))


def test_filter_size_one_subsamples():
  x = random((2, 7, 8, 3))
  np.testing.assert_array_equal(jaxpool.blur_pool(x, 1, (2, 3)),
                                x[:, ::2, ::3])


def test_no_batch_dims_and_several():
  x = random((2, 3, 8, 12, 3))
  y = jaxpool.blur_pool(x, (4, 4))
  np.testing.assert_array_equal(jaxpool.blur_pool(x[0, 1], (4, 4)), y[0, 1])
  np.testing.assert_allclose(
      jax.vmap(lambda x: jaxpool.blur_pool(x, (4, 4)))(x), y)


def test_constant_input_keeps_its_value_except_zero_padding():
  x = jnp.full((1, 9, 9, 1), 2.0)
  for mode in ("reflect", "replicate", "circular"):
    np.testing.assert_allclose(jaxpool.blur_pool(x, 5, padding=mode), 2.0)
  assert jaxpool.blur_pool(x, 5, padding="zero")[0, 0, 0, 0] < 2.0


def test_grads():
  x = jnp.asarray(unique_input(np.random.default_rng(0), (2, 8, 7, 2)))
  check_grads(jax.jit(lambda x: jaxpool.blur_pool(x, 4, 2)), (x,),
              order=2, modes=("fwd", "rev"), eps=1e-2)
  check_grads(jax.jit(lambda x: jaxpool.max_blur_pool(x, 3, 2)), (x,),
              order=1, modes=("fwd", "rev"), eps=1e-2)


@pytest.mark.parametrize("kwargs,match", [
    (dict(padding="reflection"), "padding"),
    (dict(padding="ZERO"), "padding"),
    (dict(filter_size=0), "filter_size"),
    (dict(strides=0), "strides"),
    (dict(filter_size=(3, 3), strides=(2,)), "filter_size and strides"),
    (dict(filter_size=(3,) * 4), "x must have at least"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    jaxpool.blur_pool(jnp.ones((2, 8, 8, 3)), **kwargs)


def test_bad_window_names_it():
  with pytest.raises(ValueError, match="window_shape"):
    jaxpool.max_blur_pool(jnp.ones((2, 8, 8, 3)), window_shape=0)
  with pytest.raises(TypeError, match="filter_size"):
    jaxpool.blur_pool(jnp.ones((2, 8, 8, 3)), filter_size=2.5)

"""Tests of jaxpool.flatten against torch.flatten on the same maps."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxpool


def maps(shape, seed=0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(
      np.float32)


def torch_flatten(x_channels_last: np.ndarray, rank: int) -> np.ndarray:
  """PyTorch's flatten of the same maps in its layout ``(N, C, *spatial)``."""
  moved = np.moveaxis(x_channels_last, -1, -rank - 1)
  return torch.flatten(torch.tensor(moved), 1).numpy()


@pytest.mark.parametrize("shape", [(2, 5, 3), (2, 4, 3, 5), (2, 3, 2, 4, 3)])
def test_chw_is_torch_flatten(shape):
  rank = len(shape) - 2
  x = maps(shape)
  want = torch_flatten(x, rank)
  np.testing.assert_array_equal(jaxpool.flatten(x), want)
  # The same maps channels-first: already PyTorch's layout.
  x_first = np.moveaxis(x, -1, 1)
  np.testing.assert_array_equal(
      jaxpool.flatten(x_first, channels_first=True), want)
  np.testing.assert_array_equal(
      jax.jit(lambda v: jaxpool.flatten(v, "chw"))(x), want)


@pytest.mark.parametrize("shape", [(2, 4, 3, 5), (2, 3, 2, 4, 3)])
def test_hwc_is_the_channels_last_reshape(shape):
  x = maps(shape)
  want = x.reshape(shape[0], -1)
  np.testing.assert_array_equal(jaxpool.flatten(x, "hwc"), want)
  np.testing.assert_array_equal(
      jaxpool.flatten(np.moveaxis(x, -1, 1), "hwc", channels_first=True),
      want)


def test_several_batch_dims():
  x = maps((2, 3, 4, 5, 6))  # (B1, B2, H, W, C)
  got = jaxpool.flatten(x, spatial_dims=2)
  want = torch_flatten(x.reshape(6, 4, 5, 6), 2).reshape(2, 3, -1)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(jaxpool.flatten(x[0, 0], spatial_dims=2),
                                want[0, 0])


def test_ported_classifier_head():
  """A PyTorch head (flatten, Linear) with its weights loaded unchanged
  gives PyTorch's logits from channels-last maps, and the gradient."""
  x = maps((2, 6, 6, 4))
  linear = torch.nn.Linear(4 * 3 * 3, 5)
  xt = torch.tensor(np.moveaxis(x, -1, 1), requires_grad=True)
  logits = linear(torch.flatten(torch.nn.functional.max_pool2d(xt, 2), 1))
  logits.sum().backward()
  params = {"params": {
      "kernel": jnp.asarray(linear.weight.detach().numpy().T),
      "bias": jnp.asarray(linear.bias.detach().numpy())}}
  head = lambda v: nn.Dense(5).apply(
      params, jaxpool.flatten(jaxpool.max_pool(v, 2)))
  np.testing.assert_allclose(head(x), logits.detach().numpy(), rtol=1e-5,
                             atol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(head(v)))(x)
  np.testing.assert_allclose(grad, np.moveaxis(xt.grad.numpy(), 1, -1),
                             rtol=1e-5, atol=1e-6)
  # The plain reshape is another order: the loaded weights would be wrong.
  wrong = nn.Dense(5).apply(params, jaxpool.max_pool(x, 2).reshape(2, -1))
  assert not np.allclose(wrong, logits.detach().numpy(), atol=1e-3)


def test_bad_arguments():
  x = maps((2, 4, 4, 3))
  with pytest.raises(ValueError, match="order"):
    jaxpool.flatten(x, "cwh")
  with pytest.raises(ValueError, match="spatial_dims"):
    jaxpool.flatten(x, spatial_dims=0)
  with pytest.raises(ValueError, match="at least one spatial dim"):
    jaxpool.flatten(maps((4, 3)))
  with pytest.raises(ValueError, match="at least"):
    jaxpool.flatten(x, spatial_dims=4)

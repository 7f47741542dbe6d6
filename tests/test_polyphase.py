"""Tests of adaptive polyphase sampling (APS).

References: the paper's code (``aps_downsample_v2`` of
github.com/achaman2/truly_shift_invariant_cnns, ``models/aps_models/
apspool.py``), transcribed to CPU PyTorch below for 2-D stride 2; a NumPy
loop over components for every rank and stride; and the property the method
exists for, exact invariance to circular shifts.
"""

from __future__ import annotations

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
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxpool
from test_adaptive import SETTINGS, torch_vjp, unique_input
from test_blur import numpy_blur_pool


# ---------------------------------------------------------------------------
# The paper's code, as published, on CPU (its .cuda() calls dropped).


def _permute_polyphase(n):
  base_even = 2 * torch.arange(n // 2)[None, :]
  base_odd = 1 + 2 * torch.arange(n // 2)[None, :]
  even_inc = 2 * n * torch.arange(n // 2)[:, None]
  odd_inc = n + 2 * n * torch.arange(n // 2)[:, None]
  return torch.cat([(base_even + even_inc).view(-1),
                    (base_even + odd_inc).view(-1),
                    (base_odd + even_inc).view(-1),
                    (base_odd + odd_inc).view(-1)])


def _aps_pad(x):
  n1, n2 = x.shape[2:4]
  if n1 % 2:
    x = F.pad(x, (0, 0, 0, 1), mode="circular")
  if n2 % 2:
    x = F.pad(x, (0, 1, 0, 0), mode="circular")
  return x


def paper_aps(x, criterion="l2"):
  """``aps_downsample_v2(aps_pad(x), 2)`` of the reference, square inputs."""
  x = _aps_pad(x)
  b, c, n, _ = x.shape
  x = torch.index_select(x.reshape(b, c, -1), 2, _permute_polyphase(n))
  x = x.view(b, c, 4, n * n // 4).permute(0, 2, 1, 3)
  if criterion == "l2":
    norms = torch.norm(x, dim=(2, 3), p=2)
  elif criterion == "l1":
    norms = torch.norm(x, dim=(2, 3), p=1)
  else:  # l_infty
    norms = torch.max(x.reshape(b, 4, -1).abs(), dim=2).values
  index = torch.argmax(norms, dim=1)
  return x[torch.arange(b), index].reshape(b, c, n // 2, n // 2)


def paper_max_aps(x, filt_size, window=2):
  """The paper's ResNet max pool: circular pad, MaxPool2d(2, 1), ApsPool."""
  x = F.max_pool2d(F.pad(x, (0, window - 1, 0, window - 1), mode="circular"),
                   window, stride=1)
  if filt_size > 1:
    row = torch.tensor([math.comb(filt_size - 1, j)
                        for j in range(filt_size)], dtype=x.dtype)
    filt = row[:, None] * row[None, :]
    filt = (filt / filt.sum())[None, None].repeat(x.shape[1], 1, 1, 1)
    pads = [(filt_size - 1) // 2, filt_size // 2] * 2
    x = F.conv2d(F.pad(x, pads, mode="circular"), filt, groups=x.shape[1])
  return paper_aps(x)


# ---------------------------------------------------------------------------
# A NumPy loop over the components.


def numpy_aps(x, strides, p, channels_first):
  """Returns the kept components and the chosen phase of every example."""
  rank = len(strides)
  x = np.asarray(x)
  if channels_first:
    x = np.moveaxis(x, -rank - 1, -1)
  lead = x.ndim - rank - 1
  pads = [(0, 0)] * lead + [(0, -n % s) for n, s in
                            zip(x.shape[lead:lead + rank], strides)] + [(0, 0)]
  x = np.pad(x, pads, mode="wrap")
  # The reference's order: the first spatial dim's phase varies fastest.
  phases = [tuple(reversed(q)) for q in
            itertools.product(*[range(s) for s in reversed(strides)])]
  batch_shape = x.shape[:lead]
  out = None
  chosen = np.zeros(batch_shape + (rank,), int)
  for b in itertools.product(*[range(n) for n in batch_shape]):
    best, best_norm = None, -np.inf
    for phase in phases:
      comp = x[b + tuple(slice(q, None, s) for q, s in zip(phase, strides))]
      a = np.abs(comp.astype(np.float64))
      norm = a.max() if p == np.inf else (a ** p).sum()
      if norm > best_norm:
        best, best_norm = (comp, phase), norm
    if out is None:
      out = np.zeros(batch_shape + best[0].shape, x.dtype)
    out[b] = best[0]
    chosen[b] = best[1]
  if channels_first:
    out = np.moveaxis(out, -1, -rank - 1)
  return out, chosen


def random(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(
      np.float32)


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("criterion,norm_ord", [("l2", 2), ("l1", 1),
                                                ("l_infty", np.inf)])
@pytest.mark.parametrize("size", [8, 7])
def test_matches_the_papers_code(criterion, norm_ord, size):
  x = random((6, 3, size, size), size)
  cotangent = random((6, 3, 4, 4), 1)
  got, vjp = jax.vjp(lambda x: jaxpool.aps_pool(
      x, norm_ord=norm_ord, channels_first=True), jnp.asarray(x))
  want, want_grad = torch_vjp(lambda t: paper_aps(t, criterion), x, cotangent,
                              2, True)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(vjp(jnp.asarray(cotangent))[0], want_grad)


@pytest.mark.parametrize("filt_size", [1, 3, 4])
def test_max_pool_and_blur_match_the_papers_resnet(filt_size):
  x = unique_input(np.random.default_rng(0), (3, 10, 10, 2))
  cotangent = random((3, 5, 5, 2), 1)
  got, vjp = jax.vjp(lambda x: jaxpool.aps_pool(
      x, window_shape=2, filter_size=filt_size), jnp.asarray(x))
  want, want_grad = torch_vjp(lambda t: paper_max_aps(t, filt_size), x,
                              cotangent, 2, False)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(vjp(jnp.asarray(cotangent))[0], want_grad,
                             rtol=1e-5, atol=1e-5)


def test_ties_go_to_the_first_component_in_the_references_order():
  # Components 1 (odd rows, even columns) and 2 (even rows, odd columns) tie.
  x = np.zeros((1, 1, 4, 4), np.float32)
  x[0, 0, 1, 0], x[0, 0, 0, 1] = 3.0, -3.0
  want = paper_aps(torch.tensor(x)).numpy()
  got = jaxpool.aps_pool(x, channels_first=True)
  np.testing.assert_array_equal(got, want)
  assert got[0, 0, 0, 0] == 3.0
  # All equal: the first component, even-even.
  np.testing.assert_array_equal(
      jaxpool.aps_pool(jnp.ones((2, 4, 4, 1)) * 0), jnp.zeros((2, 2, 2, 1)))


@st.composite
def aps_configs(draw):
  rank = draw(st.integers(1, 3))
  strides = tuple(draw(st.integers(1, 3)) for _ in range(rank))
  biggest = (13, 8, 5)[rank - 1]
  return dict(
      spatial=tuple(draw(st.integers(1, biggest)) for _ in range(rank)),
      strides=strides, p=draw(st.sampled_from([1, 2, 3.5, np.inf])),
      batch=tuple(draw(st.lists(st.integers(1, 3), max_size=2))),
      channels_first=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@hypothesis.settings(max_examples=15, **SETTINGS)
@hypothesis.given(config=aps_configs())
def test_matches_numpy_loop(config):
  cf = config["channels_first"]
  shape = config["batch"] + ((2,) + config["spatial"] if cf else
                             config["spatial"] + (2,))
  x = random(shape, config["seed"])
  y = jaxpool.aps_pool(x, config["strides"], norm_ord=config["p"],
                       channels_first=cf)
  want, _ = numpy_aps(x, config["strides"], config["p"], cf)
  chex.assert_shape(y, want.shape)
  np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("rank,strides,kwargs", [
    (1, (2,), {}),
    (1, (3,), dict(window_shape=3)),
    (2, (2, 2), {}),
    (2, (2, 3), dict(window_shape=2, filter_size=3)),
    (3, (2, 2, 2), dict(norm_ord=1)),
])
def test_exactly_invariant_to_circular_shifts(rank, strides, kwargs):
  spatial = tuple(s * (4 - rank) * 2 for s in strides)
  x = random((3,) + spatial + (2,), rank)
  pool = jax.jit(lambda x: jaxpool.aps_pool(x, strides, **kwargs))
  y = np.asarray(pool(x))
  # The phase the unshifted input keeps (the max pool and blur before the
  # sampling are circular, so they shift with the input and do not change
  # it): shifting by t moves the kept component by (phase + t) // s.
  z = np.asarray(x)
  if kwargs.get("window_shape", 1) > 1 or kwargs.get("filter_size", 1) > 1:
    z = np.asarray(jaxpool.aps_pool(x, 1, **kwargs))
  _, phase = numpy_aps(z, strides, kwargs.get("norm_ord", 2), False)
  norm = lambda y: np.linalg.norm(y.reshape(3, -1), axis=1)
  rng = np.random.default_rng(0)
  for axis in range(rank):
    for t in (-5, -1, 1, 2, 3, 7):
      shifted = pool(np.roll(x, t, axis + 1))
      for b in range(3):
        moved = np.roll(y[b], (phase[b, axis] + t) // strides[axis], axis)
        np.testing.assert_array_equal(shifted[b], moved)
      np.testing.assert_allclose(norm(np.asarray(shifted)), norm(y),
                                 rtol=1e-6)
  # Shifts along every dim at once.
  t = rng.integers(-9, 9, rank)
  shifted = pool(np.roll(x, tuple(t), tuple(range(1, rank + 1))))
  for b in range(3):
    moves = tuple((phase[b] + t) // np.asarray(strides))
    np.testing.assert_array_equal(
        shifted[b], np.roll(y[b], moves, tuple(range(rank))))


def test_plain_subsampling_is_not_invariant():
  # The test above can fail: fixed-phase subsampling breaks it.
  x = random((1, 8, 1))
  assert not np.array_equal(np.roll(x, 1, 1)[:, ::2], x[:, ::2])


def test_vmap_jit_grad_and_layouts():
  x = jnp.asarray(unique_input(np.random.default_rng(0), (4, 6, 6, 3)))
  y = jaxpool.aps_pool(x)
  np.testing.assert_array_equal(jax.vmap(jaxpool.aps_pool)(x[:, None])[:, 0],
                                y)
  np.testing.assert_array_equal(jax.jit(jaxpool.aps_pool)(x), y)
  np.testing.assert_array_equal(
      jaxpool.aps_pool(jnp.moveaxis(x, -1, 1), channels_first=True),
      jnp.moveaxis(y, -1, 1))
  check_grads(jax.jit(lambda x: jaxpool.aps_pool(x, window_shape=2,
                                                 filter_size=2)),
              (x,), order=2, modes=("fwd", "rev"), eps=1e-2)
  g = jax.grad(lambda x: jaxpool.aps_pool(x).sum())(x)
  # The gradient is 1 on the kept component, 0 elsewhere.
  assert float(g.sum()) == y.size
  chex.assert_shape(jaxpool.aps_pool(jnp.ones((5, 3)), (2,)), (3, 3))


def test_integer_input_keeps_its_dtype():
  x = jnp.arange(2 * 6 * 6).reshape(2, 6, 6, 1) % 5
  y = jaxpool.aps_pool(x)
  chex.assert_type(y, x.dtype)
  want, _ = numpy_aps(np.asarray(x), (2, 2), 2, False)
  np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(strides=0), ValueError, "strides"),
    (dict(window_shape=0), ValueError, "window_shape"),
    (dict(filter_size=(2, 2, 2), strides=(2, 2)), ValueError,
     "strides, window_shape and filter_size"),
    (dict(norm_ord=0), ValueError, "norm_ord"),
    (dict(norm_ord="l2"), TypeError, "norm_ord"),
    (dict(strides=(2,) * 4), ValueError, "x must have at least"),
])
def test_bad_arguments(kwargs, error, match):
  with pytest.raises(error, match=match):
    jaxpool.aps_pool(jnp.ones((2, 8, 8, 3)), **kwargs)

"""Tests of jaxpool.invariance: shifts, shift consistency, feature error.

References are NumPy loops written here: ``np.roll`` for circular shifts, an
explicit padded canvas cropped back for "crop" shifts, and one input at a
time through a NumPy copy of the model. The draws of the shifts are
reproduced with ``random_shift_pairs`` and the same key, which is itself
checked for range, coverage and determinism.
"""

from __future__ import annotations

import functools

import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st
from jax import lax

import jaxpool
from jaxpool import invariance
from test_adaptive import SETTINGS

# ---------------------------------------------------------------------------
# Independent references.


def numpy_shift(img: np.ndarray, s, mode: str, axes, fill=0.0) -> np.ndarray:
  """One input (no batch axis) shifted by ``s`` along ``axes``.

  "crop" is built as the docs define it: a canvas padded by ``m`` with
  ``fill``, cropped back to the input's size at offset ``m - s``.
  """
  s = [int(v) for v in np.broadcast_to(np.asarray(s), (len(axes),))]
  if mode == "circular":
    return np.roll(img, s, axis=axes)
  m = max(abs(v) for v in s)
  pads = [(m, m) if a in axes else (0, 0) for a in range(img.ndim)]
  canvas = np.pad(img, pads, constant_values=fill)
  index = [slice(None)] * img.ndim
  for axis, v in zip(axes, s):
    index[axis] = slice(m - v, m - v + img.shape[axis])
  return canvas[tuple(index)]


def spatial_axes(nspatial: int, channels_first: bool) -> tuple[int, ...]:
  """Spatial axes of one input (no batch axis)."""
  first = 1 if channels_first else 0
  return tuple(range(first, first + nspatial))


class LinearModel:
  """``tanh(flatten(x) @ w1) @ w2``, in JAX and (float64) in NumPy."""

  def __init__(self, in_shape, classes, seed):
    rng = np.random.default_rng(seed)
    size = int(np.prod(in_shape))
    self.w1 = rng.standard_normal((size, 16)).astype(np.float32) / np.sqrt(
        size)
    self.w2 = rng.standard_normal((16, classes)).astype(np.float32)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jnp.tanh(x.reshape(x.shape[0], -1) @ self.w1)
    return h @ self.w2

  def numpy(self, img: np.ndarray) -> np.ndarray:
    h = np.tanh(img.reshape(-1).astype(np.float64) @ self.w1)
    return h @ self.w2


def circular_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """A 3x3 convolution with circular padding, NHWC: shift-equivariant."""
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
  return lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_net(pool, features=8, classes=10, channels=3, seed=0):
  """Circular conv -> ReLU -> ``pool`` -> global average -> linear."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  w = jax.random.normal(k1, (3, 3, channels, features)) / 3.0
  head = jax.random.normal(k2, (features, classes))

  def apply(x):
    y = pool(jax.nn.relu(circular_conv(x, w)))
    return jaxpool.global_avg_pool(y) @ head

  return apply


def random_images(n=128, size=8, channels=3, seed=1):
  return jax.random.normal(jax.random.key(seed), (n, size, size, channels))


# ---------------------------------------------------------------------------
# shift and random_shift_pairs.


@st.composite
def shift_configs(draw):
  nspatial = draw(st.integers(1, 3))
  spatial = tuple(draw(st.integers(1, 6)) for _ in range(nspatial))
  per_input = draw(st.sampled_from(["int", "dims", "rows"]))
  return dict(nspatial=nspatial, spatial=spatial, per_input=per_input,
              n=draw(st.integers(1, 3)), mode=draw(st.sampled_from(
                  ["crop", "circular"])),
              channels_first=draw(st.booleans()),
              fill=draw(st.sampled_from([0.0, -1.5])),
              seed=draw(st.integers(0, 2**16)))


@hypothesis.settings(max_examples=25, **SETTINGS)
@hypothesis.given(config=shift_configs())
def test_shift_matches_numpy(config):
  rng = np.random.default_rng(config["seed"])
  nspatial, spatial, n = config["nspatial"], config["spatial"], config["n"]
  cf = config["channels_first"]
  shape = (n,) + ((2,) + spatial if cf else spatial + (2,))
  x = rng.standard_normal(shape).astype(np.float32)
  bound = min(spatial)
  if config["per_input"] == "int":
    shifts = int(rng.integers(-bound + 1, bound))
    rows = [shifts] * n
  elif config["per_input"] == "dims":
    shifts = rng.integers(-np.array(spatial) + 1, np.array(spatial))
    rows = [shifts] * n
  else:
    shifts = rng.integers(-np.array(spatial) + 1, np.array(spatial),
                          size=(n, nspatial))
    rows = list(shifts)
  got = invariance.shift(x, shifts, mode=config["mode"],
                         fill_value=config["fill"], channels_first=cf)
  axes = spatial_axes(nspatial, cf)
  want = np.stack([numpy_shift(x[i], rows[i], config["mode"], axes,
                               config["fill"]) for i in range(n)])
  np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("mode", ["crop", "circular"])
def test_shift_keeps_integer_dtype_and_is_traceable(mode):
  x = jnp.arange(24, dtype=jnp.int32).reshape(2, 4, 3, 1)
  shifts = jnp.array([[1, -2], [0, 1]], jnp.int32)
  eager = invariance.shift(x, shifts, mode=mode)
  traced = jax.jit(functools.partial(invariance.shift, mode=mode))(x, shifts)
  chex.assert_trees_all_equal(eager, traced)
  assert eager.dtype == jnp.int32
  want = np.stack([numpy_shift(np.asarray(x[i]), np.asarray(shifts[i]), mode,
                               (0, 1)) for i in range(2)])
  np.testing.assert_array_equal(np.asarray(eager), want)


@pytest.mark.parametrize("max_shift", [0, 2, (1, 3)])
def test_random_shift_pairs_range_and_determinism(max_shift):
  key = jax.random.key(3)
  pairs = np.asarray(invariance.random_shift_pairs(key, 4000, max_shift))
  assert pairs.shape == (4000, 2, 2) and pairs.dtype == np.int32
  bound = np.broadcast_to(np.asarray(max_shift), (2,))
  for d in range(2):
    # Every integer of -m..m is drawn, nothing outside it.
    np.testing.assert_array_equal(np.unique(pairs[..., d]),
                                  np.arange(-bound[d], bound[d] + 1))
  np.testing.assert_array_equal(
      pairs, invariance.random_shift_pairs(key, 4000, max_shift))
  if max(bound) > 0:
    other = invariance.random_shift_pairs(jax.random.key(4), 4000, max_shift)
    assert np.any(pairs != np.asarray(other))
    # The two shifts of a pair are drawn independently.
    assert 0.5 < np.mean(pairs[:, 0] != pairs[:, 1]) < 1.0


# ---------------------------------------------------------------------------
# shift_consistency against a NumPy loop.


def assert_same_count(got, want, n: int) -> None:
  """Two fractions of ``n`` inputs count the same inputs (XLA may divide
  by ``n`` as a product with ``1 / n``, off in the last bit)."""
  assert round(float(got) * n) == round(float(want) * n), (got, want)


def numpy_consistency(model, x, pairs, mode, channels_first, fill=0.0):
  axes = spatial_axes(x.ndim - 2, channels_first)
  same = []
  for img, (s1, s2) in zip(np.asarray(x), np.asarray(pairs)):
    a = model.numpy(numpy_shift(img, s1, mode, axes, fill))
    b = model.numpy(numpy_shift(img, s2, mode, axes, fill))
    same.append(np.argmax(a) == np.argmax(b))
  return float(np.mean(same))


@pytest.mark.parametrize("mode", ["crop", "circular"])
@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("nspatial,batch_size", [(1, None), (2, 7), (3, 64)])
def test_consistency_matches_numpy_loop(mode, channels_first, nspatial,
                                        batch_size):
  spatial = {1: (12,), 2: (8, 7), 3: (5, 4, 6)}[nspatial]
  shape = (40,) + ((2,) + spatial if channels_first else spatial + (2,))
  x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  model = LinearModel(shape[1:], 5, seed=1)
  key = jax.random.key(7)
  max_shift = tuple(min(3, s - 1) for s in spatial)
  got = invariance.shift_consistency(
      model, x, max_shift=max_shift, key=key, mode=mode,
      batch_size=batch_size, channels_first=channels_first, fill_value=0.5)
  pairs = invariance.random_shift_pairs(key, len(x), max_shift)
  want = numpy_consistency(model, x, pairs, mode, channels_first, fill=0.5)
  assert 0.0 < want < 1.0  # a case where the metric has something to count
  assert got.dtype == jnp.float32 and got.shape == ()
  assert_same_count(got, want, len(x))


def test_consistency_same_under_jit_vmap_and_batch_sizes():
  x = random_images(n=50, size=8)
  model = LinearModel(x.shape[1:], 10, seed=2)
  key = jax.random.key(0)
  run = functools.partial(invariance.shift_consistency, model, max_shift=2,
                          mode="circular")
  eager = run(x, key=key)
  assert 0.0 < float(eager) < 1.0
  for batch_size in (7, 1000):
    assert_same_count(run(x, key=key, batch_size=batch_size), eager, 50)
  jitted = jax.jit(lambda x, key: run(x, key=key, batch_size=16))
  assert_same_count(jitted(x, key), eager, 50)
  keys = jax.random.split(key, 3)
  batched = jax.vmap(lambda k: run(x, key=k, batch_size=16))(keys)
  chex.assert_shape(batched, (3,))
  for k, value in zip(keys, batched):
    assert_same_count(value, run(x, key=k), 50)
  assert_same_count(run(x, key=key, batch_size=16, progress="eval"), eager,
                    50)


# ---------------------------------------------------------------------------
# What pooling does: the three models.


def test_aps_is_consistent_under_circular_shifts():
  # APS keeps the polyphase component of largest norm; a circular shift
  # permutes the components and shifts the kept one, so after global
  # pooling nothing has changed. This fails for an APS that picks the
  # component by anything that does not move with the input.
  x = random_images()
  aps = conv_net(lambda y: jaxpool.aps_pool(y, 2))
  for max_shift in (1, 3, 7):
    value = invariance.shift_consistency(aps, x, max_shift=max_shift,
                                         key=jax.random.key(max_shift),
                                         mode="circular", batch_size=64)
    assert float(value) == 1.0
  errors = invariance.feature_shift_error(aps, x, jnp.arange(8),
                                          mode="circular")
  np.testing.assert_allclose(np.asarray(errors), 0.0, atol=1e-5)
  # The same net subsampling at a fixed phase is not invariant: the test
  # above can tell the two apart.
  fixed = conv_net(lambda y: y[:, ::2, ::2])
  value = invariance.shift_consistency(fixed, x, max_shift=3,
                                       key=jax.random.key(3), mode="circular")
  assert float(value) < 0.9


def test_global_pool_of_circular_convolution_is_consistent():
  x = random_images()
  toy = conv_net(lambda y: y)
  value = invariance.shift_consistency(toy, x, max_shift=5,
                                       key=jax.random.key(0), mode="circular")
  assert float(value) == 1.0
  errors = invariance.feature_shift_error(toy, x, jnp.arange(-4, 5),
                                          mode="circular")
  np.testing.assert_allclose(np.asarray(errors), 0.0, atol=1e-5)
  # Shifts inside a canvas lose content at the border: not invariant.
  crop = invariance.feature_shift_error(toy, x, jnp.array([0, 3]))
  assert float(crop[0]) == 0.0 and float(crop[1]) > 1e-2


def test_strided_max_pool_is_not_consistent():
  x = random_images()
  # Many classes, so that small changes of the logits can flip the argmax.
  net = conv_net(lambda y: jaxpool.max_pool(y, (2, 2)), features=16,
                 classes=100)
  value = invariance.shift_consistency(net, x, max_shift=3,
                                       key=jax.random.key(0), mode="circular")
  assert 0.5 < float(value) < 1.0
  errors = np.asarray(invariance.feature_shift_error(
      net, x, jnp.arange(5), mode="circular"))
  # Even shifts move the 2x2 grid by whole cells: nothing changes; odd
  # shifts change which elements share a window.
  np.testing.assert_allclose(errors[::2], 0.0, atol=1e-5)
  assert np.all(errors[1::2] > 1e-3)


# ---------------------------------------------------------------------------
# feature_shift_error against a NumPy loop.


def numpy_feature_error(model, x, shifts, mode, channels_first, fill=0.0):
  axes = spatial_axes(x.ndim - 2, channels_first)
  out = []
  for s in shifts:
    ratios = []
    for img in np.asarray(x):
      f0 = model.numpy(img)
      fs = model.numpy(numpy_shift(img, s, mode, axes, fill))
      ratios.append(np.linalg.norm(fs - f0) / np.linalg.norm(f0))
    out.append(np.mean(ratios))
  return np.asarray(out)


@pytest.mark.parametrize("mode", ["crop", "circular"])
@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("per_dim,batch_size", [(False, None), (True, 4)])
def test_feature_error_matches_numpy_loop(mode, channels_first, per_dim,
                                          batch_size):
  spatial = (9, 6)
  shape = (10,) + ((3,) + spatial if channels_first else spatial + (3,))
  x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
  model = LinearModel(shape[1:], 4, seed=3)
  shifts = (np.array([[0, 0], [1, -2], [-5, 3], [8, 5]]) if per_dim
            else np.array([0, 1, -2, 5]))
  got = invariance.feature_shift_error(
      model, x, shifts, mode=mode, batch_size=batch_size,
      channels_first=channels_first, fill_value=-1.0)
  want = numpy_feature_error(model, x, shifts, mode, channels_first, -1.0)
  chex.assert_shape(got, (len(shifts),))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-6)


def test_feature_error_traced_shifts_and_half_precision():
  x = random_images(n=12, size=8)
  net = conv_net(lambda y: jaxpool.max_pool(y, (2, 2)))
  shifts = jnp.arange(4)
  eager = invariance.feature_shift_error(net, x, shifts, mode="circular",
                                         batch_size=5)
  jitted = jax.jit(lambda s: invariance.feature_shift_error(
      net, x, s, mode="circular", batch_size=5))(shifts)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager),
                             atol=1e-6)
  progress = invariance.feature_shift_error(net, x, shifts, mode="circular",
                                            batch_size=5, progress=True)
  np.testing.assert_allclose(np.asarray(progress), np.asarray(eager),
                             atol=1e-6)
  half = invariance.feature_shift_error(
      lambda v: net(v.astype(jnp.float32)).astype(jnp.bfloat16),
      x.astype(jnp.bfloat16), shifts, mode="circular")
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(half), np.asarray(eager), atol=0.05)


# ---------------------------------------------------------------------------
# Bad input.


def _model(x):
  return x.reshape(x.shape[0], -1)[:, :3]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(mode="roll"), ValueError, "mode"),
    (dict(max_shift=8), ValueError, "max_shift"),
    (dict(max_shift=-1), ValueError, "max_shift"),
    (dict(max_shift=(1, 2, 3)), ValueError, "max_shift"),
    (dict(max_shift=1.5), TypeError, "max_shift"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=2.0), TypeError, "batch_size"),
    (dict(channels_first=1), TypeError, "channels_first"),
    (dict(progress=3), TypeError, "progress"),
    (dict(x=np.zeros((8, 8))), ValueError, "x"),
    (dict(x=np.zeros((0, 8, 8, 1))), ValueError, "x"),
    (dict(apply=None), TypeError, "apply"),
    (dict(apply=lambda x: x[:1]), ValueError, "apply"),
    (dict(apply=lambda x: x), ValueError, "apply"),
])
def test_consistency_bad_input(kwargs, error, match):
  args = dict(apply=_model, x=np.zeros((4, 8, 8, 1), np.float32),
              max_shift=2, key=jax.random.key(0))
  args.update(kwargs)
  with pytest.raises(error, match=match):
    invariance.shift_consistency(args.pop("apply"), args.pop("x"), **args)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(mode="wrap"), ValueError, "mode"),
    (dict(shifts=np.zeros((2, 3), np.int32)), ValueError, "shifts"),
    (dict(shifts=np.zeros((0,), np.int32)), ValueError, "shifts"),
    (dict(shifts=np.array([0.5])), TypeError, "shifts"),
    (dict(shifts=np.array([8])), ValueError, "shifts"),
    (dict(batch_size=-1), ValueError, "batch_size"),
    (dict(apply=lambda x: x[1:]), ValueError, "apply"),
])
def test_feature_error_bad_input(kwargs, error, match):
  args = dict(apply=_model, x=np.ones((4, 8, 8, 1), np.float32),
              shifts=np.arange(3))
  args.update(kwargs)
  with pytest.raises(error, match=match):
    invariance.feature_shift_error(args.pop("apply"), args.pop("x"),
                                   args.pop("shifts"), **args)


def test_progress_under_jit_and_bad_shift_shapes():
  x = np.ones((4, 8, 8, 1), np.float32)
  with pytest.raises(ValueError, match="progress"):
    jax.jit(lambda x: invariance.shift_consistency(
        _model, x, max_shift=1, key=jax.random.key(0), progress=True))(x)
  with pytest.raises(ValueError, match="shifts"):
    invariance.shift(x, np.zeros((3, 2), np.int32))
  with pytest.raises(ValueError, match="mode"):
    invariance.shift(x, 1, mode="reflect")
  with pytest.raises(ValueError, match="max_shift"):
    invariance.random_shift_pairs(jax.random.key(0), 3, (1, 2), nspatial=3)
  with pytest.raises(ValueError, match="num"):
    invariance.random_shift_pairs(jax.random.key(0), -1, 1)

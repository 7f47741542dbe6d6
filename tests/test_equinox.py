"""Tests for jaxpool.equinox: each module is its function, in Equinox models.

As in test_linen.py and test_nnx.py, the references are the public functions
called directly, so equality is exact; the cases are shared with those files.
Equinox models take one unbatched, channels-first example and are vmapped.
"""

from __future__ import annotations

import dataclasses
import inspect

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import jaxpool
from jaxpool import equinox as jpe
from test_linen import (FUNCTIONS, PAIRED, assert_every_module_has_an_example,
                        assert_same_computation,
                        assert_takes_the_function_keywords, cross_entropy,
                        function_of, named_cases, pools_by_functions, random)


def test_every_module_is_in_the_table():
  public = {n for n, v in vars(jpe).items()
            if isinstance(v, type) and issubclass(v, eqx.Module)
            and not n.startswith("_")}
  assert public == set(FUNCTIONS) | set(PAIRED)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_init_takes_the_function_keywords(name):
  module = getattr(jpe, name)
  assert_takes_the_function_keywords(
      module, list(inspect.signature(module.__init__).parameters.values())[1:])


class ModuleEqualsFunctionTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*named_cases())
  def test_equals_function(self, name, kwargs, shape):
    module = getattr(jpe, name)(**kwargs)
    got, want = self.variant(lambda x: (
        module(x), function_of(name)(x, **kwargs)))(random(shape))
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    chex.assert_trees_all_equal(got, want)

  @parameterized.named_parameters(*named_cases())
  def test_same_computation_and_gradient(self, name, kwargs, shape):
    module = getattr(jpe, name)(**kwargs)
    assert_same_computation(module, lambda x: function_of(name)(x, **kwargs),
                            random(shape))
    # Every field is static: nothing for filter_grad or an optimiser to see.
    assert not jax.tree.leaves(module)

  # A few cheap cases: the test above shows every gradient is the function's.
  @parameterized.named_parameters(*named_cases()[1::4])
  def test_under_filter_jit_and_filter_grad(self, name, kwargs, shape):
    module = getattr(jpe, name)(**kwargs)
    values = lambda f: lambda x: jax.tree.leaves(f(x))[0]  # Not indices.
    function = values(lambda x: function_of(name)(x, **kwargs))
    x = random(shape)
    cotangent = random(jax.eval_shape(values(module), x).shape, 1)
    got = eqx.filter_jit(eqx.filter_grad(
        lambda x, m: jnp.vdot(values(m)(x), cotangent)))(x, module)
    # Both compiled: eager ops would sum overlapping cotangents in another
    # order.
    want = jax.jit(jax.grad(lambda x: jnp.vdot(function(x), cotangent)))(x)
    np.testing.assert_array_equal(got, want)


class TinyCNN(eqx.Module):
  """Convolutions, several pooling modules and a linear head; one example,
  channels first."""

  conv1: eqx.nn.Conv2d
  pool1: jpe.MaxPool
  pool2: jpe.AvgPool
  conv2: eqx.nn.Conv2d
  pool3: jpe.LPPool
  spp: jpe.SpatialPyramidPool
  head: eqx.nn.Linear

  def __init__(self, key):
    keys = jax.random.split(key, 3)
    self.conv1 = eqx.nn.Conv2d(1, 4, 3, padding="SAME", key=keys[0])
    self.pool1 = jpe.MaxPool((3, 3), 2, 1, channels_first=True)
    self.pool2 = jpe.AvgPool((2, 2), count_include_pad=False, padding="SAME",
                             channels_first=True)
    self.conv2 = eqx.nn.Conv2d(4, 4, 3, padding="SAME", key=keys[1])
    self.pool3 = jpe.LPPool(2.0, (2, 2), 1, channels_first=True)
    self.spp = jpe.SpatialPyramidPool(((1, 1), (2, 2)), channels_first=True)
    self.head = eqx.nn.Linear(4 * 5, 3, key=keys[2])

  def __call__(self, x):
    x = self.pool2(self.pool1(jax.nn.relu(self.conv1(x))))
    return self.head(self.spp(self.pool3(self.conv2(x))))


def tiny_cnn_by_functions(model: TinyCNN, x):
  """TinyCNN written with the functions, using ``model``'s layers."""
  x = jaxpool.max_pool(jax.nn.relu(model.conv1(x)), (3, 3), 2, 1,
                       channels_first=True)
  x = jaxpool.avg_pool(x, (2, 2), count_include_pad=False, padding="SAME",
                       channels_first=True)
  x = jaxpool.lp_pool(model.conv2(x), 2.0, (2, 2), 1, channels_first=True)
  return model.head(jaxpool.spatial_pyramid_pool(x, ((1, 1), (2, 2)),
                                                 channels_first=True))


def batched(forward):
  return lambda model, x: jax.vmap(lambda x: forward(model, x))(x)


def loss(forward):
  return lambda model, x: cross_entropy(batched(forward)(model, x))


@pytest.fixture(name="cnn", scope="module")
def cnn_fixture():
  return TinyCNN(jax.random.key(0)), random((2, 1, 12, 12))


def test_model_equals_functions(cnn):
  model, x = cnn
  got, want = eqx.filter_jit(lambda m, x: (
      batched(lambda m, x: m(x))(m, x),
      batched(tiny_cnn_by_functions)(m, x)))(model, x)
  chex.assert_shape(got, (2, 3))
  np.testing.assert_array_equal(got, want)


def test_model_gradient_equals_functions(cnn):
  model, x = cnn
  grad = lambda f: eqx.filter_grad(loss(f))
  got, want = eqx.filter_jit(lambda m, x: (
      grad(lambda m, x: m(x))(m, x), grad(tiny_cnn_by_functions)(m, x)))(
          model, x)
  chex.assert_trees_all_equal(got, want)
  leaves = jax.tree.leaves(got)
  assert len(leaves) == 6  # Two convolutions and the head, weights and biases.
  assert all(jnp.any(g != 0) for g in leaves)


def test_filter_jitted_model_does_not_retrace(cnn):
  model, _ = cnn

  @eqx.filter_jit
  @chex.assert_max_traces(n=1)
  def forward(model, x):
    return jax.vmap(model)(x)

  for seed in range(3):
    chex.assert_shape(forward(model, random((2, 1, 12, 12), seed)), (2, 3))


def test_training_step_under_filter_jit(cnn):
  model, x = cnn
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))

  @eqx.filter_jit
  def step(model, opt_state, x):
    value, grads = eqx.filter_value_and_grad(loss(lambda m, x: m(x)))(model, x)
    updates, opt_state = optimizer.update(grads, opt_state)
    return eqx.apply_updates(model, updates), opt_state, value

  losses = []
  # optax adds Python floats to int32 step counts, which the suite's strict
  # dtype promotion (conftest.py) rejects.
  with jax.numpy_dtype_promotion("standard"):
    for _ in range(5):
      model, opt_state, value = step(model, opt_state, x)
      losses.append(float(value))
  assert losses[-1] < losses[0]


def test_sequential_passes_a_key():
  x = random((2, 16, 16, 3))
  model = eqx.nn.Sequential([
      jpe.MaxPool((2, 2)), jpe.MinPool((3, 3), 1, "SAME"),
      jpe.AvgPool((2, 2)), jpe.LPPool(1.5, (2, 2))])
  got = eqx.filter_jit(lambda m, x: m(x, key=jax.random.key(1)))(model, x)
  chex.assert_shape(got, (2, 2, 2, 3))
  np.testing.assert_array_equal(got, jax.jit(pools_by_functions)(x))
  np.testing.assert_array_equal(model(x), pools_by_functions(x))


def test_vmapped_over_unbatched_examples():
  x = random((3, 2, 9, 9))
  module = jpe.GlobalMaxPool(spatial_dims=2, channels_first=True)
  got = jax.vmap(module)(x)
  chex.assert_shape(got, (3, 2))
  np.testing.assert_array_equal(got, x.max(axis=(2, 3)))


def test_repr_shows_configuration():
  text = repr(jpe.AvgPool((3, 3), 2, count_include_pad=False))
  for field in ("window_shape=(3, 3)", "strides=2", "count_include_pad=False"):
    assert field in text, text
  assert repr(jpe.MaxPool((2, 2))).startswith("MaxPool(")


def test_lists_become_static_tuples():
  module = jpe.MaxPool([2, 2], padding=[[1, 0], [0, 1]])
  assert module.window_shape == (2, 2)
  assert module.padding == ((1, 0), (0, 1))
  assert module == jpe.MaxPool((2, 2), padding=((1, 0), (0, 1)))
  assert hash(module) == hash(jpe.MaxPool((2, 2), padding=((1, 0), (0, 1))))
  assert not jax.tree.leaves(module)
  x = random((1, 5, 5, 2))
  np.testing.assert_array_equal(
      eqx.filter_jit(lambda m, x: m(x))(module, x),
      jaxpool.max_pool(x, (2, 2), padding=((1, 0), (0, 1))))


def test_modules_are_frozen():
  module = jpe.MaxPool((2, 2))
  with pytest.raises(dataclasses.FrozenInstanceError):
    module.window_shape = (3, 3)


def test_bad_argument_raises_from_the_function():
  with pytest.raises(ValueError, match="window"):
    jpe.MaxPool((0, 2))(random((1, 4, 4, 1)))


def test_a_class_without_a_field_list_is_refused():
  with pytest.raises(TypeError, match="_layers"):
    type("Orphan", (jpe._Pool,), {})  # pylint: disable=protected-access


def test_every_module_has_an_example():
  assert_every_module_has_an_example(jpe)


def test_max_pool_with_indices_and_unpool_modules():
  x = random((2, 8, 6, 3))
  pool = jpe.MaxPoolWithIndices((2, 2))
  y, i = eqx.filter_jit(lambda m, x: m(x))(pool, x)
  want_y, want_i = jaxpool.max_pool_with_indices(x, (2, 2))
  np.testing.assert_array_equal(y, want_y)
  np.testing.assert_array_equal(i, want_i)
  want = jaxpool.max_unpool(y, i, (8, 6))
  np.testing.assert_array_equal(jpe.MaxUnpool((8, 6))(y, i), want)
  np.testing.assert_array_equal(jpe.MaxUnpool()(y, i, (8, 6)), want)
  # PyTorch's form: the size from the window, stride and padding.
  np.testing.assert_array_equal(
      jpe.MaxUnpool(window_shape=(2, 2), output_size=(9, 7))(y, i),
      jaxpool.max_unpool(y, i, (9, 7)))
  with pytest.raises(ValueError, match="spatial_shape"):
    jpe.MaxUnpool()(y, i)
  assert not jax.tree.leaves(pool)
  assert not jax.tree.leaves(jpe.MaxUnpool((8, 6)))
  cotangent = random(want.shape, 1)
  got_grad = eqx.filter_grad(lambda x, m: jnp.vdot(
      m(*pool(x)), cotangent))(x, jpe.MaxUnpool((8, 6)))
  want_grad = jax.grad(lambda x: jnp.vdot(jaxpool.max_unpool(
      *jaxpool.max_pool_with_indices(x, (2, 2)), (8, 6)), cotangent))(x)
  np.testing.assert_array_equal(got_grad, want_grad)

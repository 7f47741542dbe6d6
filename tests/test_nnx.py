"""Tests for jaxpool.nnx: each module is its function, in NNX models.

As in test_linen.py, the references are the public functions called
directly, so equality is exact; the cases are shared with that file.
"""

from __future__ import annotations

import inspect

import chex
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import jaxpool
from jaxpool import nnx as jpn
from test_linen import (FUNCTIONS, PAIRED, assert_every_module_has_an_example,
                         assert_same_computation,
                         assert_takes_the_function_keywords, cross_entropy,
                         function_of, named_cases, pools_by_functions, random)


def test_every_module_is_in_the_table():
  public = {n for n, v in vars(jpn).items()
            if isinstance(v, type) and issubclass(v, nnx.Module)
            and v.__module__ == jpn.__name__ and not n.startswith("_")}
  assert public == set(FUNCTIONS) | set(PAIRED)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_init_takes_the_function_keywords(name):
  module = getattr(jpn, name)
  assert_takes_the_function_keywords(
      module, list(inspect.signature(module.__init__).parameters.values())[1:])


class ModuleEqualsFunctionTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*named_cases())
  def test_equals_function(self, name, kwargs, shape):
    module = getattr(jpn, name)(**kwargs)
    got, want = self.variant(lambda x: (
        module(x), function_of(name)(x, **kwargs)))(random(shape))
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    chex.assert_trees_all_equal(got, want)

  @parameterized.named_parameters(*named_cases())
  def test_same_computation_and_gradient(self, name, kwargs, shape):
    module = getattr(jpn, name)(**kwargs)
    assert_same_computation(module, lambda x: function_of(name)(x, **kwargs),
                            random(shape))
    assert not jax.tree.leaves(nnx.state(module))


class TinyCNN(nnx.Module):
  """Convolutions, several pooling modules and a linear head."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.pool1 = jpn.MaxPool((3, 3), 2, 1)
    self.pool2 = jpn.AvgPool((2, 2), count_include_pad=False, padding="SAME")
    self.conv2 = nnx.Conv(4, 4, (3, 3), rngs=rngs)
    self.pool3 = jpn.LPPool(2.0, (2, 2), 1)
    self.spp = jpn.SpatialPyramidPool((1, 2))
    self.head = nnx.Linear(4 * 5, 3, rngs=rngs)

  def __call__(self, x):
    x = self.pool2(self.pool1(nnx.relu(self.conv1(x))))
    return self.head(self.spp(self.pool3(self.conv2(x))))


def tiny_cnn_by_functions(model: TinyCNN, x):
  """TinyCNN written with the functions, using ``model``'s layers."""
  x = jaxpool.max_pool(nnx.relu(model.conv1(x)), (3, 3), 2, 1)
  x = jaxpool.avg_pool(x, (2, 2), count_include_pad=False, padding="SAME")
  x = jaxpool.lp_pool(model.conv2(x), 2.0, (2, 2), 1)
  return model.head(jaxpool.spatial_pyramid_pool(x, (1, 2)))


def loss(forward):
  return lambda model, x: cross_entropy(forward(model, x))


@pytest.fixture(name="cnn", scope="module")
def cnn_fixture():
  return TinyCNN(nnx.Rngs(0)), random((2, 12, 12, 1))


def test_model_equals_functions(cnn):
  model, x = cnn
  got, want = nnx.jit(lambda m, x: (m(x), tiny_cnn_by_functions(m, x)))(
      model, x)
  np.testing.assert_array_equal(got, want)


def test_model_gradient_equals_functions(cnn):
  model, x = cnn
  grad = lambda f: nnx.grad(loss(f), argnums=(0, 1))
  got, want = nnx.jit(lambda m, x: (grad(lambda m, x: m(x))(m, x),
                                    grad(tiny_cnn_by_functions)(m, x)))(model, x)
  chex.assert_trees_all_equal(nnx.state(got[0]), nnx.state(want[0]))
  np.testing.assert_array_equal(got[1], want[1])
  assert all(jnp.any(g != 0) for g in jax.tree.leaves(nnx.state(got[0])))


def test_jitted_model_does_not_retrace(cnn):
  model, _ = cnn

  @nnx.jit
  @chex.assert_max_traces(n=1)
  def forward(model, x):
    return model(x)

  for seed in range(3):
    chex.assert_shape(forward(model, random((2, 12, 12, 1), seed)), (2, 3))


def test_training_step_under_nnx_jit(cnn):
  model, x = cnn
  model = nnx.clone(model)  # The fixture's model is shared; this one learns.
  optimizer = nnx.Optimizer(model, optax.adam(1e-2),
                            wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x):
    value, grads = nnx.value_and_grad(loss(lambda m, x: m(x)))(model, x)
    optimizer.update(model, grads)
    return value

  # optax adds Python floats to int32 step counts, which the suite's strict
  # dtype promotion (conftest.py) rejects.
  with jax.numpy_dtype_promotion("standard"):
    losses = [float(step(model, optimizer, x)) for _ in range(5)]
  assert losses[-1] < losses[0]


def test_sequential():
  x = random((2, 16, 16, 3))
  model = nnx.Sequential(jpn.MaxPool((2, 2)), jpn.MinPool((3, 3), 1, "SAME"),
                         jpn.AvgPool((2, 2)), jpn.LPPool(1.5, (2, 2)))
  got = nnx.jit(lambda m, x: m(x))(model, x)
  chex.assert_shape(got, (2, 2, 2, 3))
  np.testing.assert_array_equal(got, jax.jit(pools_by_functions)(x))


def test_repr_shows_configuration():
  text = repr(jpn.AvgPool((3, 3), 2, count_include_pad=False))
  for field in ("window_shape=(3, 3)", "strides=2", "padding='VALID'",
                "count_include_pad=False", "divisor_override=None"):
    assert field in text, text
  assert repr(jpn.MaxPool((2, 2))).startswith("MaxPool(")


def test_lists_become_static_tuples():
  module = jpn.MaxPool([2, 2], padding=[[1, 0], [0, 1]])
  assert module.window_shape == (2, 2)
  assert module.padding == ((1, 0), (0, 1))
  assert not jax.tree.leaves(nnx.state(module))
  x = random((1, 5, 5, 2))
  np.testing.assert_array_equal(
      nnx.jit(lambda m, x: m(x))(module, x),
      jaxpool.max_pool(x, (2, 2), padding=((1, 0), (0, 1))))


def test_bad_argument_raises_from_the_function():
  with pytest.raises(ValueError, match="window"):
    jpn.MaxPool((0, 2))(random((1, 4, 4, 1)))


def test_every_module_has_an_example():
  assert_every_module_has_an_example(jpn)


def test_max_pool_with_indices_and_unpool_modules():
  x = random((2, 8, 6, 3))
  pool = jpn.MaxPoolWithIndices((2, 2))
  y, i = nnx.jit(lambda m, x: m(x))(pool, x)
  want_y, want_i = jaxpool.max_pool_with_indices(x, (2, 2))
  np.testing.assert_array_equal(y, want_y)
  np.testing.assert_array_equal(i, want_i)
  want = jaxpool.max_unpool(y, i, (8, 6))
  np.testing.assert_array_equal(jpn.MaxUnpool((8, 6))(y, i), want)
  np.testing.assert_array_equal(jpn.MaxUnpool()(y, i, (8, 6)), want)
  with pytest.raises(ValueError, match="spatial_shape"):
    jpn.MaxUnpool()(y, i)
  assert not jax.tree.leaves(nnx.state(pool))
  assert not jax.tree.leaves(nnx.state(jpn.MaxUnpool((8, 6))))
  cotangent = random(want.shape, 1)
  got_grad = jax.grad(lambda x: jnp.vdot(
      jpn.MaxUnpool((8, 6))(*pool(x)), cotangent))(x)
  want_grad = jax.grad(lambda x: jnp.vdot(jaxpool.max_unpool(
      *jaxpool.max_pool_with_indices(x, (2, 2)), (8, 6)), cotangent))(x)
  np.testing.assert_array_equal(got_grad, want_grad)

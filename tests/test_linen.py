"""Tests for jaxpool.linen: each module is its function, in models and lifts.

The references are the public functions, called directly: a module must be
one call of its function, so equality is exact. The functions themselves are
tested against NumPy and PyTorch in their own test files.
"""

from __future__ import annotations

import doctest
import importlib.util
import inspect
import pathlib
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import jaxpool
from jaxpool import linen as jpl

#: Every module and the public function it applies.
FUNCTIONS = {
    "MaxPool": "max_pool",
    "MinPool": "min_pool",
    "AvgPool": "avg_pool",
    "LPPool": "lp_pool",
    "AdaptiveAvgPool": "adaptive_avg_pool",
    "AdaptiveMaxPool": "adaptive_max_pool",
    "AdaptiveMaxPoolWithIndices": "adaptive_max_pool_with_indices",
    "GlobalAvgPool": "global_avg_pool",
    "GlobalMaxPool": "global_max_pool",
    "SpatialPyramidPool": "spatial_pyramid_pool",
    "SppYolo": "spp_yolo",
    "SPPF": "sppf",
    "Flatten": "flatten",
    "BlurPool": "blur_pool",
    "MaxBlurPool": "max_blur_pool",
    "ApsPool": "aps_pool",
    "SoftPool": "soft_pool",
    "LsePool": "lse_pool",
    "AdaptiveAvgMaxPool": "adaptive_avgmax_pool",
    "AdaptiveCatAvgMaxPool": "adaptive_catavgmax_pool",
}

#: Modules of two outputs or two inputs, tested on their own below.
PAIRED = {
    "MaxPoolWithIndices": "max_pool_with_indices",
    "MaxUnpool": "max_unpool",
    "FractionalMaxPool": "fractional_max_pool",
    "StochasticPool": "stochastic_pool",
    # Learned parameters: tests/test_learned_modules.py.
    "GemPool": "gem_pool",
    "MixedPool": "mixed_pool",
    "GatedPool": "gated_pool",
    "RoIPool": "roi_pool",
    "RoIAlign": "roi_align",
    "PSRoIPool": "ps_roi_pool",
    "PSRoIAlign": "ps_roi_align",
    "MultiScaleRoIAlign": "multi_scale_roi_align",
}

#: (module, keywords other than the defaults, input shape): every module, with
#: several ranks, both layouts, batch dims from none to two.
CASES = [
    ("MaxPool", dict(window_shape=(3, 3), strides=2, padding=1,
                     ceil_mode=True), (2, 9, 9, 3)),
    ("MaxPool", dict(window_shape=(2,), dilation=2, channels_first=True),
     (3, 4, 10)),
    ("MinPool", dict(window_shape=(2, 2, 2), padding="SAME"), (1, 5, 5, 5, 2)),
    ("AvgPool", dict(window_shape=(3, 3), strides=(2, 1),
                     padding=((1, 0), (1, 1)), count_include_pad=False),
     (2, 7, 6, 3)),
    ("AvgPool", dict(window_shape=(2, 2), divisor_override=3, ceil_mode=True),
     (7, 7, 2)),
    ("LPPool", dict(p=3.0, window_shape=(2, 2), strides=1), (2, 6, 6, 2)),
    ("AdaptiveAvgPool", dict(output_size=(3, None)), (2, 7, 5, 3)),
    ("AdaptiveMaxPool", dict(output_size=4, channels_first=True),
     (2, 3, 10, 7)),
    ("AdaptiveMaxPoolWithIndices", dict(output_size=(4, 3)), (2, 10, 7, 3)),
    ("GlobalAvgPool", dict(keepdims=True), (2, 6, 5, 3)),
    ("GlobalMaxPool", dict(channels_first=True), (2, 3, 6, 5)),
    ("SpatialPyramidPool", dict(levels=(1, 3), method="avg"), (2, 7, 9, 3)),
    ("SppYolo", dict(window_sizes=((3, 1), 3)), (2, 6, 6, 3)),
    ("SPPF", dict(window_size=3, repeats=2, channels_first=True),
     (2, 3, 8, 8)),
    ("MaxPool", dict(window_shape=3, strides=2), (2, 7, 7, 3)),
    ("GlobalMaxPool", dict(tie_rule="split"), (2, 6, 5, 3)),
    ("Flatten", dict(), (2, 3, 4, 5)),
    ("Flatten", dict(order="hwc", spatial_dims=1, channels_first=True),
     (2, 3, 4, 5)),
    ("BlurPool", dict(filter_size=3, strides=2, padding="zero"), (2, 7, 6, 3)),
    ("BlurPool", dict(filter_size=(5,), strides=3, channels_first=True),
     (3, 9)),
    ("MaxBlurPool", dict(filter_size=4, window_shape=3, padding="replicate"),
     (2, 9, 8, 2)),
    ("ApsPool", dict(strides=2, window_shape=2, norm_ord=1), (3, 6, 7, 2)),
    ("ApsPool", dict(strides=(2, 2, 2), channels_first=True), (2, 4, 4, 5)),
    ("SoftPool", dict(window_shape=(3, 3), strides=2, padding=1),
     (2, 7, 6, 3)),
    ("SoftPool", dict(keepdims=True, channels_first=True), (2, 3, 5, 4)),
    ("LsePool", dict(r=2.0, window_shape=(2,)), (3, 6, 2)),
    ("LsePool", dict(r=0.5, spatial_dims=3), (2, 3, 4, 3, 2)),
    ("AdaptiveAvgMaxPool", dict(), (2, 5, 6, 3)),
    ("AdaptiveAvgMaxPool", dict(output_size=(2, 3), channels_first=True),
     (2, 3, 7, 6)),
    ("AdaptiveCatAvgMaxPool", dict(channels_first=True), (2, 3, 5, 6)),
]


def named_cases():
  return [(f"{name}_{i}", name, kwargs, shape)
          for i, (name, kwargs, shape) in enumerate(CASES)]


def random(shape, seed=0) -> jax.Array:
  # NumPy draws: jax.random would compile a sampler for every shape.
  return jnp.asarray(
      np.random.default_rng(seed).standard_normal(shape, np.float32))


def function_of(name: str):
  return getattr(jaxpool, FUNCTIONS[name])


def test_every_module_is_in_the_table():
  public = {n for n, v in vars(jpl).items()
            if isinstance(v, type) and issubclass(v, nn.Module)
            and not n.startswith("_")}
  assert public == set(FUNCTIONS) | set(PAIRED)
  assert {name for name, _, _ in CASES} == set(FUNCTIONS)


def assert_takes_the_function_keywords(module, parameters):
  """``parameters`` are those of ``module``'s function less ``x``: the same
  names, defaults and kinds (keyword-only or not), in the same order."""
  function = function_of(module.__name__)
  assert module.function is function
  describe = lambda ps: [(p.name, p.default, p.kind) for p in ps]
  # A call argument (the mask) is the module's call's, not a field.
  expected = [p for p in inspect.signature(function).parameters.values()
              if p.name != "mask"][1:]
  assert describe(parameters) == describe(expected)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_fields_are_the_function_keywords(name):
  module = getattr(jpl, name)
  assert_takes_the_function_keywords(module, [
      p for p in inspect.signature(module).parameters.values()
      if p.name not in ("parent", "name")])


def assert_same_computation(module, function, x):
  """``module`` and ``function`` trace to the very same jaxpr (constants
  included), and so do their gradients: they are one code path."""
  values = lambda f: lambda x: jax.tree.leaves(f(x))[0]  # Not the indices.
  cotangent = random(jax.eval_shape(values(function), x).shape, 1)
  for transform in (lambda f: f,
                    lambda f: jax.grad(
                        lambda x: jnp.vdot(values(f)(x), cotangent))):
    got = jax.make_jaxpr(transform(module))(x)
    want = jax.make_jaxpr(transform(function))(x)
    assert str(got) == str(want)
    chex.assert_trees_all_equal(got.consts, want.consts)


class ModuleEqualsFunctionTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*named_cases())
  def test_equals_function(self, name, kwargs, shape):
    module = getattr(jpl, name)(**kwargs)
    got, want = self.variant(lambda x: (
        module.apply({}, x), function_of(name)(x, **kwargs)))(random(shape))
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    chex.assert_trees_all_equal(got, want)

  @parameterized.named_parameters(*named_cases())
  def test_same_computation_and_gradient(self, name, kwargs, shape):
    module = getattr(jpl, name)(**kwargs)
    assert_same_computation(lambda x: module.apply({}, x),
                            lambda x: function_of(name)(x, **kwargs),
                            random(shape))


class TinyCNN(nn.Module):
  """Convolutions, several pooling modules and a dense head."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = jpl.MaxPool((3, 3), 2, 1)(x)
    x = jpl.AvgPool((2, 2), count_include_pad=False, padding="SAME")(x)
    x = jpl.LPPool(2.0, (2, 2), 1)(nn.Conv(4, (3, 3))(x))
    x = jpl.SpatialPyramidPool((1, 2))(x)
    return nn.Dense(3)(x)


def tiny_cnn_by_functions(params, x):
  """TinyCNN written with the functions and the same parameters."""
  conv = lambda name, x: nn.Conv(4, (3, 3)).apply({"params": params[name]}, x)
  x = nn.relu(conv("Conv_0", x))
  x = jaxpool.max_pool(x, (3, 3), 2, 1)
  x = jaxpool.avg_pool(x, (2, 2), count_include_pad=False, padding="SAME")
  x = jaxpool.lp_pool(conv("Conv_1", x), 2.0, (2, 2), 1)
  x = jaxpool.spatial_pyramid_pool(x, (1, 2))
  return nn.Dense(3).apply({"params": params["Dense_0"]}, x)


@pytest.fixture(name="cnn", scope="module")
def cnn_fixture():
  model = TinyCNN()
  x = random((2, 12, 12, 1))
  return model, jax.jit(model.init)(jax.random.key(0), x)["params"], x


def test_model_equals_functions(cnn):
  model, params, x = cnn
  got, want = jax.jit(lambda p, x: (
      model.apply({"params": p}, x), tiny_cnn_by_functions(p, x)))(params, x)
  np.testing.assert_array_equal(got, want)


def cross_entropy(logits):
  labels = jnp.array([0, 2])
  return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None],
                              1).mean()


def test_model_gradient_equals_functions(cnn):
  model, params, x = cnn
  grad = lambda f: jax.grad(lambda p, x: cross_entropy(f(p, x)), (0, 1))
  got, want = jax.jit(lambda p, x: (
      grad(lambda p, x: model.apply({"params": p}, x))(p, x),
      grad(tiny_cnn_by_functions)(p, x)))(params, x)
  chex.assert_trees_all_equal(got, want)
  assert all(jnp.any(g != 0) for g in jax.tree.leaves(got))


def test_jitted_apply_does_not_retrace(cnn):
  model, params, _ = cnn

  @jax.jit
  @chex.assert_max_traces(n=1)
  def forward(params, x):
    return model.apply({"params": params}, x)

  for seed in range(3):
    chex.assert_shape(forward(params, random((2, 12, 12, 1), seed)), (2, 3))


def test_modules_have_no_variables():
  x = random((2, 8, 8, 3))
  assert jpl.MaxPool((2, 2)).init(jax.random.key(0), x) == {}
  model = nn.Sequential([nn.Conv(2, (1, 1)), jpl.AvgPool((2, 2))])
  assert set(model.init(jax.random.key(0), x)["params"]) == {"layers_0"}


def pools_by_functions(x):
  """What ``test_sequential``'s models compute."""
  x = jaxpool.min_pool(jaxpool.max_pool(x, (2, 2)), (3, 3), 1, "SAME")
  return jaxpool.lp_pool(jaxpool.avg_pool(x, (2, 2)), 1.5, (2, 2))


def test_sequential():
  x = random((2, 16, 16, 3))
  model = nn.Sequential([jpl.MaxPool((2, 2)), jpl.MinPool((3, 3), 1, "SAME"),
                         jpl.AvgPool((2, 2)), jpl.LPPool(1.5, (2, 2))])
  got = jax.jit(model.apply)({}, x)
  chex.assert_shape(got, (2, 2, 2, 3))
  np.testing.assert_array_equal(got, jax.jit(pools_by_functions)(x))


def test_vmap_lifted():
  x = random((2, 5, 8, 8, 3))  # mapped over axis 1
  pool = nn.vmap(jpl.MaxPool, in_axes=1, out_axes=1, variable_axes={},
                 split_rngs={})((3, 3), 2, 1)
  got = jax.jit(pool.apply)({}, x)
  want = jax.vmap(lambda x: jaxpool.max_pool(x, (3, 3), 2, 1), 1, 1)(x)
  chex.assert_shape(got, (2, 5, 4, 4, 3))
  np.testing.assert_array_equal(got, want)


class SmoothCell(nn.Module):
  """A scan body: the carry becomes a pooling of itself plus the input."""

  @nn.compact
  def __call__(self, carry, x):
    carry = jpl.MaxPool((3, 3), 1, "SAME")(carry) + x
    return carry, jpl.AvgPool((2, 2))(carry)


def test_scan_lifted():
  xs = random((3, 2, 6, 6, 3))  # scanned over axis 0
  carry0 = random((2, 6, 6, 3), 1)
  scan = nn.scan(SmoothCell, variable_broadcast="params", split_rngs={},
                 in_axes=0, out_axes=0)()
  got = jax.jit(scan.apply)({}, carry0, xs)

  def step(carry, x):
    carry = jaxpool.max_pool(carry, (3, 3), 1, "SAME") + x
    return carry, jaxpool.avg_pool(carry, (2, 2))

  chex.assert_trees_all_equal(got, jax.jit(
      lambda c, xs: jax.lax.scan(step, c, xs))(carry0, xs))
  chex.assert_shape(got[1], (3, 2, 3, 3, 3))


def test_repr_shows_configuration():
  text = repr(jpl.AvgPool((3, 3), 2, count_include_pad=False))
  for line in ("window_shape = (3, 3)", "strides = 2", "padding = 'VALID'",
               "count_include_pad = False", "divisor_override = None"):
    assert line in text, text
  assert repr(jpl.MaxPool((2, 2))).startswith("MaxPool(")


def test_lists_become_tuples():
  module = jpl.MaxPool([2, 2], padding=[[1, 0], [0, 1]])
  assert module.window_shape == (2, 2)
  assert module.padding == ((1, 0), (0, 1))
  assert module == jpl.MaxPool((2, 2), padding=((1, 0), (0, 1)))
  assert hash(module) == hash(jpl.MaxPool((2, 2), padding=((1, 0), (0, 1))))
  x = random((1, 5, 5, 2))
  np.testing.assert_array_equal(
      jax.jit(module.apply)({}, x),
      jaxpool.max_pool(x, (2, 2), padding=((1, 0), (0, 1))))


def test_bad_argument_raises_from_the_function():
  with pytest.raises(ValueError, match="window"):
    jpl.MaxPool((0, 2)).apply({}, random((1, 4, 4, 1)))


def assert_every_module_has_an_example(api):
  """Every public class of ``api`` has a ``>>>`` example in its docstring.

  The examples run as doctests of ``jaxpool/`` (``pytest --doctest-modules
  jaxpool``, CI's doctest step), not here a second time.
  """
  found = {test.name.rsplit(".", 1)[-1]
           for test in doctest.DocTestFinder().find(api) if test.examples}
  classes = {name for name, value in vars(api).items()
             if isinstance(value, type) and value.__module__ == api.__name__
             and not name.startswith("_")}
  assert classes and classes <= found, sorted(classes - found)


def test_every_module_has_an_example():
  assert_every_module_has_an_example(jpl)


def _load_example():
  pytest.importorskip("sklearn")
  path = (pathlib.Path(__file__).parents[1] / "examples" /
          "digits_pooling.py")
  spec = importlib.util.spec_from_file_location("digits_pooling", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # Its dataclasses look themselves up here.
  spec.loader.exec_module(module)
  return module


def test_example_models_take_their_sizes():
  example = _load_example()
  counts = {}
  for variant in example.variants(24):
    for size in variant.train_sizes:
      x = jax.ShapeDtypeStruct((2, size, size, 1), jnp.float32)
      variables = jax.eval_shape(variant.model.init, jax.random.key(0), x)
      chex.assert_shape(jax.eval_shape(variant.model.apply, variables, x),
                        (2, 10))
      counts.setdefault(variant.name, set()).add(
          sum(p.size for p in jax.tree.leaves(variables)))
  # One set of weights: the SPP model's parameters do not depend on the size.
  assert all(len(c) == 1 for c in counts.values()), counts
  assert len(counts) == 9  # Models 1-9 of the example.


# ---------------------------------------------------------------------------
# Modules of two outputs or two inputs.


def test_paired_modules_take_the_function_keywords():
  parameters = lambda f: [
      (p.name, p.default, p.kind)
      for p in inspect.signature(f).parameters.values()
      if p.name not in ("parent", "name")]
  assert jpl.MaxPoolWithIndices.function is jaxpool.max_pool_with_indices
  assert parameters(jpl.MaxPoolWithIndices) == parameters(
      jaxpool.max_pool_with_indices)[1:]
  # MaxUnpool: the keywords after x and indices; spatial_shape may wait for
  # the call.
  assert jpl.MaxUnpool.function is jaxpool.max_unpool
  want = parameters(jaxpool.max_unpool)[2:]
  want[0] = (want[0][0], None, want[0][2])
  assert parameters(jpl.MaxUnpool) == want


@pytest.mark.parametrize("kwargs,shape", [
    (dict(window_shape=(3, 3), strides=2, padding=1, ceil_mode=True),
     (2, 9, 9, 3)),
    (dict(window_shape=2, channels_first=True), (2, 3, 8, 6)),
])
def test_max_pool_with_indices_module(kwargs, shape):
  module = jpl.MaxPoolWithIndices(**kwargs)
  x = random(shape)
  got = jax.jit(lambda x: module.apply({}, x))(x)
  want = jaxpool.max_pool_with_indices(x, **kwargs)
  chex.assert_trees_all_equal(got, want)
  assert got[1].dtype == jnp.int32
  assert_same_computation(lambda x: module.apply({}, x)[0],
                          lambda x: jaxpool.max_pool_with_indices(
                              x, **kwargs)[0], x)


def test_max_unpool_module_field_or_call():
  x = random((2, 8, 6, 3))
  y, i = jaxpool.max_pool_with_indices(x, (2, 2))
  want = jaxpool.max_unpool(y, i, (8, 6))
  np.testing.assert_array_equal(
      jpl.MaxUnpool((8, 6)).apply({}, y, i), want)
  np.testing.assert_array_equal(jpl.MaxUnpool().apply({}, y, i, (8, 6)),
                                want)
  # The call's size wins over the field's.
  chex.assert_shape(jpl.MaxUnpool((8, 6)).apply({}, y, i, (9, 7)),
                    (2, 9, 7, 3))
  with pytest.raises(ValueError, match="spatial_shape"):
    jpl.MaxUnpool().apply({}, y, i)
  cotangent = random(want.shape, 1)
  got_grad = jax.grad(lambda y: jnp.vdot(
      jpl.MaxUnpool([8, 6]).apply({}, y, i), cotangent))(y)
  want_grad = jax.grad(lambda y: jnp.vdot(
      jaxpool.max_unpool(y, i, (8, 6)), cotangent))(y)
  np.testing.assert_array_equal(got_grad, want_grad)


def test_segnet_style_model():
  """Pool with indices, unpool to each input's own size, under jit."""

  class Net(nn.Module):

    @nn.compact
    def __call__(self, x):
      y, i = jpl.MaxPoolWithIndices(2, channels_first=True)(x)
      return jpl.MaxUnpool(channels_first=True)(y, i, x.shape[2:])

  for shape in ((2, 3, 8, 8), (2, 3, 10, 6)):
    x = random(shape)
    got = jax.jit(Net().apply)({}, x)
    y, i = jaxpool.max_pool_with_indices(x, 2, channels_first=True)
    np.testing.assert_array_equal(
        got, jaxpool.max_unpool(y, i, shape[2:], channels_first=True))

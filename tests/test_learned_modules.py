"""Tests of the modules that own a learned parameter: GemPool (``p``),
MixedPool (``a``) and GatedPool (the gating mask), in Linen (``self.param``),
NNX (``nnx.Param``) and Equinox (an array field).

Each module must equal its function called with the same parameter, give
the function's gradient in that parameter, and train: a few optax steps
change the parameter. The functions are tested against their references in
tests/test_means.py.
"""

from __future__ import annotations

import equinox as eqx
import flax.linen as nn
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxpool
from jaxpool import equinox as jpe
from jaxpool import linen as jpl
from jaxpool import nnx as jpn

#: (module, constructor keywords, input shape, the parameter's name, its
#: initial value as the function takes it, the function's other keywords).
LEARNED = [
    ("GemPool", dict(), (2, 5, 4, 3), "p", np.float32(3.0),
     dict()),
    ("GemPool", dict(p_init=2.0, channels=3, window_shape=(2, 2)),
     (2, 6, 4, 3), "p", np.full(3, 2.0, np.float32),
     dict(window_shape=(2, 2))),
    ("MixedPool", dict(channels=3, window_shape=(3, 3), strides=2,
                       padding=1), (2, 7, 6, 3), "a",
     np.full(3, 0.5, np.float32), dict(window_shape=(3, 3), strides=2,
                                       padding=1)),
    ("MixedPool", dict(a_init=0.25, keepdims=True, channels_first=True),
     (2, 3, 5, 4), "a", np.float32(0.25),
     dict(keepdims=True, channels_first=True)),
    ("GatedPool", dict(window_shape=(2, 2)), (2, 6, 4, 3), "gate",
     np.zeros((2, 2), np.float32), dict(window_shape=(2, 2))),
    ("GatedPool", dict(window_shape=(3,), strides=1, padding="SAME",
                       channels=2, channels_first=True), (3, 2, 7), "gate",
     np.zeros((2, 3), np.float32),
     dict(window_shape=(3,), strides=1, padding="SAME",
          channels_first=True)),
]


def _ids():
  return [f"{case[0]}_{i}" for i, case in enumerate(LEARNED)]


def random(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(
      shape).astype(np.float32))


def _function(name):
  return getattr(jaxpool, {"GemPool": "gem_pool", "MixedPool": "mixed_pool",
                           "GatedPool": "gated_pool"}[name])


def _linen(name, kwargs, x):
  module = getattr(jpl, name)(**kwargs)
  params = module.init(jax.random.key(0), x)["params"]
  return (lambda p, x: module.apply({"params": p}, x)), params


def _nnx(name, kwargs, x):
  del x
  module = getattr(jpn, name)(**kwargs)
  graph, params = nnx.split(module, nnx.Param)
  return (lambda p, x: nnx.merge(graph, p)(x)), params


def _equinox(name, kwargs, x):
  del x
  module = getattr(jpe, name)(**kwargs)
  params, static = eqx.partition(module, eqx.is_array)
  return (lambda p, x: eqx.combine(p, static)(x)), params


APIS = {"linen": _linen, "nnx": _nnx, "equinox": _equinox}


def _leaf(params):
  (leaf,) = jax.tree.leaves(params)
  return leaf


@pytest.mark.parametrize("api", sorted(APIS))
@pytest.mark.parametrize("case", LEARNED, ids=_ids())
def test_module_equals_function_in_value_and_gradient(api, case):
  name, kwargs, shape, param, initial, fn_kwargs = case
  x = random(shape)
  if name == "GemPool":
    x = jnp.abs(x)
  call, params = APIS[api](name, kwargs, x)
  np.testing.assert_array_equal(_leaf(params), initial)
  fn = lambda value, x: _function(name)(x, **{param: value}, **fn_kwargs)
  cotangent = random(jax.eval_shape(fn, initial, x).shape, 1)
  got = jax.jit(call)(params, x)
  np.testing.assert_array_equal(got, jax.jit(fn)(jnp.asarray(initial), x))
  got_grad = jax.grad(lambda p: jnp.vdot(call(p, x), cotangent))(params)
  want_grad = jax.grad(lambda v: jnp.vdot(fn(v, x), cotangent))(
      jnp.asarray(initial))
  np.testing.assert_allclose(_leaf(got_grad), want_grad, rtol=1e-6,
                             atol=1e-7)
  assert np.any(want_grad != 0)


@pytest.mark.parametrize("api", sorted(APIS))
def test_optax_steps_change_the_parameters(api):
  x = jnp.abs(random((4, 6, 6, 3)))
  target = random((4, 3, 3, 3), 2)
  for name, kwargs in (("GemPool", dict(channels=3, window_shape=(2, 2))),
                       ("MixedPool", dict(window_shape=(2, 2))),
                       ("GatedPool", dict(window_shape=(2, 2), channels=3))):
    call, params = APIS[api](name, kwargs, x)
    before = _leaf(params)
    optimizer = optax.sgd(0.5)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, call=call, optimizer=optimizer):
      loss, grads = jax.value_and_grad(
          lambda p: jnp.mean((call(p, x) - target) ** 2))(params)
      updates, state = optimizer.update(grads, state, params)
      return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(5):
      params, state, loss = step(params, state)
      losses.append(float(loss))
    assert not np.allclose(_leaf(params), before)
    assert losses[-1] < losses[0]


def test_nnx_module_is_trained_in_place():
  model = jpn.GemPool()
  optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)
  x = jnp.abs(random((2, 4, 4, 3)))
  grads = nnx.grad(lambda m: jnp.sum(m(x)))(model)
  optimizer.update(model, grads)
  assert float(model.p[...]) != 3.0


def test_gated_pool_needs_a_window_per_dim():
  with pytest.raises(ValueError, match="window_shape as one size per"):
    jpn.GatedPool(2)


def test_linen_parameter_is_named_as_the_argument():
  x = jnp.ones((2, 4, 4, 3))
  for module, name in ((jpl.GemPool(), "p"), (jpl.MixedPool(), "a"),
                       (jpl.GatedPool((2, 2)), "gate")):
    assert set(module.init(jax.random.key(0), x)["params"]) == {name}
  assert isinstance(jpl.GemPool(), nn.Module)

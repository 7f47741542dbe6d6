"""jax.export with symbolic batch, height and width, for every function and
module.

Each function is exported once, its values and its gradient in one artifact,
with symbolic batch and spatial sizes (spatial sizes constrained, e.g.
``h >= 16``); the artifact is run at several concrete sizes and compared
with the function traced at those sizes (values and gradients: the same
PyTorch rules on another lowering, so maxima and their gradients are equal
exactly, sums to rounding). Windowed pools are also compared with the NumPy
loop of ``tests/reference.py`` on inputs full of ties, and a few
configurations with PyTorch itself. Functions whose output shape cannot be
written for symbolic sizes raise ``ValueError`` saying why.
"""

from __future__ import annotations

import flax.linen as nn
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax import export

import jaxpool
import reference
from jaxpool import linen as jpl
from jaxpool import nnx as jpn

#: Concrete (height, width) each artifact runs at, with batch 1 then 2.
SIZES = ((16, 16), (19, 17))


def symbolic(spec: str, minimum: int = 16) -> jax.ShapeDtypeStruct:
  """A float32 input of symbolic ``spec`` (e.g. ``"b, h, w, 3"``), every
  symbolic spatial size at least ``minimum``."""
  names = [n.strip() for n in spec.split(",")]
  spatial = [n for n in names[1:] if n.isalpha()]
  shape = export.symbolic_shape(
      spec, constraints=[f"{n} >= {minimum}" for n in spatial])
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def concrete(spec: str, sizes: tuple[int, ...], batch: int = 2):
  """The concrete shape of ``spec`` with its spatial names set to ``sizes``."""
  names = [n.strip() for n in spec.split(",")]
  values = iter(sizes)
  return tuple(batch if i == 0 else (int(n) if n.isdigit() else next(values))
               for i, n in enumerate(names))


def tied(shape, seed: int = 0) -> np.ndarray:
  """Few distinct ReLU-like values: ties in nearly every window."""
  x = np.random.default_rng(seed).standard_normal(shape)
  return np.maximum(np.round(x * 2), 0).astype(np.float32)


def with_gradient(fn):
  """``x -> (outputs, gradient of sum(sin(first output)))``: one function
  to export, so that one artifact carries values and gradient."""

  def loss(x):
    out = fn(x)
    first = out[0] if isinstance(out, tuple) else out
    return jnp.sum(jnp.sin(first)), out

  return jax.grad(loss, has_aux=True)


def assert_close(got, want, exact: bool):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert g.shape == w.shape and g.dtype == w.dtype, (g, w)
    if exact:
      np.testing.assert_array_equal(g, w)
    else:
      np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


def check_exported(fn, spec: str, exact: bool, sizes=SIZES,
                   minimum: int = 16):
  """Exports ``fn`` and its gradient with the symbolic ``spec`` and compares
  the artifact with ``fn`` traced at each of ``sizes``; returns the first
  (smallest) ``(x, (gradient, outputs))``."""
  both = with_gradient(fn)
  exported = export.export(jax.jit(both))(symbolic(spec, minimum))
  results = []
  for i, size in enumerate(sizes):
    x = jnp.asarray(tied(concrete(spec, size, batch=1 + i), seed=i))
    got = exported.call(x)
    assert_close(got, jax.jit(both)(x), exact)
    results.append((x, got))
  return results[0]


# ---------------------------------------------------------------------------
# Windowed pooling, also against the NumPy loop.

#: (op, keywords, symbolic input): reference.pool's arguments.
WINDOWED = [
    ("max", dict(window_shape=(3, 3), strides=2, padding=1), "b, h, w, 3"),
    ("max", dict(window_shape=(3, 3), strides=2, padding=1, ceil_mode=True,
                 channels_first=True), "b, 3, h, w"),
    ("max", dict(window_shape=(3, 2), strides=(2, 1), padding="SAME",
                 dilation=(1, 2)), "b, h, w, 2"),
    ("max", dict(window_shape=(5, 5), strides=1, padding=2), "b, h, w, 2"),
    ("max", dict(window_shape=(5,), strides=2, padding=2, ceil_mode=True),
     "b, l, 3"),
    ("min", dict(window_shape=(2, 2), ceil_mode=True), "b, h, w, 2"),
    ("avg", dict(window_shape=(3, 3), strides=2, padding=1, ceil_mode=True,
                 count_include_pad=False), "b, h, w, 3"),
    ("avg", dict(window_shape=(2, 3), strides=2, padding="SAME"),
     "b, h, w, 2"),
    ("avg", dict(window_shape=(2, 2), strides=2, padding=1, ceil_mode=True,
                 divisor_override=3, channels_first=True), "b, 2, h, w"),
    ("avg", dict(window_shape=(2, 2, 2), strides=2, ceil_mode=True),
     "b, d, h, w, 2"),
    ("lp", dict(p=2.0, window_shape=(2, 2), ceil_mode=True), "b, h, w, 2"),
]

_FUNCTIONS = {"max": jaxpool.max_pool, "min": jaxpool.min_pool,
              "avg": jaxpool.avg_pool, "lp": jaxpool.lp_pool}


def _call(op, kwargs):
  kwargs = dict(kwargs)
  if op == "lp":
    p = kwargs.pop("p")
    return lambda x: jaxpool.lp_pool(x, p, **kwargs)
  return lambda x: _FUNCTIONS[op](x, **kwargs)


@pytest.mark.parametrize("op,kwargs,spec", WINDOWED,
                         ids=[f"{op}{i}" for i, (op, _, _) in
                              enumerate(WINDOWED)])
def test_windowed(op, kwargs, spec):
  sizes = ((4, 5, 6), (5, 4, 7)) if spec.count(",") == 4 else SIZES
  minimum = 4 if spec.count(",") == 4 else 16
  x, (grad, y) = check_exported(_call(op, kwargs), spec,
                                exact=op in ("max", "min"), sizes=sizes,
                                minimum=minimum)
  want, want_grad = reference.pool(np.asarray(x), op, cotangent=np.cos(
      np.asarray(y, np.float64)), **kwargs)
  np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-5)


def test_issue_example_against_pytorch():
  """The configuration of the issue, channels-first, ties: PyTorch's values
  and gradients from the exported artifact."""
  fn = lambda v: jaxpool.max_pool(v, 3, 2, 1, ceil_mode=True,
                                  channels_first=True)
  exported = export.export(jax.jit(with_gradient(fn)))(
      symbolic("b, 4, h, w"))
  for size in ((16, 16), (19, 17)):
    x = tied((2, 4) + size)
    grad, y = exported.call(jnp.asarray(x))
    xt = torch.tensor(x, requires_grad=True)
    yt = F.max_pool2d(xt, 3, 2, 1, ceil_mode=True)
    yt.backward(torch.cos(yt.detach()))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fn", [
    lambda x: jaxpool.max_pool(x, 3, 2, 1, ceil_mode=True),
    lambda x: jaxpool.adaptive_max_pool(x, (3, 4)),
    jaxpool.global_max_pool,
], ids=["max", "adaptive_max", "global_max"])
def test_nan_and_minus_inf_follow_pytorch(fn):
  """The last NaN of a window takes the gradient; a window of -inf only
  gives it to its first element inside the input."""
  x = tied((2, 17, 16, 2))
  x[0, 3, 4, 0] = x[0, 4, 3, 0] = np.nan
  x[1, :9, :9, 1] = -np.inf
  both = with_gradient(fn)
  exported = export.export(jax.jit(both))(symbolic("b, h, w, 2"))
  assert_close(exported.call(jnp.asarray(x)), jax.jit(both)(jnp.asarray(x)),
               exact=True)


def test_generic_pool_and_output_shape():
  fn = lambda v: jaxpool.pool(v, 0.0, jax.lax.add, (3, 3), 2, 1,
                              ceil_mode=True)
  check_exported(fn, "b, h, w, 2", exact=False)
  spec = symbolic("b, h, w, 2")
  assert jaxpool.pool_output_shape(spec.shape, 3, 2, 1, ceil_mode=True) == (
      jax.eval_shape(fn, spec).shape)


@pytest.mark.parametrize("fn", [
    lambda x: jaxpool.max_pool(x, 3, 2, 1),
    lambda x: jaxpool.avg_pool(x, 2),
    lambda x: jaxpool.adaptive_max_pool(x, 5),
], ids=["max", "avg_blocks", "adaptive_max"])
def test_symbolic_batch_only(fn):
  """Concrete spatial sizes keep the platform's tuned plan (its size class
  from the spatial size alone)."""
  both = with_gradient(fn)
  exported = export.export(jax.jit(both))(jax.ShapeDtypeStruct(
      export.symbolic_shape("b, 20, 18, 3"), jnp.float32))
  for batch in (1, 3):
    x = jnp.asarray(tied((batch, 20, 18, 3), seed=batch))
    assert_close(exported.call(x), jax.jit(both)(x), exact=True)


# ---------------------------------------------------------------------------
# Adaptive, global, pyramid, indices, flatten.

def _segments(x, method):
  nodes = x.reshape(-1, x.shape[-1])
  ids = jax.lax.broadcasted_iota(jnp.int32, nodes.shape[:1], 0) % 5
  return jaxpool.segment_pool(nodes, ids, 7, method=method)


OTHERS = {
    "adaptive_max": (lambda x: jaxpool.adaptive_max_pool(x, (3, 5)),
                     "b, h, w, 3", True),
    "adaptive_max_keep": (lambda x: jaxpool.adaptive_max_pool(
        x, (2, None), channels_first=True), "b, 3, h, w", True),
    "adaptive_avg": (lambda x: jaxpool.adaptive_avg_pool(x, 7),
                     "b, h, w, 3", False),
    "adaptive_avg_keep": (lambda x: jaxpool.adaptive_avg_pool(x, (None, 4)),
                          "b, h, w, 2", False),
    "global_max": (jaxpool.global_max_pool, "b, h, w, 3", True),
    "global_max_split": (lambda x: jaxpool.global_max_pool(
        x, keepdims=True, tie_rule="split"), "b, h, w, 3", False),
    "global_avg": (lambda x: jaxpool.global_avg_pool(
        x, channels_first=True), "b, 3, h, w", False),
    "spp": (jaxpool.spatial_pyramid_pool, "b, h, w, 3", True),
    "spp_avg": (lambda x: jaxpool.spatial_pyramid_pool(
        x, (1, 3), method="avg", channels_first=True), "b, 2, h, w", False),
    "spp_sppnet_whole": (lambda x: jaxpool.spatial_pyramid_pool(
        x, (1,), bins="sppnet"), "b, h, w, 2", True),
    # Windows of more than 16 taps go one spatial dim at a time.
    "spp_yolo": (lambda x: jaxpool.spp_yolo(x, (5, 9)), "b, h, w, 2", False),
    "sppf": (lambda x: jaxpool.sppf(x, 5, 2, channels_first=True),
             "b, 2, h, w", False),
    "max_pool_with_indices": (lambda x: jaxpool.max_pool_with_indices(
        x, (3, 3), 2, 1, ceil_mode=True), "b, h, w, 3", True),
    "max_pool_with_indices_dilated": (
        lambda x: jaxpool.max_pool_with_indices(
            x, 3, 2, "SAME", dilation=2, channels_first=True),
        "b, 2, h, w", True),
    "unpool_to_input_size": (lambda x: jaxpool.max_unpool(
        *jaxpool.max_pool_with_indices(x, 3, 2, 1), x.shape[1:3]),
                             "b, h, w, 3", True),
    "adaptive_max_pool_with_indices": (
        lambda x: jaxpool.adaptive_max_pool_with_indices(x, (3, 5)),
        "b, h, w, 3", True),
    "adaptive_max_pool_with_indices_keep": (
        lambda x: jaxpool.adaptive_max_pool_with_indices(
            x, (None, 4), channels_first=True), "b, 2, h, w", True),
    "flatten": (jaxpool.flatten, "b, h, w, 3", True),
    "flatten_channels_first": (lambda x: jaxpool.flatten(
        x, "hwc", channels_first=True), "b, 3, h, w", True),
    "blur_reflect": (lambda x: jaxpool.blur_pool(x, 3, 2), "b, h, w, 2",
                     False),
    "blur_zero": (lambda x: jaxpool.blur_pool(
        x, 4, 2, padding="zero", channels_first=True), "b, 2, h, w", False),
    "max_blur": (lambda x: jaxpool.max_blur_pool(x, 4, 2), "b, h, w, 2",
                 False),
    # Odd sizes (19, 17) wrap around to a multiple of the stride.
    "aps": (jaxpool.aps_pool, "b, h, w, 2", True),
    "aps_max_blur": (lambda x: jaxpool.aps_pool(
        x, 2, window_shape=2, filter_size=3, channels_first=True),
                     "b, 2, h, w", False),
    "gem": (lambda x: jaxpool.gem_pool(x, 3.0, window_shape=(3, 3),
                                       strides=2), "b, h, w, 2", False),
    "gem_global": (jaxpool.gem_pool, "b, h, w, 3", False),
    # Masks of symbolic shape, made from the input (a padded batch's mask).
    "masked_max": (lambda x: jaxpool.max_pool(
        x, 3, 2, 1, mask=x[..., 0] > 0), "b, h, w, 2", True),
    "masked_avg": (lambda x: jaxpool.avg_pool(
        x, (3, 3), 2, 1, mask=x[:, 0] > 0, channels_first=True),
                   "b, 2, h, w", False),
    "masked_global_avg": (lambda x: jaxpool.global_avg_pool(
        x, mask=x[..., 1] > 0), "b, h, w, 2", False),
    "masked_global_max": (lambda x: jaxpool.global_max_pool(
        x, mask=x[..., 1] > 0, tie_rule="split"), "b, h, w, 2", False),
    "masked_adaptive_avg": (lambda x: jaxpool.adaptive_avg_pool(
        x, (3, 4), mask=x[..., 0] > 0), "b, h, w, 2", False),
    "masked_adaptive_max": (lambda x: jaxpool.adaptive_max_pool(
        x, (None, 4), mask=x[..., 0] > 0), "b, h, w, 2", True),
    # A symbolic number of nodes; num_segments is static.
    "segment_max": (lambda x: _segments(x, "max"), "b, h, w, 3", False),
    "segment_mean": (lambda x: _segments(x, "mean"), "b, h, w, 3", False),
    # The window starts are computed from the symbolic sizes, samples drawn
    # per symbolic batch.
    "fractional": (lambda x: jaxpool.fractional_max_pool(
        x, 2, (11, 9), key=jax.random.key(0), return_indices=True),
                   "b, h, w, 2", True),
    "fractional_3d_channels_first": (lambda x: jaxpool.fractional_max_pool(
        x, (2, 3, 2), (3, 6, 5), samples=jnp.full(x.shape[:2] + (3,), 0.3),
        channels_first=True), "b, 2, 4, h, w", True),
    "stochastic": (lambda x: jaxpool.stochastic_pool(
        jnp.abs(x), (3, 3), 2, 1, key=jax.random.key(0)), "b, h, w, 2", True),
    "stochastic_eval": (lambda x: jaxpool.stochastic_pool(
        jnp.abs(x), 2, channels_first=True, deterministic=True),
                        "b, 2, h, w", False),
    "soft": (lambda x: jaxpool.soft_pool(x, window_shape=(3, 3), strides=2,
                                         padding=1), "b, h, w, 2", False),
    "soft_global": (jaxpool.soft_pool, "b, h, w, 3", False),
    "lse": (lambda x: jaxpool.lse_pool(x, 2.0, window_shape=(2, 2)),
            "b, h, w, 2", False),
    "lse_global": (lambda x: jaxpool.lse_pool(x, 0.5, channels_first=True),
                   "b, 2, h, w", False),
    "mixed": (lambda x: jaxpool.mixed_pool(x, 0.3, window_shape=(3, 3),
                                           strides=2, padding=1),
              "b, h, w, 2", False),
    "mixed_global": (jaxpool.mixed_pool, "b, h, w, 3", False),
    "gated": (lambda x: jaxpool.gated_pool(x, jnp.full((2, 2), 0.5),
                                           window_shape=(2, 2)),
              "b, h, w, 2", False),
    "avgmax_global": (jaxpool.adaptive_avgmax_pool, "b, h, w, 3", False),
    "catavgmax": (lambda x: jaxpool.adaptive_catavgmax_pool(
        x, (3, 2), channels_first=True), "b, 2, h, w", False),
}


#: Slow to compile: one size; the other tests cover several.
ONE_SIZE = ("spp", "spp_yolo", "sppf")


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_function(name):
  fn, spec, exact = OTHERS[name]
  # Sums of sppf/spp_yolo gradients add in another order: not exact.
  check_exported(fn, spec, exact,
                 sizes=SIZES[1:] if name in ONE_SIZE else SIZES)


def test_unpool_of_given_values_and_indices():
  """max_unpool exported on its own: values and indices of symbolic shape
  put back into twice their size."""

  def fn(y, index):
    return jaxpool.max_unpool(y, index, (2 * y.shape[1], 2 * y.shape[2]))

  shape = export.symbolic_shape("b, h, w, 3")
  exported = export.export(jax.jit(jax.grad(
      lambda y, i: (jnp.sum(jnp.sin(fn(y, i))), fn(y, i)), has_aux=True)))(
          jax.ShapeDtypeStruct(shape, jnp.float32),
          jax.ShapeDtypeStruct(shape, jnp.int32))
  for size in ((9, 7),):
    x = jnp.asarray(tied((2, 2 * size[0], 2 * size[1], 3)))
    y, index = jaxpool.max_pool_with_indices(x, 2)
    got = exported.call(y, index)
    want = jax.grad(lambda y: (jnp.sum(jnp.sin(fn(y, index))),
                               fn(y, index)), has_aux=True)(y)
    assert_close(got, want, exact=True)


def test_global_max_split_against_torch_amax():
  exported = export.export(jax.jit(with_gradient(
      lambda v: jaxpool.global_max_pool(v, channels_first=True,
                                        tie_rule="split"))))(
                                            symbolic("b, 3, h, w"))
  x = tied((2, 3, 17, 16))
  grad, y = exported.call(jnp.asarray(x))
  xt = torch.tensor(x, requires_grad=True)
  yt = torch.amax(xt, (2, 3))
  yt.backward(torch.cos(yt.detach()))
  np.testing.assert_array_equal(y, yt.detach().numpy())
  np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------
# What cannot export symbolically, and says why.


def test_sppnet_bins_need_concrete_sizes():
  with pytest.raises(ValueError, match="bins='sppnet' needs a concrete size"):
    export.export(jax.jit(lambda v: jaxpool.spatial_pyramid_pool(
        v, (1, 2), bins="sppnet")))(symbolic("b, h, w, 3"))


def test_fractional_output_ratio_needs_concrete_sizes():
  with pytest.raises(ValueError, match="output_ratio needs concrete"):
    export.export(jax.jit(lambda v: jaxpool.fractional_max_pool(
        v, 2, output_ratio=0.5, key=jax.random.key(0))))(
            symbolic("b, h, w, 3"))


def test_unprovable_window_fit_asks_for_a_constraint():
  unconstrained = jax.ShapeDtypeStruct(export.symbolic_shape("b, h, w, 3"),
                                       jnp.float32)
  with pytest.raises(ValueError, match="constraint such as 'h >= 3'"):
    export.export(jax.jit(lambda v: jaxpool.max_pool(v, (3, 3))))(
        unconstrained)
  # Padding that makes every size fit needs no constraint.
  export.export(jax.jit(lambda v: jaxpool.max_pool(v, (3, 3), 1, 1)))(
      unconstrained)


# ---------------------------------------------------------------------------
# Modules: every Linen and NNX module in one exported model each.


def _module_configs(api):
  return {
      "max": api.MaxPool(3, 2, 1),
      "min": api.MinPool((2, 2), ceil_mode=True),
      "avg": api.AvgPool((3, 3), 2, 1, count_include_pad=False),
      "lp": api.LPPool(2.0, (2, 2)),
      "adaptive_avg": api.AdaptiveAvgPool((3, 4)),
      "adaptive_max": api.AdaptiveMaxPool(3),
      "global_avg": api.GlobalAvgPool(),
      "global_max": api.GlobalMaxPool(tie_rule="split"),
      "spp": api.SpatialPyramidPool((1, 2)),
      "spp_yolo": api.SppYolo((3, 5)),
      "sppf": api.SPPF(3, 2),
      "flatten": api.Flatten(),
      "blur": api.BlurPool(3, 2),
      "max_blur": api.MaxBlurPool(3, 2),
      "aps": api.ApsPool(2, window_shape=2, filter_size=3),
      "adaptive_max_indices": api.AdaptiveMaxPoolWithIndices((3, 4)),
      "fractional": api.FractionalMaxPool(2, (9, 11)),
      "stochastic": api.StochasticPool((3, 3), 2, 1),
      "soft": api.SoftPool(window_shape=(2, 2)),
      "lse": api.LsePool(2.0),
      "avgmax": api.AdaptiveAvgMaxPool(),
      "catavgmax": api.AdaptiveCatAvgMaxPool((3, 2)),
      "gem_module": api.GemPool(channels=2),
      "mixed_module": api.MixedPool(window_shape=(2, 2)),
      "gated_module": api.GatedPool((2, 2)),
  }


#: Modules that draw a PRNG key: each API's test passes one its own way.
KEYED = ("fractional", "stochastic")


#: Modules whose functions need concrete spatial sizes, with the message.
CONCRETE_ONLY: dict[str, tuple] = {}

_ROI_BOXES = np.array([[0, 1.0, 2.0, 9.0, 7.0]], np.float32)
_CONCRETE = "concrete spatial sizes"
#: Modules of several inputs whose functions need concrete spatial sizes:
#: (make(api), (x -> (first input, *more inputs)), message).
CONCRETE_ONLY_PAIRED: dict[str, tuple] = {
    "RoIPool": (lambda api: api.RoIPool(2), lambda x: (x, _ROI_BOXES),
                _CONCRETE),
    "RoIAlign": (lambda api: api.RoIAlign(2, sampling_ratio=2),
                 lambda x: (x, _ROI_BOXES), _CONCRETE),
    "PSRoIPool": (lambda api: api.PSRoIPool(1), lambda x: (x, _ROI_BOXES),
                  _CONCRETE),
    "PSRoIAlign": (lambda api: api.PSRoIAlign(1), lambda x: (x, _ROI_BOXES),
                   _CONCRETE),
    "MultiScaleRoIAlign": (lambda api: api.MultiScaleRoIAlign(2),
                           lambda x: ([x], _ROI_BOXES, [(32, 32)]),
                           _CONCRETE),
}


def _run_all(configs, x, call, keyed_call):
  key = jax.random.key(0)
  out = {name: keyed_call(m, x, key) if name in KEYED else call(m, x)
         for name, m in configs.items()
         if name not in ("with_indices", "unpool")}
  values, index = call(configs["with_indices"], x)
  out["with_indices"] = values
  out["unpool"] = call(configs["unpool"], values, index, x.shape[1:3])
  return out


def _check_modules(api, module_type, call, keyed_call):
  configs = _module_configs(api)
  configs["with_indices"] = api.MaxPoolWithIndices(2)
  configs["unpool"] = api.MaxUnpool()
  public = {n for n, v in vars(api).items()
            if isinstance(v, type) and issubclass(v, module_type)
            and v.__module__ == api.__name__ and not n.startswith("_")}
  assert public == {type(m).__name__ for m in configs.values()} | set(
      CONCRETE_ONLY) | set(CONCRETE_ONLY_PAIRED)
  for make, message in CONCRETE_ONLY.values():
    with pytest.raises(ValueError, match=message):
      export.export(jax.jit(lambda x, m=make(api): call(m, x)))(
          symbolic("b, h, w, 2"))
  for make, inputs, message in CONCRETE_ONLY_PAIRED.values():
    with pytest.raises(ValueError, match=message):
      export.export(jax.jit(lambda x, m=make(api), f=inputs: call(
          m, *f(x))))(symbolic("b, h, w, 2"))
  # Forward only: each module is one call of its function (test_linen.py,
  # test_nnx.py: the same jaxpr, gradient included), whose gradient export
  # is tested above.
  model = jax.jit(lambda x: _run_all(configs, x, call, keyed_call))
  exported = export.export(model)(symbolic("b, h, w, 2"))
  x = jnp.asarray(tied((2, 17, 19, 2)))
  assert_close(exported.call(x), model(x), exact=False)


def test_linen_modules():
  # init makes the learned parameters (none for the other modules).
  _check_modules(jpl, nn.Module, lambda m, *args: m.init_with_output(
      jax.random.key(0), *args)[0],
                 lambda m, x, key: m.apply({}, jnp.abs(x),
                                           rngs={"pooling": key}))


def test_nnx_modules():
  _check_modules(jpn, nnx.Module, lambda m, *args: m(*args),
                 lambda m, x, key: m(jnp.abs(x), rngs=key))


def test_circular_padding_wider_than_a_symbolic_size_raises():
  fn = jax.jit(lambda x: jaxpool.aps_pool(x, 2, window_shape=3))
  with pytest.raises(ValueError, match="constraint 'h >= 2'"):
    export.export(fn)(symbolic("b, h, w, 2", minimum=1))
  # With the constraint, it exports.
  export.export(fn)(symbolic("b, h, w, 2", minimum=2))


# ---------------------------------------------------------------------------
# Region pooling: the static bound on a bin's taps comes from the map's
# size, so spatial sizes must be concrete (a clear ValueError); a symbolic
# batch, with a fixed number of boxes, exports.

_ROI_FUNCTIONS = {
    "roi_pool": lambda x: jaxpool.roi_pool(x, _ROI_BOXES, 2),
    "roi_align": lambda x: jaxpool.roi_align(x, _ROI_BOXES, 2),
    "ps_roi_pool": lambda x: jaxpool.ps_roi_pool(x, _ROI_BOXES, 1),
    "ps_roi_align": lambda x: jaxpool.ps_roi_align(x, _ROI_BOXES, 1, 1.0, 2),
    "multi_scale_roi_align": lambda x: jaxpool.multi_scale_roi_align(
        [x], _ROI_BOXES, [(20, 18)], 2),
}


@pytest.mark.parametrize("name", sorted(_ROI_FUNCTIONS))
def test_region_pooling_needs_concrete_spatial_sizes(name):
  fn = _ROI_FUNCTIONS[name]
  with pytest.raises(ValueError, match=_CONCRETE):
    export.export(jax.jit(fn))(symbolic("b, h, w, 2"))
  both = with_gradient(fn)
  exported = export.export(jax.jit(both))(jax.ShapeDtypeStruct(
      export.symbolic_shape("b, 20, 18, 2"), jnp.float32))
  for batch in (1, 3):
    x = jnp.asarray(tied((batch, 20, 18, 2), seed=batch))
    assert_close(exported.call(x), jax.jit(both)(x), exact=False)

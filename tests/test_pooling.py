"""Tests of the windowed pooling functions in ``jaxpool/_pooling.py``.

Every function is compared with the NumPy loop in ``reference.py`` and, where
PyTorch has the op, with ``torch.nn.functional`` (values, and gradients as a
vector-Jacobian product with a random cotangent), over random configurations
drawn by hypothesis.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import chex
import flax.linen
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from absl.testing import parameterized
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

import jaxpool
import reference

# Derandomized, so every run draws the same examples; no shrinking, which
# can take minutes per failure here (the failing example is still printed).
SETTINGS = hypothesis.settings(
    max_examples=30, deadline=None, derandomize=True, print_blob=True,
    report_multiple_bugs=False,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])

# ---------------------------------------------------------------------------
# Random configurations and inputs.


@dataclasses.dataclass(frozen=True)
class Config:
  """One pooling configuration and the input shape it applies to."""
  batch: tuple[int, ...]
  channels: int
  in_shape: tuple[int, ...]
  window: tuple[int, ...]
  strides: Any  # As passed: None, an int or a sequence.
  padding: Any  # As passed: a word, an int, ints or pairs.
  dilation: Any
  ceil_mode: bool
  channels_first: bool

  @property
  def nspatial(self) -> int:
    return len(self.window)

  @property
  def x_shape(self) -> tuple[int, ...]:
    if self.channels_first:
      return self.batch + (self.channels,) + self.in_shape
    return self.batch + self.in_shape + (self.channels,)

  def kwargs(self, dilation: bool = True) -> dict[str, Any]:
    """Keyword arguments for the jaxpool functions."""
    kw = dict(window_shape=self.window, strides=self.strides,
              padding=self.padding, ceil_mode=self.ceil_mode,
              channels_first=self.channels_first)
    if dilation:
      kw["dilation"] = self.dilation
    return kw

  def geometry(self) -> reference.Geometry:
    return reference.geometry(self.in_shape, self.window, self.strides,
                              self.padding, self.dilation, self.ceil_mode)

  def every_window_touches_input(self) -> bool:
    """False if some window lies entirely in padding (dilation can do it).

    PyTorch reads out of bounds for such windows (it crashes in backward),
    so configurations compared with it must not have them.
    """
    geo = self.geometry()
    for size, k, s, d, (lo, _), out in zip(geo.in_shape, geo.window,
                                           geo.strides, geo.dilation,
                                           geo.pads, geo.out_shape):
      for o in range(out):
        if not any(0 <= o * s + j * d - lo < size for j in range(k)):
          return False
    return True

  def torch_kwargs(self, dilation: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``torch.nn.functional`` (symmetric padding)."""
    geo = self.geometry()
    assert all(lo == hi for lo, hi in geo.pads), geo.pads
    if not self.every_window_touches_input():
      hypothesis.reject()  # PyTorch rejects such windows; draw another.
    kw = dict(kernel_size=geo.window, stride=geo.strides,
              padding=tuple(lo for lo, _ in geo.pads),
              ceil_mode=self.ceil_mode)
    if dilation:
      kw["dilation"] = geo.dilation
    return kw


def _as_passed(draw, values: tuple[int, ...], default=None):
  """``values`` as a tuple, a list, or an int when they are all equal."""
  forms = [values, list(values)]
  if len(set(values)) == 1:
    forms.append(values[0])
  if default is not None and values == default:
    forms.append(None)
  return draw(st.sampled_from(forms))


@st.composite
def configs(draw, *, torch_ok: bool = True, dilation: bool = True,
            padding: bool = True) -> Config:
  """A configuration; ``torch_ok`` keeps to what PyTorch accepts."""
  n = draw(st.integers(1, 3))
  # Large enough to reach every lowering: more than 16 taps in 2-D and 3-D
  # is reduced one dim at a time (or as blocks when stride == window).
  kmax = {1: 6, 2: 5, 3: 3}[n]
  window = tuple(draw(st.integers(1, kmax)) for _ in range(n))
  strides = tuple(draw(st.integers(1, 3)) for _ in range(n))
  if draw(st.integers(0, 3)) == 0:
    strides = window  # Non-overlapping windows have lowerings of their own.
  dil = tuple(draw(st.integers(1, 2)) if dilation else 1 for _ in range(n))
  if not padding:
    pads = ((0, 0),) * n
    padding_arg = draw(st.sampled_from(["VALID", 0, (0,) * n]))
  elif torch_ok:
    # PyTorch: padding at most half the window.
    sym = tuple(draw(st.integers(0, k // 2)) for k in window)
    pads = tuple((p, p) for p in sym)
    padding_arg = _as_passed(draw, sym)
    if not any(sym):
      padding_arg = draw(st.sampled_from([padding_arg, "VALID"]))
  else:
    kind = draw(st.sampled_from(["SAME", "VALID", "pairs", "large"]))
    if kind == "pairs":
      pads = tuple((draw(st.integers(0, k)), draw(st.integers(0, k)))
                   for k in window)
      padding_arg = pads
    elif kind == "large":
      sym = tuple(draw(st.integers(0, k + 1)) for k in window)
      pads = tuple((p, p) for p in sym)
      padding_arg = _as_passed(draw, sym)
    else:
      pads = None
      padding_arg = draw(st.sampled_from([kind, kind.lower()]))
  sizes = []
  for i in range(n):
    span = dil[i] * (window[i] - 1) + 1
    room = 0 if pads is None else sum(pads[i])
    top = span + {1: 6, 2: 3, 3: 2}[n]
    sizes.append(draw(st.integers(max(1, span - room), top)))
  batch = tuple(draw(st.lists(st.integers(1, 2), max_size=2)))
  return Config(
      batch=batch, channels=draw(st.integers(1, 3)), in_shape=tuple(sizes),
      window=window, strides=_as_passed(draw, strides, window),
      padding=padding_arg,
      dilation=_as_passed(draw, dil) if dilation else 1,
      ceil_mode=draw(st.booleans()),
      channels_first=draw(st.booleans()))


KINDS = ("normal", "relu", "ints", "nan", "inf")


def make_input(rng: np.random.Generator, shape, kind: str,
               dtype=np.float32) -> np.ndarray:
  """A test input; "relu" and "ints" have many ties."""
  x = rng.standard_normal(shape)
  if kind == "relu":
    x = np.maximum(x, 0)
  elif kind == "ints":
    x = rng.integers(-2, 3, shape).astype(np.float64)
  elif kind == "nan":
    x[rng.random(shape) < 0.15] = np.nan
  elif kind == "inf":
    x = rng.choice([-np.inf, np.inf, 1.0, 0.0], shape, p=[.4, .4, .1, .1])
  elif kind == "positive":
    x = rng.uniform(0.2, 2.0, shape)
  elif kind == "unique":
    # Values at least 0.1 apart: no ties, and a finite difference of size
    # eps < 0.05 never changes which element is the maximum.
    x = rng.permutation(math.prod(shape)).reshape(shape) * 0.1 - 1.0
  else:
    assert kind == "normal", kind
  return x.astype(dtype)


def _bcs(x: np.ndarray, cfg: Config) -> np.ndarray:
  """``x`` in PyTorch's layout ``(N, C, *spatial)``."""
  n = cfg.nspatial
  if not cfg.channels_first:
    x = np.moveaxis(x, -1, -n - 1)
  return x.reshape((-1,) + x.shape[-n - 1:])


def _from_bcs(y: np.ndarray, cfg: Config) -> np.ndarray:
  n = cfg.nspatial
  y = y.reshape(cfg.batch + y.shape[1:])
  return y if cfg.channels_first else np.moveaxis(y, -n - 1, -1)


def torch_vjp(fn, x: np.ndarray, ct: np.ndarray, cfg: Config):
  """PyTorch's value and input gradient of ``fn``, in our layout."""
  xt = torch.tensor(_bcs(x, cfg), requires_grad=True)
  yt = fn(xt)
  yt.backward(torch.tensor(_bcs(ct, cfg)))
  return (_from_bcs(yt.detach().numpy(), cfg),
          _from_bcs(xt.grad.numpy(), cfg))


def jax_vjp(fn, x: np.ndarray, ct_rng: np.random.Generator,
            plain: bool = False):
  """``fn(x)`` and its VJP with a random cotangent, under ``jax.jit``.

  ``plain`` forces the plain ``reduce_window`` lowering (read at trace time,
  so the jitted function is traced inside the block).
  """

  def value_and_grad(x, ct):
    y, pullback = jax.vjp(fn, x)
    return y, pullback(ct)[0]

  shape = jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
  ct = ct_rng.standard_normal(shape.shape).astype(shape.dtype)
  with jaxpool.force_plain_lowering(plain):
    y, g = jax.jit(value_and_grad)(x, ct)
  return np.asarray(y), np.asarray(g), ct


def _torch_nd(name: str, n: int):
  return getattr(F, f"{name}{n}d")


# ---------------------------------------------------------------------------
# Max and min against PyTorch and the reference.


@SETTINGS
@hypothesis.given(cfg=configs(), kind=st.sampled_from(KINDS),
                  op=st.sampled_from(["max", "min"]), plain=st.booleans(),
                  seed=st.integers(0, 2**31))
def test_max_min_match_torch_and_reference(cfg, kind, op, plain, seed):
  rng = np.random.default_rng(seed)
  x = make_input(rng, cfg.x_shape, kind)
  fn = functools.partial(
      jaxpool.max_pool if op == "max" else jaxpool.min_pool, **cfg.kwargs())
  y, g, ct = jax_vjp(fn, x, rng, plain)

  torch_max = functools.partial(_torch_nd("max_pool", cfg.nspatial),
                                **cfg.torch_kwargs())
  torch_fn = torch_max if op == "max" else lambda t: -torch_max(-t)
  yt, gt = torch_vjp(torch_fn, x, ct, cfg)
  yr, gr = reference.pool(x, op, cfg.window, cfg.strides, cfg.padding,
                          dilation=cfg.dilation, ceil_mode=cfg.ceil_mode,
                          channels_first=cfg.channels_first, cotangent=ct)

  assert y.dtype == np.float32
  chex.assert_shape(y, yt.shape)
  assert y.shape == jaxpool.pool_output_shape(x.shape, **cfg.kwargs())
  # A max selects an element: the values are exactly equal, NaN included.
  np.testing.assert_array_equal(y, yt)
  np.testing.assert_array_equal(y, yr)
  # Each output's cotangent goes to the element PyTorch picks.
  np.testing.assert_allclose(g, gt, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(g, gr, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# Average pooling.


@SETTINGS
@hypothesis.given(cfg=configs(dilation=False),
                  kind=st.sampled_from(["normal", "relu", "ints"]),
                  count_include_pad=st.booleans(),
                  divisor_override=st.sampled_from([None, None, 1, 3, -2]),
                  plain=st.booleans(), seed=st.integers(0, 2**31))
def test_avg_pool_matches_torch_and_reference(cfg, kind, count_include_pad,
                                              divisor_override, plain, seed):
  # avg_pool3d (alone) rejects an unpadded input smaller than the window.
  hypothesis.assume(cfg.nspatial < 3 or all(
      n >= k for n, k in zip(cfg.in_shape, cfg.window)))
  rng = np.random.default_rng(seed)
  x = make_input(rng, cfg.x_shape, kind)
  options = dict(count_include_pad=count_include_pad,
                 divisor_override=divisor_override)
  fn = functools.partial(jaxpool.avg_pool, **cfg.kwargs(), **options)
  y, g, ct = jax_vjp(fn, x, rng, plain)

  torch_kw = dict(cfg.torch_kwargs(dilation=False), **options)
  if cfg.nspatial == 1:
    # avg_pool1d has no divisor_override: pool 2-D over a unit height.
    unit = dict(kernel_size=1, stride=1, padding=0)
    torch_kw = {k: ((unit[k],) + v if k in unit else v)
                for k, v in torch_kw.items()}
    torch_fn = lambda t: F.avg_pool2d(t[:, :, None], **torch_kw)[:, :, 0]
  else:
    torch_fn = functools.partial(_torch_nd("avg_pool", cfg.nspatial),
                                 **torch_kw)
  yt, gt = torch_vjp(torch_fn, x, ct, cfg)
  yr, gr = reference.pool(x, "avg", cfg.window, cfg.strides, cfg.padding,
                          ceil_mode=cfg.ceil_mode,
                          channels_first=cfg.channels_first, cotangent=ct,
                          **options)

  assert y.dtype == np.float32
  chex.assert_shape(y, yt.shape)
  np.testing.assert_allclose(y, yt, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y, yr, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g, gt, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g, gr, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Lp pooling.


@SETTINGS
@hypothesis.given(cfg=configs(dilation=False, padding=False),
                  p=st.sampled_from([1, 2, 3, 1.5]),
                  kind=st.sampled_from(["positive", "relu", "normal"]),
                  plain=st.booleans(), seed=st.integers(0, 2**31))
def test_lp_pool_matches_torch_and_reference(cfg, p, kind, plain, seed):
  if kind == "normal" and p not in (1, 2):
    kind = "positive"  # A negative sum to a fractional power is NaN.
  rng = np.random.default_rng(seed)
  # "relu" has all-zero windows: value and gradient 0 there, as PyTorch.
  x = make_input(rng, cfg.x_shape, kind)
  fn = functools.partial(jaxpool.lp_pool, p=p, **cfg.kwargs(dilation=False))
  y, g, ct = jax_vjp(lambda x: fn(x), x, rng, plain)

  torch_kw = cfg.torch_kwargs(dilation=False)
  del torch_kw["padding"]
  if cfg.nspatial == 1:  # lp_pool1d multiplies by kernel_size: an int.
    torch_kw.update(kernel_size=cfg.window[0],
                    stride=torch_kw["stride"][0])
  torch_fn = functools.partial(_torch_nd("lp_pool", cfg.nspatial),
                               norm_type=p, **torch_kw)
  yt, gt = torch_vjp(torch_fn, x, ct, cfg)
  yr, gr = reference.pool(x, "lp", cfg.window, cfg.strides, cfg.padding,
                          ceil_mode=cfg.ceil_mode, p=p,
                          channels_first=cfg.channels_first, cotangent=ct)

  assert y.dtype == np.float32
  chex.assert_shape(y, yt.shape)
  np.testing.assert_allclose(y, yt, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(y, yr, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(g, gt, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(g, gr, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# What PyTorch cannot do: SAME, asymmetric or large padding, dilated
# averages, padded Lp pooling. Compared with the reference alone.


@SETTINGS
@hypothesis.given(cfg=configs(torch_ok=False),
                  op=st.sampled_from(reference.OPS),
                  kind=st.sampled_from(["normal", "relu", "ints"]),
                  count_include_pad=st.booleans(), seed=st.integers(0, 2**31))
def test_beyond_torch_matches_reference(cfg, op, kind, count_include_pad,
                                        seed):
  rng = np.random.default_rng(seed)
  options = {}
  if op == "lp":
    kind = "positive"
    options["p"] = 2
    kwargs = cfg.kwargs(dilation=False)
    ref_kw = {}
  else:
    kwargs = cfg.kwargs()
    ref_kw = dict(dilation=cfg.dilation)
  if op == "avg":
    options["count_include_pad"] = count_include_pad
  x = make_input(rng, cfg.x_shape, kind)
  fn = functools.partial(
      {"max": jaxpool.max_pool, "min": jaxpool.min_pool,
       "avg": jaxpool.avg_pool, "lp": jaxpool.lp_pool}[op],
      **kwargs, **options)
  y, g, ct = jax_vjp(fn, x, rng)
  yr, gr = reference.pool(x, op, cfg.window, cfg.strides, cfg.padding,
                          ceil_mode=cfg.ceil_mode,
                          channels_first=cfg.channels_first, cotangent=ct,
                          **ref_kw, **options)
  chex.assert_shape(y, yr.shape)
  assert y.shape == jaxpool.pool_output_shape(x.shape, **kwargs)
  # A window entirely in padding has no taps counted without
  # count_include_pad: 0 / 0, NaN, as the reference.
  np.testing.assert_allclose(y, yr, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(g, gr, rtol=1e-4, atol=1e-5)


@SETTINGS
@hypothesis.given(cfg=configs(torch_ok=False), seed=st.integers(0, 2**31),
                  reducer=st.sampled_from(["add", "max", "min"]),
                  plain=st.booleans())
def test_pool_generic_matches_reference(cfg, seed, reducer, plain):
  rng = np.random.default_rng(seed)
  x = make_input(rng, cfg.x_shape, "normal")  # No ties.
  init, fn, op, options = {
      "add": (0.0, lax.add, "avg", dict(divisor_override=1)),
      "max": (-np.inf, lax.max, "max", {}),
      "min": (np.inf, lax.min, "min", {}),
  }[reducer]
  pooled = lambda x: jaxpool.pool(x, init, fn, **cfg.kwargs())
  # pool() is differentiated by JAX itself, which has no VJP for a dilated
  # max or min: check only the value there.
  differentiable = reducer == "add" or set(cfg.geometry().dilation) == {1}
  if differentiable:
    y, g, ct = jax_vjp(pooled, x, rng, plain)
  else:
    y, g, ct = np.asarray(jax.jit(pooled)(x)), None, None
  yr = reference.pool(x, op, cfg.window, cfg.strides, cfg.padding,
                      dilation=cfg.dilation, ceil_mode=cfg.ceil_mode,
                      channels_first=cfg.channels_first, cotangent=ct,
                      **options)
  if differentiable:
    yr, gr = yr
    np.testing.assert_allclose(g, gr, rtol=1e-5, atol=1e-6)
  assert y.dtype == x.dtype
  chex.assert_shape(y, yr.shape)
  np.testing.assert_allclose(y, yr, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["max", "avg"])
def test_same_padding_matches_flax(op):
  rng = np.random.default_rng(9)
  x = make_input(rng, (2, 7, 9, 3), "normal")
  kw = dict(window_shape=(3, 4), strides=(2, 3), padding="SAME")
  flax_fn = {"max": flax.linen.max_pool, "avg": flax.linen.avg_pool}[op]
  ours = {"max": jaxpool.max_pool, "avg": jaxpool.avg_pool}[op](x, **kw)
  # Flax divides by the whole window, as count_include_pad=True does when
  # all padding is the user's.
  with jax.numpy_dtype_promotion("standard"):  # Flax's avg_pool needs it.
    want = flax_fn(x, **kw)
  np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-6)


def test_pool_generic_product_and_gradient():
  rng = np.random.default_rng(0)
  x = make_input(rng, (2, 5, 6, 3), "positive")
  kw = dict(window_shape=(2, 3), strides=(1, 2), padding=((1, 0), (0, 2)))
  prod = jaxpool.pool(x, 1.0, lax.mul, **kw)
  log_sum = jaxpool.pool(np.log(x), 0.0, lax.add, **kw)
  np.testing.assert_allclose(prod, np.exp(log_sum), rtol=1e-5)
  ct = rng.standard_normal(prod.shape).astype(np.float32)
  _, pullback = jax.vjp(lambda x: jaxpool.pool(x, 0.0, lax.add, **kw), x)
  _, gr = reference.pool(x, "avg", divisor_override=1, cotangent=ct, **kw)
  np.testing.assert_allclose(pullback(ct)[0], gr, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Fixed cases: NaN, -inf, ties, dilation.


def _torch_max2d(x, ct=None, **kw):
  """PyTorch's max_pool2d of an ``(H, W)`` array: value and gradient."""
  xt = torch.tensor(x[None, None], requires_grad=True)
  yt = F.max_pool2d(xt, **kw)
  yt.backward(torch.ones_like(yt) if ct is None else torch.tensor(
      ct[None, None]))
  return yt.detach().numpy()[0, 0], xt.grad.numpy()[0, 0]


def _jax_max2d(x, **kw):
  """jaxpool's max_pool of an ``(H, W)`` array: value and gradient."""
  fn = lambda x: jaxpool.max_pool(x[..., None], channels_first=False,
                                  **kw)[..., 0]
  y, pullback = jax.vjp(fn, x)
  return np.asarray(y), np.asarray(pullback(jnp.ones_like(y))[0])


def test_nan_gradient_goes_to_last_nan():
  x = np.array([[1.0, np.nan, 5.0], [np.nan, 7.0, 2.0]], np.float32)
  y, g = _jax_max2d(x, window_shape=(2, 3))
  yt, gt = _torch_max2d(x, kernel_size=(2, 3))
  assert np.isnan(y).all() and np.isnan(yt).all()
  np.testing.assert_array_equal(g, [[0, 0, 0], [1, 0, 0]])
  np.testing.assert_array_equal(g, gt)


def test_all_neg_inf_window_picks_first_input_tap():
  x = np.full((3, 4), -np.inf, np.float32)
  kw = dict(window_shape=(2, 2), strides=(2, 2), padding=(1, 1))
  y, g = _jax_max2d(x, **kw)
  yt, gt = _torch_max2d(x, kernel_size=2, stride=2, padding=1)
  np.testing.assert_array_equal(y, yt)
  assert (y == -np.inf).all()
  # Padding never takes the gradient: the first tap inside the input does.
  np.testing.assert_array_equal(g, gt)
  assert g.sum() == y.size


def test_ties_go_to_first_maximum_row_major():
  x = np.zeros((4, 4), np.float32)
  x[1, 0] = x[0, 1] = 1.0  # In the same window: (0, 1) comes first.
  y, g = _jax_max2d(x, window_shape=(2, 2))
  yt, gt = _torch_max2d(x, kernel_size=2)
  np.testing.assert_array_equal(y, yt)
  np.testing.assert_array_equal(g, gt)
  assert g[0, 1] == 1 and g[1, 0] == 0
  # All-zero windows send their gradient to their first element.
  assert g[0, 2] == 1 and g[2, 0] == 1 and g[2, 2] == 1



SPECIAL_CASES = {
    # name: (input spatial shape, window, strides, padding); each takes a
    # different lowering.
    "overlapping_2d": ((7, 8), (3, 3), 1, 1),
    "blocks_2d": ((6, 8), (2, 2), 2, 0),
    "separable_2d": ((9, 9), (5, 5), (1, 2), 2),
    "wide_1d": ((90,), (70,), 5, 30),  # More than 64 taps.
}


@pytest.mark.parametrize("plain", [False, True], ids=["default", "plain"])
@pytest.mark.parametrize("case", list(SPECIAL_CASES))
@pytest.mark.parametrize("op", ["max", "min"])
def test_nan_inf_and_ties_match_torch_on_every_lowering(op, case, plain):
  in_shape, window, strides, padding = SPECIAL_CASES[case]
  cfg = Config(batch=(2,), channels=2, in_shape=in_shape, window=window,
               strides=strides, padding=padding, dilation=1, ceil_mode=True,
               channels_first=False)
  fn = functools.partial(
      jaxpool.max_pool if op == "max" else jaxpool.min_pool, **cfg.kwargs())
  torch_max = functools.partial(_torch_nd("max_pool", cfg.nspatial),
                                **cfg.torch_kwargs())
  torch_fn = torch_max if op == "max" else lambda t: -torch_max(-t)
  rng = np.random.default_rng(10)
  for kind in ("nan", "inf", "padding_only", "ints"):
    x = make_input(rng, cfg.x_shape, "ints")
    if kind == "nan":  # Several NaNs per window, before and after maxima.
      x[rng.random(x.shape) < 0.3] = np.nan
    elif kind == "inf":
      x = make_input(rng, cfg.x_shape, "inf")
    elif kind == "padding_only":
      # Every element the value padding has: the first tap inside the
      # input takes the gradient, never the padding.
      x[...] = -np.inf if op == "max" else np.inf
    y, g, ct = jax_vjp(fn, x, rng, plain)
    yt, gt = torch_vjp(torch_fn, x, ct, cfg)
    np.testing.assert_array_equal(y, yt, err_msg=kind)
    if plain and kind in ("nan", "padding_only"):
      # The forced plain path is JAX's own select-and-scatter derivative,
      # documented to differ from PyTorch's choice of NaN and of a window
      # that only holds the padding's value.
      continue
    np.testing.assert_allclose(g, gt, rtol=1e-6, atol=1e-6, err_msg=kind)


# At these sizes XLA:CPU runs max/min reductions in library kernels that
# drop NaN (a window holding NaN and numbers gives the largest number); at
# the small sizes above it does not.
LIBRARY_KERNEL_CASES = {
    "blocks_2x2": ((8, 56, 56, 64), (2, 2)),
    "blocks_8x8": ((8, 56, 56, 64), (8, 8)),
    "blocks_3d": ((2, 8, 56, 56, 32), (2, 2, 2)),
}


@pytest.mark.parametrize("case", list(LIBRARY_KERNEL_CASES))
@pytest.mark.parametrize("op", ["max", "min"])
def test_nan_propagates_at_library_kernel_sizes(op, case):
  x_shape, window = LIBRARY_KERNEL_CASES[case]
  cfg = Config(batch=x_shape[:1], channels=x_shape[-1], in_shape=x_shape[1:-1],
               window=window, strides=window, padding=0, dilation=1,
               ceil_mode=False, channels_first=False)
  fn = functools.partial(
      jaxpool.max_pool if op == "max" else jaxpool.min_pool, **cfg.kwargs())
  torch_max = functools.partial(_torch_nd("max_pool", cfg.nspatial),
                                **cfg.torch_kwargs())
  torch_fn = torch_max if op == "max" else lambda t: -torch_max(-t)
  rng = np.random.default_rng(11)
  x = rng.standard_normal(x_shape).astype(np.float32)
  x[rng.random(x_shape) < 0.01] = np.nan
  y, g, ct = jax_vjp(fn, x, rng)
  yt, gt = torch_vjp(torch_fn, x, ct, cfg)
  np.testing.assert_array_equal(y, yt)
  np.testing.assert_allclose(g, gt, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("plain", [False, True])
def test_dilated_max_gradient(plain):
  # jax.grad of a dilated lax.reduce_window max raises NotImplementedError;
  # jaxpool's must not, on either lowering, and must equal PyTorch's.
  rng = np.random.default_rng(1)
  x = make_input(rng, (9, 10), "ints")
  kw = dict(window_shape=(3, 2), strides=(3, 2), padding=(1, 0),
            dilation=(2, 3), ceil_mode=True)
  fn = lambda x: jaxpool.max_pool(x[None], channels_first=True, **kw)[0]
  y, g, ct = jax_vjp(fn, x, rng, plain)
  with jaxpool.force_plain_lowering(plain):
    grad2 = jax.jit(jax.grad(lambda x: jnp.sum(jax.grad(
        lambda x: jnp.sum(fn(x) ** 2))(x) ** 2)))(x)
  torch_kw = dict(kernel_size=(3, 2), stride=(3, 2), padding=(1, 0),
                  dilation=(2, 3), ceil_mode=True)
  yt, gt = _torch_max2d(x, ct, **torch_kw)
  np.testing.assert_array_equal(y, yt)
  np.testing.assert_allclose(g, gt, rtol=1e-6)
  # Second order, against PyTorch's double backward.
  xt = torch.tensor(x[None, None], requires_grad=True)
  (gf,) = torch.autograd.grad(
      (F.max_pool2d(xt, **torch_kw) ** 2).sum(), xt, create_graph=True)
  (g2,) = torch.autograd.grad((gf ** 2).sum(), xt)
  np.testing.assert_allclose(grad2, g2.numpy()[0, 0], rtol=1e-5)


# ---------------------------------------------------------------------------
# Integer and bool inputs, half precision.


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.uint8])
@pytest.mark.parametrize("op", ["max", "min"])
def test_integer_max_min(dtype, op):
  rng = np.random.default_rng(2)
  info = np.iinfo(dtype)
  x = rng.integers(info.min, info.max, (2, 6, 7, 3), endpoint=True)
  x = x.astype(dtype)
  x[0, 0, 0, 0] = info.min  # Padding must not win against the extremes.
  x[0, 0, 1, 0] = info.max
  kw = dict(window_shape=(3, 2), strides=(2, 1), padding=1, dilation=(1, 2),
            ceil_mode=True)
  fn = jaxpool.max_pool if op == "max" else jaxpool.min_pool
  y = fn(x, **kw)
  assert y.dtype == dtype
  np.testing.assert_array_equal(y, reference.pool(x, op, **kw))


def test_bool_max_min():
  rng = np.random.default_rng(3)
  x = rng.random((5, 6, 2)) < 0.3
  kw = dict(window_shape=(2, 3), strides=1, padding=((0, 1), (1, 1)))
  for op, fn in [("max", jaxpool.max_pool), ("min", jaxpool.min_pool)]:
    y = fn(x, **kw)
    assert y.dtype == np.bool_
    np.testing.assert_array_equal(y, reference.pool(x, op, **kw))


@pytest.mark.parametrize("count_include_pad", [False, True])
def test_integer_average(count_include_pad):
  x = np.arange(2 * 7 * 3, dtype=np.int32).reshape(2, 7, 3)
  kw = dict(window_shape=(3,), strides=2, padding=1, ceil_mode=True,
            count_include_pad=count_include_pad)
  y = jaxpool.avg_pool(x, **kw)
  assert y.dtype == jnp.float32  # As jnp.mean: the default float dtype.
  np.testing.assert_allclose(y, reference.pool(x, "avg", **kw), rtol=1e-6)


HALF = [jnp.float16, jnp.bfloat16]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("op", ["max", "min", "avg", "lp"])
def test_half_precision_keeps_dtype_and_matches_float32(dtype, op):
  rng = np.random.default_rng(4)
  x32 = make_input(rng, (2, 9, 8, 4), "positive")
  x = jnp.asarray(x32, dtype)
  fn = {
      "max": functools.partial(jaxpool.max_pool, dilation=2),
      "min": jaxpool.min_pool,
      "avg": functools.partial(jaxpool.avg_pool, count_include_pad=False),
      "lp": functools.partial(jaxpool.lp_pool, p=2),
  }[op]
  kw = dict(window_shape=(3, 3), strides=(1, 2), padding=(1, 1))
  if op == "lp":
    kw["padding"] = "VALID"
  fn = jax.jit(functools.partial(fn, **kw))
  y = fn(x)
  assert y.dtype == dtype
  want = fn(x.astype(jnp.float32))
  rtol = float(jnp.finfo(dtype).eps)
  np.testing.assert_allclose(np.asarray(y, np.float32), want, rtol=rtol)
  # Half-precision gradients keep the dtype too.
  g = jax.jit(jax.grad(lambda x: jnp.sum(fn(x).astype(jnp.float32))))(x)
  assert g.dtype == dtype


@pytest.mark.parametrize("dtype,length,window", [
    (jnp.bfloat16, 600, 300),  # A bfloat16 running sum stalls at 256.
    (jnp.float16, 2200, 2100),  # A float16 running sum stalls at 2048.
])
def test_half_precision_accumulates_in_float32(dtype, length, window):
  x = jnp.ones((length, 1), dtype)
  y = jaxpool.avg_pool(x, (window,), strides=1)
  assert y.dtype == dtype
  np.testing.assert_array_equal(np.asarray(y, np.float32), 1.0)
  z = jaxpool.lp_pool(x, 1.0, (window,), strides=50)
  np.testing.assert_array_equal(np.asarray(z, np.float32), float(window))


# ---------------------------------------------------------------------------
# Transformations: chex variants, check_grads, jvp, vmap, batch dims.

FNS = {
    "max": jaxpool.max_pool,
    "min": jaxpool.min_pool,
    "avg": jaxpool.avg_pool,
    "lp": functools.partial(jaxpool.lp_pool, p=1.5),
}
CASES = [
    # name, window, strides, padding, dilation, ceil_mode, channels_first
    ("1d", (3,), 2, 1, 1, True, False),
    ("2d_nonoverlapping", (2, 2), None, "VALID", 1, False, True),
    ("2d_overlapping", (3, 3), 1, "SAME", 1, False, False),
    ("2d_dilated", (2, 3), (2, 1), ((1, 0), (0, 2)), (2, 1), True, True),
    ("2d_large", (5, 4), (1, 2), 2, 1, True, False),
    ("3d", (2, 2, 3), (1, 2, 2), (1, 0, 1), 1, True, False),
]


SECOND_ORDER = ("1d", "2d_dilated")


def _named(ops):
  """One test case per op and configuration that the op takes."""
  result = []
  for op in ops:
    for name, window, strides, padding, dilation, ceil_mode, cf in CASES:
      kw = dict(window_shape=window, strides=strides, padding=padding,
                ceil_mode=ceil_mode, channels_first=cf)
      if op != "lp":
        kw["dilation"] = dilation
      elif dilation != 1:
        continue  # lp_pool has no dilation (nor has PyTorch's).
      result.append(dict(testcase_name=f"_{op}_{name}", op=op, name=name,
                         kw=kw))
  return result


def _x_shape(window, channels_first, batch=(2,), channels=3):
  spatial = tuple(k + 4 for k in window)
  if channels_first:
    return batch + (channels,) + spatial
  return batch + spatial + (channels,)


def _ref_options(op):
  return dict(p=1.5) if op == "lp" else {}


class TransformsTest(parameterized.TestCase):
  """Fixed cases under jit and without, against the reference."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_named(FNS))
  def test_variants_match_reference(self, op, name, kw):
    del name
    rng = np.random.default_rng(5)
    x = make_input(rng, _x_shape(kw["window_shape"], kw["channels_first"]),
                   "positive" if op == "lp" else "relu")
    fn = self.variant(FNS[op], static_argnames=tuple(kw))
    y = fn(x, **kw)
    yr = reference.pool(x, op, **kw, **_ref_options(op))
    chex.assert_shape(y, yr.shape)
    chex.assert_shape(y, jaxpool.pool_output_shape(x.shape, **kw))
    np.testing.assert_allclose(y, yr, rtol=2e-5, atol=1e-6)

  @parameterized.named_parameters(*_named(FNS))
  def test_check_grads(self, op, name, kw):
    rng = np.random.default_rng(6)
    shape = _x_shape(kw["window_shape"], kw["channels_first"], batch=(),
                     channels=2)
    # max/min: unique values, so no tie flips inside a finite difference.
    x = make_input(rng, shape, "positive" if op in ("avg", "lp") else
                   "unique")
    fn = jax.jit(functools.partial(FNS[op], **kw))
    # Second order on a few cases only: each costs several compilations.
    order = 2 if name in SECOND_ORDER else 1
    check_grads(fn, (x,), order=order, modes=("fwd", "rev"), eps=1e-2)

  @parameterized.named_parameters(*_named(FNS))
  def test_jvp_is_transpose_of_vjp(self, op, name, kw):
    del name
    rng = np.random.default_rng(7)
    shape = _x_shape(kw["window_shape"], kw["channels_first"])
    x = make_input(rng, shape, "positive" if op == "lp" else "ints")
    t = make_input(rng, shape, "normal")
    fn = jax.jit(functools.partial(FNS[op], **kw))
    y, jvp_out = jax.jvp(fn, (x,), (t,))
    ct = make_input(rng, y.shape, "normal")
    _, g = reference.pool(x, op, cotangent=ct, **kw, **_ref_options(op))
    # <ct, J t> == <J^T ct, t>, with J^T ct from the reference: ties
    # ("ints") must be broken the same way forward and backward.
    np.testing.assert_allclose(np.vdot(ct, jvp_out), np.vdot(g, t),
                               rtol=1e-4)

  @parameterized.named_parameters(*_named(FNS))
  def test_vmap_and_batch_dims_agree(self, op, name, kw):
    del name
    rng = np.random.default_rng(8)
    cf = kw["channels_first"]
    x = make_input(rng, _x_shape(kw["window_shape"], cf, batch=(2, 3)),
                   "positive")
    fn = jax.jit(functools.partial(FNS[op], **kw))
    batched = fn(x)  # Two batch dims.
    np.testing.assert_allclose(jax.vmap(fn)(x), batched, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.vmap(fn))(x), batched,
                               rtol=1e-6)
    one = fn(x.reshape((6,) + x.shape[2:]))  # One batch dim.
    np.testing.assert_allclose(one.reshape(batched.shape), batched,
                               rtol=1e-6)
    np.testing.assert_allclose(fn(x[1, 2]), batched[1, 2], rtol=1e-6)
    # The other layout gives the same numbers, moved.
    n = len(kw["window_shape"])
    src, dst = (-n - 1, -1) if cf else (-1, -n - 1)
    other = jax.jit(functools.partial(FNS[op], **dict(kw, channels_first=not cf)))
    moved = other(np.moveaxis(x, src, dst))
    np.testing.assert_allclose(np.moveaxis(moved, dst, src), batched,
                               rtol=1e-6)

  def test_no_retrace_for_same_static_args(self):
    @jax.jit
    @chex.assert_max_traces(n=1)
    def fn(x):
      return jaxpool.max_pool(x, (2, 2), 1, 1, ceil_mode=True)

    x = np.ones((2, 6, 6, 3), np.float32)
    fn(x)
    fn(x + 1)
    chex.clear_trace_counter()


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("channels_first", [False, True])
def test_int_window_matches_torch(rank, channels_first):
  """``max_pool(x, 3, 2, 1)`` is PyTorch's ``MaxPool{rank}d(3, 2, 1)``."""
  shape = (2, 3) + (7, 6, 5)[:rank]
  x = np.random.default_rng(rank).standard_normal(shape).astype(np.float32)
  torch_pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1]
  torch_avg = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
  for ours, theirs in ((jaxpool.max_pool, torch_pool),
                       (jaxpool.avg_pool, torch_avg)):
    want = theirs(torch.tensor(x), 3, 2, 1).numpy()
    if channels_first:
      got = ours(x, 3, 2, 1, channels_first=True)
    else:
      got = np.moveaxis(ours(np.moveaxis(x, 1, -1), 3, 2, 1), -1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

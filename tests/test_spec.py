"""Tests of argument checking and normalisation: ``jaxpool/_spec.py``.

Shapes, padding and divisors are compared with ``reference.py`` and with
PyTorch; every bad argument must raise ``ValueError`` or ``TypeError`` naming
the argument and its value at trace time, before XLA sees anything.
"""

from __future__ import annotations

import functools

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from jax import lax

import jaxpool
import reference
from jaxpool._spec import layout_axes, window_spec
from test_pooling import SETTINGS, configs

# No compilation here: many more examples cost little.
SPEC_SETTINGS = hypothesis.settings(SETTINGS, max_examples=300)


def _spec(cfg):
  return window_spec(cfg.x_shape, cfg.window, cfg.strides, cfg.padding,
                     dilation=cfg.dilation, ceil_mode=cfg.ceil_mode,
                     channels_first=cfg.channels_first)


@SPEC_SETTINGS
@hypothesis.given(cfg=configs(torch_ok=False))
def test_spec_matches_reference(cfg):
  spec = _spec(cfg)
  geo = cfg.geometry()
  want = reference.output_shape(cfg.x_shape, cfg.window, cfg.strides,
                                cfg.padding, cfg.dilation, cfg.ceil_mode,
                                cfg.channels_first)
  assert jaxpool.pool_output_shape(cfg.x_shape, **cfg.kwargs()) == want
  assert spec.output_shape(cfg.x_shape) == want
  assert spec.out_shape == geo.out_shape
  assert spec.padding == geo.pads
  assert (spec.window, spec.strides, spec.dilation) == (
      geo.window, geo.strides, geo.dilation)
  for include in (False, True):
    np.testing.assert_array_equal(spec.divisor(include),
                                  reference.divisors(geo, include))
  first = reference.first_input_taps(geo)
  touching = first >= 0  # Elsewhere nothing is selected, so any tap will do.
  np.testing.assert_array_equal(spec.first_valid_tap()[touching],
                                first[touching])
  # The padded input holds exactly the output's windows, so a plain
  # reduce_window over it has the right shape.
  for n, s, eff, (lo, hi), o in zip(spec.in_shape, spec.strides,
                                    spec.effective_window,
                                    spec.total_padding, spec.out_shape):
    assert lo >= 0 and hi >= 0
    assert (n + lo + hi - eff) // s + 1 == o


@SPEC_SETTINGS
@hypothesis.given(cfg=configs())
def test_output_shape_matches_torch(cfg):
  hypothesis.assume(cfg.every_window_touches_input())
  x = torch.zeros((1, 1) + cfg.in_shape)
  y = getattr(F, f"max_pool{cfg.nspatial}d")(x, **cfg.torch_kwargs())
  shape = jaxpool.pool_output_shape(cfg.x_shape, **cfg.kwargs())
  spatial = (shape[-cfg.nspatial:] if cfg.channels_first else
             shape[-cfg.nspatial - 1:-1])
  assert spatial == tuple(y.shape[2:])


@SPEC_SETTINGS
@hypothesis.given(
    in_shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    data=st.data())
def test_same_padding_is_tensorflows(in_shape, data):
  n = len(in_shape)
  window = tuple(data.draw(st.integers(1, 4)) for _ in range(n))
  strides = tuple(data.draw(st.integers(1, 3)) for _ in range(n))
  dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(n))
  spec = window_spec(tuple(in_shape) + (1,), window, strides, "SAME",
                     dilation=dilation)
  span = tuple(d * (k - 1) + 1 for k, d in zip(window, dilation))
  want = lax.padtype_to_pads(in_shape, span, strides, "SAME")
  assert spec.padding == tuple(tuple(p) for p in want)
  assert spec.out_shape == tuple(-(-i // s) for i, s in zip(in_shape,
                                                            strides))


def test_argument_forms_are_equivalent():
  shape = (2, 9, 8, 3)
  base = window_spec(shape, (3, 2), (2, 2), ((1, 1), (1, 1)),
                     dilation=(1, 1))
  same = [
      window_spec(shape, [3, 2], 2, 1),
      window_spec(shape, (np.int64(3), 2), [2, np.int32(2)], (1, 1),
                  dilation=1),
      window_spec(shape, (3, 2), (2, 2), [[1, 1], (1, 1)], dilation=[1, 1]),
      window_spec(shape, (3, 2), (2, 2), (1, (1, 1)), ceil_mode=np.False_),
  ]
  for spec in same:
    assert spec == base
  assert window_spec(shape, (3, 2)).strides == (3, 2)  # Default: window.
  assert window_spec(shape, (3, 2), padding="same") == window_spec(
      shape, (3, 2), padding="SAME")
  assert window_spec(shape, (3, 2), padding="valid") == window_spec(
      shape, (3, 2), padding=0)


def test_layout_axes():
  assert layout_axes((2, 3, 4, 5), 2, False) == ((1, 2), 3)
  assert layout_axes((2, 3, 4, 5), 2, True) == ((2, 3), 1)
  assert layout_axes((4, 5, 3), 2, False) == ((0, 1), 2)
  assert layout_axes((3, 4, 5), 2, True) == ((1, 2), 0)
  assert layout_axes((7, 6, 3, 4, 5), 1, False) == ((3,), 4)


def test_ceil_mode_drops_a_window_starting_in_right_padding():
  # PyTorch: ceil((5 + 2 - 2) / 2) + 1 = 4 windows, but the 4th would start
  # at 6 - 1 = 5, in the right padding alone: 3.
  assert jaxpool.pool_output_shape((5, 1), (2,), 2, 1, ceil_mode=True) == (
      3, 1)
  assert F.max_pool1d(torch.zeros(1, 5), 2, 2, 1, ceil_mode=True).shape == (
      1, 3)
  # A high padding larger than the window: the dropped window still fits
  # in it, and no lowering may return it.
  x = np.ones((6, 1), np.float32)
  kw = dict(window_shape=(2,), strides=2, padding=((1, 3),), ceil_mode=True)
  assert jaxpool.pool_output_shape(x.shape, **kw) == (4, 1)
  with jaxpool.force_plain_lowering():
    assert jaxpool.max_pool(x, **kw).shape == (4, 1)
    assert jaxpool.avg_pool(x, **kw).shape == (4, 1)
  assert jaxpool.pool(x, 0.0, lax.add, **kw).shape == (4, 1)


# ---------------------------------------------------------------------------
# Bad arguments.

X_SHAPE = (2, 5, 5, 3)
ALL = ("max", "min", "avg", "lp", "pool", "shape")
DILATED = ("max", "min", "avg", "pool", "shape")


def _call(fn: str, x_shape=X_SHAPE, **kw):
  """Calls ``fn`` under ``jax.eval_shape``: tracing only, no XLA."""
  kw.setdefault("window_shape", (2, 2))
  if fn == "shape":
    return jaxpool.pool_output_shape(x_shape, **kw)
  pooled = {
      "max": jaxpool.max_pool,
      "min": jaxpool.min_pool,
      "avg": jaxpool.avg_pool,
      "lp": functools.partial(jaxpool.lp_pool, p=kw.pop("p", 2.0)),
      "pool": functools.partial(jaxpool.pool, init=0.0, reducer=lax.add),
  }[fn]
  return jax.eval_shape(lambda x: pooled(x, **kw),
                        jax.ShapeDtypeStruct(x_shape, jnp.float32))


# (id, keyword arguments, exception, message pattern, functions).
BAD = [
    ("window_zero", dict(window_shape=(0, 2)), ValueError,
     r"window_shape must be >= 1, got \(0, 2\)", ALL),
    ("window_negative", dict(window_shape=(2, -1)), ValueError,
     r"window_shape .*\(2, -1\)", ALL),
    ("window_empty", dict(window_shape=()), ValueError,
     r"window_shape must not be empty", ALL),
    ("window_int_zero", dict(window_shape=0), ValueError,
     r"window_shape must be >= 1, got 0", ALL),
    ("window_int_float", dict(window_shape=2.0), TypeError,
     r"window_shape must be an int, got 2\.0", ALL),
    ("window_str", dict(window_shape="22"), TypeError,
     r"window_shape .*'22'", ALL),
    ("window_float", dict(window_shape=(2.0, 2)), TypeError,
     r"window_shape .*2\.0", ALL),
    ("window_bool", dict(window_shape=(True, 2)), TypeError,
     r"window_shape .*True", ALL),
    ("window_too_large", dict(window_shape=(6, 2)), ValueError,
     r"window_shape\[0\]=6 .*larger than the padded input size 5", ALL),
    ("window_too_large_dilated", dict(window_shape=(2, 3), dilation=3),
     ValueError, r"window_shape\[1\]=3 \(dilation 3, so it spans 7\)",
     DILATED),
    ("window_too_large_padded", dict(window_shape=(8, 2), padding=1),
     ValueError, r"window_shape\[0\]=8 .* size 7 \(input 5, padding \(1, 1\)",
     ALL),
    ("strides_zero", dict(strides=0), ValueError,
     r"strides must be >= 1, got 0", ALL),
    ("strides_negative", dict(strides=(1, -2)), ValueError,
     r"strides .*\(1, -2\)", ALL),
    ("strides_length", dict(strides=(1, 1, 1)), ValueError,
     r"strides must have one entry per spatial dim \(2\), got \(1, 1, 1\)",
     ALL),
    ("strides_float", dict(strides=1.5), TypeError, r"strides .*1\.5", ALL),
    ("dilation_zero", dict(dilation=0), ValueError,
     r"dilation must be >= 1, got 0", DILATED),
    ("dilation_negative", dict(dilation=(1, -1)), ValueError,
     r"dilation .*\(1, -1\)", DILATED),
    ("dilation_length", dict(dilation=(1,)), ValueError,
     r"dilation must have one entry per spatial dim \(2\)", DILATED),
    ("dilation_float", dict(dilation=(1, 2.0)), TypeError,
     r"dilation .*2\.0", DILATED),
    ("padding_word", dict(padding="FULL"), ValueError,
     r"padding must be 'VALID', 'SAME'.*'FULL'", ALL),
    ("padding_negative", dict(padding=-1), ValueError,
     r"padding must be non-negative, got -1", ALL),
    ("padding_negative_pair", dict(padding=((0, -1), (0, 0))), ValueError,
     r"padding must be non-negative, got \(\(0, -1\), \(0, 0\)\)", ALL),
    ("padding_length", dict(padding=(1, 1, 1)), ValueError,
     r"padding must have one entry per spatial dim \(2\), got \(1, 1, 1\)",
     ALL),
    ("padding_triple", dict(padding=((1, 1, 1), (0, 0))), ValueError,
     r"padding entries must be ints or \(low, high\) pairs.*\(1, 1, 1\)",
     ALL),
    ("padding_float", dict(padding=1.5), TypeError, r"padding .*1\.5", ALL),
    ("padding_none", dict(padding=None), TypeError, r"padding .*None", ALL),
    ("ceil_mode_int", dict(ceil_mode=1), TypeError,
     r"ceil_mode must be a bool, got 1", ALL),
    ("channels_first_str", dict(channels_first="no"), TypeError,
     r"channels_first must be a bool, got 'no'", ALL),
    ("count_include_pad_none", dict(count_include_pad=None), TypeError,
     r"count_include_pad must be a bool, got None", ("avg",)),
    ("divisor_zero", dict(divisor_override=0), ValueError,
     r"divisor_override must not be 0", ("avg",)),
    ("divisor_float", dict(divisor_override=2.0), TypeError,
     r"divisor_override must be an int or None, got 2\.0", ("avg",)),
    ("divisor_bool", dict(divisor_override=True), TypeError,
     r"divisor_override .*True", ("avg",)),
    ("p_zero", dict(p=0), ValueError, r"p must be finite and > 0, got 0",
     ("lp",)),
    ("p_negative", dict(p=-1.5), ValueError, r"p must be .*-1\.5", ("lp",)),
    ("p_inf", dict(p=float("inf")), ValueError, r"p must be .*inf",
     ("lp",)),
    ("p_nan", dict(p=float("nan")), ValueError, r"p must be .*nan",
     ("lp",)),
    ("p_str", dict(p="2"), TypeError, r"p must be a real number, got '2'",
     ("lp",)),
    ("p_bool", dict(p=True), TypeError, r"p must be .*True", ("lp",)),
]


@pytest.mark.parametrize(
    "fn,kwargs,error,match",
    [(fn,) + case[1:4] for case in BAD for fn in case[4]],
    ids=[f"{case[0]}-{fn}" for case in BAD for fn in case[4]])
def test_bad_argument_raises_naming_it(fn, kwargs, error, match):
  with pytest.raises(error, match=match):
    _call(fn, **kwargs)


@pytest.mark.parametrize("fn", ALL)
@pytest.mark.parametrize("channels_first", [False, True])
def test_too_few_dims(fn, channels_first):
  name = "input_shape" if fn == "shape" else "x"
  layout = r"\(\*batch, C, \*spatial\)" if channels_first else (
      r"\(\*batch, \*spatial, C\)")
  with pytest.raises(ValueError,
                     match=rf"{name} must have at least 3 dims {layout} for "
                     r"2 spatial dims, got shape \(5, 5\)"):
    _call(fn, (5, 5), channels_first=channels_first)


def test_errors_raise_at_trace_time_under_jit():
  x = jnp.ones(X_SHAPE)
  for kw in (dict(window_shape=(0, 2)), dict(window_shape=(2, 2),
                                              padding="FULL")):
    with pytest.raises(ValueError, match="window_shape|padding"):
      jax.jit(lambda x, kw=kw: jaxpool.max_pool(x, **kw))(x)


# ---------------------------------------------------------------------------
# An int window: the same size on every spatial dim, one batch dim.


@pytest.mark.parametrize("fn", ALL)
@pytest.mark.parametrize("x_shape,channels_first,window", [
    ((2, 7, 3), False, (3,)),
    ((2, 3, 7, 6), True, (3, 3)),
    ((2, 7, 6, 5, 3), False, (3, 3, 3)),
])
def test_int_window_is_every_spatial_dim(fn, x_shape, channels_first, window):
  kw = dict(strides=2, padding=1, channels_first=channels_first)
  got = _call(fn, x_shape, window_shape=3, **kw)
  want = _call(fn, x_shape, window_shape=window, **kw)
  assert (got if fn == "shape" else got.shape) == (
      want if fn == "shape" else want.shape)


@pytest.mark.parametrize("fn", ALL)
def test_int_window_needs_a_batch_dim(fn):
  with pytest.raises(ValueError, match=r"with int window_shape, x must be "
                     r"\(N, \*spatial, C\)"):
    _call(fn, (5, 3), window_shape=2)
# Sizes beyond what jaxpool can index (int32) raise at once.

HUGE = (2**62, 2**31)


def _traced(fn, shape=(2, 6, 6, 3), dtype=jnp.float32):
  """``fn`` traced on an abstract input: shapes only, nothing computed."""
  return lambda: jax.eval_shape(fn, jax.ShapeDtypeStruct(shape, dtype))


def _huge_cases(h):
  """``(id, call, pattern)`` for every size argument of every function."""
  windowed = {
      "max_pool": jaxpool.max_pool, "min_pool": jaxpool.min_pool,
      "avg_pool": jaxpool.avg_pool,
      "max_pool_with_indices": jaxpool.max_pool_with_indices,
      "pool": functools.partial(jaxpool.pool, init=0.0, reducer=lax.add),
  }
  window_args = [
      ("window_shape", dict(window_shape=(h, 2))),
      ("strides", dict(window_shape=(2, 2), strides=(1, h))),
      ("dilation", dict(window_shape=(2, 2), dilation=h)),
      ("padding", dict(window_shape=(2, 2), padding=h)),
      ("padding", dict(window_shape=(2, 2), padding=((0, h), (0, 0)))),
  ]
  cases = []
  for name, fn in windowed.items():
    for arg, kw in window_args:
      cases.append((f"{name}-{arg}",
                    _traced(lambda x, fn=fn, kw=kw: fn(x, **kw)), arg))
  for arg, kw in window_args:
    if arg != "dilation":
      cases.append((f"lp_pool-{arg}", _traced(
          lambda x, kw=kw: jaxpool.lp_pool(x, 2.0, **kw)), arg))
    cases.append((f"pool_output_shape-{arg}", functools.partial(
        jaxpool.pool_output_shape, (2, 6, 6, 3), **kw), arg))
  for name in ("adaptive_max_pool", "adaptive_avg_pool",
               "adaptive_max_pool_with_indices"):
    fn = getattr(jaxpool, name)
    cases += [
        (f"{name}-int", _traced(lambda x, fn=fn: fn(x, h)), "output_size"),
        (f"{name}-seq", _traced(lambda x, fn=fn: fn(x, (2, h))),
         "output_size"),
    ]
  cases += [
      ("spatial_pyramid_pool-levels", _traced(
          lambda x: jaxpool.spatial_pyramid_pool(x, (1, (2, h)))), "levels"),
      ("spp_yolo-window_sizes", _traced(
          lambda x: jaxpool.spp_yolo(x, (5, h))), "window_sizes"),
      ("sppf-window_size", _traced(lambda x: jaxpool.sppf(x, h)),
       "window_size"),
      ("sppf-repeats", _traced(lambda x: jaxpool.sppf(x, 3, h)), "repeats"),
      ("global_max_pool-spatial_dims", _traced(
          lambda x: jaxpool.global_max_pool(x, spatial_dims=h)),
       "spatial_dims"),
      ("global_avg_pool-spatial_dims", _traced(
          lambda x: jaxpool.global_avg_pool(x, spatial_dims=h)),
       "spatial_dims"),
  ]
  unpool_args = [
      ("spatial_shape", dict(spatial_shape=(h, 4))),
      ("window_shape", dict(window_shape=(h, 2))),
      ("strides", dict(window_shape=(2, 2), strides=h)),
      ("padding", dict(window_shape=(2, 2), padding=h)),
      ("output_size", dict(window_shape=(2, 2), output_size=(h, 4))),
  ]
  for arg, kw in unpool_args:
    cases.append((f"max_unpool-{arg}", lambda kw=kw: jax.eval_shape(
        lambda x, i: jaxpool.max_unpool(x, i, **kw),
        jax.ShapeDtypeStruct((2, 2, 2, 3), jnp.float32),
        jax.ShapeDtypeStruct((2, 2, 2, 3), jnp.int32)), arg))
  return cases


def _run_within(call, seconds: float):
  """Runs ``call``, raising TimeoutError if it takes over ``seconds``."""
  import signal  # pylint: disable=g-import-not-at-top

  def expire(*_):
    raise TimeoutError(f"still running after {seconds} s")

  previous = signal.signal(signal.SIGALRM, expire)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    call()
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("huge", HUGE, ids=["2**62", "2**31"])
@pytest.mark.parametrize("index", range(len(_huge_cases(2))),
                         ids=[c[0] for c in _huge_cases(2)])
def test_huge_size_raises_at_once_naming_it(index, huge):
  _, call, name = _huge_cases(huge)[index]
  # Generous for a loaded machine: the check is arithmetic on a few ints;
  # without it these run for minutes or exhaust memory.
  with pytest.raises(ValueError, match=name):
    _run_within(call, 10.0)


@pytest.mark.parametrize("call,name", [
    # Each dim fits int32, the output plane does not.
    (_traced(lambda x: jaxpool.max_pool(x, (2, 2), 1, 2**17)), "padding"),
    (_traced(lambda x: jaxpool.adaptive_max_pool(x, (2**16, 2**16))),
     "output_size"),
    (_traced(lambda x: jaxpool.spatial_pyramid_pool(x, ((2**16, 2**16),))),
     "levels"),
    (lambda: jax.eval_shape(
        lambda x, i: jaxpool.max_unpool(x, i, (2**16, 2**16)),
        jax.ShapeDtypeStruct((2, 2, 2, 3), jnp.float32),
        jax.ShapeDtypeStruct((2, 2, 2, 3), jnp.int32)), "spatial_shape"),
    (_traced(lambda x: jaxpool.sppf(x, 3, 2**30)), "repeats"),
])
def test_huge_plane_raises_at_once_naming_it(call, name):
  with pytest.raises(ValueError, match=name):
    _run_within(call, 10.0)


def test_sizes_up_to_int32_are_accepted():
  # The bound is 2**31 - 1 on every size: a window or stride that large is
  # fine where the input allows it, and an input longer than that is not
  # rejected for its own size.
  big = 2**31 - 1
  assert jaxpool.pool_output_shape((1, 5, 1), (2,), big) == (1, 1, 1)
  assert jaxpool.pool_output_shape((1, big, 1), (big,)) == (1, 1, 1)
  with pytest.raises(ValueError, match="window_shape"):
    jaxpool.pool_output_shape((1, 2**32, 1), (2**31,))
  assert jaxpool.pool_output_shape((1, 2**32, 1), (4,), 4) == (1, 2**30, 1)
  with pytest.raises(ValueError, match="padding"):
    jaxpool.pool_output_shape((1, big, 1), (2,), padding=1)

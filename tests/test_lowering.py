"""Tests of ``jaxpool/_lowering.py``: every fast lowering equals the plain one.

The plain lowering (``jaxpool.force_plain_lowering()``) is one
``lax.reduce_window`` differentiated by JAX itself, which is independent of
the fast paths' code; JAX's own max-pool gradient also goes to the first
maximum. Values must match exactly and gradients (VJPs with a random
cotangent) to rounding, ties included. Dilated max/min gradients (JAX has
none, so the plain path also takes our rule) and NaN or ``-inf`` inputs
(where JAX's own gradient is not PyTorch's) are compared with PyTorch.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any
from unittest import mock

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxpool
from jaxpool import _lowering
from jaxpool._lowering import Lowering
from jaxpool._spec import window_spec

SETTINGS = hypothesis.settings(
    max_examples=20, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])


@dataclasses.dataclass(frozen=True)
class Case:
  """A pooling configuration, its input shape and dtype."""
  shape: tuple[int, ...]
  window: tuple[int, ...]
  strides: Any
  padding: Any
  dilation: Any
  ceil_mode: bool
  channels_first: bool
  dtype: Any

  def kwargs(self) -> dict[str, Any]:
    return dict(window_shape=self.window, strides=self.strides,
                padding=self.padding, dilation=self.dilation,
                ceil_mode=self.ceil_mode, channels_first=self.channels_first)

  def spec(self):
    return window_spec(self.shape, self.window, self.strides, self.padding,
                       dilation=self.dilation, ceil_mode=self.ceil_mode,
                       channels_first=self.channels_first)


@st.composite
def cases(draw, *, dilated: bool = False, torch_padding: bool = False,
          dtypes=(np.float32, jnp.bfloat16)) -> Case:
  """A random case that reaches every fast lowering, ``plan`` permitting."""
  n = draw(st.integers(1, 3))
  big = draw(st.booleans()) if n < 3 else False
  window = tuple(draw(st.integers(1, 5 if big else 3)) for _ in range(n))
  if draw(st.integers(0, 3)) == 0:
    strides = window  # Non-overlapping: SLICES or RESHAPE.
  else:
    strides = tuple(draw(st.integers(1, 3)) for _ in range(n))
  dilation = tuple(draw(st.integers(1, 2)) if dilated else 1
                   for _ in range(n))
  if torch_padding:
    padding = tuple(draw(st.integers(0, k // 2)) for k in window)
  else:
    padding = draw(st.sampled_from(["VALID", "SAME", "pairs"]))
    if padding == "pairs":
      padding = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k)))
                      for k in window)
  sizes = tuple(
      draw(st.integers(d * (k - 1) + 1, d * (k - 1) + (7 if n == 1 else 4)))
      for k, d in zip(window, dilation))
  channels_first = draw(st.booleans())
  batch = tuple(draw(st.lists(st.integers(1, 2), max_size=2)))
  channels = draw(st.integers(1, 3))
  shape = batch + ((channels,) + sizes if channels_first else
                   sizes + (channels,))
  return Case(shape, window, strides, padding,
              dilation if dilated else 1, draw(st.booleans()),
              channels_first, draw(st.sampled_from(dtypes)))


def make_input(rng: np.random.Generator, case: Case, kind: str) -> np.ndarray:
  """``kind``: "normal" (no ties), "relu" (many ties), or with NaN/-inf."""
  x = rng.standard_normal(case.shape).astype(np.float32)
  if kind == "relu":
    x = np.maximum(np.round(2 * x), 0)
  elif kind == "special":
    x = np.maximum(np.round(x), 0)
    x[rng.random(case.shape) < 0.15] = np.nan
    x[rng.random(case.shape) < 0.3] = -np.inf
    x[rng.random(case.shape) < 0.05] = np.inf
  return np.asarray(jnp.asarray(x, case.dtype))


POOLS = {
    "max": jaxpool.max_pool,
    "min": jaxpool.min_pool,
    "avg": lambda x, **kw: jaxpool.avg_pool(x, **kw),
}


def value_and_vjp(op: str, case: Case, x: np.ndarray, seed: int,
                  plain: bool):
  """``op``'s value and VJP with a random cotangent, traced under jit."""
  fn = functools.partial(POOLS[op], **case.kwargs())

  def both(x, ct):
    y, pullback = jax.vjp(fn, x)
    return y, pullback(ct)[0]

  shape = jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
  ct = np.random.default_rng(seed).standard_normal(shape.shape)
  ct = jnp.asarray(ct, shape.dtype)
  with jaxpool.force_plain_lowering(plain):
    y, g = jax.jit(both)(x, ct)
  return np.asarray(y, np.float32), np.asarray(g, np.float32), ct


def assert_gradients_close(g, expected, dtype):
  # Each gradient element sums the cotangents of the windows that picked it;
  # the order of that sum may differ, so bfloat16 differs by its rounding.
  tol = 2e-2 if dtype == jnp.bfloat16 else 1e-5
  np.testing.assert_allclose(g, expected, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------
# Fast paths against the plain path.


@SETTINGS
@hypothesis.given(case=cases(), op=st.sampled_from(sorted(POOLS)),
                  kind=st.sampled_from(["normal", "relu"]),
                  seed=st.integers(0, 2**31))
def test_fast_path_equals_plain_reduce_window(case, op, kind, seed):
  try:
    spec = case.spec()
  except ValueError:
    hypothesis.assume(False)
  assert _lowering.plan(spec).forward is not Lowering.PLAIN
  x = make_input(np.random.default_rng(seed), case, kind)
  y, g, _ = value_and_vjp(op, case, x, seed, plain=False)
  yp, gp, _ = value_and_vjp(op, case, x, seed, plain=True)
  if op == "avg":
    np.testing.assert_allclose(y, yp, rtol=1e-6, atol=1e-6)
  else:
    np.testing.assert_array_equal(y, yp)
  assert_gradients_close(g, gp, case.dtype)


@SETTINGS
@hypothesis.given(case=cases(), op=st.sampled_from(sorted(POOLS)),
                  kind=st.sampled_from(["normal", "relu"]),
                  seed=st.integers(0, 2**31))
def test_every_plan_a_table_can_pick_equals_plain(case, op, kind, seed):
  """Tuned and shipped tables pick among valid_plans: each one is exact."""
  try:
    spec = case.spec()
  except ValueError:
    hypothesis.assume(False)
  x = make_input(np.random.default_rng(seed), case, kind)
  yp, gp, _ = value_and_vjp(op, case, x, seed, plain=True)
  plans = _lowering.valid_plans(spec)
  assert _lowering.Plan(Lowering.PLAIN, Lowering.TAPS) in plans
  for chosen in plans:
    with _lowering.use_plan(chosen):
      y, g, _ = value_and_vjp(op, case, x, seed, plain=False)
    if op == "avg":
      np.testing.assert_allclose(y, yp, rtol=1e-6, atol=1e-6)
    else:
      np.testing.assert_array_equal(y, yp, err_msg=str(chosen))
    assert_gradients_close(g, gp, case.dtype)


@pytest.mark.parametrize("window,strides,expected", [
    ((2, 2), 2, {"plain", "slices", "reshape", "separable"}),
    ((3, 3), 2, {"plain", "slices", "separable"}),
    ((3,), 1, {"plain", "slices"}),
    ((9, 9), 1, {"plain", "separable"}),  # 81 taps: too many to slice.
])
def test_valid_plans(window, strides, expected):
  spec = window_spec((2, 20, 20, 3)[:len(window) + 1] + (3,), window,
                     strides)
  assert {p.forward.value for p in _lowering.valid_plans(spec)} == expected


def _to_torch(a: np.ndarray, case: Case) -> np.ndarray:
  """``a`` in PyTorch's layout ``(N, C, *spatial)``."""
  n = len(case.window)
  if not case.channels_first:
    a = np.moveaxis(a, -1, -n - 1)
  return np.ascontiguousarray(a.reshape((-1,) + a.shape[-n - 1:]),
                              np.float32)


def _from_torch(a: np.ndarray, case: Case) -> np.ndarray:
  n = len(case.window)
  a = a.reshape(case.shape[:-n - 1] + a.shape[1:])
  return a if case.channels_first else np.moveaxis(a, -n - 1, -1)


def _torch_vjp(op: str, case: Case, x: np.ndarray, ct: np.ndarray):
  """PyTorch's max (min: ``-max(-x)``) pooling value and VJP, our layout."""
  import torch  # pylint: disable=g-import-not-at-top
  xt = torch.tensor(_to_torch(x, case), requires_grad=True)
  pool = getattr(torch.nn.functional, f"max_pool{len(case.window)}d")
  kw = dict(kernel_size=case.window, stride=case.strides,
            padding=case.padding, dilation=case.dilation,
            ceil_mode=case.ceil_mode)
  yt = pool(xt, **kw) if op == "max" else -pool(-xt, **kw)
  yt.backward(torch.tensor(_to_torch(ct, case)))
  return (_from_torch(yt.detach().numpy(), case),
          _from_torch(xt.grad.numpy(), case))


def _every_window_touches_input(case: Case) -> bool:
  """PyTorch reads out of bounds for windows wholly in the padding."""
  spec = case.spec()
  for n, k, s, d, (lo, _), o in zip(spec.in_shape, spec.window, spec.strides,
                                    spec.dilation, spec.padding,
                                    spec.out_shape):
    for i in range(o):
      if not any(0 <= i * s + j * d - lo < n for j in range(k)):
        return False
  return True


@SETTINGS
@hypothesis.given(
    case=cases(dilated=True, torch_padding=True, dtypes=(np.float32,)),
    op=st.sampled_from(["max", "min"]),
    kind=st.sampled_from(["relu", "special"]), seed=st.integers(0, 2**31),
    plain=st.booleans())
def test_dilated_and_special_values_match_torch(case, op, kind, seed, plain):
  hypothesis.assume(_every_window_touches_input(case))
  # Undilated, the plain path is JAX's own gradient, not PyTorch's for NaN.
  hypothesis.assume(not plain or max(case.dilation) > 1)
  x = make_input(np.random.default_rng(seed), case, kind)
  y, g, ct = value_and_vjp(op, case, x, seed, plain=plain)
  yt, gt = _torch_vjp(op, case, x, np.asarray(ct))
  np.testing.assert_array_equal(y, yt)
  np.testing.assert_allclose(g, gt, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [
    Case((2, 9, 9, 3), (3, 3), 3, 1, 1, True, False, np.float32),  # RESHAPE
    Case((2, 3, 8, 9, 7), (2, 2, 2), 2, 0, 1, True, True, np.float32),
    Case((2, 10, 10, 3), (5, 5), 1, 2, 1, False, False, np.float32),  # SEP.
    Case((2, 40, 3), (20,), 2, 5, 1, False, False, np.float32),  # 1-D SLICES
])
@pytest.mark.parametrize("kind", ["relu", "special"])
def test_large_windows_match_torch(case, kind):
  x = make_input(np.random.default_rng(0), case, kind)
  y, g, ct = value_and_vjp("max", case, x, 0, plain=False)
  yt, gt = _torch_vjp("max", case, x, np.asarray(ct))
  np.testing.assert_array_equal(y, yt)
  np.testing.assert_allclose(g, gt, rtol=1e-5, atol=1e-5)


def _pytorch_taps(x: np.ndarray, spec) -> np.ndarray:
  """PyTorch's loop, one window at a time: the row-major index of the tap
  each window takes, windows last as in ``spec``'s layout."""
  xp = np.moveaxis(x, spec.spatial_axes, range(-spec.nspatial, 0))
  lead = xp.shape[:-spec.nspatial]
  taps = np.zeros(lead + tuple(spec.out_shape), int)
  for out in np.ndindex(*spec.out_shape):
    best, best_k = None, None
    for k, offsets in enumerate(np.ndindex(*spec.window)):
      pos = [o * s + j * d - lo for o, s, j, d, (lo, _) in zip(
          out, spec.strides, offsets, spec.dilation, spec.padding)]
      if not all(0 <= p < n for p, n in zip(pos, spec.in_shape)):
        continue
      val = xp[(Ellipsis, *pos)]
      if best is None:
        best, best_k = val.copy(), np.full(lead, k)
        continue
      take = (val > best) | np.isnan(val)
      best = np.where(take, val, best)
      best_k = np.where(take, k, best_k)
    # A window wholly in the padding reports its first tap.
    taps[(Ellipsis, *out)] = 0 if best_k is None else best_k
  return taps


def _assert_pytorchs_taps(x: np.ndarray, spec, index) -> None:
  assert index.dtype == np.int32
  got = np.moveaxis(np.asarray(index), spec.spatial_axes,
                    range(-spec.nspatial, 0))
  np.testing.assert_array_equal(got, _pytorch_taps(x, spec))


@SETTINGS
@hypothesis.given(case=cases(dtypes=(np.float32,)),
                  kind=st.sampled_from(["normal", "relu", "special"]),
                  seed=st.integers(0, 2**31))
def test_selected_tap_is_pytorchs_tap(case, kind, seed):
  """The fast selection's index equals a NumPy loop of PyTorch's rule."""
  try:
    spec = case.spec()
  except ValueError:
    hypothesis.assume(False)
  x = make_input(np.random.default_rng(seed), case, kind)
  _, index = jax.jit(lambda x: _lowering.selected_tap(x, spec, "max"))(x)
  _assert_pytorchs_taps(x, spec, index)


@SETTINGS
@hypothesis.given(case=cases(dtypes=(np.float32,)),
                  kind=st.sampled_from(["relu", "special"]),
                  seed=st.integers(0, 2**31), folded=st.booleans())
def test_block_selection_is_pytorchs_tap(case, kind, seed, folded):
  """Both selections over blocks (a fold of small blocks' taps, reductions
  over larger ones) take PyTorch's tap, padding and ceil_mode included."""
  case = dataclasses.replace(case, strides=case.window)
  try:
    spec = case.spec()
  except ValueError:
    hypothesis.assume(False)
  hypothesis.assume(_lowering.valid_derivative(Lowering.RESHAPE, spec))
  x = make_input(np.random.default_rng(seed), case, kind)
  limit = spec.window_size if folded else spec.window_size - 1
  with mock.patch.object(_lowering, "MAX_FOLDED_BLOCK", limit), \
      _lowering.use_plan(_lowering.Plan(Lowering.RESHAPE, Lowering.RESHAPE)):
    _, index = jax.jit(lambda x: _lowering.selected_tap(x, spec, "max"))(x)
  _assert_pytorchs_taps(x, spec, index)


# ---------------------------------------------------------------------------
# Derivatives in every mode.


@pytest.mark.parametrize("lowering,case,order", [
    (Lowering.SLICES, Case((1, 5, 4, 1), (3, 3), 2, 1, 1, True, False,
                           np.float32), 2),
    (Lowering.SLICES, Case((1, 2, 7, 6), (2, 3), (1, 2), 1, 2, False, True,
                           np.float32), 1),
    (Lowering.RESHAPE, Case((1, 6, 6, 2), (3, 3), 3, 0, 1, True, False,
                            np.float32), 1),
    (Lowering.SEPARABLE, Case((1, 7, 7, 1), (5, 5), 2, 2, 1, False, False,
                              np.float32), 1),
])
@pytest.mark.parametrize("op", ["max", "avg"])
def test_check_grads(lowering, case, order, op):
  assert _lowering.plan(case.spec()).forward is lowering
  # Distinct values: the derivative of max is only defined without ties.
  size = int(np.prod(case.shape))
  x = jnp.asarray(np.random.default_rng(0).permutation(size).reshape(
      case.shape) / size, np.float32)
  fn = jax.jit(functools.partial(POOLS[op], **case.kwargs()))
  check_grads(fn, (x,), order=1, modes=("fwd", "rev"), eps=1e-3)
  if order == 2:
    check_grads(fn, (x,), order=2, modes=("rev",), eps=1e-3)


def test_forward_mode_is_the_transpose_of_reverse_mode():
  case = Case((2, 8, 7, 3), (3, 3), 2, 1, 1, True, False, np.float32)
  rng = np.random.default_rng(1)
  x = jnp.asarray(make_input(rng, case, "relu"))
  fn = functools.partial(jaxpool.max_pool, **case.kwargs())
  t = jnp.asarray(rng.standard_normal(x.shape), np.float32)
  y, jt = jax.jit(lambda x, t: jax.jvp(fn, (x,), (t,)))(x, t)
  ct = jnp.asarray(rng.standard_normal(y.shape), np.float32)
  (vt,) = jax.jit(lambda x, ct: jax.vjp(fn, x)[1](ct))(x, ct)
  np.testing.assert_allclose(jnp.vdot(ct, jt), jnp.vdot(vt, t), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.bool_])
@pytest.mark.parametrize("op", ["max", "min"])
def test_integer_and_bool_inputs_equal_plain(dtype, op):
  case = Case((2, 7, 7, 3), (3, 3), 2, 1, 1, True, False, dtype)
  x = np.random.default_rng(0).integers(-5, 5, case.shape).astype(dtype)
  fn = jax.jit(functools.partial(POOLS[op], **case.kwargs()))
  y = fn(x)
  with jaxpool.force_plain_lowering():
    yp = jax.jit(functools.partial(POOLS[op], **case.kwargs()))(x)
  assert y.dtype == yp.dtype == dtype
  np.testing.assert_array_equal(y, yp)


# ---------------------------------------------------------------------------
# The plan, and what it compiles to.

_C = dict(dilation=1, ceil_mode=False, channels_first=False,
          dtype=np.float32)


@pytest.mark.parametrize("case,expected", [
    (Case((8, 32, 32, 3), (2, 2), 2, 0, **_C), Lowering.PLAIN),
    (Case((8, 32, 32, 3), (3, 3), 2, 1, **_C), Lowering.SLICES),
    (Case((8, 32, 32, 3), (3, 3), 1, 1, **_C), Lowering.SLICES),
    (Case((8, 64, 3), (3,), 2, 1, **_C), Lowering.SLICES),
    (Case((8, 32, 32, 3), (1, 1), 1, 0, **_C), Lowering.SLICES),
    (Case((8, 32, 32, 3), (4, 4), 4, 0, **_C), Lowering.RESHAPE),
    (Case((8, 32, 32, 3), (3, 3), 3, 1, **_C), Lowering.RESHAPE),
    (Case((2, 8, 8, 8, 3), (2, 2, 2), 2, 0, **_C), Lowering.RESHAPE),
    (Case((8, 32, 32, 3), (5, 5), 1, 2, **_C), Lowering.SEPARABLE),
    (Case((2, 8, 8, 8, 3), (3, 3, 3), 2, 1, **_C), Lowering.SEPARABLE),
    (Case((8, 99, 3), (40,), 1, 0, **_C), Lowering.SLICES),
    (Case((8, 99, 3), (65,), 1, 0, **_C), Lowering.PLAIN),
])
def test_plan_picks_the_lowering(case, expected):
  spec = case.spec()
  assert _lowering.plan(spec, platform="cpu").forward is expected
  with jaxpool.force_plain_lowering():
    assert _lowering.plan(spec).forward is Lowering.PLAIN


def test_non_overlapping_sums_take_blocks():
  spec = window_spec((8, 32, 32, 3), (2, 2), 2, 0)
  assert _lowering.plan(spec, "sum").forward is Lowering.RESHAPE
  # Max blocks: plain forward, and a fold over each block to differentiate.
  assert _lowering.plan(spec, "max") == _lowering.Plan(Lowering.PLAIN,
                                                       Lowering.RESHAPE)


def test_dilation_takes_slices():
  spec = window_spec((8, 32, 32, 3), (3, 3), 1, 2, dilation=2)
  assert _lowering.plan(spec).forward is Lowering.SLICES


def _max_pool_grad_hlo(case: Case, plain: bool = False) -> tuple[str, str]:
  """The lowered StableHLO and the compiled HLO of a max pool's gradient."""
  x = jnp.zeros(case.shape, case.dtype)
  loss = lambda x: jnp.sum(jaxpool.max_pool(x, **case.kwargs()),
                           dtype=np.float32)
  with jaxpool.force_plain_lowering(plain):
    lowered = jax.jit(jax.value_and_grad(loss)).lower(x)
  return lowered.as_text(), lowered.compile().as_text()


@pytest.mark.parametrize("case", [
    Case((4, 16, 16, 8), (2, 2), 2, 0, **_C),
    Case((4, 16, 16, 8), (3, 3), 2, 1, 1, True, False, jnp.bfloat16),
    Case((4, 8, 16, 16), (3, 3), 2, 1, 2, False, True, np.float32),
    Case((4, 32, 8), (3,), 2, 1, **_C),
    Case((2, 8, 8, 8, 4), (2, 2, 2), 2, 0, **_C),
    Case((4, 16, 16, 8), (5, 5), 1, 2, **_C),
])
def test_fast_gradient_has_no_select_and_scatter(case):
  lowered, compiled = _max_pool_grad_hlo(case)
  assert "select_and_scatter" not in lowered
  # XLA:CPU expands select-and-scatter into a scatter: neither may appear.
  assert "select-and-scatter" not in compiled
  assert " scatter(" not in compiled


def test_plain_gradient_is_select_and_scatter():
  # The checks above can fail: the plain path does emit it.
  case = Case((4, 16, 16, 8), (3, 3), 2, 1, **_C)
  lowered, compiled = _max_pool_grad_hlo(case, plain=True)
  assert "select_and_scatter" in lowered
  assert " scatter(" in compiled or "select-and-scatter" in compiled


def test_no_padded_copy_of_the_input():
  """The selection pads thin border strips only, never the whole input."""
  case = Case((4, 32, 32, 8), (3, 3), 2, 1, **_C)
  _, text = _max_pool_grad_hlo(case)
  padded = "f32[4,34,34,8]"
  assert padded not in text, padded


# ---------------------------------------------------------------------------
# The switch.


def test_force_plain_lowering_nests_and_restores(monkeypatch):
  monkeypatch.delenv("JAXPOOL_FORCE_PLAIN", raising=False)
  spec = window_spec((2, 8, 8, 3), (3, 3), 2, 1)
  assert _lowering.plan(spec).forward is Lowering.SLICES
  with jaxpool.force_plain_lowering():
    assert _lowering.plan(spec).forward is Lowering.PLAIN
    with jaxpool.force_plain_lowering(False):
      assert _lowering.plan(spec).forward is Lowering.SLICES
    assert _lowering.plan(spec).forward is Lowering.PLAIN
  assert _lowering.plan(spec).forward is Lowering.SLICES


def test_environment_variable_forces_plain(monkeypatch):
  spec = window_spec((2, 8, 8, 3), (3, 3), 2, 1)
  monkeypatch.setenv("JAXPOOL_FORCE_PLAIN", "1")
  assert _lowering.plan(spec).forward is Lowering.PLAIN
  with jaxpool.force_plain_lowering(False):
    assert _lowering.plan(spec).forward is Lowering.SLICES
  monkeypatch.setenv("JAXPOOL_FORCE_PLAIN", "0")
  assert _lowering.plan(spec).forward is Lowering.SLICES
  assert os.environ["JAXPOOL_FORCE_PLAIN"] == "0"


def test_plain_forward_is_reduce_window_max():
  # A jax.Array init would give the generic reduce_window, without a VJP.
  x = jnp.zeros((2, 8, 8, 3))
  with jaxpool.force_plain_lowering():
    jaxpr = jax.make_jaxpr(lambda x: jaxpool.max_pool(x, (2, 2)))(x)
    jax.jit(jax.grad(lambda x: jaxpool.max_pool(x, (2, 2)).sum()))(x)
  assert "reduce_window_max" in str(jaxpr)


# ---------------------------------------------------------------------------
# Issue 16: half-precision gradients rounded once, and COMPACT.


#: The plan each lowering is tested in: its forward, and its own derivative
#: (COMPACT is a derivative, under the plain forward).
_PLAN_OF = {
    Lowering.PLAIN: _lowering.Plan(Lowering.PLAIN, Lowering.TAPS),
    Lowering.SLICES: _lowering.Plan(Lowering.SLICES, Lowering.SLICES),
    Lowering.SEPARABLE: _lowering.Plan(Lowering.SEPARABLE, Lowering.SLICES),
    Lowering.RESHAPE: _lowering.Plan(Lowering.RESHAPE, Lowering.RESHAPE),
    Lowering.COMPACT: _lowering.Plan(Lowering.PLAIN, Lowering.COMPACT),
}


def _force(monkeypatch, lowering):
  """Makes every pooling take ``lowering``'s plan (``"forced"``: flax's
  plain path)."""
  if lowering == "forced":
    monkeypatch.setenv("JAXPOOL_FORCE_PLAIN", "1")
  else:
    monkeypatch.setattr(_lowering._state, "plan", _PLAN_OF[lowering],
                        raising=False)


# (rank, window, strides, padding): overlapping windows, so that gradients
# are sums; RESHAPE needs non-overlapping ones.
_HALF_CASES = {
    1: ((5,), 1, 2, (3,), 3, 0),
    2: ((3, 3), 1, 1, (2, 2), 2, 0),
    3: ((3, 3, 3), 1, 0, (2, 2, 2), 2, 0),
}


@pytest.mark.parametrize("lowering", ["forced", Lowering.PLAIN,
                                      Lowering.SLICES, Lowering.SEPARABLE,
                                      Lowering.RESHAPE, Lowering.COMPACT],
                         ids=str)
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("dtype,op", [(jnp.bfloat16, "max"),
                                      (np.float16, "min")])
def test_half_precision_gradient_is_rounded_once(monkeypatch, lowering, rank,
                                                 dtype, op):
  """The gradient equals PyTorch's float64 gradient rounded once."""
  import torch  # pylint: disable=g-import-not-at-top
  window, strides, padding, *blocks = _HALF_CASES[rank]
  if lowering is Lowering.RESHAPE:
    window, strides, padding = blocks
  _force(monkeypatch, lowering)
  shape = (2, 3) + (7,) * rank
  rng = np.random.default_rng(rank)
  # Ties included: half precision makes many.
  x = np.asarray(jnp.asarray(rng.standard_normal(shape), dtype))
  pool = POOLS[op]
  f = lambda x: pool(x, window, strides, padding, channels_first=True)
  y, vjp = jax.vjp(jax.jit(f), jnp.asarray(x))
  # Eighths: exact in half precision and summed exactly in float32, so the
  # only rounding allowed is the last one.
  ct = np.asarray(jnp.asarray(rng.integers(-64, 65, y.shape) / 8, dtype))
  (g,) = vjp(jnp.asarray(ct))
  sign = 1 if op == "max" else -1
  xt = torch.tensor(sign * x.astype(np.float64), requires_grad=True)
  yt = getattr(torch.nn.functional, f"max_pool{rank}d")(
      xt, window, strides, padding)
  (sign * yt).backward(torch.tensor(ct.astype(np.float64)))
  np.testing.assert_array_equal(np.asarray(y, np.float64),
                                sign * yt.detach().numpy())
  want = np.asarray(jnp.asarray(sign * xt.grad.numpy(), dtype), np.float64)
  np.testing.assert_array_equal(np.asarray(g, np.float64), want)


@SETTINGS
@hypothesis.given(case=cases(), op=st.sampled_from(["max", "min"]),
                  kind=st.sampled_from(["normal", "relu"]),
                  seed=st.integers(0, 2**31))
def test_compact_equals_plain_reduce_window(case, op, kind, seed):
  try:
    case.spec()
  except ValueError:
    hypothesis.assume(False)
  x = make_input(np.random.default_rng(seed), case, kind)
  with pytest.MonkeyPatch.context() as patch:
    _force(patch, Lowering.COMPACT)
    y, g, _ = value_and_vjp(op, case, x, seed, plain=False)
  yp, gp, _ = value_and_vjp(op, case, x, seed, plain=True)
  np.testing.assert_array_equal(y, yp)
  assert_gradients_close(g, gp, case.dtype)


@SETTINGS
@hypothesis.given(
    case=cases(dilated=True, torch_padding=True, dtypes=(np.float32,)),
    kind=st.sampled_from(["relu", "special"]), seed=st.integers(0, 2**31))
def test_compact_matches_torch_with_nan_and_inf(case, kind, seed):
  hypothesis.assume(_every_window_touches_input(case))
  x = make_input(np.random.default_rng(seed), case, kind)
  with pytest.MonkeyPatch.context() as patch:
    _force(patch, Lowering.COMPACT)
    y, g, ct = value_and_vjp("max", case, x, seed, plain=False)
    _, index = jax.jit(
        lambda x: _lowering.selected_tap(x, case.spec(), "max"))(x)
  yt, gt = _torch_vjp("max", case, x, np.asarray(ct))
  np.testing.assert_array_equal(y, yt)
  np.testing.assert_allclose(g, gt, rtol=1e-5, atol=1e-5)
  _, plain_index = jax.jit(lambda x: _lowering.selected_tap(
      x, case.spec(), "max"))(x)
  np.testing.assert_array_equal(index, plain_index)


def test_plan_takes_compact_for_wide_max_windows():
  spec = window_spec((8, 300, 3), (257,), 1, 0)
  for platform in ("cpu", "cuda", "tpu"):
    assert _lowering.plan(spec, "max", platform).derivative is (
        Lowering.COMPACT)
    assert _lowering.plan(spec, "sum", platform).forward is Lowering.PLAIN
  # Whatever a table says, an unrolled selection this long is not taken.
  assert _lowering.bounded(Lowering.SLICES, spec, "max") is Lowering.COMPACT
  assert _lowering.bounded(Lowering.RESHAPE, spec, "max") is Lowering.RESHAPE
  small = window_spec((8, 32, 32, 3), (3, 3), 2, 1)
  assert _lowering.bounded(Lowering.TAPS, small, "max") is Lowering.TAPS
  assert _lowering.compact(window_spec((1, 9, 9, 9, 1), (8, 8, 8), 1, 1))
  assert not _lowering.compact(window_spec((8, 32, 32, 3), (3, 3), 2, 1))


def test_separable_stages_bound_their_own_selection():
  # 13x13 unrolled would be COMPACT; each 1-D stage of 13 taps is not.
  spec = window_spec((16, 20, 20, 512), (13, 13), 1, 6)
  assert _lowering.compact(spec)
  assert not any(_lowering.compact(s) for s in _lowering.stages(spec))
  assert _lowering.plan(spec, "max", "cpu") == _lowering.Plan(
      Lowering.SEPARABLE, Lowering.SLICES)


def _hlo_ops(fn, x) -> int:
  return sum(" = " in line for line in jax.jit(fn).lower(x).as_text()
             .splitlines())


_LARGE = [((8, 8, 8), 2, 4), ((7, 7, 7), 1, 3), ((5, 5, 5), 1, 2),
          ((3, 3, 3), 1, 1), ((2, 2, 4), 1, 1), ((8, 8), 1, 4), ((8,), 1, 4)]


@pytest.mark.parametrize("window,strides,padding", _LARGE, ids=str)
@pytest.mark.parametrize("name", ["max_pool", "min_pool", "avg_pool",
                                  "max_pool_with_indices"])
def test_emitted_hlo_does_not_grow_with_the_window(name, window, strides,
                                                   padding):
  """Forward and gradient of windows up to 8 per dim stay small (issue 16:
  an unrolled 8x8x8 selection was 7000 ops and a minute to compile)."""
  fn = getattr(jaxpool, name)
  f = lambda x: fn(x, window, strides, padding, channels_first=True)
  values = lambda x: jax.tree.leaves(f(x))[0]
  grad = jax.grad(lambda x: jnp.sum(values(x).astype(np.float32)))
  x = jax.ShapeDtypeStruct((1, 3) + (17,) * len(window), jnp.bfloat16)
  # Measured: at most ~900 ops (separable 8x8x8 gradients); unrolled
  # selections of these windows were 1000 to 6700.
  assert _hlo_ops(f, x) <= 1000
  assert _hlo_ops(grad, x) <= 1000


# ---------------------------------------------------------------------------
# Stride-1 derivatives: one loop per pool (issue 11).

_STRIDE_1 = [
    Case((2, 9, 3), (4,), 1, "SAME", 1, False, False, np.float32),
    Case((2, 3, 9), (3,), 1, ((2, 1),), 2, True, True, np.float32),
    Case((2, 7, 8, 3), (3, 3), 1, 1, 1, False, False, np.float32),
    Case((2, 7, 8, 3), (5, 5), 1, "SAME", 1, False, False, jnp.bfloat16),
    Case((1, 2, 5, 6, 6), (2, 3, 2), 1, ((1, 0), (1, 2), (0, 1)), (1, 1, 2),
         False, True, np.float32),
]


@pytest.mark.parametrize("case", _STRIDE_1, ids=str)
@pytest.mark.parametrize("op", ["max", "min"])
def test_spread_tangent_equals_per_tap_select(case, op):
  """``_selected_tangent`` is the per-tap select it replaces, bit for bit:
  reverse mode (windows sharing an element sum in the same order) and
  forward mode."""
  x = make_input(np.random.default_rng(0), case, "special")  # Ties, NaN.
  fn = functools.partial(POOLS[op], **case.kwargs())
  t = jnp.asarray(np.random.default_rng(1).standard_normal(x.shape), x.dtype)

  def both(x, t):
    y, pullback = jax.vjp(fn, x)
    ct = jnp.asarray(np.random.default_rng(2).standard_normal(y.shape),
                     y.dtype)
    return pullback(ct)[0], jax.jvp(fn, (x,), (t,))[1]

  with _lowering.use_plan(_lowering.Plan(Lowering.SLICES, Lowering.SLICES)):
    spread = jax.jit(both)(x, t)
    with _lowering.spread_tangents(False):
      per_tap = jax.jit(both)(x, t)
  for a, b in zip(spread, per_tap):
    np.testing.assert_array_equal(np.asarray(a, np.float32),
                                  np.asarray(b, np.float32))


def _selects_and_compares(repeats: int, spread: bool) -> int:
  x = jax.ShapeDtypeStruct((2, 12, 12, 4), np.float32)
  loss = lambda x: jnp.sum(jaxpool.sppf(x, 5, repeats) ** 2)
  with _lowering.spread_tangents(spread):
    text = jax.jit(jax.grad(loss)).lower(x).compile().as_text()
  return text.count(" select(") + text.count(" compare(")


@pytest.mark.parametrize("spread", [True, False])
def test_chained_pools_backward_is_one_loop_per_stage(spread):
  """Each pool added to a chain (SPPF) adds the same work to the compiled
  gradient: its own selection and one gradient loop per stage, not a
  re-addition of the next pool's gradient taps in every tap of its own
  (the per-tap select, ``spread=False``, did that: 3 chained 5x5 pools cost
  12 single pools)."""
  ops = [_selects_and_compares(r, spread) for r in (1, 2, 3)]
  grows = ops[2] - ops[1] > ops[1] - ops[0]
  assert grows == (not spread), ops

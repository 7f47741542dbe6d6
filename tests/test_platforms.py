"""Tests of per-platform plans: the tables, the user's cache and export.

Lowering for a platform that is not here (``jax.export`` with
``platforms=("cuda",)``) gives the HLO that platform would compile, so each
platform's plan is checked on this CPU: the CPU table picks strided slices
(no ``reduce_window`` in a 3x3/2 max pool), the default plan of unmeasured
platforms the plain ``reduce_window`` forward; no platform's gradient has a
select-and-scatter.
"""

from __future__ import annotations

import functools
import json
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import jaxpool
from jaxpool import _lowering
from jaxpool import _plan_table
from jaxpool._lowering import Lowering, Plan
from jaxpool._spec import window_spec

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")

# Every public function, with arguments, on a (2, 12, 12, 3) input.
#: Boxes over both images of the (2, 12, 12, 3) input, built in.
_BOXES = np.array([[0, 1.0, 2.0, 9.0, 7.0], [1, 0.5, 0.0, 11.0, 11.5],
                   [1, 3.0, 3.0, 4.0, 5.0]], np.float32)

FUNCTIONS = {
    "max_pool": lambda x: jaxpool.max_pool(x, (3, 3), 2, 1),
    "min_pool": lambda x: jaxpool.min_pool(x, (3, 3), 2, 1),
    "avg_pool": lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1),
    "lp_pool": lambda x: jaxpool.lp_pool(x, 2.0, (2, 2)),
    "pool": lambda x: jaxpool.pool(x, 0.0, jax.lax.add, (2, 2), 2),
    "adaptive_avg_pool": lambda x: jaxpool.adaptive_avg_pool(x, 5),
    "adaptive_max_pool": lambda x: jaxpool.adaptive_max_pool(x, 5),
    "global_avg_pool": jaxpool.global_avg_pool,
    "global_max_pool": jaxpool.global_max_pool,
    "max_pool_with_indices":
        lambda x: jaxpool.max_pool_with_indices(x, (3, 3), 2)[0],
    "max_unpool": lambda x: jaxpool.max_unpool(
        *jaxpool.max_pool_with_indices(x, (2, 2)), (12, 12)),
    "spatial_pyramid_pool": jaxpool.spatial_pyramid_pool,
    "spp_yolo": lambda x: jaxpool.spp_yolo(x, (3, 5)),
    "sppf": lambda x: jaxpool.sppf(x, 3),
    "adaptive_max_pool_with_indices":
        lambda x: jaxpool.adaptive_max_pool_with_indices(x, 5)[0],
    "flatten": jaxpool.flatten,
    "blur_pool": jaxpool.blur_pool,
    "max_blur_pool": jaxpool.max_blur_pool,
    "aps_pool": lambda x: jaxpool.aps_pool(x, 2, window_shape=2),
    "gem_pool": lambda x: jaxpool.gem_pool(x, 3.0, window_shape=(2, 2)),
    "segment_pool": lambda x: jaxpool.segment_pool(
        x.reshape(-1, 3), np.arange(2 * 12 * 12) % 5, 5, method="max"),
    "fractional_max_pool": lambda x: jaxpool.fractional_max_pool(
        x, 2, (7, 7), key=jax.random.key(0)),
    "stochastic_pool": lambda x: jaxpool.stochastic_pool(
        jnp.abs(x), (2, 2), key=jax.random.key(0)),
    "soft_pool": lambda x: jaxpool.soft_pool(x, window_shape=(2, 2)),
    "lse_pool": lambda x: jaxpool.lse_pool(x, 2.0),
    "mixed_pool": lambda x: jaxpool.mixed_pool(x, 0.3, window_shape=(3, 3),
                                               strides=2, padding=1),
    "gated_pool": lambda x: jaxpool.gated_pool(
        x, jnp.full((2, 2), 0.5), window_shape=(2, 2)),
    "adaptive_avgmax_pool": jaxpool.adaptive_avgmax_pool,
    "adaptive_catavgmax_pool": lambda x: jaxpool.adaptive_catavgmax_pool(
        x, 5),
    "roi_pool": lambda x: jaxpool.roi_pool(x, _BOXES, 2),
    "roi_align": lambda x: jaxpool.roi_align(x, _BOXES, 2, 0.5),
    "ps_roi_pool": lambda x: jaxpool.ps_roi_pool(x, _BOXES, (1, 3)),
    "ps_roi_align": lambda x: jaxpool.ps_roi_align(x, _BOXES, (3, 1)),
    "multi_scale_roi_align": lambda x: jaxpool.multi_scale_roi_align(
        [x, x[:, ::2, ::2]], _BOXES * np.float32([1, 4, 4, 4, 4]), [(48, 48)],
        2),
}

#: Public names that are not functions of an array, or not poolings.
NOT_POOLING = {"force_plain_lowering", "invariance", "pool_output_shape",
               "tune", "graph"}


def test_every_public_function_is_exported_here():
  assert set(jaxpool.__all__) - NOT_POOLING == set(FUNCTIONS)


def _input() -> jax.Array:
  size = 2 * 12 * 12 * 3
  values = np.random.default_rng(0).permutation(size).astype(np.float32)
  return jnp.asarray(values.reshape(2, 12, 12, 3) / size)


def _grad(fn):
  return jax.grad(lambda x: jnp.sum(fn(x) ** 2))


def _exported_text(fn, x, platforms) -> str:
  # A new function each time: jit keeps the plan a function was traced with.
  exp = export.export(jax.jit(lambda x: fn(x)), platforms=platforms)(
      jax.ShapeDtypeStruct(x.shape, x.dtype))
  return exp.mlir_module()


@pytest.fixture(autouse=True)
def _fresh_tables(monkeypatch, tmp_path):
  """No user table from this machine's cache; tables re-read per test."""
  monkeypatch.setenv("JAXPOOL_CACHE_DIR", str(tmp_path / "cache"))
  _plan_table.reload()
  yield
  _plan_table.reload()


# ---------------------------------------------------------------------------
# Export: each platform its own plan, in one artifact.


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_exports_for_every_platform(name):
  fn, x = FUNCTIONS[name], _input()
  for f in (fn, _grad(fn)):
    exp = export.export(jax.jit(f), platforms=PLATFORMS)(
        jax.ShapeDtypeStruct(x.shape, x.dtype))
    assert exp.platforms == PLATFORMS
    # The multi-platform artifact runs here, on its CPU branch.
    np.testing.assert_allclose(exp.call(x), jax.jit(f)(x), rtol=1e-6,
                               atol=1e-7)
    # The artifact holds every platform's branch: none takes XLA's
    # select-and-scatter derivative.
    assert "select_and_scatter" not in exp.mlir_module(), name


@pytest.mark.parametrize("platform,has_reduce_window", [
    ("cpu", False), ("cuda", True), ("rocm", True), ("tpu", True)])
@pytest.mark.parametrize("name", ["max_pool", "min_pool", "avg_pool"])
def test_each_platform_gets_its_plan(platform, has_reduce_window, name):
  spec = window_spec((2, 12, 12, 3), (3, 3), 2, 1)
  chosen = _lowering.plan(spec, "sum" if name == "avg_pool" else "max",
                          platform)
  assert (chosen.forward is Lowering.PLAIN) == has_reduce_window
  text = _exported_text(FUNCTIONS[name], _input(), (platform,))
  assert ("reduce_window" in text) == has_reduce_window


def test_multi_platform_artifact_carries_both_plans():
  text = _exported_text(FUNCTIONS["max_pool"], _input(), ("cpu", "cuda"))
  # A conditional on the platform, resolved before compilation, with the
  # CPU's slices in one branch and the default's reduce_window in the other.
  assert "stablehlo.case" in text
  assert "reduce_window" in text
  single = _exported_text(FUNCTIONS["max_pool"], _input(), ("cpu",))
  assert "reduce_window" not in single


def test_shipped_table_for_a_platform_changes_its_export(monkeypatch):
  table = _plan_table.parse_table({
      "format": 1, "platform": "cuda", "provenance": {},
      "rules": [{"when": {}, "forward": "slices", "derivative": "slices"}],
  }, "test")
  real = _plan_table.tables
  monkeypatch.setattr(
      _plan_table, "tables", lambda p, include_user=True: (
          (table,) if p == "cuda" else real(p, include_user)))
  text = _exported_text(FUNCTIONS["max_pool"], _input(), ("cuda",))
  assert "reduce_window" not in text
  assert "reduce_window" in _exported_text(FUNCTIONS["max_pool"], _input(),
                                           ("tpu",))


def test_unknown_platform_takes_the_default_plan():
  spec = window_spec((2, 12, 12, 3), (3, 3), 2, 1)
  assert _lowering.plan(spec, "max", "metal") == Plan(Lowering.PLAIN,
                                                      Lowering.TAPS)


# ---------------------------------------------------------------------------
# The tables.


def test_shipped_cpu_table_has_provenance():
  table = _plan_table.shipped_table("cpu")
  assert table is not None
  for field in ("command", "device_kind", "jax", "date"):
    assert table.provenance[field], field
  for platform in ("cuda", "rocm", "tpu"):
    assert _plan_table.shipped_table(platform) is None  # Not measured yet.


_GRID = [((2, n, n, 3), (k, k), s, p, d)
         for n in (4, 9, 40) for k in (1, 2, 3, 5, 9) for s in (1, 2, k)
         for p in (0, 1) for d in (1, 2) if p < k and d * (k - 1) < n]
_GRID += [((2, n, 3), (k,), s, 0, 1) for n in (40, 300)
          for k in (2, 20, 70) for s in (1, k) if k < n]


@pytest.mark.parametrize("op", ["max", "sum"])
@pytest.mark.parametrize("platform", PLATFORMS + ("other",))
def test_every_table_picks_a_valid_plan(platform, op):
  for shape, window, strides, padding, dilation in _GRID:
    spec = window_spec(shape, window, strides, padding, dilation=dilation)
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # An invalid rule would warn.
      chosen = _lowering.plan(spec, op, platform)
    assert chosen in _lowering.valid_plans(spec), (spec, chosen)


def test_cpu_table_reproduces_the_measured_rules():
  """The shipped CPU rules, as measured (see jaxpool/_plans/cpu.json)."""
  cases = {
      ((8, 32, 32, 3), (2, 2), 2, "max"): ("plain", "reshape"),
      ((8, 32, 32, 3), (2, 2), 2, "sum"): ("reshape", "reshape"),
      ((8, 32, 32, 3), (4, 4), 4, "max"): ("reshape", "reshape"),
      ((8, 32, 32, 3), (3, 3), 2, "max"): ("slices", "slices"),
      ((8, 32, 32, 3), (5, 5), 1, "max"): ("separable", "slices"),
      ((8, 99, 3), (40,), 1, "max"): ("slices", "slices"),
      ((8, 99, 3), (65,), 1, "max"): ("plain", "taps"),
  }
  for (shape, window, strides, op), expected in cases.items():
    spec = window_spec(shape, window, strides)
    assert _lowering.plan(spec, op, "cpu") == Plan.of(*expected)
  # Measured on large inputs (2026-11-29).
  large = {
      ((32, 56, 56, 64), (2, 2), jnp.bfloat16, "max"): ("plain", "reshape"),
      ((32, 56, 56, 64), (2, 2), jnp.float32, "max"): ("plain", "reshape"),
      ((32, 56, 56, 64), (2, 2), jnp.float32, "sum"): ("plain", "taps"),
      ((4, 16, 56, 56, 64), (2, 2, 2), jnp.float32, "max"): ("plain",
                                                             "reshape"),
  }
  for (shape, window, dtype, op), expected in large.items():
    spec = window_spec(shape, window, 2)
    assert _lowering.plan(spec, op, "cpu", dtype, shape) == Plan.of(
        *expected)


def test_config_class():
  spec = window_spec((8, 32, 32, 3), (3, 3), 2, 1)
  cls = _plan_table.config_class(spec, "max", jnp.bfloat16, (8, 32, 32, 3))
  assert cls == {"op": "max", "rank": "2", "windows": "other", "taps": "5-16",
                 "dims": "2+", "dilation": "none", "padding": "padded",
                 "dtype": "half", "size": "small"}
  assert _plan_table.config_class(spec, "max", jnp.float32,
                                  (64, 32, 32, 3))["size"] == "medium"


@pytest.mark.parametrize("data,message", [
    ({"format": 2, "platform": "cpu", "rules": []}, "format"),
    ({"format": 1, "platform": "cpu", "rules": [{"when": {"op": "avg"},
                                                 "forward": "plain"}]},
     "'op'"),
    ({"format": 1, "platform": "cpu", "rules": [{"when": {},
                                                 "forward": "fast"}]},
     "forward"),
    ({"format": 1, "platform": "cpu", "rules": [{"when": {"colour": "red"},
                                                 "forward": "plain"}]},
     "colour"),
    ({"format": 1, "platform": "cpu", "rules": [],
      "parameters": {"adaptive_unroll": -1}}, "parameters"),
])
def test_malformed_tables_raise_in_parsing(data, message):
  with pytest.raises(ValueError, match=message):
    _plan_table.parse_table(data, "test")


# ---------------------------------------------------------------------------
# The user's cache.


def _user_path() -> pathlib.Path:
  return _plan_table.user_table_path("cpu", jax.devices("cpu")[0].device_kind)


def _write_user_table(rules, jax_version=jax.__version__, **extra):
  path = _user_path()
  path.parent.mkdir(parents=True, exist_ok=True)
  table = {"format": 1, "platform": "cpu",
           "provenance": {"jax": jax_version, "device_kind": "cpu"},
           "rules": rules, **extra}
  path.write_text(json.dumps(table))
  _plan_table.reload()
  return path


_SPEC = window_spec((2, 12, 12, 3), (3, 3), 2, 1)
_SHIPPED = Plan(Lowering.SLICES, Lowering.SLICES)


def test_user_table_is_read_first_and_changes_the_lowering():
  assert _lowering.plan(_SPEC, "max", "cpu") == _SHIPPED
  # A new function each time: jit keeps the plan a function was traced with.
  hlo = lambda: jax.jit(lambda x: FUNCTIONS["max_pool"](x)).lower(
      _input()).as_text()
  assert "reduce_window" not in hlo()
  _write_user_table([{"when": {"op": "max", "taps": "5-16"},
                      "forward": "plain", "derivative": "taps"}])
  assert _lowering.plan(_SPEC, "max", "cpu") == Plan(Lowering.PLAIN,
                                                     Lowering.TAPS)
  assert _lowering.plan(_SPEC, "max", "cpu",
                        include_user=False) == _SHIPPED
  assert "reduce_window" in hlo()
  # Other classes keep the shipped rules.
  assert _lowering.plan(_SPEC, "sum", "cpu") == _SHIPPED


def test_missing_user_table_is_silent():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert _lowering.plan(_SPEC, "max", "cpu") == _SHIPPED


@pytest.mark.parametrize("write", [
    lambda: _write_user_table([{"when": {}, "forward": "plain"}],
                              jax_version="0.0.1"),
    lambda: _user_path().write_text("{not json"),
    lambda: _user_path().write_bytes(b"\x80\x81\x82"),
    lambda: _write_user_table([{"when": {}, "forward": "warp-speed"}]),
    lambda: _write_user_table({"when": {}}),
])
def test_stale_or_corrupt_user_table_is_ignored_with_one_warning(write):
  _user_path().parent.mkdir(parents=True, exist_ok=True)
  write()
  _plan_table.reload()
  with pytest.warns(UserWarning, match="ignoring"):
    assert _lowering.plan(_SPEC, "max", "cpu") == _SHIPPED
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # Once only.
    assert _lowering.plan(_SPEC, "max", "cpu") == _SHIPPED
    jax.jit(FUNCTIONS["max_pool"])(_input())


def test_rule_invalid_for_a_configuration_is_ignored_for_it():
  # Blocks need non-overlapping windows: ignored for 3x3/2, kept for 2x2/2.
  _write_user_table([{"when": {"op": "max"}, "forward": "reshape",
                      "derivative": "reshape"}])
  with pytest.warns(UserWarning, match="not valid"):
    assert _lowering.plan(_SPEC, "max", "cpu") == _SHIPPED
  blocks = window_spec((2, 12, 12, 3), (2, 2), 2)
  assert _lowering.plan(blocks, "max", "cpu") == Plan(Lowering.RESHAPE,
                                                      Lowering.RESHAPE)
  np.testing.assert_array_equal(
      jax.jit(FUNCTIONS["max_pool"])(_input()),
      jax.jit(FUNCTIONS["max_pool"])(_input()))


def test_user_parameters_reach_adaptive_pooling():
  _write_user_table([], parameters={"adaptive_unroll": 2,
                                    "adaptive_sliced": 0,
                                    "adaptive_segments": 0})
  assert _plan_table.parameters("cpu") == {
      **_plan_table.DEFAULT_PARAMETERS, "adaptive_unroll": 2,
      "adaptive_sliced": 0, "adaptive_segments": 0}
  x = _input()
  text = jax.jit(_grad(FUNCTIONS["adaptive_max_pool"])).lower(x).as_text()
  assert "while" in text  # Bins longer than 2 pick in a loop.
  _write_user_table([])
  text = jax.jit(_grad(FUNCTIONS["adaptive_max_pool"])).lower(x).as_text()
  assert "while" not in text


# ---------------------------------------------------------------------------
# Tuning.


def test_tune_writes_a_table_that_plan_reads(tmp_path):
  config = jaxpool.tune.Config.pool("tiny", "max", (1, 12, 12, 4), 3, 2, 1)
  result = jaxpool.tune([config], repeats=1, progress=False)
  assert result.path == _user_path() and result.path.is_file()
  (chosen,) = result.classes
  assert set(chosen.timings) == set(_lowering.valid_plans(config.spec))
  assert _lowering.plan(config.spec, "max", "cpu", np.float32,
                        config.shape) == chosen.chosen
  assert "tiny" in result.summary()
  # Tuning again keeps the rules of other classes.
  other = jaxpool.tune.Config.pool("other", "sum", (1, 12, 12, 4), 2, 2)
  jaxpool.tune([other], repeats=1, progress=False)
  rules = json.loads(_user_path().read_text())["rules"]
  assert {r["configs"][0] for r in rules} == {"tiny", "other"}


def test_tune_records_what_a_function_traces():
  def model(x):
    return jaxpool.avg_pool(jaxpool.max_pool(x, (3, 3), 2, 1), (2, 2))

  configs = jaxpool.tune.configs_of(model, jnp.zeros((1, 16, 16, 4)))
  assert [(c.op, c.spec.window, c.shape) for c in configs] == [
      ("max", (3, 3), (1, 16, 16, 4)), ("sum", (2, 2), (1, 8, 8, 4))]


def test_tune_skips_a_candidate_out_of_memory(monkeypatch):
  tune_module = jaxpool.tune
  real = tune_module._median_ms
  calls = []

  def flaky(call, repeats):
    calls.append(1)
    if len(calls) == 1:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating")
    return real(call, repeats)

  monkeypatch.setattr(tune_module, "_median_ms", flaky)
  config = tune_module.Config.pool("tiny", "sum", (1, 8, 8, 2), 2, 2)
  result = tune_module.tune([config], repeats=1, write=False,
                            progress=False)
  (chosen,) = result.classes
  assert len(chosen.timings) == len(
      {p.forward for p in _lowering.valid_plans(config.spec)}) - 1


def test_tune_rejects_bad_arguments():
  with pytest.raises(ValueError, match="repeats"):
    jaxpool.tune(repeats=0)
  with pytest.raises(ValueError, match="configs or function"):
    jaxpool.tune([], function=jnp.sin)


def test_callable_module():
  import jaxpool.tune as tune_module  # pylint: disable=g-import-not-at-top
  assert callable(tune_module) and tune_module is jaxpool.tune
  assert callable(functools.partial(jaxpool.tune, quick=True))

"""Pooling on sharded inputs: the single-device result, and halos only.

Every pooling function in ``jaxpool.__all__`` is compiled under ``jax.jit``
for an input split with ``NamedSharding`` over a 2x2 mesh of the 4 host CPU
devices that ``conftest.py`` asks XLA for: over the batch, over the spatial
dims, and over both. Each test reads the compiled HLO, lists the collectives
XLA emitted, forward and forward+backward (the gradient of a scalar loss),
and checks the values against the same function on one device.

The rules (issue 6):

* batch split: no collective at all;
* spatial split: only the kinds of collective listed for the case (halo
  exchanges for windowed pools: no all-gather, all-to-all or reduce-scatter,
  which reshuffle whole shards), and none larger than a few rows of a shard
  (the window's extent, or the rows of a fixed-size output): never the input
  or its gradient;
* the traffic does not grow with the image: doubling the split dim leaves
  the collectives' total size unchanged.

Shapes are as at scale: each shard's height is a multiple of the stride, so
the output splits where the input does, as XLA needs to partition a windowed
reduction without moving data. Compiling is most of the cost, so the slow
cases run under fewer splits.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import jaxpool
import reference

KINDS = ("all-gather", "all-reduce", "collective-permute", "all-to-all",
         "reduce-scatter")
_COLLECTIVE = re.compile(r"=\s*(.*?)\s(" + "|".join(KINDS) +
                         r")(?:-start)?\(")
_ARRAY = re.compile(r"\w+\[([\d,]*)\]")
# Halo exchanges, and border strips of a few rows gathered or all-reduced;
# never an all-to-all or a reduce-scatter, which reshuffle whole shards.
HALO = frozenset({"collective-permute", "all-reduce", "all-gather"})
# Functions in jaxpool.__all__ that do not pool an array.
NOT_POOLING = frozenset({"force_plain_lowering", "pool_output_shape", "tune"})


def collectives(hlo: str) -> list[tuple[str, int]]:
  """Each collective in compiled HLO text: its kind and its element count.

  The count is that of the largest array in the op's result (an async
  ``-start`` op's result holds its operand and its result).
  """
  found = []
  for line in hlo.splitlines():
    match = _COLLECTIVE.search(line)
    if match:
      sizes = [math.prod(int(d) for d in dims.split(",") if d)
               for dims in _ARRAY.findall(match.group(1))]
      found.append((match.group(2), max(sizes, default=0)))
  return found


def counts(found: list[tuple[str, int]]) -> dict[str, int]:
  result = {}
  for kind, _ in found:
    result[kind] = result.get(kind, 0) + 1
  return result


# ---------------------------------------------------------------------------
# Meshes and splits.


def cpus() -> list[jax.Device]:
  # Not at import: the jax.distributed worker below must start JAX itself.
  devices = jax.devices("cpu")
  if len(devices) < 4:
    pytest.skip("needs 4 host CPU devices, as tests/conftest.py sets with "
                "XLA_FLAGS=--xla_force_host_platform_device_count=4")
  return devices


def mesh(axis_type: AxisType = AxisType.Auto) -> jax.sharding.Mesh:
  return jax.make_mesh((2, 2), ("data", "space"), (axis_type,) * 2,
                       devices=cpus()[:4])


@dataclasses.dataclass(frozen=True)
class Split:
  """How an input is split: mesh axes for its batch dim and spatial dims."""
  batch: str | tuple[str, ...] | None
  spatial: tuple[str | tuple[str, ...] | None, ...]

  def spec(self, case: Case) -> P:
    parts = [None] * len(case.shape)
    parts[0] = self.batch
    for axis, names in zip(case.spatial_axes, self.spatial):
      parts[axis] = names
    return P(*parts)

  def shard_rows(self, case: Case) -> int:
    """The fewest rows a shard has along a split spatial dim."""
    return min(case.shape[axis] // (2 if isinstance(names, str) else 4)
               for axis, names in zip(case.spatial_axes, self.spatial)
               if names is not None)


SPLITS = {
    # Data parallel: the batch over all 4 devices.
    "batch": Split(("data", "space"), ()),
    # A large image: height over "data", width over "space".
    "spatial": Split(None, ("data", "space")),
    # The configuration: batch over "data", height over "space".
    "both": Split("data", ("space",)),
    # Height over all 4 devices: inner shards have two neighbours.
    "rows4": Split(None, (("data", "space"),)),
}
ALL_SPLITS = ("batch", "spatial", "both", "rows4")
FEW_SPLITS = ("batch", "both")


# ---------------------------------------------------------------------------
# The cases: one or more per public function.


@dataclasses.dataclass(frozen=True)
class Case:
  """A pooling call on a realistic input, and what it may compile to.

  Attributes:
    name: the test id.
    function: the public function it covers.
    call: ``x -> output`` (an array, or a tuple whose first entry is the
      differentiated one).
    shape: the input shape.
    spatial_axes: the input's spatial axes.
    rows: the most rows of a shard any one collective may move: a windowed
      pool's halo is its window's extent; a pool to a fixed size may gather
      that many output rows.
    forward: the collectives the forward pass may use under spatial splits.
    backward: those forward+backward may use under spatial splits.
    splits: the splits it is compiled under.
    keeps_split: whether the output stays split as the input is (windowed
      pools keep every axis).
  """
  name: str
  function: str
  call: Callable[[jax.Array], object]
  shape: tuple[int, ...] = (8, 64, 64, 8)
  spatial_axes: tuple[int, ...] = (1, 2)
  rows: int = 3
  forward: frozenset[str] = HALO
  backward: frozenset[str] = HALO
  splits: tuple[str, ...] = FEW_SPLITS
  keeps_split: bool = True

  def __str__(self) -> str:
    return self.name


def _with_indices_then_unpool(x: jax.Array) -> jax.Array:
  values, indices = jaxpool.max_pool_with_indices(x, (2, 2))
  return jaxpool.max_unpool(values, indices, x.shape[1:3])


REDUCTION = frozenset({"all-reduce"})
ROI_SPLITS = ("spatial", "both", "rows4")
#: Boxes over the 8 images of the cases' (8, 64, 64, 8) input.
_ROI_BOXES = np.array([[i % 8, 3.0 * i, 2.0 * i, 3.0 * i + 40, 2.0 * i + 60]
                       for i in range(16)], np.float32)
REGROUP = HALO | {"all-to-all"}
ALL_CASES = (
    Case("max_2x2", "max_pool", lambda x: jaxpool.max_pool(x, (2, 2)),
         rows=2, splits=ALL_SPLITS),
    Case("max_3x3_s2_p1", "max_pool",
         lambda x: jaxpool.max_pool(x, (3, 3), 2, 1), splits=ALL_SPLITS),
    Case("max_3x3_s2_p1_nchw", "max_pool",
         lambda x: jaxpool.max_pool(x, (3, 3), 2, 1, channels_first=True),
         shape=(8, 8, 64, 64), spatial_axes=(2, 3)),
    Case("max_2x2_s2_dilated", "max_pool",
         lambda x: jaxpool.max_pool(x, (2, 2), 2, 1, dilation=2)),
    Case("max_1d_3_s2_p1", "max_pool",
         lambda x: jaxpool.max_pool(x, (3,), 2, 1), shape=(8, 1024, 8),
         spatial_axes=(1,)),
    Case("max_3d_3x3x3_s2_p1", "max_pool",
         lambda x: jaxpool.max_pool(x, (3, 3, 3), 2, 1),
         shape=(4, 32, 32, 32, 4), spatial_axes=(1, 2, 3)),
    Case("min_3x3_s2_p1", "min_pool",
         lambda x: jaxpool.min_pool(x, (3, 3), 2, 1)),
    Case("avg_2x2", "avg_pool", lambda x: jaxpool.avg_pool(x, (2, 2)),
         rows=2, splits=ALL_SPLITS),
    Case("avg_3x3_s2_p1", "avg_pool",
         lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1), splits=ALL_SPLITS),
    Case("avg_3x3_s2_p1_exclude_pad", "avg_pool",
         lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1, count_include_pad=False),
         splits=("both",)),
    Case("lp_2x2", "lp_pool", lambda x: jaxpool.lp_pool(x, 2.0, (2, 2)),
         rows=2),
    Case("pool_max_3x3_s2_p1", "pool",
         lambda x: jaxpool.pool(x, -jnp.inf, lax.max, (3, 3), 2, 1)),
    # Bins that tile the shards need no collective; 64 -> 7 bins straddle
    # the shard boundary, and a stage may gather its 7 output rows.
    Case("adaptive_avg_64_to_8", "adaptive_avg_pool",
         lambda x: jaxpool.adaptive_avg_pool(x, (8, 8)), rows=0),
    Case("adaptive_avg_64_to_7", "adaptive_avg_pool",
         lambda x: jaxpool.adaptive_avg_pool(x, (7, 7)), rows=7,
         keeps_split=False),
    Case("adaptive_max_64_to_8", "adaptive_max_pool",
         lambda x: jaxpool.adaptive_max_pool(x, (8, 8)), rows=0),
    Case("adaptive_max_64_to_7", "adaptive_max_pool",
         lambda x: jaxpool.adaptive_max_pool(x, (7, 7)), rows=7,
         keeps_split=False),
    # A global pool reduces across shards: one all-reduce of (N, C).
    # PyTorch's index of each bin is searched over the bins' elements
    # gathered side by side: regular bins keep the split.
    Case("adaptive_max_indices_64_to_8", "adaptive_max_pool_with_indices",
         lambda x: jaxpool.adaptive_max_pool_with_indices(x, (8, 8)),
         rows=0),
    Case("global_avg", "global_avg_pool",
         lambda x: jaxpool.global_avg_pool(x), rows=1, forward=REDUCTION,
         backward=REDUCTION, splits=("batch", "spatial", "both"),
         keeps_split=False),
    Case("global_max", "global_max_pool",
         lambda x: jaxpool.global_max_pool(x), rows=1, forward=REDUCTION,
         backward=REDUCTION, splits=("batch", "spatial", "both"),
         keeps_split=False),
    # The pyramid's levels are global and adaptive pools; its output is
    # flattened per example, which regroups the few pooled rows.
    Case("spp_1_2_4", "spatial_pyramid_pool",
         lambda x: jaxpool.spatial_pyramid_pool(x, (1, 2, 4)), rows=4,
         forward=REGROUP, backward=REGROUP, keeps_split=False),
    # Small windows keep the compile fast; the paths are the default's.
    Case("spp_yolo", "spp_yolo",
         lambda x: jaxpool.spp_yolo(x, window_sizes=(3,))),
    Case("sppf", "sppf",
         lambda x: jaxpool.sppf(x, window_size=2, repeats=2)),
    Case("max_with_indices_3x3_s2_p1", "max_pool_with_indices",
         lambda x: jaxpool.max_pool_with_indices(x, (3, 3), 2, 1)),
    # The indices are data: XLA cannot know that each value lands in its own
    # shard, so every device scatters into a zero plane and all-reduces it.
    Case("max_unpool_2x2", "max_unpool", _with_indices_then_unpool, rows=64,
         forward=REDUCTION, backward=REDUCTION, keeps_split=False),
    # Flattening a split map into one vector per example regroups it.
    Case("flatten_chw", "flatten", jaxpool.flatten, rows=64,
         forward=REGROUP, backward=REGROUP, keeps_split=False),
    # A blur is a stride-2 windowed sum: halos of its taps.
    Case("blur_4_zero", "blur_pool",
         lambda x: jaxpool.blur_pool(x, 4, 2, padding="zero")),
    Case("blur_3_reflect", "blur_pool", lambda x: jaxpool.blur_pool(x, 3, 2)),
    Case("max_blur_3", "max_blur_pool",
         lambda x: jaxpool.max_blur_pool(x, 3, 2, padding="zero")),
    # The component's norm sums over the whole example: one all-reduce.
    Case("aps_2", "aps_pool", jaxpool.aps_pool, rows=1,
         forward=HALO | REDUCTION, backward=HALO | REDUCTION),
    Case("gem_3x3_s2_p1", "gem_pool",
         lambda x: jaxpool.gem_pool(jnp.abs(x), 3.0, window_shape=(3, 3),
                                    strides=2, padding=1)),
    Case("gem_global", "gem_pool", lambda x: jaxpool.gem_pool(jnp.abs(x)),
         rows=1, forward=REDUCTION, backward=REDUCTION,
         splits=("batch", "spatial", "both"), keeps_split=False),
    # Nodes of each example split over devices: each device pools its nodes
    # into every segment, then one all-reduce of (batch, segments, C).
    Case("segment_max_nodes", "segment_pool",
         jax.vmap(lambda x: jaxpool.segment_pool(
             x, np.arange(1024) * 16 // 1024, 16, method="max",
             indices_are_sorted=True)),
         shape=(4, 1024, 8), spatial_axes=(1,), rows=16, forward=REDUCTION,
         backward=REDUCTION, keeps_split=False),
    Case("segment_mean_nodes", "segment_pool",
         jax.vmap(lambda x: jaxpool.segment_pool(
             x, np.arange(1024) % 16, 16)),
         shape=(4, 1024, 8), spatial_axes=(1,), rows=16, forward=REDUCTION,
         backward=REDUCTION, keeps_split=False),
    # Masks split as the input is: the masked pools keep their collectives.
    Case("masked_max_3x3_s2_p1", "max_pool",
         lambda x: jaxpool.max_pool(x, (3, 3), 2, 1, mask=x[..., 0] > 0)),
    Case("masked_global_avg", "global_avg_pool",
         lambda x: jaxpool.global_avg_pool(x, mask=x[..., 0] > 0), rows=1,
         forward=REDUCTION, backward=REDUCTION, keeps_split=False),
    # Fractional windows start where per-example samples say: the gather of
    # the stride-1 max pool at those rows is data-dependent.
    Case("fractional_2_to_40", "fractional_max_pool",
         lambda x: jaxpool.fractional_max_pool(
             x, 2, (40, 40), key=jax.random.key(0)), rows=64,
         forward=HALO | REDUCTION, backward=HALO | REDUCTION,
         keeps_split=False),
    # A draw per window from a partitionable key: halos only.
    Case("stochastic_3x3_s2_p1", "stochastic_pool",
         lambda x: jaxpool.stochastic_pool(
             jnp.abs(x), (3, 3), 2, 1, key=jax.random.key(0))),
    Case("stochastic_eval_3x3_s2_p1", "stochastic_pool",
         lambda x: jaxpool.stochastic_pool(
             jnp.abs(x), (3, 3), 2, 1, deterministic=True)),
    Case("soft_3x3_s2_p1", "soft_pool",
         lambda x: jaxpool.soft_pool(x, window_shape=(3, 3), strides=2,
                                     padding=1)),
    Case("lse_2x2", "lse_pool",
         lambda x: jaxpool.lse_pool(x, 2.0, window_shape=(2, 2)), rows=2),
    Case("lse_global", "lse_pool", lambda x: jaxpool.lse_pool(x, 2.0),
         rows=1, forward=REDUCTION, backward=REDUCTION,
         splits=("batch", "spatial", "both"), keeps_split=False),
    Case("mixed_3x3_s2_p1", "mixed_pool",
         lambda x: jaxpool.mixed_pool(x, 0.3, window_shape=(3, 3), strides=2,
                                      padding=1)),
    Case("gated_2x2", "gated_pool",
         lambda x: jaxpool.gated_pool(x, jnp.full((2, 2), 0.5),
                                      window_shape=(2, 2)), rows=2),
    Case("avgmax_global", "adaptive_avgmax_pool",
         jaxpool.adaptive_avgmax_pool, rows=1, forward=REDUCTION,
         backward=REDUCTION, splits=("batch", "spatial", "both"),
         keeps_split=False),
    Case("catavgmax_64_to_8", "adaptive_catavgmax_pool",
         lambda x: jaxpool.adaptive_catavgmax_pool(x, (8, 8)), rows=0),
    # Region pooling gathers each box's taps from its image wherever that
    # lies (the indices are data), from the map itself: each shard gathers
    # the taps in its part and one all-reduce sums them, never the map
    # (roi_align ~49 rows of a shard, ps_roi_pool ~68, ps_roi_align ~1;
    # roi_pool ~12.3, the four block maxima of each bin, whose tables need
    # halos where the rows are split). See also test_region_pooling_*
    # below: the batch split, and boxes split.
    Case("roi_align_7x7", "roi_align",
         lambda x: jaxpool.roi_align(x, _ROI_BOXES, 7, 0.5, 2),
         rows=50, forward=REDUCTION, backward=REDUCTION, splits=ROI_SPLITS,
         keeps_split=False),
    Case("roi_pool_7x7", "roi_pool",
         lambda x: jaxpool.roi_pool(x, _ROI_BOXES, 7, 0.5),
         rows=13, forward=REDUCTION | {"collective-permute"},
         backward=REDUCTION | {"collective-permute"}, splits=ROI_SPLITS,
         keeps_split=False),
    Case("ps_roi_pool_2x2", "ps_roi_pool",
         lambda x: jaxpool.ps_roi_pool(x, _ROI_BOXES, 2, 0.5),
         rows=69, forward=REDUCTION, backward=REDUCTION, splits=ROI_SPLITS,
         keeps_split=False),
    Case("ps_roi_align_2x2", "ps_roi_align",
         lambda x: jaxpool.ps_roi_align(x, _ROI_BOXES, 2, 0.5, 2),
         rows=2, forward=REDUCTION, backward=REDUCTION, splits=ROI_SPLITS,
         keeps_split=False),
    Case("multi_scale_roi_align", "multi_scale_roi_align",
         lambda x: jaxpool.multi_scale_roi_align(
             # The coarser level by a pooling: under explicit mesh axes
             # jax 0.7 rejects the strided slice x[:, ::2, ::2].
             [x, jaxpool.max_pool(x, 1, 2)], _ROI_BOXES, [(128, 128)], 3,
             2),
         rows=50, forward=REDUCTION, backward=REDUCTION, splits=ROI_SPLITS,
         keeps_split=False),
)
# Cases for functions the package does not export are left out; the
# coverage test below fails if an exported function has no case.
CASES = tuple(c for c in ALL_CASES if c.function in jaxpool.__all__)
# One case per function, for the slower checks.
FIRST_CASES = tuple({c.function: c for c in reversed(CASES)}.values())
# Data parallelism needs no collective whatever the window: the batch split
# is checked on one case per function, the spatial splits on every case.
CASE_SPLITS = [(c, s) for c in CASES for s in c.splits
               if s != "batch" or c in FIRST_CASES]


def _random(shape: tuple[int, ...]) -> np.ndarray:
  # Distinct values: max and min pick one element per window, so a tie
  # cannot hide a wrongly routed gradient.
  x = np.random.default_rng(0).permutation(math.prod(shape))
  return (x.reshape(shape) / x.size - 0.5).astype(np.float32)


def _differentiated(out) -> jax.Array:
  return out[0] if isinstance(out, tuple) else out


def _grad(case: Case) -> Callable[[jax.Array], jax.Array]:
  return jax.grad(lambda x: jnp.sum(_differentiated(case.call(x)) ** 2))


def _both(case: Case) -> Callable[[jax.Array], tuple[object, jax.Array]]:
  grad = _grad(case)
  return lambda x: (case.call(x), grad(x))


@functools.cache
def _single_device(case: Case) -> tuple[object, np.ndarray]:
  """The case's output and gradient on one device: what sharding must give."""
  x = jax.device_put(_random(case.shape), cpus()[0])
  return jax.tree.map(np.asarray, jax.jit(_both(case))(x))


def _compiled(case: Case, sharding: NamedSharding, backward: bool,
              shape: tuple[int, ...] | None = None):
  """The case (or its gradient, laid out as the input is) compiled for
  an input of ``shape`` (default: the case's) split by ``sharding``."""
  x = jax.ShapeDtypeStruct(shape or case.shape, jnp.float32)
  if backward:
    # As in a training step, where the layers before it are split alike.
    return jax.jit(_grad(case), in_shardings=sharding,
                   out_shardings=sharding).lower(x).compile()
  return jax.jit(case.call, in_shardings=sharding).lower(x).compile()


def _assert_same(actual, expected) -> None:
  actual, expected = jax.tree.leaves(actual), jax.tree.leaves(expected)
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected):
    # Sums over shards may round in another order; nothing else may differ.
    np.testing.assert_allclose(np.asarray(a), e, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# The counter itself, and coverage.


def test_counter_sees_each_kind_of_collective():
  sharding = NamedSharding(mesh(), P("data", "space"))
  x = jax.ShapeDtypeStruct((8, 64, 64, 8), jnp.float32)

  def found(fn, **kwargs):
    return collectives(jax.jit(fn, in_shardings=sharding, **kwargs).lower(
        x).compile().as_text())

  gathered = found(lambda x: x, out_shardings=NamedSharding(mesh(), P()))
  assert set(counts(gathered)) == {"all-gather"}
  assert max(n for _, n in gathered) == 8 * 64 * 64 * 8
  assert counts(found(lambda x: jnp.sum(x, axis=(1, 2)))) == {"all-reduce": 1}
  assert set(counts(found(lambda x: jnp.roll(x, 1, axis=1)))) == {
      "collective-permute"}


def test_every_pooling_function_has_a_case():
  public = {name for name in jaxpool.__all__
            if name not in NOT_POOLING and callable(getattr(jaxpool, name))}
  assert public <= {case.function for case in CASES}


# ---------------------------------------------------------------------------
# Collectives and values, forward and backward, under each split.


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
@pytest.mark.parametrize("case,split", CASE_SPLITS, ids=str)
def test_sharded_pooling(case: Case, split: str, backward: bool):
  sharding = NamedSharding(mesh(), SPLITS[split].spec(case))
  compiled = _compiled(case, sharding, backward)
  found = collectives(compiled.as_text())
  if split == "batch":
    assert not found, f"a batch split needs no collective, got {found}"
  else:
    allowed = case.backward if backward else case.forward
    assert set(counts(found)) <= allowed, counts(found)
    shard = math.prod(case.shape) // 4  # Every split uses all 4 devices.
    row = shard // SPLITS[split].shard_rows(case)
    largest = max((n for _, n in found), default=0)
    assert largest <= case.rows * row, (
        f"a collective moves {largest} elements, {largest / row:.1f} rows of "
        f"a shard; at most {case.rows} may move: {found}")

  out = compiled(jax.device_put(_random(case.shape), sharding))
  value, grad = _single_device(case)
  _assert_same(out, grad if backward else value)
  if backward or case.keeps_split:
    first = jax.tree.leaves(out)[0]
    assert first.sharding.is_equivalent_to(sharding, first.ndim), (
        first.sharding)


_ROI_CASES = tuple(c for c in CASES if c.splits == ROI_SPLITS)


@pytest.mark.parametrize("case", _ROI_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "bwd"])
def test_region_pooling_routes_boxes_to_their_images(case: Case,
                                                     backward: bool):
  # The batch split over all 4 devices: each box's taps come from the
  # shard that holds its image (every other shard contributes zeros to one
  # all-reduce); the map is never gathered.
  sharding = NamedSharding(mesh(), SPLITS["batch"].spec(case))
  found = collectives(_compiled(case, sharding, backward).as_text())
  assert set(counts(found)) <= REDUCTION, counts(found)
  # The same traffic as with the "both" split, in its rows.
  row = math.prod(case.shape) // 4 // SPLITS["both"].shard_rows(case)
  assert max((n for _, n in found), default=0) <= case.rows * row, found
  out = jax.jit(_both(case), in_shardings=sharding)(
      jax.device_put(_random(case.shape), sharding))
  _assert_same(out, _single_device(case))


@pytest.mark.parametrize("name", ["roi_align", "roi_pool", "ps_roi_pool",
                                  "ps_roi_align"])
def test_region_pooling_with_boxes_split(name: str):
  # Boxes over the 4 devices, the map replicated: the forward needs no
  # collective, and its gradient one all-reduce of the map's gradient (as
  # any replicated parameter's in data parallelism).
  args = {"roi_align": (7, 0.5, 2), "roi_pool": (7, 0.5),
          "ps_roi_pool": (2, 0.5), "ps_roi_align": (2, 0.5, 2)}[name]
  fn = lambda x, b: getattr(jaxpool, name)(x, b, *args)
  grad = lambda x, b: jax.grad(lambda x: jnp.sum(fn(x, b) ** 2))(x)
  x = _random((8, 64, 64, 8))
  split = (NamedSharding(mesh(), P()),
           NamedSharding(mesh(), P(("data", "space"))))
  for f, allowed in ((fn, set()), (grad, REDUCTION)):
    compiled = jax.jit(f, in_shardings=split).lower(x, _ROI_BOXES).compile()
    found = collectives(compiled.as_text())
    assert set(counts(found)) <= allowed, counts(found)
    assert max((n for _, n in found), default=0) <= x.size, found
    out = compiled(jax.device_put(x, split[0]),
                   jax.device_put(_ROI_BOXES, split[1]))
    want = jax.jit(f)(jax.device_put(x, cpus()[0]),
                      jax.device_put(_ROI_BOXES, cpus()[0]))
    _assert_same(out, np.asarray(want))
  # The pooled boxes stay split as the boxes were.
  y = jax.jit(fn, in_shardings=split)(x, _ROI_BOXES)
  assert y.sharding.is_equivalent_to(
      NamedSharding(mesh(), P(("data", "space"))), y.ndim), y.sharding


@pytest.mark.parametrize("op", ["max", "avg"])
def test_sharded_result_equals_numpy_reference(op: str):
  window = dict(window_shape=(3, 3), strides=2, padding=1)
  fn = getattr(jaxpool, f"{op}_pool")
  x = _random((8, 64, 64, 8))
  sharding = NamedSharding(mesh(), P("data", "space"))
  y = jax.jit(lambda x: fn(x, **window))(jax.device_put(x, sharding))
  np.testing.assert_allclose(y, reference.pool(x, op, **window), rtol=1e-6)


@pytest.mark.parametrize("name", ["max_3x3_s2_p1", "avg_3x3_s2_p1"])
def test_traffic_does_not_grow_with_the_image(name: str):
  # Halos are as long as a shard is wide, whatever its height: a collective
  # that grows with the height moves (a share of) whole shards.
  case = next(c for c in CASES if c.name == name)
  sharding = NamedSharding(mesh(), SPLITS["both"].spec(case))
  totals = []
  for height in (64, 256):
    hlo = _compiled(case, sharding, True, (8, height, 64, 8)).as_text()
    totals.append(sum(n for _, n in collectives(hlo)))
  assert totals[1] <= 1.1 * totals[0], totals


# ---------------------------------------------------------------------------
# Explicit mesh axes: the sharding is part of the array's type at trace time.


@pytest.mark.parametrize("case", FIRST_CASES, ids=str)
def test_explicit_mesh_axes(case: Case):
  # jax.make_mesh makes explicit axes by default: JAX then types every
  # intermediate's sharding while tracing, and rejects shapes that do not
  # divide over the mesh.
  sharding = NamedSharding(mesh(AxisType.Explicit),
                           SPLITS["both"].spec(case))
  x = jax.device_put(_random(case.shape), sharding)
  out, grad = jax.jit(_both(case))(x)
  _assert_same((out, grad), _single_device(case))
  assert jax.typeof(grad).sharding.spec == jax.typeof(x).sharding.spec
  if case.keeps_split:
    first = jax.tree.leaves(out)[0]
    assert jax.typeof(first).sharding.spec == jax.typeof(x).sharding.spec


# ---------------------------------------------------------------------------
# What can be tested of many hosts on one machine.


@pytest.mark.parametrize("case", FIRST_CASES, ids=str)
def test_lowers_for_every_platform_on_an_abstract_mesh(case: Case):
  # A multi-host program is traced by every host against the same mesh: the
  # function must be pure, need no device to trace, and lower for any
  # backend (no host callbacks, no float64).
  abstract = jax.sharding.AbstractMesh((2, 2), ("data", "space"),
                                       (AxisType.Auto,) * 2)
  sharding = NamedSharding(abstract, SPLITS["both"].spec(case))
  lowered = jax.jit(_both(case), in_shardings=sharding).trace(
      jax.ShapeDtypeStruct(case.shape, jnp.float32)).lower(
          lowering_platforms=("cpu", "cuda", "tpu"))
  text = lowered.as_text()
  assert "f64" not in text and "callback" not in text


def test_inside_shard_map_over_the_batch():
  m = mesh()
  x = _random((8, 64, 64, 8))
  per_shard = jax.shard_map(lambda x: jaxpool.max_pool(x, (3, 3), 2, 1),
                            mesh=m, in_specs=P(("data", "space")),
                            out_specs=P(("data", "space")))
  y = jax.jit(per_shard)(jax.device_put(x, NamedSharding(m, P())))
  np.testing.assert_array_equal(y, reference.pool(x, "max", (3, 3), 2, 1))


_WORKER = "--jaxpool-distributed-worker"
_DISTRIBUTED = ("max_3x3_s2_p1",)


def _distributed_worker(process_id: int, port: int) -> None:
  """One of two processes of a ``jax.distributed`` job, 2 CPU devices each.

  It pools a global array over a 2x2 mesh whose "data" axis spans the two
  processes, and checks its own shards against its own one-device run.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", num_processes=2,
                             process_id=process_id)
  assert jax.device_count() == 4 and jax.local_device_count() == 2
  m = jax.make_mesh((2, 2), ("data", "space"), (AxisType.Auto,) * 2)
  full = _random((8, 64, 64, 8))
  local = jax.device_put(full, jax.local_devices()[0])
  # The height is split over "data", so halos cross between the processes.
  for spec in (P(None, "data", "space"),):
    sharding = NamedSharding(m, spec)
    x = jax.make_array_from_callback(full.shape, sharding, lambda i: full[i])
    for case in (c for c in CASES if c.name in _DISTRIBUTED):
      for fn in (case.call, _grad(case)):
        compiled = jax.jit(fn, in_shardings=sharding).lower(x).compile()
        found = counts(collectives(compiled.as_text()))
        assert set(found) <= HALO, found
        expected = np.asarray(jax.jit(fn)(local))
        for shard in compiled(x).addressable_shards:
          np.testing.assert_allclose(shard.data, expected[shard.index],
                                     rtol=1e-6, atol=1e-6)
        print(process_id, case.name, spec, found, "ok", flush=True)
  jax.distributed.shutdown()


def test_two_processes_with_jax_distributed():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  # The workers import the jaxpool this process tests, wherever it is.
  package_root = os.path.dirname(os.path.dirname(jaxpool.__file__))
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=os.pathsep.join(
                 [package_root] + os.environ.get("PYTHONPATH", "").split(
                     os.pathsep)).rstrip(os.pathsep))
  workers = [
      subprocess.Popen([sys.executable, __file__, _WORKER, str(i), str(port)],
                       env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  for worker, output in zip(workers, outputs):
    assert worker.returncode == 0, output
    assert output.count(" ok") == 2 * len(_DISTRIBUTED), output


if __name__ == "__main__" and sys.argv[1:2] == [_WORKER]:
  _distributed_worker(int(sys.argv[2]), int(sys.argv[3]))

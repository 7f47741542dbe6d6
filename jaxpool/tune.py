"""Tuning on the user's device: time every valid lowering, keep the fastest.

``python -m jaxpool.tune`` (or ``jaxpool.tune()``; this module is callable)

times, on the default device, every plan that
:func:`jaxpool._lowering.valid_plans` allows for each configuration, forward
and forward+backward, picks per configuration class the plan with the least
total time (one forward plus one forward+backward: an inference and a
training step), and writes a user plan table that :func:`_lowering.plan`
reads before the shipped one. Tuning never changes values: every plan it can
pick is one that the test suite checks equal to the plain lowering.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import pathlib
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpool import _lowering
from jaxpool import _plan_table
from jaxpool._spec import WindowSpec, window_spec


@dataclasses.dataclass(frozen=True)
class Config:
  """One windowed reduction to tune: an op on an input of a shape and dtype.

  Attributes:
    name: a label for the summary.
    op: ``"max"``, ``"min"`` or ``"sum"`` (average pooling is a sum).
    shape: the channels-last input shape.
    dtype: the input's dtype name (sums of half precision run in float32).
    spec: the resolved window.
  """

  name: str
  op: str
  shape: tuple[int, ...]
  dtype: str
  spec: WindowSpec

  @classmethod
  def pool(cls, name: str, op: str, shape: Sequence[int], window: int,
           stride: int, padding: int = 0, dilation: int = 1,
           dtype: str = "float32") -> Config:
    """A square window over every spatial dim of a channels-last input."""
    n = len(shape) - 2
    spec = window_spec(tuple(shape), (window,) * n, stride, padding,
                       dilation=dilation)
    return cls(name, op, tuple(shape), dtype, spec)

  def key(self) -> str:
    return _plan_table.class_key(_plan_table.config_class(
        self.spec, self.op, self.dtype, self.shape))


def _scaled(shape: Sequence[int], quick: bool) -> tuple[int, ...]:
  if not quick:
    return tuple(shape)
  # Batch 1 and channels at most 32: the same classes, a fraction of the
  # time (a smoke test of the tuner rather than a measurement).
  return (1,) + tuple(shape[1:-1]) + (min(shape[-1], 32),)


def default_configs(quick: bool = False) -> list[Config]:
  """The benchmark's cases and the pooling layers of common models.

  ``python -m bench``'s windowed cases, ResNet's stem, VGG's five pools,
  YOLOv5's SPPF (5x5 stride 1) at P5 and P4, and U-Net's four
  down-sampling pools; ``quick`` keeps one of each kind, at batch 1.
  """
  p = Config.pool
  img = (32, 56, 56, 64)
  configs = [
      p("max 2x2/2", "max", img, 2, 2),
      p("max 3x3/2 pad 1", "max", img, 3, 2, 1),
      p("avg 3x3/2 pad 1", "sum", img, 3, 2, 1),
      p("avg 2x2/2", "sum", img, 2, 2),
      p("max 2x2/2 bf16", "max", img, 2, 2, dtype="bfloat16"),
      p("max 3x3/2 pad 1 bf16", "max", img, 3, 2, 1, dtype="bfloat16"),
      p("dilated max 3x3/2 d2 pad 1", "max", img, 3, 2, 1, 2),
      p("1-D max 3/2 pad 1", "max", (32, 2048, 64), 3, 2, 1),
      p("3-D max 2x2x2/2", "max", (4, 16, 56, 56, 64), 2, 2),
      p("ResNet stem max 3x3/2 pad 1", "max", (32, 112, 112, 64), 3, 2, 1),
      p("YOLO SPPF P5 max 5x5/1", "max", (16, 20, 20, 512), 5, 1, 2),
      p("YOLO SPPF P4 max 5x5/1", "max", (8, 40, 40, 256), 5, 1, 2),
  ]
  for size, channels in ((224, 64), (112, 128), (56, 256), (28, 512),
                         (14, 512)):
    configs.append(p(f"VGG max 2x2/2 {size}", "max",
                     (8, size, size, channels), 2, 2))
  for size, channels in ((128, 64), (64, 128), (32, 256), (16, 512)):
    configs.append(p(f"U-Net max 2x2/2 {size}", "max",
                     (4, size, size, channels), 2, 2))
  if quick:
    keep = ("max 2x2/2", "max 3x3/2 pad 1", "avg 3x3/2 pad 1", "avg 2x2/2",
            "1-D max 3/2 pad 1", "YOLO SPPF P5 max 5x5/1")
    configs = [c for c in configs if c.name in keep]
  return [dataclasses.replace(c, shape=_scaled(c.shape, quick),
                              spec=window_spec(
                                  _scaled(c.shape, quick), c.spec.window,
                                  c.spec.strides, c.spec.padding,
                                  dilation=c.spec.dilation))
          for c in configs]


def configs_of(function: Callable[..., Any], *args: Any,
               **kwargs: Any) -> list[Config]:
  """The windowed reductions that tracing ``function(*args, **kwargs)`` does.

  JAX's caches are cleared first, so that functions already traced (inner
  ``jax.jit``s) are traced again and recorded.
  """
  jax.clear_caches()
  with _lowering.recording() as found:
    jax.make_jaxpr(functools.partial(function, **kwargs))(*args)
  configs, seen = [], set()
  for shape, dtype, spec, op in found:
    if (shape, dtype, spec, op) in seen:
      continue
    seen.add((shape, dtype, spec, op))
    configs.append(Config(f"{op} {spec.window}/{spec.strides} {shape}", op,
                          shape, np.dtype(dtype).name, spec))
  return configs


# ---------------------------------------------------------------------------
# Timing.


@dataclasses.dataclass
class Timing:
  """One plan's times on one configuration (None where it could not run)."""

  forward_ms: float | None = None
  fwd_bwd_ms: float | None = None
  skipped: str = ""

  def total(self) -> float:
    return (self.forward_ms or 0.0) + (self.fwd_bwd_ms or 0.0)


def _median_ms(call: Callable[[], Any], repeats: int) -> float:
  jax.block_until_ready(call())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def _out_of_memory(error: Exception) -> bool:
  text = str(error)
  return isinstance(error, MemoryError) or any(
      word in text for word in ("RESOURCE_EXHAUSTED", "Out of memory",
                                "out of memory", "OOM"))


def _differentiable(config: Config) -> bool:
  return config.op != "sum" and jnp.issubdtype(np.dtype(config.dtype),
                                               jnp.inexact)


def _time_plan(config: Config, chosen: _lowering.Plan, x: jax.Array,
               w: jax.Array, repeats: int, passes: Sequence[str]) -> Timing:
  spec, op = config.spec, config.op
  forward = lambda x: _lowering.window_reduce(x, spec, op)
  loss = lambda x, w: jnp.sum(forward(x) * w, dtype=jnp.float32)
  timing = Timing()
  try:
    with _lowering.use_plan(chosen):
      if "fwd" in passes:
        f = jax.jit(forward).lower(x).compile()
        timing.forward_ms = _median_ms(lambda: f(x), repeats)
      if "fwd+bwd" in passes:
        g = jax.jit(jax.value_and_grad(loss)).lower(x, w).compile()
        timing.fwd_bwd_ms = _median_ms(lambda: g(x, w), repeats)
  except Exception as e:  # pylint: disable=broad-except
    # Too little memory for this candidate (or a backend that cannot
    # compile it): skip it, never the tuning.
    timing = Timing(skipped=("out of memory" if _out_of_memory(e) else
                             f"{type(e).__name__}: {str(e)[:120]}"))
  return timing


def _inputs(config: Config) -> tuple[jax.Array, jax.Array]:
  rng = np.random.default_rng(0)
  dtype = np.dtype(config.dtype)
  if jnp.issubdtype(dtype, jnp.inexact):
    x = jnp.asarray(rng.standard_normal(config.shape, np.float32)).astype(
        dtype)
  else:
    x = jnp.asarray(rng.integers(-100, 100, config.shape)).astype(dtype)
  out = config.spec.output_shape(config.shape)
  w = jnp.asarray(rng.standard_normal(out, np.float32)).astype(
      x.dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.float32)
  return x, w


def _candidates(config: Config) -> list[_lowering.Plan]:
  """The valid plans, less those that time the same as another.

  Without a derivative (sums, integers) only the forward lowering matters;
  with one, the forward's values come from the derivative's selection, so
  only whether the forward is separable (selections per stage) matters.
  """
  plans = _lowering.valid_plans(config.spec)
  if not _differentiable(config):
    return list({p.forward: dataclasses.replace(
        p, derivative=_lowering.Lowering.TAPS) for p in reversed(plans)
                 }.values())[::-1]
  return plans


# ---------------------------------------------------------------------------
# The result.


@dataclasses.dataclass
class ClassResult:
  """What tuning chose for one configuration class."""

  key: str
  configs: list[str]
  shipped: _lowering.Plan
  chosen: _lowering.Plan
  timings: dict[_lowering.Plan, Timing]

  def speedup(self) -> float:
    before = self.timings[self.shipped].total()
    after = self.timings[self.chosen].total()
    return before / after if after else 1.0


@dataclasses.dataclass
class TuneResult:
  """The outcome of :func:`tune`.

  Attributes:
    platform: the platform tuned (``cpu``, ``cuda``, ``rocm``, ``tpu``).
    device_kind: the device's kind, as JAX names it.
    path: where the table was written (None if not written).
    table: the table as written (JSON data).
    classes: per configuration class, the shipped and chosen plans and the
      times of every candidate.
  """

  platform: str
  device_kind: str
  path: pathlib.Path | None
  table: dict[str, Any]
  classes: list[ClassResult]

  def summary(self) -> str:
    """A printable table: per class, shipped and chosen plan, speed-up."""
    lines = [f"jaxpool tuning on {self.platform} ({self.device_kind}), "
             f"jax {jax.__version__}: {len(self.classes)} configuration "
             f"classes"]
    header = (f"{'configurations':42} {'shipped plan':18} {'chosen plan':18} "
              f"{'ms before':>10} {'ms after':>9} {'speed-up':>8}")
    lines += [header, "-" * len(header)]
    for c in self.classes:
      name = ", ".join(c.configs)
      name = name if len(name) <= 42 else name[:39] + "..."
      lines.append(
          f"{name:42} {_name(c.shipped):18} {_name(c.chosen):18} "
          f"{c.timings[c.shipped].total():10.3g} "
          f"{c.timings[c.chosen].total():9.3g} {c.speedup():7.2f}x")
    changed = sum(c.chosen != c.shipped for c in self.classes)
    lines.append(f"{changed} of {len(self.classes)} classes changed plan; "
                 f"times are one forward plus one forward+backward.")
    if self.path is not None:
      lines.append(f"wrote {self.path}")
    return "\n".join(lines)


def _name(p: _lowering.Plan) -> str:
  return f"{p.forward.value}/{p.derivative.value}"


def _progress(items: list[Any], enabled: bool, description: str):
  if not enabled:
    return items
  from rich.progress import track  # pylint: disable=g-import-not-at-top
  return track(items, description=description, transient=True)


def _existing_rules(path: pathlib.Path, platform: str) -> list[dict]:
  """The rules of a current table at ``path`` (tuning adds to them)."""
  if _plan_table.load_user_table(path, platform) is None:
    return []
  with open(path, encoding="utf-8") as f:
    return list(json.load(f)["rules"])


def tune(configs: Sequence[Config] | None = None, *,
         function: Callable[..., Any] | None = None,
         args: Sequence[Any] = (), quick: bool = False,
         repeats: int | None = None, write: bool = True,
         path: str | os.PathLike[str] | None = None,
         progress: bool = True) -> TuneResult:
  """Times every valid lowering on the default device and keeps the fastest.

  For each configuration the plans that jaxpool's tables may pick are timed
  forward and forward+backward (median of ``repeats`` calls after a
  warm-up); per configuration class the plan with the least total time is
  kept and written to a per-device table in the cache directory
  (``$JAXPOOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxpool``, else
  ``~/.cache/jaxpool``), keyed by platform and device kind and stamped with
  the jax version; pooling traced afterwards uses it before the shipped
  table. Functions already traced by ``jax.jit`` keep their plan. A
  candidate that runs out of memory is skipped. Values never change: every
  plan it can pick is tested equal to the plain lowering.

  Example:
    >>> import jaxpool
    >>> result = jaxpool.tune(jaxpool.tune.default_configs(quick=True)[:1],
    ...                       repeats=1, write=False, progress=False)
    >>> result.classes[0].chosen in result.classes[0].timings
    True

  Args:
    configs: what to tune; None for :func:`default_configs` (or, with
      ``function``, what it traces).
    function: tune the pooling that ``function(*args)`` traces instead.
    args: ``function``'s arguments (arrays or ``jax.ShapeDtypeStruct``).
    quick: small inputs, a few kinds of window, 3 repeats (a minute or two
      on a CPU).
    repeats: timed calls per candidate (default 7, 3 with ``quick``).
    write: whether to write the table.
    path: where to write it (default: the cache directory's file for this
      device).
    progress: show a progress bar.

  Returns:
    a :class:`TuneResult`; ``print(result.summary())`` shows the choices.

  Raises:
    ValueError: for ``configs`` and ``function`` both given, or
      ``repeats`` below 1.
  """
  if configs is not None and function is not None:
    raise ValueError("give configs or function, not both")
  repeats = repeats if repeats is not None else (3 if quick else 7)
  if not isinstance(repeats, int) or repeats < 1:
    raise ValueError(f"repeats must be a positive int, got {repeats!r}")
  if function is not None:
    configs = configs_of(function, *args)
  elif configs is None:
    configs = default_configs(quick)
  platform = _lowering.default_platform()
  device_kind = jax.devices()[0].device_kind

  by_class: dict[str, list[Config]] = {}
  for config in configs:
    by_class.setdefault(config.key(), []).append(config)
  jobs = [(c, p) for c in configs for p in _candidates(c)]
  timings: dict[tuple[int, _lowering.Plan], Timing] = {}
  inputs: dict[int, tuple[jax.Array, jax.Array]] = {}
  for config, candidate in _progress(jobs, progress, "tuning"):
    i = configs.index(config)
    if i not in inputs:
      inputs = {i: _inputs(config)}  # One configuration's inputs at a time.
    passes = ("fwd", "fwd+bwd") if (
        _differentiable(config) or config.op == "sum") else ("fwd",)
    timings[i, candidate] = _time_plan(config, candidate, *inputs[i],
                                       repeats, passes)

  classes, rules = [], []
  for key, members in by_class.items():
    first = members[0]
    shipped = _lowering.plan(first.spec, first.op, platform,
                             np.dtype(first.dtype), first.shape,
                             include_user=False)
    totals: dict[_lowering.Plan, Timing] = {}
    for candidate in _candidates(first):
      parts = [timings[configs.index(c), candidate] for c in members]
      if any(t.skipped for t in parts):
        continue
      totals[candidate] = Timing(
          sum(t.forward_ms or 0.0 for t in parts),
          sum(t.fwd_bwd_ms or 0.0 for t in parts))
    if not totals:
      continue
    chosen = min(totals, key=lambda p: totals[p].total())
    if shipped not in totals:
      shipped = _lowering.Plan(shipped.forward, _lowering.Lowering.TAPS) if (
          not _differentiable(first)) else shipped
    if shipped not in totals:
      totals[shipped] = totals[chosen]
    classes.append(ClassResult(key, [c.name for c in members], shipped,
                               chosen, totals))
    rules.append({
        "when": dict(item.split("=") for item in key.split("|")),
        "forward": chosen.forward.value,
        "derivative": chosen.derivative.value,
        "measured_ms": {_name(p): [t.forward_ms, t.fwd_bwd_ms]
                        for p, t in totals.items()},
        "configs": [c.name for c in members],
    })

  target = pathlib.Path(path) if path is not None else (
      _plan_table.user_table_path(platform, device_kind))
  keys = {json.dumps(r["when"], sort_keys=True) for r in rules}
  kept = [r for r in _existing_rules(target, platform)
          if json.dumps(r.get("when"), sort_keys=True) not in keys]
  table = {
      "format": _plan_table.FORMAT,
      "platform": platform,
      "provenance": {
          "command": "jaxpool.tune(" + ("quick=True" if quick else "") + ")",
          "device_kind": device_kind,
          "jax": jax.__version__,
          "date": datetime.date.today().isoformat(),
          "repeats": str(repeats),
      },
      "rules": rules + kept,
  }
  written = None
  if write:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, target)
    written = target
    _plan_table.reload()
  return TuneResult(platform, device_kind, written, table, classes)


def main(argv: Sequence[str] | None = None) -> None:
  """``python -m jaxpool.tune``: tune this device, print what was chosen."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog="python -m jaxpool.tune",
      description="Time every valid pooling lowering on the default device "
      "and write the fastest per configuration class to the user's plan "
      "table.")
  parser.add_argument("--quick", action="store_true",
                      help="small inputs, a few window kinds, 3 repeats")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--output", default=None,
                      help="write the table here instead of the cache")
  parser.add_argument("--dry-run", action="store_true",
                      help="time and print, write nothing")
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  result = tune(quick=args.quick, repeats=args.repeats,
                write=not args.dry_run, path=args.output,
                progress=not args.no_progress)
  print(result.summary())
  print(f"took {time.perf_counter() - start:.0f} s")


class _CallableModule(types.ModuleType):
  """This module, callable: ``jaxpool.tune(...)`` is :func:`tune`."""

  def __call__(self, *args: Any, **kwargs: Any) -> TuneResult:
    return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
  main()

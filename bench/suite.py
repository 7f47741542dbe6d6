"""The benchmark cases and how each implementation of them is timed.

Every case is a pooling of a channels-last input, timed forward (the pooling
alone) and forward+backward (the value and input gradient of the scalar loss
``sum(pool(x) * w)`` with a random ``w`` passed in, so that XLA cannot fold a
constant cotangent), in float32 and bfloat16, for:

* ``jaxpool``: the function under test, under ``jax.jit``;
* ``flax``: ``flax.linen.max_pool`` / ``avg_pool`` (one plain
  ``lax.reduce_window``, JAX's own gradient), or the plain JAX a Flax user
  writes where Flax has no such op (``lax.reduce_window`` for dilated and
  global pooling, one mean or max per output bin for adaptive pooling and
  SPP);
* ``equinox``: its pooling layer where it has one, vmapped over the batch on
  its native ``(C, *spatial)`` layout;
* ``torch``: ``torch.nn.functional`` on the same kind of device (cuDNN
  when JAX runs on a GPU and torch sees one, else the CPU), the faster of
  NCHW and channels-last memory formats (``y.backward(w)`` into a fresh
  ``grad``);
* ``floor``: the input and output bytes moved (forward+backward: ``x`` and
  ``w`` in, the gradient out) at the speed of one full read of this case's
  input, measured in the same run (a jitted ``jnp.sum``).

Run times are the median of several calls after a warm-up, the
implementations interleaved call by call, in a new random order each round
and after a short pause (so that neither a load that comes and goes nor the
threads a previous call left spinning favour one of them); a JAX compile
time is that of
``jax.jit(f).lower(x).compile()``, reported apart.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxpool
from bench import device as bench_device
from jaxpool import _lowering

IMPLS = ("jaxpool", "flax", "equinox", "torch")
_SETTLE_S = 0.005
PASSES = ("fwd", "fwd+bwd")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Case:
  """One pooling, and how each implementation computes it.

  Attributes:
    name: the row label.
    shape: the channels-last input shape of the full run.
    quick_shape: the input shape of ``--quick``.
    jaxpool: ``x -> y`` on the channels-last input.
    flax: the same through ``flax.linen`` (or plain JAX), or None.
    equinox: a factory of ``x -> y`` on one ``(C, *spatial)`` example, or
      None where Equinox has no such op.
    torch: ``(torch_module, x) -> y`` on an NC* tensor, or None.
    flax_note: what the ``flax`` column runs when it is not ``flax.linen``.
  """

  name: str
  shape: tuple[int, ...]
  quick_shape: tuple[int, ...]
  jaxpool: Callable[[jax.Array], jax.Array]
  flax: Callable[[jax.Array], jax.Array] | None
  equinox: Callable[[], Callable[[jax.Array], jax.Array]] | None
  torch: Callable[[Any, Any], Any] | None
  flax_note: str = ""
  needs: str = ""  # A jaxpool attribute the case needs (written elsewhere).


def _flax():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn


def _eqx():
  import equinox as eqx  # pylint: disable=g-import-not-at-top
  return eqx


def _pads(p: int, n: int) -> list[tuple[int, int]]:
  return [(p, p)] * n


def _windowed(name: str, op: str, shape, quick_shape, window: int,
              stride: int, pad: int = 0, dilation: int = 1) -> Case:
  """A max or average pooling with a square window over every spatial dim."""
  n = len(shape) - 2
  w, s = (window,) * n, (stride,) * n
  if op == "max":
    ours = lambda x: jaxpool.max_pool(x, w, s, pad, dilation=dilation)
  else:
    ours = lambda x: jaxpool.avg_pool(x, w, s, pad)
  note = ""
  if dilation > 1:
    # flax.linen has no dilation: the plain reduce_window a user would write.
    note = "lax.reduce_window"

    def flax(x):
      return lax.reduce_window(
          x, jnp.asarray(-jnp.inf, x.dtype), lax.max, (1, *w, 1),
          (1, *s, 1), [(0, 0), *_pads(pad, n), (0, 0)],
          window_dilation=(1,) + (dilation,) * n + (1,))
  elif op == "max":
    flax = lambda x: _flax().max_pool(x, w, s, _pads(pad, n))
  else:
    flax = lambda x: _flax().avg_pool(x, w, s, _pads(pad, n))
  equinox = None
  if dilation == 1:
    cls = {"max": "MaxPool", "avg": "AvgPool"}[op]
    equinox = lambda: getattr(_eqx().nn, f"{cls}{n}d")(window, stride, pad)
  fn_name = f"{op}_pool{n}d"

  def torch_fn(torch, x):
    kw = dict(dilation=dilation) if op == "max" else {}
    return getattr(torch.nn.functional, fn_name)(x, window, stride, pad, **kw)

  return Case(name, tuple(shape), tuple(quick_shape), ours, flax, equinox,
              torch_fn, note)


def _global_avg(shape, quick_shape) -> Case:
  def flax(x):
    total = lax.reduce_window(x.astype(jnp.float32), 0.0, lax.add,
                              (1, *x.shape[1:-1], 1), (1, 1, 1, 1), "VALID")
    return (total[:, 0, 0] / np.float32(x.shape[1] * x.shape[2])).astype(
        x.dtype)

  return Case(
      "global avg", shape, quick_shape,
      lambda x: jaxpool.global_avg_pool(x), flax,
      lambda: _eqx().nn.AdaptiveAvgPool2d(1),
      lambda torch, x: torch.nn.functional.adaptive_avg_pool2d(x, 1),
      "lax.reduce_window", needs="global_avg_pool")


def _bins(n: int, o: int) -> list[tuple[int, int]]:
  """PyTorch's adaptive bins: floor(i*n/o) to ceil((i+1)*n/o)."""
  return [(i * n // o, -(-(i + 1) * n // o)) for i in range(o)]


def _per_bin(x: jax.Array, o: int, reduce) -> jax.Array:
  """One reduction per output bin: the plain JAX a Flax user writes."""
  rows = []
  for h0, h1 in _bins(x.shape[1], o):
    rows.append(jnp.stack([reduce(x[:, h0:h1, w0:w1], axis=(1, 2))
                           for w0, w1 in _bins(x.shape[2], o)], axis=1))
  return jnp.stack(rows, axis=1)


def _mean_f32(x, axis):
  return jnp.mean(x.astype(jnp.float32), axis=axis).astype(x.dtype)


def _adaptive_avg(shape, quick_shape, o: int) -> Case:
  return Case(
      f"adaptive avg {shape[1]}->{o}", shape, quick_shape,
      lambda x: jaxpool.adaptive_avg_pool(x, o),
      lambda x: _per_bin(x, o, _mean_f32),
      lambda: _eqx().nn.AdaptiveAvgPool2d(o),
      lambda torch, x: torch.nn.functional.adaptive_avg_pool2d(x, o),
      "mean per bin", needs="adaptive_avg_pool")


def _spp(shape, quick_shape, levels=(1, 2, 4)) -> Case:
  def flax(x):
    return jnp.concatenate(
        [_per_bin(x, o, jnp.max).reshape(x.shape[0], -1) for o in levels],
        axis=1)

  def torch_fn(torch, x):
    # The usual SPP: adaptive max per level, flattened channel-major.
    f = torch.nn.functional
    return torch.cat([f.adaptive_max_pool2d(x, o).flatten(1)
                      for o in levels], dim=1)

  return Case(
      f"SPP {levels}", shape, quick_shape,
      lambda x: jaxpool.spatial_pyramid_pool(x, levels, method="max"),
      flax, None, torch_fn, "max per bin", needs="spatial_pyramid_pool")


def _chain(name: str, shape, quick_shape) -> Case:
  """SPPF (three chained 5x5/1 max pools) or YOLO's SPP (5, 9, 13 /1),
  each stacked with ``x`` on the channels."""
  if name == "SPPF":
    windows, chained = (5, 5, 5), True
    ours = lambda x: jaxpool.sppf(x, 5, 3)
  else:
    windows, chained = (5, 9, 13), False
    ours = lambda x: jaxpool.spp_yolo(x, windows)

  def stacked(x, pool):
    outs = [x]
    for k in windows:
      outs.append(pool(outs[-1] if chained else x, k))
    return outs

  def flax(x):
    pool = lambda y, k: _flax().max_pool(y, (k, k), (1, 1), "SAME")
    return jnp.concatenate(stacked(x, pool), axis=-1)

  def torch_fn(torch, x):
    f = torch.nn.functional
    return torch.cat(stacked(x, lambda y, k: f.max_pool2d(y, k, 1, k // 2)),
                     dim=1)

  return Case(f"{name} {shape[1]}x{shape[2]}x{shape[3]}", shape, quick_shape,
              ours, flax, None, torch_fn,
              needs="sppf" if name == "SPPF" else "spp_yolo")


def _adaptive_max(shape, quick_shape, o: int) -> Case:
  return Case(
      f"adaptive max {shape[1]}->{o}", shape, quick_shape,
      lambda x: jaxpool.adaptive_max_pool(x, o),
      # One max per bin would be o * o (961) reductions: too slow to compile.
      None, lambda: _eqx().nn.AdaptiveMaxPool2d(o),
      lambda torch, x: torch.nn.functional.adaptive_max_pool2d(x, o),
      needs="adaptive_max_pool")


def cases() -> list[Case]:
  """The suite: the issue's cases, full and quick input shapes."""
  img, img_q = (32, 56, 56, 64), (8, 28, 28, 32)
  return [
      _windowed("max 2x2/2", "max", img, img_q, 2, 2),
      _windowed("max 3x3/2 pad 1", "max", img, img_q, 3, 2, 1),
      _windowed("avg 3x3/2 pad 1", "avg", img, img_q, 3, 2, 1),
      _windowed("avg 2x2/2", "avg", img, img_q, 2, 2),
      _windowed("dilated max 3x3/2 d2 pad 1", "max", img, img_q, 3, 2, 1,
                dilation=2),
      _windowed("1-D max 3/2 pad 1", "max", (32, 2048, 64), (8, 512, 32), 3,
                2, 1),
      _windowed("3-D max 2x2x2/2", "max", (4, 16, 56, 56, 64),
                (2, 8, 28, 28, 16), 2, 2),
      _global_avg((32, 7, 7, 2048), (8, 7, 7, 256)),
      _adaptive_avg((32, 30, 30, 128), (8, 30, 30, 32), 7),
      _spp((32, 13, 13, 256), (8, 13, 13, 64)),
      _windowed("ResNet stem max 3x3/2 pad 1", "max", (32, 112, 112, 64),
                (4, 112, 112, 64), 3, 2, 1),
      _windowed("VGG pool1 max 2x2/2", "max", (8, 224, 224, 64),
                (1, 224, 224, 64), 2, 2),
      # YOLOv5/v8's SPPF and SPP (issue 11), at the P5 shape and two more.
      _chain("SPPF", (16, 20, 20, 512), (2, 20, 20, 64)),
      _chain("SPPF", (8, 40, 40, 256), (2, 40, 40, 32)),
      _chain("SPPF", (8, 256, 256, 16), (1, 64, 64, 16)),
      _chain("YOLO SPP", (16, 20, 20, 512), (2, 20, 20, 64)),
      _chain("YOLO SPP", (8, 40, 40, 256), (2, 40, 40, 32)),
      _chain("YOLO SPP", (8, 256, 256, 16), (1, 64, 64, 16)),
      _adaptive_max((8, 64, 64, 64), (2, 64, 64, 16), 31),
  ]


# ---------------------------------------------------------------------------
# Timing.


def _median_ms(times: Sequence[float]) -> float:
  return 1e3 * statistics.median(times)


def _loss(fn: Callable[[jax.Array], jax.Array]):
  """``sum(fn(x) * w)``: a scalar loss whose cotangent ``w`` is data.

  With ``sum(fn(x))`` the cotangent would be a constant, and XLA folds a
  linear backward (average pooling's) into a compile-time constant.
  """
  return lambda x, w: jnp.sum(fn(x) * w, dtype=jnp.float32)


def _weights(fn: Callable, x: jax.Array) -> jax.Array:
  """A random cotangent shaped like ``fn(x)``."""
  out = jax.eval_shape(fn, x)
  w = np.random.default_rng(1).standard_normal(out.shape, np.float32)
  return jnp.asarray(w).astype(out.dtype)


def _arguments(fn: Callable, x: jax.Array, direction: str) -> tuple:
  """``fn``'s compiled ``direction`` takes these: ``x``, and for
  forward+backward a random cotangent."""
  return (x,) if direction == "fwd" else (x, _weights(fn, x))


def _compiled(fn: Callable, args: tuple, direction: str):
  """The compiled JAX function of ``direction`` and its compile seconds."""
  f = fn if direction == "fwd" else jax.value_and_grad(_loss(fn))
  start = time.perf_counter()
  compiled = jax.jit(f).lower(*args).compile()
  return compiled, time.perf_counter() - start


def _root_error(fn: Callable, args: tuple, error: Exception) -> str:
  """The name of the error behind ``error``.

  Under ``jit``, JAX reports an op without a VJP (dilated max pooling) as a
  ValueError about linearization; differentiating eagerly names the cause.
  """
  if len(args) == 2:
    try:
      jax.grad(_loss(fn))(*args)
    except Exception as e:  # pylint: disable=broad-except
      return type(e).__name__
  return type(error).__name__


def _torch_runners(case: Case, x: np.ndarray, direction: str, dtype: str):
  """Per memory format, a no-argument PyTorch call of ``direction``.

  Forward+backward is ``y.backward(w)`` with a random ``w``: the gradient of
  the same weighted loss, without PyTorch computing the loss itself.
  """
  import torch  # pylint: disable=g-import-not-at-top
  where = bench_device.torch_device()
  if where == "cuda":
    torch.backends.cudnn.benchmark = True
  sync = torch.cuda.synchronize if where == "cuda" else (lambda: None)
  n = x.ndim - 2
  base = torch.from_numpy(np.ascontiguousarray(x, np.float32))
  base = base.permute(0, n + 1, *range(1, n + 1)).to(
      device=where, dtype=getattr(torch, dtype))
  formats = {"NCHW": torch.contiguous_format}
  if n == 2:
    formats["channels_last"] = torch.channels_last
  elif n == 3:
    formats["channels_last"] = torch.channels_last_3d
  runners = {}
  for layout, fmt in formats.items():
    xt = base.contiguous(memory_format=fmt)
    if direction == "fwd":

      def run(xt=xt):
        with torch.no_grad():
          y = case.torch(torch, xt)
        sync()
        return y
    else:
      xt = xt.requires_grad_()
      with torch.no_grad():
        y = case.torch(torch, xt)
      rng = np.random.default_rng(1)
      w = torch.from_numpy(rng.standard_normal(tuple(y.shape), np.float32))
      w = w.to(device=where, dtype=y.dtype).contiguous(memory_format=(
          fmt if y.dim() == base.dim() else torch.contiguous_format))

      def run(xt=xt, w=w):
        xt.grad = None
        case.torch(torch, xt).backward(w)
        sync()
        return xt.grad
    runners[layout] = run
  return runners


def median_call_ms(fn: Callable[..., Any], *args: Any, repeats: int) -> float:
  """Median ms of ``repeats`` calls of ``fn(*args)`` after one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return _median_ms(times)


def _floor_ms(x: jax.Array, moved_bytes: int,
              repeats: int) -> tuple[float, float]:
  """Time of one full read of ``x``, and of ``moved_bytes`` at that speed."""
  read = jax.jit(jnp.sum).lower(x).compile()
  read_ms = median_call_ms(read, x, repeats=repeats)
  return read_ms, read_ms * moved_bytes / x.nbytes


def measure(case: Case, dtype: str, direction: str, quick: bool,
            repeats: int, torch_ok: bool = True,
            plans: Sequence[Any] = ()) -> dict:
  """Times every implementation of ``case`` on one row.

  ``plans`` (``jaxpool._lowering.Plan``) are timed too, in the same rounds:
  jaxpool's function with every pooling in it lowered by that plan.

  Returns:
    a dict: ``case``, ``pass``, ``dtype``, ``shape``, per implementation
    ``<impl>_ms`` (None with ``<impl>_error`` if it could not run),
    ``<impl>_compile_s`` for JAX ones, ``torch_layout``, ``read_ms`` and
    ``floor_ms``, ``max_abs_diff_vs_flax`` (forward), the ratios, and with
    ``plans`` a ``plans_ms`` dict of ``"forward/derivative"`` to time.
  """
  shape = case.quick_shape if quick else case.shape
  x_np = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
  x = jnp.asarray(x_np).astype(dtype)
  row: dict[str, Any] = {"case": case.name, "pass": direction,
                         "dtype": dtype, "shape": list(shape),
                         "flax_note": case.flax_note}
  jax_fns = {"jaxpool": (case.jaxpool, x), "flax": (case.flax, x),
             "equinox": (None, None)}
  if case.equinox is not None:
    # Equinox pools one (C, *spatial) example: its own layout, vmapped.
    jax_fns["equinox"] = (jax.vmap(case.equinox()), jnp.moveaxis(x, -1, 1))
  runners: dict[str, Callable[[], Any]] = {}
  outputs = {}
  for impl, (fn, arg) in jax_fns.items():
    if fn is None:
      row[f"{impl}_error"] = "no such op"
      continue
    try:
      args = _arguments(fn, arg, direction)
      compiled, seconds = _compiled(fn, args, direction)
      outputs[impl] = jax.block_until_ready(compiled(*args))
    except Exception as e:  # pylint: disable=broad-except
      row[f"{impl}_error"] = _root_error(fn, args, e)
      continue
    row[f"{impl}_compile_s"] = seconds
    runners[impl] = functools.partial(
        lambda c, a: jax.block_until_ready(c(*a)), compiled, args)
  args = _arguments(case.jaxpool, x, direction) if plans else ()
  for chosen in plans:
    name = f"plan:{chosen.forward.value}/{chosen.derivative.value}"
    with _lowering.use_plan(chosen):
      compiled, _ = _compiled(case.jaxpool, args, direction)
    runners[name] = functools.partial(
        lambda c, a: jax.block_until_ready(c(*a)), compiled, args)
  torch_layouts = {}
  if case.torch is None:
    row["torch_error"] = "no such op"
  elif not torch_ok:
    row["torch_error"] = "not installed"
  else:
    try:
      for layout, run in _torch_runners(case, x_np, direction, dtype).items():
        run()
        torch_layouts[layout] = run
    except Exception as e:  # pylint: disable=broad-except
      row["torch_error"] = type(e).__name__
  for layout, run in torch_layouts.items():
    runners[f"torch:{layout}"] = run

  times = {name: [] for name in runners}
  order = list(runners)
  shuffle = np.random.default_rng(2).shuffle
  for _ in range(repeats):
    # A fresh order each round, and a pause before each call: the worker
    # threads of the previous call (PyTorch's OpenMP pool, XLA's) spin for a
    # while after it returns, and would slow whichever call came next.
    shuffle(order)
    for name in order:
      time.sleep(_SETTLE_S)
      start = time.perf_counter()
      runners[name]()
      times[name].append(time.perf_counter() - start)
  for name, ts in times.items():
    if name.startswith("plan:"):
      row.setdefault("plans_ms", {})[name[5:]] = _median_ms(ts)
    elif not name.startswith("torch:"):
      row[f"{name}_ms"] = _median_ms(ts)
  if torch_layouts:
    best = min(torch_layouts, key=lambda l: _median_ms(times[f"torch:{l}"]))
    row["torch_ms"] = _median_ms(times[f"torch:{best}"])
    row["torch_layout"] = best
    for layout in torch_layouts:
      row[f"torch_{layout}_ms"] = _median_ms(times[f"torch:{layout}"])

  out = jax.eval_shape(case.jaxpool, x)
  out_bytes = int(np.prod(out.shape)) * out.dtype.itemsize
  # Forward: x in, y out. Forward+backward: x and the cotangent in, the
  # gradient out (the scalar loss is negligible).
  moved = x.nbytes + out_bytes if direction == "fwd" else (
      2 * x.nbytes + out_bytes)
  row["read_ms"], row["floor_ms"] = _floor_ms(x, moved, repeats)
  row["moved_bytes"] = moved
  if row.get("jaxpool_ms"):
    row["jaxpool_gbps"] = moved / row["jaxpool_ms"] / 1e6
  if direction == "fwd" and "jaxpool" in outputs and "flax" in outputs:
    diff = np.asarray(outputs["jaxpool"], np.float32) - np.asarray(
        outputs["flax"], np.float32)
    row["max_abs_diff_vs_flax"] = float(np.max(np.abs(diff)))
  add_ratios(row)
  return row


def add_ratios(row: dict) -> None:
  """Speed-ups: ``<impl>_vs_<ref>`` = ref time / impl time (>1: faster)."""
  for impl in IMPLS + ("floor",):
    t = row.get(f"{impl}_ms")
    for ref in ("flax", "torch"):
      r = row.get(f"{ref}_ms")
      if t and r and impl != ref:
        row[f"{impl}_vs_{ref}"] = r / t
  if row.get("jaxpool_ms") and row.get("floor_ms"):
    row["jaxpool_over_floor"] = row["jaxpool_ms"] / row["floor_ms"]


def available(case: Case) -> bool:
  """Whether the jaxpool function the case needs exists yet."""
  return not case.needs or hasattr(jaxpool, case.needs)


def torch_installed() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True

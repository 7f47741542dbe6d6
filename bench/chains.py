"""Chained max pools (SPPF, YOLO's SPP) forward+backward against PyTorch.

SPPF stacks ``x`` and three chained 5x5/1 "SAME" max pools of it; YOLO's
SPP stacks ``x`` and 5x5, 9x9 and 13x13 /1 pools of it. For each, at
YOLOv5's P5 shape (16, 20, 20, 512), (8, 40, 40, 256) and (8, 256, 256, 16)
(channels-last, float32), one row gives the forward+backward time (value
and input gradient of ``sum(f(x) * w)``, a random ``w``) of jaxpool and of
PyTorch (``F.max_pool2d`` chained and concatenated, the faster of NCHW and
channels-last), and the time of the single pools the chain is made of,
each timed alone (jaxpool). ``--versus-previous`` adds jaxpool with the
per-tap derivative it had before ``_selected_tangent`` (issue 11).

The implementations are called in turn, in a new random order each round,
so that a load that comes and goes (these CPUs are shared) weighs on all of
them alike; the figures are medians over the rounds.

  python3 -m bench.chains --repeats 5 [--versus-previous] [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxpool
from jaxpool import _lowering

SHAPES = ((16, 20, 20, 512), (8, 40, 40, 256), (8, 256, 256, 16))
QUICK_SHAPES = ((2, 20, 20, 64), (2, 40, 40, 32))
MODELS = {
    # name: (the jaxpool function, the single pools' windows, chained?)
    "sppf": (lambda x: jaxpool.sppf(x, 5, 3), (5, 5, 5), True),
    "yolo spp": (lambda x: jaxpool.spp_yolo(x, (5, 9, 13)), (5, 9, 13),
                 False),
}


def _torch_model(name: str):
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  def sppf(x):
    outs = [x]
    for _ in range(3):
      outs.append(F.max_pool2d(outs[-1], 5, 1, 2))
    return torch.cat(outs, 1)

  def spp(x):
    return torch.cat([x] + [F.max_pool2d(x, k, 1, k // 2)
                            for k in (5, 9, 13)], 1)

  return torch, (sppf if name == "sppf" else spp)


def _jax_call(fn: Callable, x: jax.Array) -> Callable[[], object]:
  w = jax.eval_shape(fn, x)
  w = jnp.asarray(np.random.default_rng(1).standard_normal(w.shape,
                                                           np.float32))
  loss = lambda x, w: jnp.sum(fn(x) * w)
  compiled = jax.jit(jax.value_and_grad(loss)).lower(x, w).compile()
  return lambda: jax.block_until_ready(compiled(x, w))


def _torch_calls(name: str, x: np.ndarray) -> dict[str, Callable]:
  torch, model = _torch_model(name)
  base = torch.from_numpy(x).permute(0, 3, 1, 2)
  calls = {}
  for layout, fmt in (("NCHW", torch.contiguous_format),
                      ("channels_last", torch.channels_last)):
    xt = base.contiguous(memory_format=fmt).requires_grad_()
    with torch.no_grad():
      shape = tuple(model(xt).shape)
    w = torch.from_numpy(np.random.default_rng(1).standard_normal(
        shape, np.float32)).contiguous(memory_format=fmt)

    def call(xt=xt, w=w):
      xt.grad = None
      model(xt).backward(w)

    calls[f"torch {layout}"] = call
  return calls


def _interleaved(calls: dict[str, Callable], repeats: int) -> dict[str, float]:
  for call in calls.values():
    call()
  times: dict[str, list[float]] = {k: [] for k in calls}
  names = list(calls)
  for _ in range(repeats):
    random.shuffle(names)
    for k in names:
      start = time.perf_counter()
      calls[k]()
      times[k].append(time.perf_counter() - start)
      time.sleep(0.005)
  return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def run(quick: bool = False, repeats: int = 5,
        versus_previous: bool = False) -> list[dict]:
  """One row per (model, shape): ms and ratios, see the module docstring."""
  rows = []
  for shape in (QUICK_SHAPES if quick else SHAPES):
    x_np = np.random.default_rng(0).standard_normal(shape, np.float32)
    x = jnp.asarray(x_np)
    for name, (fn, windows, _) in MODELS.items():
      calls = {"jaxpool": _jax_call(fn, x)}
      if versus_previous:
        with _lowering.spread_tangents(False):
          calls["previous"] = _jax_call(fn, x)
      for k in sorted(set(windows)):
        calls[f"single {k}"] = _jax_call(
            lambda x, k=k: jaxpool.max_pool(x, (k, k), 1, "SAME"), x)
      calls.update(_torch_calls(name, x_np))
      ms = _interleaved(calls, repeats)
      torch_ms = min(v for k, v in ms.items() if k.startswith("torch"))
      singles = sum(ms[f"single {k}"] for k in windows)
      row = {"model": name, "shape": shape, "jaxpool_ms": ms["jaxpool"],
             "torch_ms": torch_ms, "singles_ms": singles,
             "torch_over_jaxpool": torch_ms / ms["jaxpool"],
             "singles_over_jaxpool": singles / ms["jaxpool"]}
      if versus_previous:
        row["previous_ms"] = ms["previous"]
        row["previous_over_jaxpool"] = ms["previous"] / ms["jaxpool"]
      rows.append(row)
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.chains",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--versus-previous", action="store_true")
  args = parser.parse_args(argv)
  rows = run(args.quick, args.repeats, args.versus_previous)
  head = ("| model | shape | jaxpool ms | PyTorch ms | PyTorch/jaxpool "
          "| single pools ms | singles/jaxpool |")
  if args.versus_previous:
    head += " previous ms | previous/jaxpool |"
  print(head)
  print("|" + "---|" * (head.count("|") - 1))
  for r in rows:
    line = (f"| {r['model']} | {r['shape']} | {r['jaxpool_ms']:.1f} | "
            f"{r['torch_ms']:.1f} | {r['torch_over_jaxpool']:.2f} | "
            f"{r['singles_ms']:.1f} | {r['singles_over_jaxpool']:.2f} |")
    if args.versus_previous:
      line += (f" {r['previous_ms']:.1f} | "
               f"{r['previous_over_jaxpool']:.2f} |")
    print(line)


if __name__ == "__main__":
  main()

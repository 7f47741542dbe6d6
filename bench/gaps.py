"""The rows of issue 11 (CPU gaps to PyTorch), several runs in one process.

Each run times every row (``bench.suite.measure``: jaxpool and PyTorch,
the faster of its layouts, interleaved call by call); the table gives each
run's PyTorch/jaxpool ratio (> 1: jaxpool is faster) and their median.
Equinox is left out, and flax unless ``--flax`` (``python -m bench`` has
both): flax's column is the plain JAX a Flax user writes for the row (one
``lax.reduce_window`` with JAX's own gradient, or one max or mean per bin).

``--lowerings`` also times, in the same rounds, the row's function with
every pooling in it forced to each plan that is valid for all of them
(``jaxpool._lowering.valid_plans``): the second table gives the fastest and
its ratio, which says whether a table could close a gap or no lowering
jaxpool has can.

  python3 -m bench.gaps --runs 3 [--repeats 5] [--rows sppf,spp] [--lowerings]
      [--flax]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import jax
import numpy as np

from bench import suite
from jaxpool import _lowering


def rows(flax: bool = False) -> list[tuple[suite.Case, str, str]]:
  """(case, dtype, pass) of every row of issue 11's table; with ``flax``,
  each keeps its ``flax`` column (the plain JAX a Flax user writes)."""
  img = (32, 56, 56, 64)
  cases = [
      (suite._chain("SPPF", (16, 20, 20, 512), (2, 20, 20, 64)), "float32",
       "fwd+bwd"),
      (suite._chain("SPPF", (8, 40, 40, 256), (2, 40, 40, 32)), "float32",
       "fwd+bwd"),
      (suite._chain("SPPF", (8, 256, 256, 16), (1, 64, 64, 16)), "float32",
       "fwd+bwd"),
      (suite._chain("YOLO SPP", (16, 20, 20, 512), (2, 20, 20, 64)),
       "float32", "fwd+bwd"),
      (suite._chain("YOLO SPP", (8, 40, 40, 256), (2, 40, 40, 32)),
       "float32", "fwd+bwd"),
      (suite._chain("YOLO SPP", (8, 256, 256, 16), (1, 64, 64, 16)),
       "float32", "fwd+bwd"),
      (suite._windowed("avg 3x3/2 pad 1", "avg", (32, 112, 112, 64),
                       (4, 112, 112, 64), 3, 2, 1), "float32", "fwd+bwd"),
      (suite._global_avg((64, 56, 56, 256), (8, 56, 56, 64)), "float32",
       "fwd+bwd"),
      (suite._spp((64, 13, 13, 256), (8, 13, 13, 64)), "float32", "fwd"),
      (suite._spp((64, 13, 13, 256), (8, 13, 13, 64)), "float32", "fwd+bwd"),
      (suite._adaptive_max((8, 64, 64, 64), (2, 64, 64, 16), 31), "float32",
       "fwd+bwd"),
      (suite._adaptive_avg((8, 64, 64, 64), (2, 64, 64, 16), 31), "float32",
       "fwd+bwd"),
      (suite._windowed("max 2x2/2", "max", img, img, 2, 2), "float32",
       "fwd+bwd"),
      (suite._windowed("max 2x2/2", "max", img, img, 2, 2), "bfloat16",
       "fwd+bwd"),
      (suite._windowed("3-D max 2x2x2/2", "max", (4, 16, 56, 56, 64),
                       (2, 8, 28, 28, 16), 2, 2), "float32", "fwd+bwd"),
  ]
  return [(dataclasses.replace(c, flax=c.flax if flax else None,
                               equinox=None), d, p)
          for c, d, p in cases]


def row_plans(case: suite.Case, dtype: str) -> list[_lowering.Plan]:
  """The plans valid for every windowed reduction in ``case``'s function
  (of a sum, one per forward: its derivative is the forward's transpose)."""
  jax.clear_caches()  # Functions traced before are traced (recorded) again.
  with _lowering.recording() as found:
    jax.eval_shape(case.jaxpool, jax.ShapeDtypeStruct(case.shape,
                                                      np.dtype(dtype)))
  if not found:
    return []
  plans = None
  for _, _, spec, op in found:
    valid = set(_lowering.valid_plans(spec))
    if op == "sum":
      valid = {_lowering.Plan(p.forward, _lowering.Lowering.TAPS)
               for p in valid}
    plans = valid if plans is None else plans & valid
  return sorted(plans or (), key=lambda p: (p.forward.value,
                                             p.derivative.value))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.gaps",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--rows", default="",
                      help="comma-separated texts: only rows whose name "
                      "contains one")
  parser.add_argument("--lowerings", action="store_true",
                      help="also time every plan valid for each row")
  parser.add_argument("--flax", action="store_true",
                      help="also time flax (or the plain JAX of the row)")
  args = parser.parse_args(argv)
  wanted = [w for w in args.rows.lower().split(",") if w]
  todo = [r for r in rows(args.flax)
          if not wanted or any(w in r[0].name.lower() for w in wanted)]
  ratios: dict[int, list[float]] = {i: [] for i in range(len(todo))}
  best: dict[int, list[tuple[float, str, float]]] = {
      i: [] for i in range(len(todo))}
  plain: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(todo))}
  last = {}
  plans = [row_plans(case, dtype) if args.lowerings else []
           for case, dtype, _ in todo]
  for run in range(args.runs):
    for i, (case, dtype, direction) in enumerate(todo):
      row = suite.measure(case, dtype, direction, False, args.repeats,
                          plans=plans[i])
      last[i] = row
      ratios[i].append(row["torch_ms"] / row["jaxpool_ms"])
      if row.get("flax_ms"):
        plain[i].append((row["torch_ms"] / row["flax_ms"], row["flax_ms"]))
      if plans[i]:
        name, ms = min(row["plans_ms"].items(), key=lambda kv: kv[1])
        best[i].append((row["torch_ms"] / ms, name, ms))
      print(f"run {run + 1}: {case.name} {list(case.shape)} {direction} "
            f"{dtype}: jaxpool {row['jaxpool_ms']:.1f} ms, PyTorch "
            f"{row['torch_ms']:.1f} ms ({row['torch_layout']})", flush=True)
  print("\n| case | shape | pass | dtype | jaxpool ms | PyTorch ms | "
        "PyTorch/jaxpool per run | median |")
  print("|---|---|---|---|---:|---:|---|---:|")
  for i, (case, dtype, direction) in enumerate(todo):
    row = last[i]
    per_run = ", ".join(f"{r:.2f}" for r in ratios[i])
    print(f"| {case.name} | {tuple(case.shape)} | {direction} | {dtype} | "
          f"{row['jaxpool_ms']:.1f} | {row['torch_ms']:.1f} | {per_run} | "
          f"{statistics.median(ratios[i]):.2f} |")
  if any(plain.values()):
    print("\n| case | shape | pass | dtype | flax ms | PyTorch/flax per run | "
          "median |")
    print("|---|---|---|---|---:|---|---:|")
    for i, (case, dtype, direction) in enumerate(todo):
      if plain[i]:
        per_run = ", ".join(f"{r:.2f}" for r, _ in plain[i])
        print(f"| {case.name} | {tuple(case.shape)} | {direction} | {dtype} "
              f"| {plain[i][-1][1]:.1f} | {per_run} | "
              f"{statistics.median(r for r, _ in plain[i]):.2f} |")
  if not any(best.values()):
    return
  print("\n| case | shape | pass | dtype | fastest plan (per run) | its ms | "
        "PyTorch/fastest per run | median |")
  print("|---|---|---|---|---|---:|---|---:|")
  for i, (case, dtype, direction) in enumerate(todo):
    if not best[i]:
      continue
    names = ", ".join(dict.fromkeys(name for _, name, _ in best[i]))
    per_run = ", ".join(f"{r:.2f}" for r, _, _ in best[i])
    print(f"| {case.name} | {tuple(case.shape)} | {direction} | {dtype} | "
          f"{names} | {best[i][-1][2]:.1f} | {per_run} | "
          f"{statistics.median(r for r, _, _ in best[i]):.2f} |")


if __name__ == "__main__":
  main()

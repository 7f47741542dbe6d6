"""The rows of issue 11 (CPU gaps to PyTorch), several runs in one process.

Each run times every row (``bench.suite.measure``: jaxpool and PyTorch,
the faster of its layouts, interleaved call by call); the table gives each
run's PyTorch/jaxpool ratio (> 1: jaxpool is faster) and their median.
flax and Equinox are left out to keep it short (``python -m bench`` has
them).

  python3 -m bench.gaps --runs 3 [--repeats 5] [--rows sppf,spp]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

from bench import suite


def rows() -> list[tuple[suite.Case, str, str]]:
  """(case, dtype, pass) of every row of issue 11's table."""
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
  return [(dataclasses.replace(c, flax=None, equinox=None), d, p)
          for c, d, p in cases]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m bench.gaps",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--rows", default="",
                      help="comma-separated texts: only rows whose name "
                      "contains one")
  args = parser.parse_args(argv)
  wanted = [w for w in args.rows.lower().split(",") if w]
  todo = [r for r in rows()
          if not wanted or any(w in r[0].name.lower() for w in wanted)]
  ratios: dict[int, list[float]] = {i: [] for i in range(len(todo))}
  last = {}
  for run in range(args.runs):
    for i, (case, dtype, direction) in enumerate(todo):
      row = suite.measure(case, dtype, direction, False, args.repeats)
      last[i] = row
      ratios[i].append(row["torch_ms"] / row["jaxpool_ms"])
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


if __name__ == "__main__":
  main()

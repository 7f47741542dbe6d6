"""``python -m bench``: the pooling benchmark suite on the default JAX device.

Prints one table row per case, pass (forward, forward+backward) and dtype
(float32, bfloat16): jaxpool, flax.linen, Equinox and PyTorch times with
speed-ups, the measured memory floor and compile times; then the sections of
``bench.adaptive`` and ``bench.sharding`` when those modules are there.

  python -m bench                   # full run, several minutes on 2 cores
  python -m bench --quick           # small, float32, 3 repeats: 1-2 min
  python -m bench --json out.json --plot out.png
  python -m bench --tune --json out.json   # also tune this device's plan

On a GPU (a CUDA jaxlib), PyTorch runs on the GPU too (cuDNN) when torch
sees one, and every row reports jaxpool's achieved memory bandwidth against
a copy measured in the same run and the device's datasheet peak.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp

from bench import device as bench_device
from bench import report
from bench import suite

EXTRA_SECTIONS = ("adaptive", "sharding")


def _args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m bench", description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="small inputs, float32 only, 3 repeats (about 1-2 "
                      "minutes): a smoke test, too small to time well")
  parser.add_argument("--repeats", type=int, default=None,
                      help="timed calls per implementation (default 7, "
                      "3 with --quick)")
  parser.add_argument("--cases", default="",
                      help="only cases whose name contains this text")
  parser.add_argument("--dtypes", default=None,
                      help="comma-separated (default float32,bfloat16; "
                      "float32 with --quick)")
  parser.add_argument("--json", metavar="PATH", help="write results here")
  parser.add_argument("--plot", metavar="PATH", help="write a PNG bar chart")
  parser.add_argument("--no-extra", action="store_true",
                      help="skip the adaptive and sharding sections")
  parser.add_argument("--tune", action="store_true",
                      help="also run jaxpool.tune on this device: the tuned "
                      "plan table goes to jaxpool's cache and beside the "
                      "JSON/PNG")
  return parser.parse_args(argv)


def _meta(args, repeats: int) -> dict:
  versions = {"jax": jax.__version__, "python": platform.python_version()}
  for name in ("flax", "equinox", "torch", "numpy"):
    try:
      versions[name] = importlib.import_module(name).__version__
    except ImportError:
      versions[name] = None
  device = jax.devices()[0]
  return {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "device": f"{device.platform}: {device.device_kind}",
      "torch_device": bench_device.torch_device(),
      "copy_gbps": bench_device.copy_gbps(64 if args.quick else 256),
      "peak_gbps": bench_device.peak_gbps(device.device_kind),
      "cpu_count": os.cpu_count(), "machine": platform.machine(),
      "quick": args.quick, "repeats": repeats, "versions": versions,
      "fresh_write_ms_per_100mb": _fresh_write_ms(),
  }


def _fresh_write_ms() -> float:
  """Time of writing 100 MB to a fresh output buffer (allocation included).

  On Linux CPUs a fresh buffer this large is mapped anew on every call, and
  first-touch page faults can cost far more than reading it; this figure
  tells how much any implementation pays to return a large gradient.
  """
  x = jnp.zeros((25 * 2**20,), jnp.float32)
  f = jax.jit(lambda x: x + 1).lower(x).compile()
  jax.block_until_ready(f(x))
  times = []
  for _ in range(5):
    start = time.perf_counter()
    jax.block_until_ready(f(x))
    times.append(time.perf_counter() - start)
  return 1e3 * sorted(times)[len(times) // 2]


def _extra_sections(quick: bool) -> dict:
  """Rows of ``bench.<name>.run(quick)`` for each module that exists."""
  sections = {}
  for name in EXTRA_SECTIONS:
    try:
      module = importlib.import_module(f"bench.{name}")
    except ImportError as e:
      if e.name != f"bench.{name}":
        sections[name] = [{"error": f"{type(e).__name__}: {e}"}]
      continue
    try:
      sections[name] = module.run(quick=quick)
    except Exception as e:  # pylint: disable=broad-except
      sections[name] = [{"error": f"{type(e).__name__}: {e}"[:300]}]
  return sections


def main(argv=None) -> None:
  args = _args(argv)
  repeats = args.repeats or (3 if args.quick else 7)
  dtypes = (args.dtypes.split(",") if args.dtypes else
            ["float32"] if args.quick else list(suite.DTYPES))
  cases = [c for c in suite.cases() if args.cases in c.name]
  runnable = [c for c in cases if suite.available(c)]
  skipped = [c.name for c in cases if not suite.available(c)]
  torch_ok = suite.torch_installed()
  meta = _meta(args, repeats)
  print(f"jaxpool benchmark on {meta['device']} ({meta['cpu_count']} CPUs), "
        f"jax {jax.__version__}, torch {meta['versions']['torch']} on "
        f"{meta['torch_device']}; {'quick' if args.quick else 'full'} run, "
        f"median of {repeats}. Copy bandwidth {meta['copy_gbps']:.0f} GB/s"
        + (f", datasheet peak {meta['peak_gbps']:.0f} GB/s."
           if meta["peak_gbps"] else "."), flush=True)

  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  jobs = [(c, d, p) for c in runnable for d in dtypes for p in suite.PASSES]
  rows = []
  with tqdm(jobs, unit="row", file=sys.stderr, dynamic_ncols=True) as bar:
    for case, dtype, direction in bar:
      bar.set_postfix_str(f"{case.name} {direction} {dtype}")
      rows.append(suite.measure(case, dtype, direction, args.quick, repeats,
                                torch_ok))

  for row in rows:
    report.add_bandwidth(row, meta["copy_gbps"], meta["peak_gbps"])
  print()
  print(report.table(rows))
  print()
  print(report.legend())
  print(f"Writing a fresh 100 MB output took "
        f"{meta['fresh_write_ms_per_100mb']:.3g} ms in this run (page "
        f"faults included); every forward+backward pays it for its "
        f"gradient.")
  for name in skipped:
    print(f"skipped (not in jaxpool yet): {name}")

  sections = {} if args.no_extra else _extra_sections(args.quick)
  for name, section_rows in sections.items():
    print(f"\n== bench.{name} ==")
    print(report.generic_table(section_rows))

  tuned = _tune(args) if args.tune else None
  if tuned is not None:
    meta["tuned_table"] = tuned
  if args.json:
    report.write_json(args.json, meta, rows, sections)
    print(f"\nwrote {args.json}")
  if args.plot:
    report.plot(args.plot, rows,
                f"jaxpool vs flax.linen, {meta['device']}"
                f"{' (quick)' if args.quick else ''}")
    print(f"wrote {args.plot}")


def _tune(args) -> str:
  """Tunes this device's plan; the table goes beside the JSON/PNG too."""
  import jaxpool  # pylint: disable=g-import-not-at-top
  print("\n== jaxpool.tune ==", flush=True)
  result = jaxpool.tune(quick=args.quick)
  print(result.summary())
  beside = next((p for p in (args.json, args.plot) if p), "bench_results/x")
  folder = os.path.dirname(os.path.abspath(beside))
  os.makedirs(folder, exist_ok=True)
  target = os.path.join(folder, os.path.basename(str(result.path)))
  with open(target, "w") as f:
    json.dump(result.table, f, indent=1)
    f.write("\n")
  print(f"wrote {target}")
  return target


if __name__ == "__main__":
  main()

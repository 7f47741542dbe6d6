"""Pooling on a spatially split input: time, and the collectives it needs.

Each public pooling function, forward and forward+backward (the gradient of
a scalar loss), is compiled twice on host CPU devices: on one device, and
with its input's height split over 4 devices (``NamedSharding`` on a mesh of
4). The rows give both times and the collectives XLA compiled the split
version to, with the largest as a share of an input shard, and the
collectives of the same call with the batch split instead (there should be
none).

The 4 "devices" are host CPU devices sharing this machine's cores, so the
split time shows the partitioning's overhead (halo exchanges, smaller
loops), not a speed-up; on real accelerators each shard has its own.

  python -m bench.sharding [--quick] [--json PATH]

If JAX already started with fewer than 4 CPU devices (as ``python -m bench``
does), :func:`run` measures in a fresh Python process that asks XLA for 4.
"""

from __future__ import annotations

import os
import sys

_FLAG = "--xla_force_host_platform_device_count=4"
if __name__ == "__main__" and _FLAG not in os.environ.get("XLA_FLAGS", ""):
  # Before JAX starts: the host devices are fixed when its backend starts.
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}"

# pylint: disable=g-import-not-at-top,g-bad-import-order
import argparse
import json
import re
import subprocess
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import jaxpool
from bench.suite import median_call_ms

DEVICES = 4
NOTE = (f"{DEVICES} host CPU devices share {os.cpu_count()} cores: the split "
        "time is partitioning overhead, not a speed-up.")
_OP = re.compile(r"=\s*(.*?)\s(all-gather|all-reduce|collective-permute|"
                 r"all-to-all|reduce-scatter)(?:-start)?\(")
_DIMS = re.compile(r"\w+\[([\d,]*)\]")


def _unpool(x: jax.Array) -> jax.Array:
  values, indices = jaxpool.max_pool_with_indices(x, (2, 2))
  return jaxpool.max_unpool(values, indices, x.shape[1:3])


# (name, function, call): each public pooling function as commonly used.
CASES: tuple[tuple[str, str, Callable[[jax.Array], object]], ...] = (
    ("max 2x2/2", "max_pool", lambda x: jaxpool.max_pool(x, (2, 2))),
    ("max 3x3/2 pad 1", "max_pool",
     lambda x: jaxpool.max_pool(x, (3, 3), 2, 1)),
    ("min 3x3/2 pad 1", "min_pool",
     lambda x: jaxpool.min_pool(x, (3, 3), 2, 1)),
    ("avg 2x2/2", "avg_pool", lambda x: jaxpool.avg_pool(x, (2, 2))),
    ("avg 3x3/2 pad 1", "avg_pool",
     lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1)),
    ("lp p=2 2x2/2", "lp_pool", lambda x: jaxpool.lp_pool(x, 2.0, (2, 2))),
    ("pool max 3x3/2 pad 1", "pool",
     lambda x: jaxpool.pool(x, -jnp.inf, lax.max, (3, 3), 2, 1)),
    ("adaptive avg to 8", "adaptive_avg_pool",
     lambda x: jaxpool.adaptive_avg_pool(x, 8)),
    ("adaptive avg to 7", "adaptive_avg_pool",
     lambda x: jaxpool.adaptive_avg_pool(x, 7)),
    ("adaptive max to 8", "adaptive_max_pool",
     lambda x: jaxpool.adaptive_max_pool(x, 8)),
    ("adaptive max to 7", "adaptive_max_pool",
     lambda x: jaxpool.adaptive_max_pool(x, 7)),
    ("global avg", "global_avg_pool", lambda x: jaxpool.global_avg_pool(x)),
    ("global max", "global_max_pool", lambda x: jaxpool.global_max_pool(x)),
    ("SPP (1, 2, 4)", "spatial_pyramid_pool",
     lambda x: jaxpool.spatial_pyramid_pool(x, (1, 2, 4))),
    ("SPP YOLO (5, 9, 13)", "spp_yolo", lambda x: jaxpool.spp_yolo(x)),
    ("SPPF 5 x3", "sppf", lambda x: jaxpool.sppf(x)),
    ("max with indices 3x3/2 pad 1", "max_pool_with_indices",
     lambda x: jaxpool.max_pool_with_indices(x, (3, 3), 2, 1)),
    ("max with indices 2x2 + unpool", "max_unpool", _unpool),
)


def collectives(hlo: str) -> list[tuple[str, int]]:
  """``(kind, elements)`` of each collective in compiled HLO text."""
  result = []
  for match in map(_OP.search, hlo.splitlines()):
    if match:
      result.append((match.group(2), max(
          (int(np.prod([int(d) for d in dims.split(",") if d]))
           for dims in _DIMS.findall(match.group(1))), default=0)))
  return result


def _summary(found: list[tuple[str, int]], shard: int) -> str:
  if not found:
    return "none"
  kinds = {}
  for kind, _ in found:
    kinds[kind] = kinds.get(kind, 0) + 1
  largest = max(n for _, n in found) / shard
  return (", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) +
          f" (largest {largest:.2g} shard)")


def _fwd_bwd(call: Callable[[jax.Array], object]):
  # The gradient alone: the loss's value would add an all-reduce of a scalar.
  def loss(x):
    out = call(x)
    return jnp.sum(jnp.square(out[0] if isinstance(out, tuple) else out))
  return jax.grad(loss)


def _measure(shape: tuple[int, ...], repeats: int) -> list[dict]:
  cpus = jax.devices("cpu")[:DEVICES]
  mesh = jax.make_mesh((DEVICES,), ("devices",), (AxisType.Auto,),
                       devices=cpus)
  rows_split = NamedSharding(mesh, P(None, "devices"))
  batch_split = NamedSharding(mesh, P("devices"))
  x_host = np.random.default_rng(0).standard_normal(shape, np.float32)
  x_one = jax.device_put(x_host, cpus[0])
  x_rows = jax.device_put(x_host, rows_split)
  abstract = jax.ShapeDtypeStruct(shape, jnp.float32)
  shard = x_host.size // DEVICES
  rows = []
  for name, function, call in CASES:
    if function not in jaxpool.__all__:
      continue
    for direction, fn in (("fwd", call), ("fwd+bwd", _fwd_bwd(call))):
      row = {"case": name, "function": function, "pass": direction}
      try:
        one = jax.jit(fn).lower(x_one).compile()
        compiled = {}
        for split, sharding in (("rows", rows_split),
                                ("batch", batch_split)):
          # A gradient is laid out as its input, as in a training step.
          out = sharding if direction == "fwd+bwd" else None
          compiled[split] = jax.jit(fn, in_shardings=sharding,
                                    out_shardings=out).lower(
                                        abstract).compile()
        row["one_device_ms"] = median_call_ms(one, x_one, repeats=repeats)
        row["split_ms"] = median_call_ms(compiled["rows"], x_rows,
                                         repeats=repeats)
        row["split_vs_one"] = row["split_ms"] / row["one_device_ms"]
        row["height_split"] = _summary(
            collectives(compiled["rows"].as_text()), shard)
        row["batch_split"] = _summary(
            collectives(compiled["batch"].as_text()), shard)
      except Exception as e:  # pylint: disable=broad-except
        row["error"] = f"{type(e).__name__}: {e}"[:200]
      rows.append(row)
  return rows


def _in_fresh_process(quick: bool) -> list[dict]:
  """:func:`run` in a new Python that asks XLA for 4 host devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip())
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  command = [sys.executable, "-m", "bench.sharding", "--rows-json"]
  if quick:
    command.append("--quick")
  done = subprocess.run(command, cwd=root, env=env, capture_output=True,
                        text=True, timeout=3600, check=False)
  if done.returncode != 0:
    return [{"error": f"bench.sharding in a subprocess failed "
                      f"({done.returncode}): {done.stderr[-500:]}"}]
  return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
  """Times each function on one device and with its height split over 4.

  Args:
    quick: a small input and few repeats, for a smoke test.

  Returns:
    one dict per (case, pass) with keys ``case``, ``function``, ``pass``
    ("fwd" or "fwd+bwd"), ``one_device_ms``, ``split_ms`` (the input's
    height split over 4 host devices), ``split_vs_one`` (their ratio),
    ``height_split`` and ``batch_split`` (the collectives each split
    compiles to, with the largest as a share of an input shard), and
    ``shape``; or ``error``. The last row's ``note`` says what host
    devices can and cannot show.
  """
  if len(jax.devices("cpu")) < DEVICES:
    return _in_fresh_process(quick)
  shape = (4, 128, 128, 8) if quick else (8, 256, 256, 16)
  rows = _measure(shape, repeats=2 if quick else 5)
  for row in rows:
    row["shape"] = "x".join(map(str, shape))
  if rows:
    rows[-1]["note"] = NOTE
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m bench.sharding", description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="a small input and 2 repeats")
  parser.add_argument("--json", metavar="PATH", help="write the rows here")
  parser.add_argument("--rows-json", action="store_true",
                      help=argparse.SUPPRESS)  # For _in_fresh_process.
  args = parser.parse_args(argv)
  rows = run(quick=args.quick)
  if args.rows_json:
    print(json.dumps(rows, default=str))
    return
  from bench import report  # pylint: disable=g-import-not-at-top
  print(report.generic_table(rows))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1, default=str)
    print(f"wrote {args.json}")


if __name__ == "__main__":
  main()

"""Graph readouts: jaxpool against PyTorch Geometric and jax.ops by hand.

The issue's case: 1,000 graphs, 100,000 nodes, 128 float32 features, nodes
sorted by graph (PyTorch Geometric's batches are) of random sizes, some
graphs empty. For each readout (sum, mean, max) three contenders, timed
forward and forward+backward (one VJP with a fixed cotangent):

- ``jaxpool``: ``jaxpool.graph.global_{add,mean,max}_pool`` under ``jit``;
- ``by hand``: ``jax.ops.segment_sum`` / ``segment_max`` with
  ``indices_are_sorted`` as one writes it without jaxpool (the mean a sum
  over counts clamped to 1, the max's empty graphs set to 0 with a
  ``where``), under ``jit``;
- ``PyG``: ``torch_geometric.nn.global_{add,mean,max}_pool``.

Everything runs on one CPU thread (``torch.set_num_threads(1)`` and XLA's
single-threaded CPU flags, set before JAX starts). Each time is the median
of ``--repeats`` rounds, the contenders run side by side in every round,
so load on the machine hits them alike. Ratios > 1 mean jaxpool is faster.

Run ``python -m bench.segment [--quick] [--repeats N]``.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + (
    " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)).strip()

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxpool import graph

READOUTS = ("add", "mean", "max")


def _by_hand(name: str, size: int) -> Callable:
  def fn(x, batch):
    if name == "add":
      return jax.ops.segment_sum(x, batch, size, indices_are_sorted=True)
    count = jax.ops.segment_sum(jnp.ones_like(batch, x.dtype), batch, size,
                                indices_are_sorted=True)[:, None]
    if name == "mean":
      return jax.ops.segment_sum(x, batch, size, indices_are_sorted=True) / (
          jnp.maximum(count, 1.0))
    y = jax.ops.segment_max(x, batch, size, indices_are_sorted=True)
    return jnp.where(count > 0, y, 0.0)
  return fn


def _jax_pair(fn: Callable, x, batch, ct) -> tuple[Callable, Callable]:
  # batch is an argument: a constant would be folded at compile time.
  forward = jax.jit(fn)

  @jax.jit
  def both(x, batch, ct):
    y, vjp = jax.vjp(lambda x: fn(x, batch), x)
    return y, vjp(ct)[0]

  run_f = lambda: forward(x, batch).block_until_ready()
  run_b = lambda: jax.block_until_ready(both(x, batch, ct))
  return run_f, run_b


def _torch_pair(name: str, x, batch, ct, size: int):
  import torch
  import torch_geometric.nn as pyg
  fn = getattr(pyg, f"global_{name}_pool")
  xt, bt, ctt = torch.tensor(x), torch.tensor(batch), torch.tensor(ct)

  def run_f():
    with torch.no_grad():
      fn(xt, bt, size)

  def run_b():
    xg = xt.detach().requires_grad_(True)
    y = fn(xg, bt, size)
    torch.autograd.grad(y, xg, ctt)

  return run_f, run_b


def _time(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="100 graphs, 10,000 nodes, 32 features")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  import torch
  torch.set_num_threads(1)
  graphs, nodes, features = (100, 10_000, 32) if args.quick else (
      1000, 100_000, 128)
  rng = np.random.default_rng(0)
  batch = np.sort(rng.integers(0, graphs, nodes)).astype(np.int64)
  batch[batch == 1] = 0  # an empty graph
  x = rng.standard_normal((nodes, features)).astype(np.float32)
  ct = rng.standard_normal((graphs, features)).astype(np.float32)
  xj, bj, ctj = jnp.asarray(x), jnp.asarray(batch, jnp.int32), jnp.asarray(ct)
  print(f"{graphs} graphs, {nodes} nodes, {features} features, float32, "
        f"1 thread; median of {args.repeats} rounds side by side; jax "
        f"{jax.__version__}, torch {torch.__version__}")
  print(f"{'readout':8s} {'pass':8s} {'jaxpool ms':>11s} {'by hand ms':>11s}"
        f" {'PyG ms':>9s} {'hand/jaxpool':>13s} {'PyG/jaxpool':>12s}")
  for name in READOUTS:
    ours = getattr(graph, f"global_{name}_pool")
    runs = {
        "jaxpool": _jax_pair(lambda x, b, f=ours: f(x, b, graphs), xj, bj,
                             ctj),
        "hand": _jax_pair(_by_hand(name, graphs), xj, bj, ctj),
        "pyg": _torch_pair(name, x, batch, ct, graphs),
    }
    for which, label in ((0, "fwd"), (1, "fwd+bwd")):
      for run in runs.values():  # compile and warm up
        run[which]()
      times = {k: [] for k in runs}
      for _ in range(args.repeats):
        for k, run in runs.items():
          times[k].append(_time(run[which]))
      med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
      print(f"{name:8s} {label:8s} {med['jaxpool']:11.2f} {med['hand']:11.2f}"
            f" {med['pyg']:9.2f} {med['hand'] / med['jaxpool']:13.2f}"
            f" {med['pyg'] / med['jaxpool']:12.2f}")


if __name__ == "__main__":
  main()
